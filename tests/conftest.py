"""Shared test setup: offline hub, deterministic torch, fixtures inside the repository."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"

# Tiny tensors: one thread per test process is fastest and avoids oversubscription under xdist.
torch.set_num_threads(1)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def official_dir() -> Path:
    """The pinned outputs of the paper's released code (``tests/fixtures/vfmf_official``)."""
    return FIXTURES / "vfmf_official"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread per test is faster and immune to a busy machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build_tiny_world_model():
    """A small WorldModel with every probe and a regression baseline (16x16 frames, 2x2 grid, 32 channels)."""
    from featureflow.compressors import Identity
    from featureflow.encoders import ToyEncoder
    from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster
    from featureflow.probes import ConvDecoderHead, DepthHead, LinearHead, NormalsHead, RGBHead, SegmentationHead
    from featureflow.world import WorldModel

    torch.manual_seed(0)
    enc = ToyEncoder(image_size=16, patch_size=8, width=16, depth=2, heads=2, blocks=(0, 1))
    den = Denoiser(latent_dim=32, width=16, depth=1, heads=2, max_context=2)
    probes = {
        "segmentation": SegmentationHead(LinearHead(32, 5), num_classes=5),
        "depth": DepthHead(LinearHead(32, 1), min_depth=0.5, max_depth=20.0),
        "normals": NormalsHead(LinearHead(32, 3)),
        "rgb": RGBHead(ConvDecoderHead(32, 3, hidden_dim=8, num_upsamples=1)),
    }
    reg = RegressionForecaster(Denoiser(latent_dim=32, width=16, depth=1, heads=2, max_context=2))
    return WorldModel(enc, Identity(32), FlowForecaster(den), probes, baselines={"regression": reg})


@pytest.fixture(scope="session")
def make_tiny_world_model():
    """`build_tiny_world_model`: call it for a fresh model (the same weights every time)."""
    return build_tiny_world_model


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # An empty run must never look green.
    if exitstatus == 0 and session.testscollected == 0:
        session.exitstatus = 5
