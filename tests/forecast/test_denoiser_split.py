"""Denoiser(arch=...) builds one of two classes behind one protocol; saved configs are unchanged."""

from __future__ import annotations

import pytest
import torch

from featureflow.forecast import CausalDenoiser, Denoiser, DenoiserProtocol, VFMFDenoiser
from featureflow.forecast.denoiser import ARCHS
from featureflow.utils import build_component

KW = dict(latent_dim=4, width=24, depth=1, heads=2, max_context=2)


def test_factory_builds_the_class_of_each_arch():
    causal, vfmf = Denoiser(**{**KW, "width": 16}), Denoiser("vfmf", grid=(2, 2), **KW)
    assert type(causal) is CausalDenoiser and type(vfmf) is VFMFDenoiser
    assert isinstance(causal, Denoiser) and isinstance(vfmf, Denoiser)
    assert isinstance(causal, DenoiserProtocol) and isinstance(vfmf, DenoiserProtocol)
    assert (causal.arch, vfmf.arch) == ("causal", "vfmf") and ARCHS == {"causal": CausalDenoiser, "vfmf": VFMFDenoiser}
    assert causal.teacher_forcing and not vfmf.teacher_forcing
    assert type(Denoiser(arch="vfmf", grid=(2, 2), **KW)) is VFMFDenoiser


def test_saved_spec_names_the_factory_and_rebuilds_the_same_network():
    torch.manual_seed(0)
    den = VFMFDenoiser(grid=(2, 2), **KW)
    spec = den.describe()
    assert spec["type"] == "Denoiser" and spec["config"]["arch"] == "vfmf"
    assert set(spec["config"]) == {"arch", "latent_dim", "width", "depth", "heads", "mlp_ratio", "mlp_dim",
                                   "max_context", "grid", "dropout", "cond_dim", "rope_base", "frequency_dim"}
    clone = build_component(spec)
    clone.load_state_dict(den.state_dict())
    ctx, x, t = torch.randn(1, 2, 2, 2, 4), torch.randn(1, 2, 2, 4), torch.rand(1)
    assert type(clone) is VFMFDenoiser and torch.equal(clone.velocity(ctx, x, t), den.velocity(ctx, x, t))


def test_same_seed_same_weights_through_the_factory_or_the_class():
    torch.manual_seed(3)
    a = Denoiser(**{**KW, "width": 16})
    torch.manual_seed(3)
    b = CausalDenoiser(**{**KW, "width": 16})
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_each_class_refuses_what_belongs_to_the_other():
    with pytest.raises(ValueError, match="VFMFDenoiser is arch='vfmf', got arch='causal'"):
        VFMFDenoiser(arch="causal", grid=(2, 2), **KW)
    with pytest.raises(ValueError, match="does not support cond_dim"):
        Denoiser("vfmf", grid=(2, 2), cond_dim=2, **KW)
    with pytest.raises(ValueError, match="only into arch='vfmf', not arch='causal'"):
        CausalDenoiser(**{**KW, "width": 16}).load_released_state_dict({})
    with pytest.raises(NotImplementedError, match="teacher_forced needs arch='causal'"):
        VFMFDenoiser(grid=(2, 2), **KW).teacher_forced(torch.zeros(1, 2, 2, 2, 4), torch.zeros(1, 1, 2, 2, 4),
                                                         torch.zeros(1, 1), [1])
    with pytest.raises(ValueError, match=r"arch must be one of \('causal', 'vfmf'\), got 'dit'"):
        Denoiser(arch="dit")
