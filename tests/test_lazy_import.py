"""``import featureflow`` is lazy, and saved components are found without importing them first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import featureflow

TOYWORLD = Path(featureflow.__file__).parent / "assets" / "models" / "toyworld"

# Run in a fresh interpreter: this test process has imported half the package already.
_BUILD_EVERY_KIND = r"""
import json, sys
import featureflow
before = sorted(m for m in sys.modules if m.startswith("featureflow"))
from featureflow.utils import BUILTIN_COMPONENTS, build_component
config = json.loads(open(sys.argv[1]).read())
specs = {"components/" + k: v for k, v in config["components"].items()}
specs.update({"probes/" + k: v for k, v in config["probes"].items()})
specs.update({"baselines/" + k: v for k, v in config["baselines"].items()})
built = {where: type(build_component(spec)).__name__ for where, spec in specs.items()}
# a type missing from the table is still found by importing the component subpackages
del BUILTIN_COMPONENTS["Identity"]
built["fallback"] = type(build_component({"type": "Identity", "config": {"feature_dim": 4}})).__name__
rooms = sorted({".".join(m.split(".")[:2]) for m in sys.modules if m.startswith("featureflow")})
print(json.dumps({"before": before, "torch": "torch" in sys.modules and "torch" not in before, "built": built, "rooms": rooms}))
"""

_LOAD_TOYWORLD = r"""
import json, sys
from featureflow.world import WorldModel
wm = WorldModel.from_pretrained("toyworld")
print(json.dumps({
    "parts": [type(wm.encoder).__name__, type(wm.compressor).__name__, type(wm.forecaster).__name__],
    "probes": sorted(wm.probes),
    "rooms": sorted({".".join(m.split(".")[:2]) for m in sys.modules if m.startswith("featureflow")}),
}))
"""


def _fresh(code: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_featureflow_is_lazy_and_builds_every_saved_kind():
    got = _fresh(_BUILD_EVERY_KIND, str(TOYWORLD / "config.json"))
    # ``import featureflow`` imports the version only (and so not torch)
    assert got["before"] == ["featureflow", "featureflow.version"]
    assert got["built"] == {
        "components/encoder": "ToyEncoder",
        "components/compressor": "FeatureVAE",
        "components/forecaster": "FlowForecaster",
        "probes/depth": "DepthHead",
        "probes/normals": "NormalsHead",
        "probes/rgb": "RGBHead",
        "probes/segmentation": "SegmentationHead",
        "baselines/regression": "RegressionForecaster",
        "baselines/meanflow": "MeanFlowForecaster",
        "fallback": "Identity",
    }
    for heavy in ("featureflow.rl", "featureflow.compat", "featureflow.training", "featureflow.world"):
        assert heavy not in got["rooms"], got["rooms"]


def test_saved_model_loads_after_importing_only_world():
    got = _fresh(_LOAD_TOYWORLD)
    assert got["parts"] == ["ToyEncoder", "FeatureVAE", "FlowForecaster"]
    assert got["probes"] == ["depth", "normals", "rgb", "segmentation"]
    for heavy in ("featureflow.rl", "featureflow.compat", "featureflow.training"):
        assert heavy not in got["rooms"], got["rooms"]


def test_top_level_names_resolve_lazily_and_are_listed():
    import featureflow.world

    assert featureflow.WorldModel is featureflow.world.WorldModel
    assert featureflow.ShapeError.__module__ == "featureflow.typing"
    assert featureflow.forecast.__name__ == "featureflow.forecast"
    assert set(featureflow.__all__) <= set(dir(featureflow))
    assert "WorldModel" in featureflow.__all__ and "rl" not in featureflow.__all__


def test_unknown_top_level_name_says_what_exists():
    import pytest

    with pytest.raises(AttributeError, match="has no attribute 'WorldModle'; expected one of"):
        featureflow.WorldModle  # noqa: B018
