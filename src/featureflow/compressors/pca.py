"""``PCA``: a streaming-fit principal-component compressor (no sklearn)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from featureflow.compressors.base import StandardizedCompressor
from featureflow.compressors.fit import as_feature_tensor
from featureflow.compressors.standardize import ChannelStandardizer
from featureflow.typing import Float, Tensor, check_finite, typechecked
from featureflow.utils import progress_bar, record_config, register_component

__all__ = ["PCA"]


@register_component
class PCA(StandardizedCompressor):
    """Project standardised features onto their top ``n_components`` principal axes.

    Fitting streams: :meth:`partial_fit` merges each batch's mean and centred scatter
    matrix (float64, Chan's parallel update) into a running total, so only a D×D
    matrix is held, never the features; :meth:`finalize` eigen-decomposes the
    covariance (unbiased, ``n - 1``). By default it also sets the feature statistics
    from the same pass (per-channel mean/std, so the PCA is that of the correlation
    matrix) and the latent statistics analytically (mean 0; std ``sqrt(eigenvalue)``,
    or 1 when whitened), so that :meth:`encode` gives unit-variance latents on the
    training data.

    The map is exact on the kept subspace: in the standardised space
    ``decode∘encode`` is the orthogonal projection ``x ↦ m + VᵀV(x - m)``
    (``V`` = components, ``m`` = mean); with all components it is the identity.

    Args:
        n_components: C, the number of kept components.
        whiten: divide each component by ``sqrt(eigenvalue)`` (unit variance).
        feature_dim: D; if ``None`` it is taken from the first :meth:`partial_fit`
            batch (and written into ``config``).

    Example:
        >>> import torch
        >>> from featureflow.compressors import PCA
        >>> x = torch.randn(64, 2, 2, 6)
        >>> pca = PCA(6).fit([x[:32], x[32:]])
        >>> round(float(pca.explained_variance_ratio.sum()), 4)
        1.0
        >>> bool(torch.allclose(pca.decode(pca.encode(x)), x, atol=1e-4))
        True
    """

    mean: Tensor
    components: Tensor
    explained_variance: Tensor
    explained_variance_ratio: Tensor

    @record_config(whiten=bool)
    def __init__(self, n_components: int, whiten: bool = False, feature_dim: int | None = None) -> None:
        if not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"PCA: n_components must be a positive int, got {n_components!r}")
        if feature_dim is not None and n_components > feature_dim:
            raise ValueError(f"PCA: n_components ({n_components}) must be <= feature_dim ({feature_dim})")
        super().__init__(feature_dim if feature_dim is not None else n_components, n_components)
        self.n_components = n_components
        self.whiten = bool(whiten)
        self._materialized = feature_dim is not None
        self._allocate(self.feature_dim)
        self._reset_accumulators()
        self._fitted = False

    def _allocate(self, d: int) -> None:
        c = self.n_components
        self.feature_dim = d
        self.feature_norm = ChannelStandardizer(d)
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("components", torch.eye(c, d))
        self.register_buffer("explained_variance", torch.ones(c))
        self.register_buffer("explained_variance_ratio", torch.zeros(c))

    def _reset_accumulators(self) -> None:
        self._count = 0
        self._acc_mean: Tensor | None = None
        self._acc_scatter: Tensor | None = None

    def _materialize(self, d: int) -> None:
        if self._materialized:
            if d != self.feature_dim:
                raise ValueError(f"PCA: expected batches with {self.feature_dim} channels (D), got {d}")
            return
        if self.n_components > d:
            raise ValueError(f"PCA: n_components ({self.n_components}) must be <= feature dim D ({d})")
        self._allocate(d)
        self.config["feature_dim"] = d
        self._materialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self._materialized and prefix + "mean" in state_dict:
            self._materialize(int(state_dict[prefix + "mean"].shape[0]))
        if prefix + "components" in state_dict:
            self._fitted = True  # fitted weights are loaded
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def check_ready(self) -> None:
        """Raise ``RuntimeError`` unless the PCA was fitted (or fitted weights were loaded).

        Example:
            >>> import torch
            >>> PCA(2).encode(torch.randn(1, 2, 2, 4))
            Traceback (most recent call last):
            ...
            RuntimeError: PCA is not fitted; call fit(features) (or partial_fit(...) then finalize()) first, or load fitted weights
        """
        if not self._fitted:
            raise RuntimeError("PCA is not fitted; call fit(features) (or partial_fit(...) then finalize()) first, "
                               "or load fitted weights")

    def feature_stats_locked(self) -> bool:
        return bool(self.explained_variance_ratio.sum() > 0)

    # ----------------------------------------------------------------- fitting
    @typechecked
    def partial_fit(self, features: Float[Tensor, "*batch D"]) -> "PCA":
        """Accumulate one batch of features (any leading shape, channels last)."""
        self._materialize(int(features.shape[-1]))
        check_finite("features", features)
        x = features.detach().reshape(-1, self.feature_dim).to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return self
        bmean = x.mean(0)
        xc = x - bmean
        bscatter = xc.T @ xc
        if self._acc_mean is None or self._acc_scatter is None:
            self._count, self._acc_mean, self._acc_scatter = n, bmean, bscatter
            return self
        total = self._count + n
        delta = bmean - self._acc_mean
        self._acc_scatter = self._acc_scatter + bscatter + torch.outer(delta, delta) * (self._count * n / total)
        self._acc_mean = self._acc_mean + delta * (n / total)
        self._count = total
        return self

    def finalize(self, *, fit_feature_stats: bool = True, fit_latent_stats: bool = True) -> "PCA":
        """Eigen-decompose the accumulated covariance and set the buffers.

        Args:
            fit_feature_stats: set the feature statistics from the accumulated data;
                if False the current ones (e.g. set by the user) are used, and the PCA
                is that of the data standardised with them.
            fit_latent_stats: set the latent statistics to the latents' exact training
                mean (0) and std (``sqrt(eigenvalue)``, 1 when whitened).
        """
        if self._acc_mean is None or self._acc_scatter is None or self._count < 2:
            raise ValueError(f"PCA.finalize: need at least 2 feature vectors from partial_fit, have {self._count}")
        cov = self._acc_scatter / (self._count - 1)
        mean = self._acc_mean
        if fit_feature_stats:
            std = cov.diagonal().sqrt().clamp_min(self.feature_norm.min_std)
            self.feature_norm.set_stats(mean.float(), std.float())
        mu = self.feature_norm.mean.double()
        sd = self.feature_norm.std.double()
        cov_n = cov / torch.outer(sd, sd)
        evals, evecs = torch.linalg.eigh(cov_n)
        order = torch.argsort(evals, descending=True)[: self.n_components]
        evals = evals[order].clamp_min(0.0)
        vecs = evecs[:, order].T  # (C, D)
        # deterministic signs: the largest-magnitude entry of each component is positive
        pivot = vecs.abs().argmax(1, keepdim=True)
        vecs = vecs * torch.sign(vecs.gather(1, pivot))
        total = cov_n.diagonal().sum().clamp_min(torch.finfo(torch.float64).tiny)
        with torch.no_grad():
            self.mean.copy_(((mean - mu) / sd).float())
            self.components.copy_(vecs.float())
            self.explained_variance.copy_(evals.float())
            self.explained_variance_ratio.copy_((evals / total).float())
        if fit_latent_stats:
            scale = torch.ones_like(self.explained_variance) if self.whiten else self._scale()
            self.latent_norm.set_stats(torch.zeros(self.n_components), scale)
        self._reset_accumulators()
        self._fitted = True
        return self

    def fit(self, batches: Iterable[Tensor] | Tensor, *, progress: bool = False, **finalize_kwargs: Any) -> "PCA":
        """``partial_fit`` every batch (a tensor is one batch; dict items use their
        ``"features"`` tensor), then :meth:`finalize` with ``finalize_kwargs``."""
        if isinstance(batches, Tensor):
            batches = [batches]
        for batch in progress_bar(batches, progress=progress, desc="PCA fit"):
            self.partial_fit(as_feature_tensor(batch))
        return self.finalize(**finalize_kwargs)

    def report(self) -> dict[str, Any]:
        """Explained-variance summary: per-component and cumulative ratios.

        Example:
            >>> import torch
            >>> pca = PCA(2).fit(torch.randn(50, 4))
            >>> sorted(pca.report())
            ['cumulative_ratio', 'explained_variance', 'explained_variance_ratio', 'n_components', 'total_ratio']
        """
        ratio = self.explained_variance_ratio.double()
        return {
            "n_components": self.n_components,
            "explained_variance": self.explained_variance.tolist(),
            "explained_variance_ratio": ratio.tolist(),
            "cumulative_ratio": ratio.cumsum(0).tolist(),
            "total_ratio": float(ratio.sum()),
        }

    # ----------------------------------------------------------------- maps
    def _scale(self) -> Tensor:
        ev = self.explained_variance
        floor = torch.finfo(ev.dtype).eps * ev.max().clamp_min(torch.finfo(ev.dtype).tiny)
        return ev.clamp_min(floor).sqrt()

    def _core_encode(self, x: Tensor) -> Tensor:
        z = (x - self.mean) @ self.components.T
        return z / self._scale() if self.whiten else z

    def _core_decode(self, z: Tensor) -> Tensor:
        if self.whiten:
            z = z * self._scale()
        return z @ self.components + self.mean
