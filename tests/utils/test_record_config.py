"""record_config: constructor arguments recorded once, as saved configs expect."""

from __future__ import annotations

import pytest
import torch

from featureflow.forecast import CopyLastForecaster, Denoiser
from featureflow.probes import LinearHead
from featureflow.utils import Configurable, build_component, int_list, record_config


class _Base(torch.nn.Module, Configurable):
    kind = "base"

    @record_config(attrs=("kind",), scale=float, sizes=int_list)
    def __init__(self, dim: int, scale: float = 1, sizes: tuple[int, ...] | None = (2, 3), **extra: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if scale != 1:
            self.config["scaled"] = True  # a key recorded only when switched on


class _Child(_Base):
    kind = "child"

    def __init__(self, *args: int, **kwargs: int) -> None:
        super().__init__(*args, **kwargs)
        self.seen = dict(self.config)  # the record exists once the base has run


def test_arguments_defaults_conversions_and_attrs_are_recorded():
    assert _Base(3).config == {"kind": "base", "dim": 3, "scale": 1.0, "sizes": [2, 3]}
    assert _Base(dim=3, scale=2, sizes=None, depth=4).config == {
        "kind": "base", "dim": 3, "scale": 2.0, "sizes": None, "depth": 4, "scaled": True}
    child = _Child(5, sizes=(1,))
    assert child.seen == child.config == {"kind": "child", "dim": 5, "scale": 1.0, "sizes": [1]}
    assert isinstance(_Base(3).config["scale"], float)


def test_errors_are_raised_and_unknown_conversions_refused():
    with pytest.raises(ValueError, match="dim must be >= 1"):
        _Base(0)
    with pytest.raises(TypeError, match=r"has no argument\(s\) \['nope'\]"):
        record_config(nope=int)(lambda self, a: None)


def test_components_keep_their_saved_form():
    assert LinearHead(8, 3).config == {"feature_dim": 8, "out_channels": 3, "batch_norm": True,
                                       "resize_mode": "bilinear"}
    den = Denoiser(latent_dim=4, width=16, depth=1, heads=2, mlp_ratio=2, grid=(2, 3))
    assert den.config["arch"] == "causal" and den.config["grid"] == [2, 3] and den.config["mlp_ratio"] == 2.0
    assert type(den.config["mlp_ratio"]) is float and den.config["rope_base"] == 100.0
    assert build_component(CopyLastForecaster(3).describe()).config == {"max_context": 3}
