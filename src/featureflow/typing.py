"""The shape vocabulary of featureflow and the one place that turns shape violations into readable errors.

Conventions (see DESIGN.md): images are channels-first, features and latents are
channels-last.

* ``b`` batch, ``t`` time (context frames), ``s`` samples, ``k`` forecast steps
* ``H x W`` pixels, ``h x w`` patch grid, ``D`` feature channels, ``C`` latent channels

Example:
    >>> import torch
    >>> from featureflow.typing import typechecked, Latents, FrameLatents
    >>> @typechecked
    ... def last(x: Latents) -> FrameLatents:
    ...     return x[:, -1]
    >>> last(torch.zeros(2, 3, 4, 4, 16)).shape
    torch.Size([2, 4, 4, 16])
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable, TypeVar

import torch
from beartype import beartype
from beartype.roar import BeartypeCallHintViolation
from jaxtyping import Bool, Float, Int, Shaped, TypeCheckError, UInt8, jaxtyped
from torch import Tensor

__all__ = [
    "ShapeError",
    "typechecked",
    "check_finite",
    "Frames",
    "FramesU8",
    "Images",
    "ImagesU8",
    "Features",
    "FrameFeatures",
    "Latents",
    "FrameLatents",
    "SampledLatents",
    "SampledFeatures",
    "Tensor",
    "Float",
    "Int",
    "Bool",
    "Shaped",
    "UInt8",
]

#: A clip batch: (b, t, 3, H, W) float in [0, 1].
Frames = Float[Tensor, "b t 3 H W"]
#: The same as uint8 in [0, 255] (accepted by user-facing entry points and converted).
FramesU8 = UInt8[Tensor, "b t 3 H W"]
#: A batch of single images: (b, 3, H, W) float in [0, 1].
Images = Float[Tensor, "b 3 H W"]
ImagesU8 = UInt8[Tensor, "b 3 H W"]
#: VFM patch features over time, channels-last: (b, t, h, w, D).
Features = Float[Tensor, "b t h w D"]
#: VFM patch features of single frames: (b, h, w, D).
FrameFeatures = Float[Tensor, "b h w D"]
#: Compressed latents over time, channels-last: (b, t, h, w, C).
Latents = Float[Tensor, "b t h w C"]
#: Compressed latents of single frames: (b, h, w, C).
FrameLatents = Float[Tensor, "b h w C"]
#: Sampled forecasts: (b, s, k, h, w, C) = batch, samples, forecast steps.
SampledLatents = Float[Tensor, "b s k h w C"]
SampledFeatures = Float[Tensor, "b s k h w D"]


class ShapeError(TypeError, ValueError):
    """An argument or return value has the wrong shape or dtype.

    Subclasses both ``TypeError`` (what beartype raises) and ``ValueError`` (what a
    user checking input values expects), so either ``except`` clause catches it.
    """


F = TypeVar("F", bound=Callable[..., Any])


def _expected(annotation: Any) -> str | None:
    dims = getattr(annotation, "dim_str", None)
    if dims is None:
        return None
    dtypes = getattr(annotation, "dtypes", None)
    kind = "any dtype"
    if not isinstance(dtypes, (list, tuple, set, frozenset)):
        dtypes = None  # jaxtyping's "any dtype" marker (Shaped[...]) is not a collection
    if dtypes:
        names = sorted(set(dtypes))
        if any(n.startswith("float") or n.startswith("bfloat") for n in names):
            kind = "float"
        elif any(n.startswith("int") for n in names) and not any(n.startswith("uint") for n in names):
            kind = "int"
        elif names == ["uint8"]:
            kind = "uint8"
        elif names == ["bool"]:
            kind = "bool"
    return f"{kind} tensor of shape ({', '.join(dims.split())})"


def _got(value: Any) -> str:
    if isinstance(value, Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        return f"{dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r:.60}"


def _annotation_of(hints: dict, name: str) -> Any:
    ann = hints.get(name)
    # Optional[X] / X | None: pick the array annotation inside.
    for arg in typing.get_args(ann) or ():
        if getattr(arg, "dim_str", None) is not None:
            return arg
    return ann


def _explain(fn: Callable, args: tuple, kwargs: dict, err: Exception, returned: Any = inspect.Parameter.empty) -> str:
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", "function"))
    lines = [f"{name}(): an argument or the result does not have the expected shape/type."]
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # pragma: no cover - unresolvable forward refs
        hints = getattr(fn, "__annotations__", {})
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        items = list(bound.arguments.items())
    except TypeError:
        items = []
    if returned is not inspect.Parameter.empty:
        items.append(("return", returned))
    elif "return" in str(err):  # the result failed: say what it should have been
        exp = _expected(_annotation_of(hints, "return"))
        if exp is not None:
            lines.append(f"  the result: expected {exp}")
    for arg_name, value in items:
        if arg_name == "self":
            continue
        ann = _annotation_of(hints, arg_name)
        exp = _expected(ann)
        if exp is None:
            continue
        lines.append(f"  {arg_name}: expected {exp}; got {_got(value)}")
    first = str(err).strip().splitlines()
    detail = next((ln.strip() for ln in first if ln.strip()), "")
    if detail:
        lines.append(f"  (checker: {detail[:300]})")
    lines.append(
        "  Dimension names: b batch, t time, s samples, k forecast steps, H W pixels, "
        "h w patch grid, D feature channels, C latent channels; a name must take the same "
        "size everywhere in one call."
    )
    return "\n".join(lines)


def typechecked(fn: F) -> F:
    """Check a function's jaxtyping annotations with beartype at call time.

    Any violation is re-raised as :class:`ShapeError` with a message naming each
    annotated argument, its expected shape and the shape it got.

    Put it *innermost* (directly above ``def``), below decorators such as
    ``@torch.no_grad()`` that hide the signature.

    Example:
        >>> import torch
        >>> from featureflow.typing import typechecked, Images, ShapeError
        >>> @typechecked
        ... def f(x: Images) -> Images:
        ...     return x
        >>> try:
        ...     f(torch.zeros(2, 4, 8, 8))
        ... except ShapeError as e:
        ...     print("expected" in str(e))
        True
    """
    checked = jaxtyped(typechecker=beartype)(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():  # dynamo cannot trace the checker; checks run in eager mode
            return fn(*args, **kwargs)
        try:
            return checked(*args, **kwargs)
        except (BeartypeCallHintViolation, TypeCheckError) as err:
            raise ShapeError(_explain(fn, args, kwargs, err)) from None

    wrapper.__wrapped_checked__ = checked  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def check_finite(name: str, x: Tensor) -> Tensor:
    """Raise ``ValueError`` naming ``name`` if ``x`` has NaN or Inf values.

    Example:
        >>> import torch
        >>> check_finite("features", torch.zeros(2)).shape
        torch.Size([2])
    """
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} non-finite values (NaN or Inf); expected finite numbers")
    return x
