"""Append-only JSONL metric logs (one JSON object per line, flushed at once)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["JSONLLogger"]


class JSONLLogger:
    """Write one JSON record per call to ``path`` (``None`` = do nothing).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
        >>> log = JSONLLogger(p)
        >>> log.log(step=1, loss=0.5)
        >>> log.close()
        >>> '"loss": 0.5' in p.read_text()
        True
    """

    def __init__(self, path: str | os.PathLike | None, *, append: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a" if append else "w", encoding="utf-8")

    def log(self, **record: Any) -> None:
        if self._fh is None:
            return
        record.setdefault("time", round(time.time(), 3))
        self._fh.write(json.dumps(record, default=float) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "JSONLLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
