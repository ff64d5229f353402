"""Typed pipeline configs: the shipped configs load and round-trip; a typo anywhere fails at once, naming its path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featureflow.training import run_pipeline
from featureflow.training.checkpoint import save_checkpoint
from featureflow.training.config import PipelineConfig
from featureflow.training.stage_state import legacy_seed as _legacy_seed

from test_pipeline import tiny_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    cfg = PipelineConfig.load(path)
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.forecaster is not None and cfg.forecaster.fit_config(seed=1).steps >= 1


def test_round_trip_through_a_file(tmp_path):
    cfg = PipelineConfig.from_dict(tiny_config(tmp_path))
    assert cfg.probes is not None and cfg.probes.clips == 2 and cfg.encoder.train["steps"] == 2
    assert PipelineConfig.load(cfg.save(tmp_path / "c.json")) == cfg


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(sed=1), r"config: unknown key\(s\) \['sed'\]"),
    (lambda c: c["forecaster"]["train"].update(stepz=3), r"forecaster.train: unknown training setting\(s\) \['stepz'\]"),
    (lambda c: c["regression"]["train"].update(stream={"clip_len": 3}), r"regression.train.stream: unknown key"),
    (lambda c: c["probes"]["train"].update(warmup=3), r"probes.train: unknown key\(s\) \['warmup'\]"),
    (lambda c: c["features"].update(shards=3), r"features: unknown key\(s\) \['shards'\]"),
    (lambda c: c["encoder"].pop("type"), r"encoder.type: expected a component type name"),
    (lambda c: c["forecaster"]["train"].update(precision="fp8"), r"precision must be one of"),
])
def test_a_typo_fails_before_anything_trains(tmp_path, edit, message):
    cfg = tiny_config(tmp_path)
    edit(cfg)
    with pytest.raises(ValueError, match=message):
        run_pipeline(cfg, progress=False)
    assert not (tmp_path / "work" / "encoder").exists()


def test_an_unfinished_checkpoint_of_an_older_version_keeps_its_seed(tmp_path):
    save_checkpoint(tmp_path / "old", 3, model={}, state={"settings": {"seed": 0}})
    save_checkpoint(tmp_path / "new", 3, model={}, state={"settings": {"seed": 0}, "fingerprint": {}})
    assert _legacy_seed(tmp_path / "old", 77) == 0  # an older run (seeded with the config's seed) still resumes
    assert _legacy_seed(tmp_path / "new", 77) == 77
    assert _legacy_seed(tmp_path / "none", 77) == 77
