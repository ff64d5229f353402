"""`benchmarks/run_all.py --quick` on a tiny pipeline model: every JSON has the expected
rows and columns with finite numbers, and the Markdown page embeds the tables and plots."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

METRIC_COLUMNS = {"miou_obj", "miou", "abs_rel", "delta1", "normal_err", "psnr"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from test_pipeline import tiny_config

    from featureflow.training import run_pipeline

    tmp = tmp_path_factory.mktemp("bench")
    model = run_pipeline(tiny_config(tmp), progress=False)
    import run_all

    out = tmp / "docs" / "benchmarks"
    md = tmp / "docs" / "benchmarks.md"
    run_all.main(["--quick", "--model", str(model), "--out", str(out), "--md", str(md)])
    return out, md


def _finite(x) -> None:
    if isinstance(x, dict):
        for v in x.values():
            _finite(v)
    elif isinstance(x, list):
        for v in x:
            _finite(v)
    elif isinstance(x, float):
        assert math.isfinite(x), x


@pytest.mark.slow
def test_quality_json_rows_columns(quick_run):
    import quality

    out, _ = quick_run
    q = json.loads((out / "quality.json").read_text())
    assert q["format"] == 2 and q["protocol"]["split"] == "test"
    assert q["protocol"]["contexts"] == [1, 2]  # tiny model: max_context 2
    assert q["protocol"]["ensemble_k"] == [1, 2]  # K = 2 in quick mode
    assert set(q["results"]) == {"|C|=1", "|C|=2"}
    rows_expected = {quality.FLOW, quality.BEST, quality.ENS.format(1), quality.ENS.format(2), quality.REG,
                     quality.COPY, quality.ORACLE, quality.PHYS, quality.TRUE_K, quality.TRUE_ENS.format(2)}
    assert q["protocol"]["turn_prob"] == pytest.approx(0.1)
    for hs in q["results"].values():
        assert set(hs) == {"t+1", "t+3"}
        for v in hs.values():
            rows = v["rows"]
            assert set(rows) == rows_expected
            for r in rows.values():
                assert METRIC_COLUMNS <= set(r)
                for m in METRIC_COLUMNS - {"miou_obj"}:  # a frame may show no object class
                    assert math.isfinite(r[m]["mean"]) and r[m]["n"] == 2
            # best-of-K is never worse than the mean over samples
            assert rows[quality.BEST]["miou"]["mean"] >= rows[quality.FLOW]["miou"]["mean"] - 1e-9
            assert rows[quality.BEST]["abs_rel"]["mean"] <= rows[quality.FLOW]["abs_rel"]["mean"] + 1e-9
            assert set(v["skill"]) == rows_expected - {quality.COPY, quality.ORACLE}
            assert set(v["latent_mse"]) == {"flow, per sample", "flow ensemble mean", quality.REG, quality.COPY}
            for sets in v["latent_mse"].values():
                assert set(sets) == {"moving", "static", "all"} and sets["static"]["mean"] >= 0
            # nothing moves on the static patches: copy-last's error there is below its error on moving ones
            assert v["latent_mse"][quality.COPY]["static"]["mean"] <= v["latent_mse"][quality.COPY]["moving"]["mean"]
            assert "latent_static_flow_over_regression" in v
    assert set(q["context_gain"]["rows"]) == {quality.FLOW, quality.ENS.format(2), quality.REG}
    assert set(q["not_run"]) == {"flow in PCA-16 latent", "flow on raw features"}


@pytest.mark.slow
def test_reference_rows_follow_the_simulator(quick_run, tmp_path):
    """The simulator's reference forecasts: the no-turn roll-on equals the clip's own future
    in a world without turns, every true future then equals it too, and with turns the K
    true futures differ from each other."""
    import torch
    from quality import HORIZON, reference_rows

    from featureflow.data import ToyWorld
    from featureflow.world import WorldModel

    out, _ = quick_run
    wm = WorldModel.from_pretrained(json.loads((out / "quality.json").read_text())["model"])
    data = {"stride": 2, "warmup": 1}
    seeds = ToyWorld.split_seeds("test")[:2]
    still = ToyWorld(resolution=16, turn_prob=0.0)
    refs = reference_rows(wm, still, still, seeds, 2, data, 3, seed=0)
    assert refs["phys"].shape[:3] == (2, 1, HORIZON) and refs["true"].shape[:3] == (2, 3, HORIZON)
    clip = torch.stack([still.clip(int(s), 2 + HORIZON, stride=2, start=1).rgb[2:] for s in seeds])
    torch.testing.assert_close(refs["phys"][:, 0], wm.encode(clip))
    torch.testing.assert_close(refs["true"], refs["phys"].expand_as(refs["true"]))
    turning = ToyWorld(resolution=16, turn_prob=1.0)
    true = reference_rows(wm, turning, still, seeds, 2, data, 3, seed=0)["true"]
    assert (true[:, 0] - true[:, 1]).abs().amax() > 1e-3


def test_motion_masks_and_segmentation_scores():
    """Moving = top 10 % of patches by true latent change, static = bottom 50 %; object mIoU
    leaves background and floor out and is NaN on a frame without objects."""
    import torch
    from _common import seg_scores
    from quality import motion_masks

    z_last = torch.zeros(1, 4, 5, 2)
    z_true = torch.zeros(1, 1, 4, 5, 2)
    z_true[0, 0, 0, 0] = 3.0  # the one patch that moves
    z_true[0, 0, 1, :, 0] = torch.arange(5.0) * 0.1
    m = motion_masks(z_true, z_last)
    assert m["moving"].sum() == 2 and bool(m["moving"][0, 0, 0, 0])  # ceil(10 % of 20)
    assert m["static"].sum() == 10 and not bool(m["static"][0, 0, 0, 0])
    pred = torch.tensor([[[0, 1], [2, 2]], [[0, 1], [1, 1]]])
    target = torch.tensor([[[0, 1], [2, 3]], [[0, 1], [1, 0]]])
    s = seg_scores(pred, target, 5, [2, 3, 4])
    assert s["miou_obj"][0].item() == pytest.approx(25.0)  # sphere 1/2, cube 0
    assert math.isnan(s["miou_obj"][1].item())


@pytest.mark.slow
def test_distribution_calibration_nfe_speed_json(quick_run):
    out, _ = quick_run
    d = json.loads((out / "distribution.json").read_text())
    assert set(d["results"]) == {"|C|=1", "|C|=2"}
    for hs in d["results"].values():
        for step in ("t+1", "t+3"):
            v = hs[step]
            assert set(v["spread"]) == {"samples", "truth", "ratio"} and v["spread"]["samples"]["mean"] >= 0
            for space in ("latent", "segmentation"):
                assert set(v["energy_distance"][space]) == {"flow", "regression", "copy last frame",
                                                            "true futures (2nd draw)"}
                for r in v["energy_distance"][space].values():
                    assert math.isfinite(r["mean"])
    c = json.loads((out / "calibration.json").read_text())
    for hs in c["results"].values():
        for step in ("t+1", "t+3"):
            r = hs[step]
            rel = r["latent"]["reliability"]  # deciles of spread (fewer bins when there are fewer patches)
            assert r["latent"]["spread_skill"]["mean"] >= 0 and 1 <= len(rel) <= 10
            assert sum(b["patches"] for b in rel) == 2 * 2 * 2  # clips × 2×2 patch grid
            levels = r["segmentation"]["objects"]["levels"]
            assert [x["predicted"] for x in levels] == pytest.approx([0, 1 / 3, 2 / 3, 1])  # K = 3
            assert 0 <= r["segmentation"]["all"]["ece"]["mean"] <= 100
    n = json.loads((out / "nfe.json").read_text())
    assert {"euler 1", "euler 2", "heun 2", "regression", "copy last frame"} <= set(n["results"])
    assert n["results"]["euler 2"]["nfe"] == 2
    assert "miou_obj_ensemble" in n["results"]["heun 2"]["t+1"]
    s = json.loads((out / "speed.json").read_text())
    assert {r["solver"] for r in s["solvers"]} == {"euler", "heun", "midpoint", "rk4", "dopri5"}
    assert all(r["nfe"] >= 1 and r["ms_per_frame"] > 0 for r in s["solvers"])
    assert [m["horizon"] for m in s["memory"]] == [1, 2]
    assert s["throughput"]["matmul_gflops"] > 0 and s["training"]["forecaster_samples_per_s"] > 0
    for j in (c, s):
        _finite(j)


@pytest.mark.slow
def test_markdown_page_embeds_tables_and_plots(quick_run):
    out, md = quick_run
    page = md.read_text()
    for title in ("## Protocol", "## Headline", "## Quality", "## Distribution", "## Calibration",
                  "## Quality vs NFE", "## Speed"):
        assert title in page
    for png in ("calibration_latent_spread_skill.png", "calibration_segmentation_reliability.png",
                "nfe_miou_objects.png", "nfe_static_latent_error.png", "speed_latency_vs_nfe.png"):
        assert f"](benchmarks/{png})" in page
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| flow, best of K |" in page and "| flow ensemble mean, k=2 |" in page
    assert "Issue 13's targets" in page and "over-confident (spread too small)" not in page


def test_render_only_handles_old_and_missing_json(tmp_path):
    """--render-only on previous-protocol JSON (or none) says "not run" instead of failing."""
    import run_all

    out = tmp_path / "b"
    out.mkdir()
    old = {"benchmark": "quality", "model": "toyworld", "quick": False,
           "results": {"|C|=1": {"short (t+1)": {"flow (VAE latent)": {"miou": {"mean": 50.0, "ci95": 1.0, "n": 4},
                                                                      "miou@best": {"mean": 55.0, "ci95": 1.0, "n": 4}},
                                                "copy last frame": {"miou": {"mean": 52.0, "ci95": 1.0, "n": 4}}}}}}
    (out / "quality.json").write_text(json.dumps(old))
    (out / "quality_raw.json").write_text(json.dumps(old))
    md = tmp_path / "page.md"
    run_all.main(["--render-only", "--model", "toyworld", "--out", str(out), "--md", str(md)])
    page = md.read_text()
    assert "previous protocol" in page and "Not run (no `distribution.json`" in page
    assert "## Which latent space?" in page and "| \\|C\\|=1 | t+1 | raw features" in page


def test_planning_benchmark_counts_batched_passes(tmp_path, capsys):
    """One dynamics call per CEM iteration: H × NFE denoiser passes of N·K rows each."""
    import planning

    from featureflow.rl import pixel_world_model

    wm = pixel_world_model(4, width=16, depth=1, heads=2)
    wm.metadata = {"resolution": 16, "frame_skip": 1}
    wm.save_pretrained(tmp_path / "agent")
    planning.main(["--quick", "--model", str(tmp_path / "agent"), "--out", str(tmp_path / "out"), "--iterations", "2",
                   "--repeats", "1"])
    res = json.loads((tmp_path / "out" / "planning.json").read_text())["results"]
    assert len(res) == 1
    r = res[0]
    assert (r["candidates"], r["samples"], r["horizon"]) == (16, 2, 2)
    assert r["denoiser_passes"] == r["iterations"] * r["horizon"] * r["nfe"] == 2 * 2 * 1
    assert r["rows_per_pass"] == 16 * 2 and r["seconds_per_plan"] > 0
    assert (tmp_path / "out" / "planning.png").stat().st_size > 0
    assert "denoiser passes" in capsys.readouterr().out


def test_latent_space_section_is_rendered_from_stored_runs(quick_run):
    """`run_all` adds "Which latent space?" from quality_pca16.json / quality_raw.json in --out,
    with one row per variant and a computed summary naming the best of each metric."""
    import run_all

    out, _ = quick_run
    q = json.loads((out / "quality.json").read_text())
    assert run_all.latent_comparison(q, out / "nothing-here", "benchmarks/") == []
    other = json.loads(json.dumps(q))
    for hs in other["results"].values():  # a variant that is worse on depth everywhere
        for rows in hs.values():
            rows["rows"]["flow, mean of K"]["abs_rel"]["mean"] += 1.0
    (out / "quality_raw.json").write_text(json.dumps(other))
    try:
        text = "\n".join(run_all.latent_comparison(q, out, "benchmarks/"))
    finally:
        (out / "quality_raw.json").unlink()
    assert "## Which latent space?" in text and "`benchmarks/quality_raw.json`" in text
    table = [line for line in text.splitlines() if line.startswith("| \\|C\\|=")]
    assert len(table) == 2 * 2 * 2  # contexts × horizons × variants
    assert sum("raw features" in line for line in table) == 4
    assert "depth AbsRel FeatureVAE (16 ch)" in text and "(best: FeatureVAE (16 ch))" in text


def test_blind_metrics_follow_the_oracle_gap():
    """A column is near-blind when the oracle removes less than 20 % of copy-last's error
    (|C| the longest, t+1); errors of 'higher is better' metrics are taken from their ceiling."""
    import quality

    def row(abs_rel, delta1, normal_err, psnr):
        return {"abs_rel": {"mean": abs_rel}, "delta1": {"mean": delta1}, "normal_err": {"mean": normal_err},
                "psnr": {"mean": psnr}, "miou_obj": {"mean": 30.0}}

    res = {"results": {"|C|=1": {}, "|C|=4": {"t+1": {"rows": {
        quality.COPY: row(0.028, 98.99, 6.3, 22.6), quality.ORACLE: row(0.018, 99.12, 2.0, 22.9)}}}}}
    res["results"]["|C|=4"]["t+1"]["rows"][quality.ORACLE]["miou_obj"] = {"mean": 58.0}
    # AbsRel −36 %, normals −68 %, mIoU error −40 %: informative; δ<1.25 error −13 %, PSNR +0.3 dB (MSE −7 %): blind
    assert quality.blind_metrics(res) == {"delta1", "psnr"}
    assert quality._label("delta1", {"delta1"}).endswith("(near-blind)") and "blind" not in quality._label("abs_rel")
