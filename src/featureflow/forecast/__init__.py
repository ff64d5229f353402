"""Forecasting latents: the denoiser trunk, flow-matching, MeanFlow and regression forecasters, rollouts.

Example:
    >>> import torch
    >>> from featureflow.forecast import Denoiser, FlowForecaster
    >>> fc = FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2))
    >>> fc.sample(torch.randn(1, 2, 2, 2, 4), num_samples=2, steps=2).shape
    torch.Size([1, 2, 2, 2, 4])
"""

from featureflow.forecast.base import ForecasterBase
from featureflow.forecast.baselines import CopyLastForecaster
from featureflow.forecast.causal_denoiser import CausalDenoiser
from featureflow.forecast.denoiser import Denoiser, DenoiserState
from featureflow.forecast.vfmf_denoiser import VFMFDenoiser
from featureflow.forecast.flow import FlowForecaster
from featureflow.forecast.meanflow import MeanFlowForecaster
from featureflow.forecast.noise_calibration import calibrate_noise_scale
from featureflow.forecast.protocols import DenoiserProtocol, Forecaster
from featureflow.forecast.regression import RegressionForecaster
from featureflow.forecast.rollout import Rollout, draw_window

__all__ = [
    "Denoiser",
    "CausalDenoiser",
    "VFMFDenoiser",
    "DenoiserState",
    "FlowForecaster",
    "MeanFlowForecaster",
    "RegressionForecaster",
    "ForecasterBase",
    "CopyLastForecaster",
    "Forecaster",
    "DenoiserProtocol",
    "Rollout",
    "draw_window",
    "calibrate_noise_scale",
]
