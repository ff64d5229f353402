"""Training: one engine (`fit`) that every stage runs through, one entry point per stage, and the pipeline.

Every stage runs single-process or under ``torchrun`` (DistributedDataParallel / FSDP2;
see `featureflow.training.distributed`), checkpoints and resumes exactly, and is
reproducible from its seed. Stage configs are typed (`PipelineConfig`, `FitConfig`);
encoder and compressor trainers are found by component type (`register_trainer`).
"""

from featureflow.training import distributed
from featureflow.training.checkpoint import load_checkpoint, save_checkpoint
from featureflow.training.curves import plot_training_curves, read_log
from featureflow.training.data import BatchStream
from featureflow.training.ema import EMA
from featureflow.training.features import FeatureShards, extract_features
from featureflow.training.forecaster import frames_to_latents, save_forecaster, train_forecaster
from featureflow.training.config import PipelineConfig
from featureflow.training.loop import FitConfig, FitResult, fit
from featureflow.training.pipeline import STAGES, load_config, run_pipeline, stage_seed
from featureflow.training.registry import register_trainer
from featureflow.training.probes import ProbeTrainResult, train_probe
from featureflow.training.schedule import cosine_with_warmup
from featureflow.training.toy_encoder import train_toy_encoder
from featureflow.training.vae import VAETrainResult, save_compressor, train_vae

__all__ = [
    "distributed",
    "fit",
    "FitConfig",
    "FitResult",
    "PipelineConfig",
    "register_trainer",
    "stage_seed",
    "EMA",
    "BatchStream",
    "cosine_with_warmup",
    "save_checkpoint",
    "load_checkpoint",
    "extract_features",
    "FeatureShards",
    "train_vae",
    "VAETrainResult",
    "save_compressor",
    "train_forecaster",
    "frames_to_latents",
    "plot_training_curves",
    "read_log",
    "save_forecaster",
    "train_probe",
    "ProbeTrainResult",
    "train_toy_encoder",
    "run_pipeline",
    "load_config",
    "STAGES",
]
