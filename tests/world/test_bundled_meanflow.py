"""The bundled toyworld model's few-step MeanFlow baseline."""

from __future__ import annotations

import torch

from featureflow.world import WorldModel


def test_bundled_meanflow_samples_each_frame_in_the_steps_asked():
    torch.set_num_threads(1)
    wm = WorldModel.from_pretrained("toyworld")
    assert type(wm.baselines["meanflow"]).__name__ == "MeanFlowForecaster"
    frames = torch.rand(1, 2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    one = wm.forecast(frames, horizon=2, num_samples=3, baseline="meanflow", steps=1,
                      generator=torch.Generator().manual_seed(1))
    two = wm.forecast(frames, horizon=2, num_samples=3, baseline="meanflow", steps=2,
                      generator=torch.Generator().manual_seed(1))
    again = wm.forecast(frames, horizon=2, num_samples=3, baseline="meanflow", steps=1,
                        generator=torch.Generator().manual_seed(1))
    assert one.latents.shape == (1, 3, 2, 8, 8, 16) and bool(torch.isfinite(one.latents).all())
    assert one.nfe == 1 and two.nfe == 2
    assert torch.equal(one.latents, again.latents)  # seeded
    assert not torch.allclose(one.latents[:, 0], one.latents[:, 1])  # samples differ
    assert not torch.allclose(one.latents, two.latents)  # one jump is not two


def test_bundled_meanflow_samples_at_its_calibrated_noise_scale():
    import json
    from importlib.resources import files

    wm = WorldModel.from_pretrained("toyworld")
    report = json.loads((files("featureflow") / "assets" / "models" / "toyworld" / "logs"
                         / "meanflow_noise_scale.json").read_text())
    scores = {float(k): v for k, v in report["scores"].items()}
    assert wm.baselines["meanflow"].noise_scale == report["noise_scale"] == min(scores, key=scores.get) != 1.0
    assert "noise_scale" not in wm.forecaster.config  # the flow samples at the trained scale
