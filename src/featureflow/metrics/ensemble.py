"""Metrics over an ensemble of K sampled futures: mean-of-K, best-of-K, energy score,
per-pixel CRPS, energy distance and coverage.

Sample sets are ``(b, k, *rest)`` with ``k`` samples per example; a target is
``(b, *rest)``. Distances are Euclidean over the flattened ``rest`` dimensions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from featureflow.typing import Float, Shaped, Tensor, check_finite, typechecked

__all__ = ["sample_scores", "mean_of_k", "best_of_k", "energy_score", "crps", "energy_distance", "coverage"]

Reduction = Literal["mean", "none"]


def _reduce(values: Tensor, reduction: Reduction) -> float | Tensor:
    return float(values.mean()) if reduction == "mean" else values


def _pairwise(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances between rows: a (b, n, d), b (b, m, d) -> (b, n, m), float64."""
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")


def _flat(x: Tensor, lead: int, name: str) -> Tensor:
    check_finite(name, x)
    return x.reshape(*x.shape[:lead], -1)


@typechecked
def sample_scores(
    metric: Callable[[Tensor, Tensor], Any],
    samples: Shaped[Tensor, "b k *rest"],
    target: Shaped[Tensor, "b *rest"],
) -> Float[Tensor, "b k"]:
    """``scores[i, j] = metric(samples[i, j], target[i])`` as a float64 tensor.

    ``metric`` is any per-example metric returning a float or a 0-d tensor (e.g.
    ``featureflow.metrics.abs_rel``, or ``lambda p, t: miou(p, t, 5)``).

    Example:
        >>> import torch
        >>> mae = lambda p, t: float((p - t).abs().mean())
        >>> sample_scores(mae, torch.tensor([[[1.0], [3.0]]]), torch.tensor([[2.0]])).tolist()
        [[1.0, 1.0]]
    """
    b, k = samples.shape[:2]
    out = torch.empty(b, k, dtype=torch.float64)
    for i in range(b):
        for j in range(k):
            out[i, j] = float(metric(samples[i, j], target[i]))
    return out


@typechecked
def mean_of_k(scores: Float[Tensor, "b k"], reduction: Reduction = "mean") -> float | Float[Tensor, "b"]:
    """Mean over the K samples of a per-sample score (then over examples for ``"mean"``).

    Example:
        >>> import torch
        >>> mean_of_k(torch.tensor([[1.0, 3.0], [0.0, 2.0]]))
        1.5
    """
    return _reduce(scores.mean(1), reduction)


@typechecked
def best_of_k(
    scores: Float[Tensor, "b k"], *, higher_is_better: bool, reduction: Reduction = "mean"
) -> float | Float[Tensor, "b"]:
    """Oracle score: the best of the K samples per example (max if ``higher_is_better``
    else min), then averaged over examples for ``"mean"``.

    Example:
        >>> import torch
        >>> s = torch.tensor([[1.0, 3.0], [0.0, 2.0]])
        >>> best_of_k(s, higher_is_better=False), best_of_k(s, higher_is_better=True)
        (0.5, 2.5)
    """
    best = scores.max(1).values if higher_is_better else scores.min(1).values
    return _reduce(best, reduction)


@typechecked
def energy_score(
    samples: Float[Tensor, "b k *rest"], target: Float[Tensor, "b *rest"], reduction: Reduction = "mean"
) -> float | Float[Tensor, "b"]:
    """Energy score ``E‖X − y‖ − ½ E‖X − X′‖`` (lower is better; a proper scoring rule).

    The first term averages over the K samples; the second over the ``K(K − 1)``
    ordered pairs of distinct samples (the unbiased estimator), so ``K ≥ 2``.

    Example:
        >>> import torch
        >>> x = torch.tensor([[[0.0], [2.0]]])  # b=1, k=2 samples of a 1-d quantity
        >>> energy_score(x, torch.tensor([[1.0]]))  # mean |x - y| = 1, E|X - X'| = 2
        0.0
    """
    b, k = samples.shape[:2]
    if k < 2:
        raise ValueError(f"energy_score needs at least 2 samples per example (k >= 2), got k={k}")
    x = _flat(samples, 2, "samples")
    y = _flat(target, 1, "target").unsqueeze(1)
    first = _pairwise(x, y).mean(dim=(1, 2))
    second = _pairwise(x, x).sum(dim=(1, 2)) / (k * (k - 1))
    return _reduce(first - 0.5 * second, reduction)


@typechecked
def crps(
    samples: Float[Tensor, "b k *rest"],
    target: Float[Tensor, "b *rest"],
    *,
    fair: bool = False,
    valid: Shaped[Tensor, "b *rest"] | None = None,
    reduction: Literal["mean", "none", "pixel"] = "mean",
) -> float | Tensor:
    """Continuous ranked probability score of an ensemble, per pixel (lower is better).

    For each element (e.g. a depth pixel) with ensemble members ``x_1..x_K`` and truth
    ``y``: ``CRPS = E|X − y| − ½ E|X − X′|``, with ``E|X − y| = (1/K) Σ_i |x_i − y|`` and
    ``E|X − X′| = (1/K²) Σ_i Σ_j |x_i − x_j|`` (the standard ensemble estimator; a
    single member gives the absolute error), or with ``fair=True`` the unbiased
    ``1/(K(K − 1)) Σ_{i≠j}`` (the "fair" CRPS, which does not reward small ensembles
    for being under-dispersed; ``K ≥ 2``). It is the 1-d energy score, in the data's unit.

    Args:
        samples: ``(b, k, *rest)`` ensemble members (e.g. depth ``(b, k, H, W)``).
        target: ``(b, *rest)`` the truth.
        fair: use the unbiased (fair) estimator of ``E|X − X′|``.
        valid: optional boolean mask ``(b, *rest)`` of the elements to score (e.g.
            ``target > 0`` for depth); the target may be non-finite outside it.
        reduction: ``"mean"`` → float over all valid elements of the batch;
            ``"none"`` → ``(b,)`` mean over each example's valid elements;
            ``"pixel"`` → ``(b, *rest)`` per element (NaN where not valid).

    Example:
        >>> import torch
        >>> x = torch.tensor([[[0.0], [2.0]]])  # b=1, k=2 members of one pixel
        >>> crps(x, torch.tensor([[1.0]])), crps(x, torch.tensor([[1.0]]), fair=True)  # 1 − ½·1, 1 − ½·2
        (0.5, 0.0)
    """
    b, k = samples.shape[:2]
    if fair and k < 2:
        raise ValueError(f"the fair CRPS needs at least 2 samples per example (k >= 2), got k={k}")
    if valid is not None:
        if valid.shape != target.shape:
            raise ValueError(f"valid: expected a mask of the target's shape {tuple(target.shape)}, got {tuple(valid.shape)}")
        valid = valid.bool()
        target = torch.where(valid, target, torch.zeros_like(target))  # masked-out truth may be inf (e.g. sky)
    x = check_finite("samples", samples).double()
    y = check_finite("target", target).double().unsqueeze(1)
    first = (x - y).abs().mean(1)
    # Σ_i Σ_j |x_i − x_j| = 2 Σ_i (2i − K + 1) x_(i) over the members sorted ascending (i from 0)
    ranks = torch.arange(k, dtype=x.dtype, device=x.device).view(1, k, *([1] * (x.dim() - 2)))
    pair_sum = 2.0 * ((2.0 * ranks - k + 1.0) * x.sort(dim=1).values).sum(1)
    score = first - 0.5 * pair_sum / (k * (k - 1) if fair else k * k)
    if valid is not None:
        score = torch.where(valid, score, torch.full_like(score, float("nan")))
    if reduction == "pixel":
        return score
    flat = score.reshape(b, -1)
    keep = ~flat.isnan()
    if reduction == "none":
        return torch.where(keep, flat, 0.0).sum(1) / keep.sum(1)
    if not bool(keep.any()):
        raise ValueError("crps is undefined: no valid elements (the valid mask is all False)")
    return float(flat[keep].mean())


@typechecked
def energy_distance(
    x: Float[Tensor, "b n *rest"], y: Float[Tensor, "b m *rest"], reduction: Reduction = "mean"
) -> float | Float[Tensor, "b"]:
    """Energy distance between two sample sets per example:
    ``2 E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖``, within-set terms unbiased (distinct pairs).

    Near 0 when both sets come from the same distribution; 0 in expectation exactly then.

    Example:
        >>> import torch
        >>> x = torch.tensor([[[0.0], [2.0]]])
        >>> y = torch.tensor([[[4.0], [6.0]]])
        >>> energy_distance(x, y)  # 2·4 − 2 − 2
        4.0
    """
    n, m = x.shape[1], y.shape[1]
    if n < 2 or m < 2:
        raise ValueError(f"energy_distance needs at least 2 samples in each set, got n={n}, m={m}")
    a, c = _flat(x, 2, "x"), _flat(y, 2, "y")
    cross = _pairwise(a, c).mean(dim=(1, 2))
    within_x = _pairwise(a, a).sum(dim=(1, 2)) / (n * (n - 1))
    within_y = _pairwise(c, c).sum(dim=(1, 2)) / (m * (m - 1))
    return _reduce(2 * cross - within_x - within_y, reduction)


@typechecked
def coverage(
    samples: Float[Tensor, "b k *rest"],
    futures: Float[Tensor, "b m *rest"],
    radius: float,
    distance: Literal["l2", "rms"] = "rms",
    reduction: Reduction = "mean",
) -> float | Float[Tensor, "b"]:
    """Fraction of the true futures that some sample lies within ``radius`` of.

    ``distance="rms"`` uses the root-mean-square difference (L2 / √numel, independent of
    the size of ``rest``); ``"l2"`` the plain Euclidean distance. A future counts as
    covered when its nearest sample is at distance ``<= radius``.

    Args:
        samples: ``(b, k, *rest)`` sampled futures.
        futures: ``(b, m, *rest)`` true futures (e.g. ToyWorld ``branch`` outcomes).
        radius: the covering radius.
        distance: ``"rms"`` or ``"l2"``.
        reduction: ``"mean"`` → float over all b·m futures; ``"none"`` → per example.

    Example:
        >>> import torch
        >>> s = torch.tensor([[[0.0], [10.0]]])
        >>> f = torch.tensor([[[0.5], [5.0], [9.0]]])
        >>> coverage(s, f, radius=1.0)
        0.6666666666666666
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    a, c = _flat(samples, 2, "samples"), _flat(futures, 2, "futures")
    d = _pairwise(c, a)  # (b, m, k)
    if distance == "rms":
        d = d / max(a.shape[-1], 1) ** 0.5
    covered = (d.min(dim=2).values <= radius).double()
    return _reduce(covered.mean(1), reduction)
