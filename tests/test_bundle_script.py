"""examples/train_toyworld_bundle.py end to end on a tiny config: the pipeline, the two
forecasters as subprocesses, the MeanFlow fine-tune beside the probe heads, the model with
its "meanflow" baseline, the shipped logs and loss curves; a second run reuses every stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.mark.slow
def test_bundle_script_trains_and_ships_the_meanflow_baseline(tmp_path, monkeypatch):
    import train_toyworld_bundle as bundle
    from test_pipeline import tiny_config

    from featureflow.utils.component_io import load_component
    from featureflow.world import WorldModel

    cfg = tiny_config(tmp_path)
    cfg["store_bf16"] = True
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(cfg))
    argv = ["train_toyworld_bundle.py", "--config", str(path), "--no-install", "--no-progress",
            "--meanflow-minutes", "0.02"]
    monkeypatch.setattr(sys, "argv", argv)
    bundle.main()
    work, out = tmp_path / "work", tmp_path / "model"
    wm = WorldModel.from_pretrained(out)
    assert sorted(wm.baselines) == ["meanflow", "regression"]
    mf = wm.baselines["meanflow"]
    assert type(mf).__name__ == "MeanFlowForecaster" and mf.config["velocity_target"] == "teacher"
    # the shipped weights are the last optimizer step's ("raw"), stored in bf16 like the rest
    raw = load_component(work / "meanflow" / "forecaster_raw", "forecaster")
    for (name, a), b in zip(mf.state_dict().items(), raw.state_dict().values()):
        torch.testing.assert_close(a.float(), b.bfloat16().float(), msg=name)
    frames = torch.rand(1, 2, 3, 16, 16)
    fc = wm.forecast(frames, 2, 2, baseline="meanflow", steps=1, generator=torch.Generator().manual_seed(0))
    assert fc.latents.shape[:3] == (1, 2, 2) and torch.isfinite(fc.latents).all()
    logs = {p.name for p in (out / "logs").iterdir()}
    assert {"meanflow.jsonl", "flow.jsonl", "regression.jsonl", "probe_segmentation.jsonl",
            "meanflow_noise_scale.json"} <= logs
    # the shipped noise scale is the calibration's choice, the best-scoring candidate
    report = json.loads((out / "logs" / "meanflow_noise_scale.json").read_text())
    scores = {float(k): v for k, v in report["scores"].items()}
    assert mf.noise_scale == report["noise_scale"] == min(scores, key=scores.get)
    assert len(report["teacher_spread"]) == 3 and all(v > 0 for v in report["teacher_spread"])
    assert (out / "training_curves.png").stat().st_size > 0
    # a finished MeanFlow run is reused, not trained again
    assert bundle.start_meanflow(work, 0.02, progress=False) is None
    before = (work / "meanflow" / "train_log.jsonl").read_text()
    bundle.main()
    assert (work / "meanflow" / "train_log.jsonl").read_text() == before
    assert sorted(WorldModel.from_pretrained(out).baselines) == ["meanflow", "regression"]
