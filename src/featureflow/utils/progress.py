"""Progress bars (tqdm), switched off with ``progress=False``."""

from __future__ import annotations

from typing import Any, Iterable

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable[Any] | None = None, *, progress: bool = True, **kwargs: Any) -> Any:
    """A ``tqdm`` bar, or a silent one when ``progress`` is False.

    Example:
        >>> sum(progress_bar(range(3), progress=False))
        3
    """
    return tqdm(iterable, disable=not progress, dynamic_ncols=True, **kwargs)
