"""`ModuleEncoder`: any module or callable that maps images to patch features."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from featureflow.encoders.base import IMAGENET_MEAN, IMAGENET_STD, check_encoder_output, grid_size, prepare_images
from featureflow.typing import FrameFeatures, Images, ImagesU8, ShapeError, typechecked
from featureflow.utils import Configurable, register_component

__all__ = ["ModuleEncoder", "resolve_factory"]

_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def resolve_factory(reference: str) -> Callable[..., Any]:
    """Import the callable named by ``"package.module:attribute"`` (attribute may be dotted).

    Only an importable module path and attribute names are accepted: nothing is
    evaluated or unpickled. Importing runs the module's code, as any ``import`` does.

    Example:
        >>> resolve_factory("torch.nn:Conv2d").__name__
        'Conv2d'
    """
    if not isinstance(reference, str) or not _FACTORY.match(reference):
        raise ValueError(
            f"a factory reference must look like 'package.module:function' (an importable module, a colon, "
            f"then an attribute name, dots allowed); got {reference!r:.120}"
        )
    module_name, attr = reference.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"cannot import the module {module_name!r} of the factory {reference!r}: {err}. "
                          "Is the package that defines it installed?") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"the factory {reference!r} does not exist: {type(obj).__name__} "
                             f"{getattr(obj, '__name__', '?')!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"the factory {reference!r} is a {type(obj).__name__}, not a callable")
    return obj


def _stats(normalize: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if normalize is None:
        return None
    if normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        mean, std = normalize
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    except (TypeError, ValueError):
        raise ValueError(
            f"normalize must be None, 'imagenet' or (mean, std) with 3 values each; got {normalize!r:.80}"
        ) from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"normalize=(mean, std) needs 3 values each and positive std; got {normalize!r:.80}")
    return mean, std


@register_component
class ModuleEncoder(nn.Module, Configurable):
    """Wrap a network (SigLIP, CLIP, a timm ViT, your own) as a featureflow `Encoder`.

    The wrapped module receives images ``(b, 3, H', W')`` sized by the ``resize``
    policy (see `featureflow.encoders.base`), in [0, 1] or normalised with
    ``normalize``, and must return patch features ``(b, H'/p, W'/p, D)``
    (``channels_last=True``) or ``(b, D, H'/p, W'/p)`` (``channels_last=False``). The
    output is checked: a wrong grid or channel count raises `ShapeError` naming both.

    An ``nn.Module`` is registered as a submodule (its weights are in this module's
    ``state_dict()``, and ``.to(device)`` moves it); a plain callable is just called.

    Saving: a ``ModuleEncoder`` built with :meth:`from_factory` records the factory's
    importable reference (``"package.module:function"``) and its JSON keyword
    arguments in ``config``, its weights travel in ``state_dict()``, and a saved
    ``WorldModel`` rebuilds it by importing the factory (never by unpickling). One
    built from a module object cannot be saved (``describe`` says so): use
    :meth:`from_factory`, or write a small ``Configurable`` class (see the guide
    "Build your own world model").

    Args:
        module: ``nn.Module`` or callable images → features.
        patch_size: pixels per patch side of the wrapped network.
        feature_dim: ``D`` it returns.
        channels_last: whether it returns ``(b, h, w, D)`` (True) or ``(b, D, h, w)``.
        normalize: ``None`` (pass [0, 1] pixels), ``"imagenet"`` or ``(mean, std)``.
        resize: sizing policy ``"resize"`` (default), ``"crop"`` or ``"error"``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> enc = ModuleEncoder(nn.Conv2d(3, 6, 4, stride=4), patch_size=4, feature_dim=6,
        ...                     channels_last=False, normalize="imagenet")
        >>> enc(torch.rand(2, 3, 16, 12)).shape
        torch.Size([2, 4, 3, 6])
    """

    def __init__(
        self,
        module: nn.Module | Callable[[Tensor], Tensor],
        patch_size: int,
        feature_dim: int,
        channels_last: bool = True,
        normalize: str | Sequence[Sequence[float]] | None = None,
        resize: str = "resize",
    ) -> None:
        super().__init__()
        if not callable(module):
            raise TypeError(f"ModuleEncoder expects an nn.Module or a callable; got {type(module).__name__}")
        if int(patch_size) != patch_size or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        if int(feature_dim) != feature_dim or feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive integer, got {feature_dim!r}")
        grid_size(patch_size, patch_size, int(patch_size), resize)  # validates the policy
        self.module = module  # nn.Module -> submodule; callable -> plain attribute
        self.patch_size = int(patch_size)
        self.feature_dim = int(feature_dim)
        self.channels_last = bool(channels_last)
        self.resize = resize
        stats = _stats(normalize)
        self.normalize = None if stats is None else ("imagenet" if normalize == "imagenet" else stats)
        self.config: dict[str, Any] | None = None  # set by from_factory: the module can then be rebuilt
        if stats is None:
            self.register_buffer("mean", None, persistent=False)
            self.register_buffer("std", None, persistent=False)
        else:
            self.register_buffer("mean", torch.tensor(stats[0]).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(stats[1]).view(1, 3, 1, 1), persistent=False)

    @typechecked
    def forward(self, images: Images | ImagesU8) -> FrameFeatures:
        """Images ``(b, 3, H, W)`` in [0, 1] (or uint8) → features ``(b, h, w, D)``."""
        x = prepare_images(images, self.patch_size, self.resize)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        if self.mean is not None:
            x = (x - self.mean.to(x)) / self.std.to(x)
        out = self.module(x)
        name = f"ModuleEncoder({type(self.module).__name__})"
        if not self.channels_last:
            if not isinstance(out, Tensor) or out.ndim != 4:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ShapeError(
                    f"{name} returned {shape}; expected (b, D, h, w) = "
                    f"{(x.shape[0], self.feature_dim, *grid)} with channels_last=False"
                )
            out = out.permute(0, 2, 3, 1)
        return check_encoder_output(out, x.shape[0], grid, self.feature_dim, name)

    @classmethod
    @typechecked
    def from_factory(
        cls,
        factory: str,
        kwargs: dict[str, Any] | None = None,
        *,
        patch_size: int,
        feature_dim: int,
        channels_last: bool = True,
        normalize: str | Sequence[Sequence[float | int]] | None = None,
        resize: str = "resize",
    ) -> "ModuleEncoder":
        """Build the wrapped network by calling ``factory(**kwargs)``, so that it can be saved.

        Args:
            factory: ``"package.module:function"``, a callable in an importable module
                that returns the network (an ``nn.Module`` class works too).
            kwargs: its keyword arguments; must be JSON-serialisable (they are saved).
            patch_size: pixels per patch side of the network.
            feature_dim: ``D`` it returns.
            channels_last: whether it returns ``(b, h, w, D)`` (True) or ``(b, D, h, w)``.
            normalize: ``None``, ``"imagenet"`` or ``(mean, std)``.
            resize: sizing policy ``"resize"``, ``"crop"`` or ``"error"``.

        Example:
            >>> import torch
            >>> enc = ModuleEncoder.from_factory(
            ...     "torch.nn:Conv2d", {"in_channels": 3, "out_channels": 6, "kernel_size": 4, "stride": 4},
            ...     patch_size=4, feature_dim=6, channels_last=False)
            >>> enc.config["factory"], enc(torch.rand(1, 3, 8, 8)).shape
            ('torch.nn:Conv2d', torch.Size([1, 2, 2, 6]))
        """
        kwargs = dict(kwargs or {})
        try:
            json.dumps(kwargs)
        except (TypeError, ValueError) as err:
            raise TypeError(f"the factory's kwargs are saved as JSON and must be JSON-serialisable: {err}") from None
        module = resolve_factory(factory)(**kwargs)
        enc = cls(module, patch_size, feature_dim, channels_last=channels_last, normalize=normalize, resize=resize)
        stats = _stats(normalize)
        enc.config = {
            "factory": factory,
            "kwargs": kwargs,
            "patch_size": enc.patch_size,
            "feature_dim": enc.feature_dim,
            "channels_last": enc.channels_last,
            "normalize": None if stats is None else ("imagenet" if normalize == "imagenet" else [list(v) for v in stats]),
            "resize": resize,
        }
        return enc

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModuleEncoder":
        """Rebuild an encoder saved after :meth:`from_factory` (imports the factory)."""
        if "factory" not in config:
            raise ValueError(f"a saved ModuleEncoder config needs a 'factory' reference; got keys {sorted(config)}")
        return cls.from_factory(**config)

    def describe(self) -> dict[str, Any]:
        """The saved spec; only encoders built with :meth:`from_factory` have one."""
        if self.config is None:
            raise TypeError(
                f"this ModuleEncoder wraps a {type(self.module).__name__} object, which cannot be saved: nothing "
                "records how to rebuild it. Build it with ModuleEncoder.from_factory('package.module:function', "
                "kwargs, patch_size=..., feature_dim=...) (a factory in an importable module; its weights are "
                "saved), or write a small Configurable encoder class (docs/custom_world_model.md)"
            )
        return super().describe()

    def extra_repr(self) -> str:
        return (
            f"patch_size={self.patch_size}, feature_dim={self.feature_dim}, "
            f"channels_last={self.channels_last}, resize={self.resize!r}"
        )
