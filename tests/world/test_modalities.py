"""The modality table: one entry decides layout, colouring, uncertainty and metric."""

from __future__ import annotations

import pytest
import torch

from featureflow import viz
from featureflow.world import MODALITIES
from featureflow.world.evaluate import METRICS
from featureflow.world.modalities import MODALITY_TABLE, colour, modality


def test_table_covers_every_modality_and_derives_layouts():
    assert list(MODALITY_TABLE) == ["rgb", "segmentation", "depth", "normals"]
    assert MODALITIES == {name: m.layout for name, m in MODALITY_TABLE.items()}
    assert MODALITIES["segmentation"] == "(b, s, k, H, W) int64 class ids"
    scored = {m.metric: (name, m.higher_is_better) for name, m in MODALITY_TABLE.items() if m.metric}
    assert scored == METRICS
    with pytest.raises(ValueError, match="unknown modality 'flow'; expected one of"):
        modality("flow")


def test_colours_match_viz():
    depth = torch.tensor([[1.0, 5.0]])
    torch.testing.assert_close(colour("depth", depth, (1.0, 4.0)), viz.colorize_depth(depth.clamp(1, 4), vmin=1, vmax=4))
    seg = torch.tensor([[0, 3]])
    assert torch.equal(colour("segmentation", seg), viz.colorize_segmentation(seg))
    assert float(colour("rgb", torch.full((3, 1, 1), 2.0)).max()) == 1.0
    assert viz.heatmap(torch.tensor([[0.0, 2.0]]), 1.0)[:, 0, 1].tolist() == pytest.approx([0.99, 0.99, 0.75])


def test_uncertainty_values():
    normals = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).view(1, 2, 1, 3, 1, 1)
    u = MODALITY_TABLE["normals"].uncertainty(normals)
    torch.testing.assert_close(u["spread"].flatten(), torch.tensor([45.0]))
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2, 1, 1)
    u = MODALITY_TABLE["segmentation"].uncertainty(probs)
    torch.testing.assert_close(u["spread"].flatten(), torch.log(torch.tensor([2.0])))


def test_forecast_uncertainty_reads_the_table(make_tiny_world_model):
    wm = make_tiny_world_model()
    fc = wm.forecast(torch.rand(1, 2, 3, 16, 16), 2, 3, generator=torch.Generator().manual_seed(0))
    for name, entry in MODALITY_TABLE.items():
        outputs = fc.probabilities() if entry.probe_method == "probabilities" else fc.decode(name)
        expected = entry.uncertainty(outputs)
        got = fc.uncertainty(name)
        for key in ("mean", "spread"):
            torch.testing.assert_close(got[key], expected[key])
