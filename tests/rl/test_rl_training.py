"""rl.train_action_world_model runs through the one training engine (training.fit)."""

from __future__ import annotations

import json

import torch

from featureflow.rl import AgentToyWorld
from featureflow.rl.training import train_action_world_model

TINY = dict(num_clips=4, clip_length=3, patch_size=4, width=16, depth=1, heads=2, train_steps=3, batch_size=2)


def test_action_world_model_trains_through_fit_reproducibly_with_a_log(tmp_path):
    log = tmp_path / "train.jsonl"
    a = train_action_world_model(AgentToyWorld(resolution=8), log_path=log, seed=1, **TINY)
    b = train_action_world_model(AgentToyWorld(resolution=8), seed=1, **TINY)
    sa, sb = a.forecaster.state_dict(), b.forecaster.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same weights
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps and steps[-1] == TINY["train_steps"] and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    assert a.metadata["train"]["steps"] == TINY["train_steps"] and a.action_dim == 2
    c = train_action_world_model(AgentToyWorld(resolution=8), seed=2, **TINY)
    assert not all(torch.equal(sa[k], c.forecaster.state_dict()[k]) for k in sa)  # another seed, other weights
