"""Shared by the bundle-training examples: install a saved model into the package."""

from __future__ import annotations

import shutil
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "src" / "featureflow" / "assets" / "models"


def install_bundle(model_dir: str | Path, name: str) -> Path:
    """Copy ``model_dir`` to ``src/featureflow/assets/models/<name>/`` (replacing it as a
    whole: the copy is made beside it first), so ``WorldModel.from_pretrained(name)``
    finds it offline after ``pip install``. Prints and returns the installed directory."""
    target = ASSETS / name
    tmp = target.with_name(name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    size = sum(p.stat().st_size for p in target.iterdir()) / 1e6
    print(f"installed into {target} ({size:.1f} MB)")
    return target
