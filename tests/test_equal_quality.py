"""The equal-quality rule of benchmarks/equal_quality.py and the "speed-up at equal quality"
table of benchmarks/eq.py, from numbers (no timing, no model; issue 15)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import equal_quality as eq  # noqa: E402

REF = {"ens_miou_obj": 28.0, "energy_latent": 7.0, "energy_seg": 2.0, "spread_ratio": 1.5}


def passed(x: dict, ref: dict = REF) -> dict[str, bool]:
    return {name: ok for name, ok, _ in eq.equal_quality({**ref, **x}, ref)}


def test_reference_against_itself_passes():
    assert all(passed({}).values())


def test_miou_may_drop_one_point_not_more():
    assert passed({"ens_miou_obj": 27.0})["ensemble-mean object mIoU"]
    assert not passed({"ens_miou_obj": 26.99})["ensemble-mean object mIoU"]
    assert passed({"ens_miou_obj": 40.0})["ensemble-mean object mIoU"]  # better is never a loss


@pytest.mark.parametrize("key,name", [("energy_latent", "energy distance (latent)"),
                                      ("energy_seg", "energy distance (segmentation)")])
def test_energy_may_grow_ten_percent_not_more(key, name):
    assert passed({key: REF[key] * 1.0999})[name]
    assert not passed({key: REF[key] * 1.1001})[name]
    assert passed({key: 0.1})[name]


def test_spread_nearer_one_is_never_a_loss():
    # reference 1.5 is 0.5 from calibrated: anything within 0.6 of 1 passes, on either side
    for s in (1.0, 0.45, 1.55, 1.6):
        assert passed({"spread_ratio": s})["spread ratio"], s
    for s in (0.39, 1.61, 2.0):
        assert not passed({"spread_ratio": s})["spread ratio"], s
    calibrated = {**REF, "spread_ratio": 1.0}
    assert passed({"spread_ratio": 0.9}, calibrated)["spread ratio"]
    assert not passed({"spread_ratio": 0.85}, calibrated)["spread ratio"]
    assert not passed({"spread_ratio": 1.15}, calibrated)["spread ratio"]


def test_nan_never_passes():
    got = passed({"ens_miou_obj": float("nan"), "energy_latent": float("nan"), "spread_ratio": float("nan")})
    assert not got["ensemble-mean object mIoU"] and not got["energy distance (latent)"] and not got["spread ratio"]
    assert got["energy distance (segmentation)"]


def _few_step_rows() -> dict:
    """few_step-style results: {row: {step: {figure: {"mean": ...}}}} for three settings."""
    def row(setting, t1, t3):
        return {"setting": dict(zip(("forecaster", "solver", "steps", "precision"), setting)), "nfe": setting[2],
                "seconds_per_frame": 0.1, **{s: {k: {"mean": v} for k, v in f.items()} for s, f in (("t+1", t1),
                                                                                                   ("t+3", t3))}}
    bad = {**REF, "energy_latent": 9.0}
    return {eq.REFERENCE: row(eq.CANDIDATES[0], REF, REF),
            eq.label("flow", "euler", 3, "fp32"): row(("flow", "euler", 3, "fp32"), {**REF, "spread_ratio": 1.0}, REF),
            eq.label("flow", "euler", 3, "bf16"): row(("flow", "euler", 3, "bf16"), REF, bad)}


def test_verdicts_need_both_steps():
    rows = _few_step_rows()
    v = eq.verdicts(rows, list(rows))
    assert v[eq.REFERENCE]["passed"] and v["flow Euler 3 fp32"]["passed"]
    assert not v["flow Euler 3 bf16"]["passed"]
    assert v["flow Euler 3 bf16"]["failed"] == ["t+3 energy distance (latent)"]
    assert [c["figure"] for c in v["flow Euler 3 bf16"]["checks"]["t+1"]] == [
        "ensemble-mean object mIoU", "energy distance (latent)", "energy distance (segmentation)", "spread ratio"]


def _speed(size: str, frame_s: dict) -> dict:
    official = 1.0
    return {"size": size, "label": f"({size})", "frame_s": {"official Euler 9": official, **frame_s},
            "speedup": {"official Euler 9": 1.0, **{k: official / v for k, v in frame_s.items()}},
            "bf16_step_rel_error": 0.01}


def test_fastest_passing_setting_per_size(tmp_path):
    rows = _few_step_rows()
    path = tmp_path / "equal_quality.json"
    verdicts = eq.verdicts(rows, list(rows))
    path.write_text(json.dumps({"model": "toyworld", "protocol": {"split": "test", "clips": 32}, "results": rows,
                                "equal_quality": {"reference": eq.REFERENCE, "verdicts": verdicts}}))
    quality = eq.load_quality(path)
    assert quality["settings"][("flow", "euler", 3, "bf16")]["passed"] is False
    results = [
        # (a): bf16 Euler 3 is fastest but failed; compile Euler 3 takes the fp32 verdict; Euler 1 was not measured
        _speed("a", {"causal Euler 9": 0.3, "causal Euler 3": 0.12, "compile Euler 3": 0.08, "bf16 Euler 3": 0.05,
                     "causal Euler 1": 0.04}),
        _speed("c", {"causal Euler 9": 0.2, "causal Euler 3": 0.04, "bf16 Euler 3": 0.02}),  # no compile at (c)
    ]
    a, c = eq.equal_quality_rows(results, quality)
    assert a["setting"] == "compile Euler 3" and a["speedup"] == pytest.approx(12.5) and a["met"]
    assert list(a["passed"]) == ["compile Euler 3", "causal Euler 3", "causal Euler 9"]
    assert c["setting"] == "causal Euler 3" and c["speedup"] == pytest.approx(25.0) and c["target"] == 20.0
    lines = "\n".join(eq.equal_quality_report(results, quality))
    assert "flow Euler 3 bf16 (t+3 energy distance (latent))" in lines and "causal Euler 1" in lines
    assert "No stored quality verdicts" in "\n".join(eq.equal_quality_report(results, None))
    nothing = {**quality, "settings": {}}
    assert eq.equal_quality_rows(results, nothing)[0]["setting"] is None
    assert "none passed" in "\n".join(eq.equal_quality_report(results, nothing))
