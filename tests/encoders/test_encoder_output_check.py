"""One name per check: ``check_encoder_output`` (encoders) vs ``Compressor.check_features``."""

from __future__ import annotations

import pytest
import torch

from featureflow.compressors import Identity
from featureflow.encoders import check_encoder_output, check_features
from featureflow.typing import ShapeError


def test_check_encoder_output_names_the_encoder_and_the_expected_shape():
    x = torch.zeros(2, 4, 4, 8)
    assert check_encoder_output(x, 2, (4, 4), 8, "enc") is x
    with pytest.raises(ShapeError, match=r"enc returned features of shape \(2, 4, 3, 8\); expected \(b, h, w, D\) = \(2, 4, 4, 8\)"):
        check_encoder_output(torch.zeros(2, 4, 3, 8), 2, (4, 4), 8, "enc")
    with pytest.raises(ShapeError, match="enc returned list; expected a tensor"):
        check_encoder_output([1.0], 2, (4, 4), 8, "enc")


def test_old_encoder_check_name_is_a_deprecated_alias():
    x = torch.ones(1, 2, 2, 3)
    with pytest.warns(DeprecationWarning, match="use check_encoder_output"):
        assert check_features(x, 1, (2, 2), 3, "enc") is x


def test_check_features_is_the_compressor_input_check_only():
    c = Identity(3)
    assert c.check_features(torch.ones(1, 2, 2, 3)).shape == (1, 2, 2, 3)
    with pytest.raises(ShapeError, match="features must have 3 channels"):
        c.check_features(torch.ones(1, 2, 2, 4))
