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

METRIC_COLUMNS = {"miou", "abs_rel", "delta1", "normal_err", "psnr"}


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
    out, _ = quick_run
    q = json.loads((out / "quality.json").read_text())
    assert q["protocol"]["contexts"] == [1, 2]  # tiny model: max_context 2
    assert set(q["results"]) == {"|C|=1", "|C|=2"}
    for hs in q["results"].values():
        assert set(hs) == {"short (t+1)", "mid (t+3)"}
        for rows in hs.values():
            assert set(rows) == {"flow (VAE latent)", "regression", "copy last frame",
                                 "oracle: probe on true future features"}
            flow = rows["flow (VAE latent)"]
            assert METRIC_COLUMNS | {m + "@best" for m in METRIC_COLUMNS} <= set(flow)
            assert METRIC_COLUMNS <= set(rows["regression"])
            for r in rows.values():
                for m in METRIC_COLUMNS:
                    assert math.isfinite(r[m]["mean"]) and math.isfinite(r[m]["ci95"]) and r[m]["n"] == 2
            # best-of-K is never worse than the mean over samples
            assert flow["miou@best"]["mean"] >= flow["miou"]["mean"] - 1e-9
            assert flow["abs_rel@best"]["mean"] <= flow["abs_rel"]["mean"] + 1e-9
    assert set(q["not_run"]) == {"flow in PCA-16 latent", "flow on raw features"}
    assert "|C|=1" in q["claim"]["miou_gap_flow_minus_regression"]


@pytest.mark.slow
def test_distribution_calibration_speed_json(quick_run):
    out, _ = quick_run
    d = json.loads((out / "distribution.json").read_text())
    for space in ("features", "depth"):
        for step in ("t+1", "t+3"):
            v = d["results"][space][step]
            assert set(v["rows"]) == {"flow", "regression", "copy last frame", "true futures (2nd draw)"}
            assert v["coverage_radius"] >= 0
            for r in v["rows"].values():
                assert 0 <= r["coverage"]["mean"] <= r["coverage_2r"]["mean"] <= 100
                assert math.isfinite(r["energy_distance"]["mean"])
    c = json.loads((out / "calibration.json").read_text())
    for step in ("t+1", "t+3"):
        r = c["results"][step]
        assert r["spread_skill_ratio"] >= 0 and len(r["reliability"]) == 10
        assert sum(b["pixels"] for b in r["reliability"]) == r["pixels"]
    s = json.loads((out / "speed.json").read_text())
    assert {r["solver"] for r in s["solvers"]} == {"euler", "heun", "midpoint", "rk4", "dopri5"}
    assert all(r["nfe"] >= 1 and r["ms_per_frame"] > 0 for r in s["solvers"])
    assert [m["horizon"] for m in s["memory"]] == [1, 2]
    assert s["throughput"]["matmul_gflops"] > 0 and s["training"]["forecaster_samples_per_s"] > 0
    for j in (d, c, s):
        _finite(j)


@pytest.mark.slow
def test_markdown_page_embeds_tables_and_plots(quick_run):
    out, md = quick_run
    page = md.read_text()
    for title in ("## Protocol", "## Headline", "## Quality", "## Distribution", "## Calibration", "## Speed"):
        assert title in page
    for png in ("calibration_reliability.png", "speed_miou_vs_nfe.png", "speed_latency_vs_nfe.png"):
        assert f"](benchmarks/{png})" in page
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| flow (VAE latent) best-of-K |" in page


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
            rows["flow (VAE latent)"]["abs_rel"]["mean"] += 1.0
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
