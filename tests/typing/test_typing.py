import pytest
import torch

from featureflow.typing import FrameLatents, Frames, Latents, ShapeError, check_finite, typechecked


@typechecked
def _pair(frames: Frames, latents: Latents) -> FrameLatents:
    return latents[:, -1]


def test_accepts_matching_shapes():
    out = _pair(torch.rand(2, 3, 3, 16, 16), torch.zeros(2, 3, 4, 4, 8))
    assert out.shape == (2, 4, 4, 8)


def test_wrong_channel_count_names_argument_and_shapes():
    with pytest.raises(ShapeError) as info:
        _pair(torch.rand(2, 3, 4, 16, 16), torch.zeros(2, 3, 4, 4, 8))
    msg = str(info.value)
    assert "frames: expected float tensor of shape (b, t, 3, H, W)" in msg
    assert "got float32 tensor of shape (2, 3, 4, 16, 16)" in msg


def test_inconsistent_batch_between_arguments():
    with pytest.raises(ShapeError, match="same size everywhere"):
        _pair(torch.rand(2, 3, 3, 16, 16), torch.zeros(5, 3, 4, 4, 8))


def test_shape_error_is_type_and_value_error():
    assert issubclass(ShapeError, TypeError) and issubclass(ShapeError, ValueError)


def test_wrong_dtype():
    with pytest.raises(ShapeError, match="float"):
        _pair(torch.zeros(2, 3, 3, 16, 16, dtype=torch.int64), torch.zeros(2, 3, 4, 4, 8))


def test_check_finite():
    with pytest.raises(ValueError, match="features contains 1 non-finite"):
        check_finite("features", torch.tensor([0.0, float("nan")]))


def test_shaped_annotation_reports_readably():
    from featureflow.typing import Shaped, Tensor

    @typechecked
    def f(x: Shaped[Tensor, "b 3"]) -> None:
        return None

    with pytest.raises(ShapeError, match=r"x: expected any dtype tensor of shape \(b, 3\)"):
        f(torch.zeros(2, 4))
