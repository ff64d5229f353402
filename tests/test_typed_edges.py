"""Typed edges: @typechecked sits innermost (the rule in featureflow.typing), and the public
entry points of world/, solvers/ and forecast/ check their tensors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import featureflow
from featureflow.solvers import Euler, time_grid
from featureflow.typing import ShapeError
from featureflow.world.modalities import colour

ROOT = Path(featureflow.__file__).parent
#: Known places, in files another change owns, where @typechecked still sits above
#: another decorator; each must exist (remove it here once fixed).
KNOWN: set[tuple[str, str]] = set()


def _misordered(root: Path = ROOT) -> set[tuple[str, str]]:
    """(file, function) where @typechecked is not the innermost decorator."""
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.decorator_list:
                names = [ast.unparse(d) for d in node.decorator_list]
                if "typechecked" in names and names[-1] != "typechecked":
                    found.add((str(path.relative_to(root)), node.name))
    return found


def test_typechecked_is_the_innermost_decorator():
    found = _misordered()
    assert found <= KNOWN, f"@typechecked must sit directly above def: {sorted(found - KNOWN)}"


def test_the_order_check_sees_a_wrong_order(tmp_path):
    (tmp_path / "m.py").write_text("@typechecked\n@torch.no_grad()\ndef f(x):\n    return x\n")
    assert _misordered(tmp_path) == {("m.py", "f")}


def test_public_edges_name_the_argument_and_shape():
    from featureflow.world import WorldModel

    with pytest.raises(ShapeError, match=r"features: expected float tensor of shape \(b, h, w, D\); got float32 tensor of shape \(2, 3\)"):
        WorldModel.decode_features(None, torch.zeros(2, 3), "depth", (4, 4))  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="x0"):
        Euler(2).integrate(lambda t, x: x, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ShapeError, match="grid"):
        time_grid(2, grid="abc")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match=r"the result: expected float tensor of shape \(\*batch, 3, H, W\)"):
        colour("rgb", torch.zeros(2, 4, 4)[0])  # an (H, W) map is not an RGB image
