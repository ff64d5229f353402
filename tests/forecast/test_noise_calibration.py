"""calibrate_noise_scale: the student's noise scale that makes it spread like its teacher."""

from __future__ import annotations

import pytest
import torch

from featureflow.forecast import Denoiser, FlowForecaster, MeanFlowForecaster, RegressionForecaster, calibrate_noise_scale


@pytest.fixture
def _flat(zero_velocity):
    """A flow forecaster of zero velocity (samples = its source noise) at a noise scale."""

    def make(noise_scale: float = 1.0) -> FlowForecaster:
        fc = FlowForecaster(Denoiser(latent_dim=3, width=16, depth=1, heads=2, max_context=2), noise_scale=noise_scale)
        fc.denoiser = zero_velocity(fc.denoiser)
        return fc.eval()

    return make


CONTEXT = torch.randn(2, 2, 3, 3, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("target", [0.8, 0.9])
def test_picks_the_scale_whose_spread_matches_the_teacher(target, _flat):
    teacher, student = _flat(target), _flat()
    out = calibrate_noise_scale(student, teacher, CONTEXT, scales=(1.0, 0.9, 0.8, 0.7), student_steps=(1, 2),
                                horizon=2, num_samples=4)
    assert out["noise_scale"] == target and student.noise_scale == target
    assert out["scores"][target] == pytest.approx(0.0, abs=1e-6)  # same seed, same noise: equal spreads
    assert len(out["teacher_spread"]) == 2 and set(out["student_spread"][1.0]) == {1, 2}
    # spread is proportional to the noise scale here
    ratio = out["student_spread"][0.7][1][0] / out["student_spread"][1.0][1][0]
    assert ratio == pytest.approx(0.7, rel=1e-6)


def test_apply_false_keeps_the_student_and_ties_go_to_the_scale_nearest_one(_flat):
    student = _flat(0.95)
    out = calibrate_noise_scale(student, _flat(1.0), CONTEXT, scales=(0.9, 1.0, 1.1), horizon=1, num_samples=3,
                                apply=False)
    assert out["noise_scale"] == 1.0 and student.noise_scale == 0.95
    # a teacher half-way between two candidates (in log space) is a tie: the scale nearer 1 wins
    tie = calibrate_noise_scale(_flat(), _flat(0.9 ** 0.5), CONTEXT, scales=(0.9, 1.0), horizon=1, num_samples=3)
    assert tie["noise_scale"] == 1.0


def test_a_meanflow_student_of_its_own_teacher():
    flow = FlowForecaster(Denoiser(latent_dim=3, width=16, depth=1, heads=2, max_context=2)).eval()
    mf = MeanFlowForecaster.from_flow(flow).eval()
    out = calibrate_noise_scale(mf, flow, CONTEXT, scales=(1.0, 0.5), horizon=1, num_samples=4)
    assert out["noise_scale"] in (1.0, 0.5) and mf.noise_scale == out["noise_scale"]
    assert out["scores"][1.0] < out["scores"][0.5]  # a fresh student follows its teacher at scale 1


def test_bad_input_is_refused_with_what_was_expected(_flat):
    flow = _flat()
    with pytest.raises(ValueError, match="finite numbers > 0"):
        calibrate_noise_scale(flow, flow, CONTEXT, scales=(1.0, 0.0))
    with pytest.raises(ValueError, match="at least one candidate"):
        calibrate_noise_scale(flow, flow, CONTEXT, scales=())
    with pytest.raises(ValueError, match="num_samples must be >= 2"):
        calibrate_noise_scale(flow, flow, CONTEXT, num_samples=1)
    reg = RegressionForecaster(Denoiser(latent_dim=3, width=16, depth=1, heads=2, max_context=2))
    with pytest.raises(ValueError, match="stochastic forecaster"):
        calibrate_noise_scale(reg, flow, CONTEXT)
