"""examples/train_meanflow.py and benchmarks/few_step.py on a tiny world model (issue 15)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))


def test_train_meanflow_then_few_step_benchmark(tmp_path, make_tiny_world_model):
    import few_step
    import train_meanflow

    from featureflow.utils import save_safetensors
    from featureflow.utils.component_io import load_component

    wm = make_tiny_world_model()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a flow that is not identically zero, so the rows differ
        for p in wm.forecaster.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    wm.metadata = {"data": {"resolution": 16, "stride": 3, "warmup": 0}}
    wm.save_pretrained(tmp_path / "model")
    save_safetensors({"latents": torch.randn(8, 4, 2, 2, 32, generator=g)}, tmp_path / "latents.safetensors")
    argv = ["--model", str(tmp_path / "model"), "--latents", str(tmp_path / "latents.safetensors"),
            "--out", str(tmp_path / "mf"), "--steps", "3", "--batch-size", "2", "--ckpt-every", "2", "--no-progress"]
    assert train_meanflow.main(argv) == 0
    log = [json.loads(line) for line in (tmp_path / "mf" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(math.isfinite(r["mse"]) for r in log)
    assert json.loads((tmp_path / "mf" / "plan.json").read_text())["steps"] == 3
    mf = load_component(tmp_path / "mf" / "forecaster", "forecaster")
    assert type(mf).__name__ == "MeanFlowForecaster" and mf.config["velocity_target"] == "teacher"
    assert train_meanflow.main(argv + ["--resume"]) == 0  # finished run: resumes at its last step
    args = few_step.parser().parse_args(["--model", str(tmp_path / "model"), "--meanflow",
                                         f"ema={tmp_path / 'mf' / 'forecaster'}", "--quick", "--split", "val",
                                         "--out", str(tmp_path / "bench"), "--teacher-steps", "2", "1"])
    res = few_step.run(args)
    assert (tmp_path / "bench" / "few_step_val.json").is_file() and (tmp_path / "bench" / "few_step_val.png").is_file()
    rows = res["results"]
    assert set(rows) == {"teacher flow, Euler 2", "teacher flow, Euler 1", "MeanFlow ema, 1 NFE",
                         "MeanFlow ema, 2 NFE", few_step.COPY, few_step.ORACLE}
    assert rows["MeanFlow ema, 2 NFE"]["nfe"] == 2 and rows["teacher flow, Euler 1"]["nfe"] == 1
    for name in ("teacher flow, Euler 2", "MeanFlow ema, 1 NFE"):
        r = rows[name]["t+1"]
        assert r["spread_ratio"]["mean"] > 0 and math.isfinite(r["energy_latent"]["mean"])
        assert rows[name]["seconds_per_frame"] > 0
    assert rows["teacher flow, Euler 2"]["t+1"]["energy_latent"] != rows["teacher flow, Euler 1"]["t+1"]["energy_latent"]
    ok, lines = few_step.verdict(res, "teacher flow, Euler 1", "teacher flow, Euler 2")
    assert len(lines) == 8 and all(("NOT met" in ln) or ("met" in ln) for ln in lines)
    ok_self, _ = few_step.verdict(res, "teacher flow, Euler 2", "teacher flow, Euler 2")
    assert ok_self
    page = tmp_path / "speed.md"
    page.write_text("# Speed\n\nkept\n")
    section = few_step.docs_section(res, ["teacher flow, Euler 2", "MeanFlow ema, 1 NFE"], "teacher flow, Euler 2")
    few_step.write_docs(section, page)
    few_step.write_docs(section, page)  # replaced, not appended twice
    text = page.read_text()
    assert text.startswith("# Speed\n\nkept\n") and text.count(few_step.SECTION_BEGIN) == 1
    assert "MeanFlow ema, 1 NFE vs teacher flow, Euler 2" in text

    # --equal-quality: the fixed candidates of benchmarks/equal_quality.py (the flow, and the
    # model's 'meanflow' baseline), their settings, the rule's verdicts and the docs section
    import equal_quality

    wm.baselines["meanflow"] = mf
    wm.save_pretrained(tmp_path / "model_mf")
    eq_args = few_step.parser().parse_args(["--model", str(tmp_path / "model_mf"), "--equal-quality", "--quick",
                                            "--split", "val", "--out", str(tmp_path / "bench")])
    eq_res = few_step.run(eq_args)
    assert (tmp_path / "bench" / "equal_quality_val.json").is_file()
    labels = [equal_quality.label(*c) for c in equal_quality.CANDIDATES]
    assert set(eq_res["results"]) == {*labels, few_step.COPY, few_step.ORACLE}
    assert eq_res["results"]["flow Euler 3 bf16"]["setting"] == {"forecaster": "flow", "solver": "euler", "steps": 3,
                                                                 "precision": "bf16", "noise_scale": 1.0}
    assert equal_quality.label("meanflow", "euler", 2, "bf16", 0.8) == "MeanFlow 2 NFE bf16, noise 0.8"
    assert eq_res["results"]["flow Heun 4 fp32"]["nfe"] == 4 and eq_res["results"]["MeanFlow 2 NFE fp32"]["nfe"] == 2
    verdicts = eq_res["equal_quality"]["verdicts"]
    assert set(verdicts) == set(labels) and verdicts[equal_quality.REFERENCE]["passed"]
    few_step.write_docs(equal_quality.docs_section(eq_res), page)
    text = page.read_text()
    assert text.count(equal_quality.SECTION_BEGIN) == 1 and text.count(few_step.SECTION_BEGIN) == 1
    assert "MeanFlow 1 NFE fp32" in text.split(equal_quality.SECTION_BEGIN)[1]

    # --noise-scales: the model's own MeanFlow baseline at two sampling temperatures
    ns_args = few_step.parser().parse_args(["--model", str(tmp_path / "model_mf"), "--meanflow", "baseline:meanflow",
                                            "--noise-scales", "1", "0.5", "--mf-steps", "1", "--teacher-steps", "1",
                                            "--quick", "--split", "val", "--out", str(tmp_path / "bench_ns")])
    ns = few_step.run(ns_args)["results"]
    assert {"MeanFlow, 1 NFE, noise 1", "MeanFlow, 1 NFE, noise 0.5"} <= set(ns)
    wide, narrow = (ns[f"MeanFlow, 1 NFE, noise {v}"]["t+1"]["spread_ratio"]["mean"] for v in ("1", "0.5"))
    assert narrow < wide
