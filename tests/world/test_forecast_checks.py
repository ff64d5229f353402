"""WorldModel.forecast refuses bad arguments and non-finite outputs with errors that name
them, follows a resize policy for frames of another size, and unreadable inputs name the file."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featureflow.cli import main
from featureflow.compressors import PCA, Identity
from featureflow.data import read_frames, read_video, write_frames
from featureflow.encoders import ToyEncoder
from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.probes import DepthHead, LinearHead
from featureflow.typing import ShapeError
from featureflow.viz import save_gif
from featureflow.world import ResizeWarning, WorldModel, prepare_frames


def tiny(resolution: int | None = None) -> WorldModel:
    torch.manual_seed(0)
    enc = ToyEncoder(image_size=16, patch_size=8, width=16, depth=2, heads=2, blocks=(0, 1))
    den = Denoiser(latent_dim=32, width=16, depth=1, heads=2, max_context=2)
    wm = WorldModel(enc, Identity(32), FlowForecaster(den),
                    {"depth": DepthHead(LinearHead(32, 1), min_depth=0.5, max_depth=20.0)})
    if resolution is not None:
        wm.metadata = {"data": {"resolution": resolution}}
    return wm


FRAMES = torch.rand(1, 2, 3, 16, 16)


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize("name", ["horizon", "num_samples", "steps"])
@pytest.mark.parametrize("value", [2.5, 2.0, True, "2", np.float64(2.0)])
def test_non_integer_counts_are_type_errors_naming_the_argument(name, value):
    with pytest.raises(TypeError, match=rf"^{name}: expected a positive int, got "):
        tiny().forecast(FRAMES, **{name: value})


def test_numpy_integers_are_accepted_and_counts_below_one_refused():
    fc = tiny().forecast(FRAMES, horizon=np.int64(2), num_samples=np.int32(1), steps=np.int64(1))
    assert fc.latents.shape[1:3] == (1, 2) and fc.nfe == 1
    for name in ("horizon", "num_samples", "steps"):
        with pytest.raises(ValueError, match=rf"{name}: expected a positive int, got 0"):
            tiny().forecast(FRAMES, **{name: 0})


def test_huge_requests_are_refused_before_allocating():
    wm = tiny()
    with pytest.raises(ValueError, match=r"horizon=1000000000000 is more than the limit of 10,000"):
        wm.forecast(FRAMES, horizon=10**12)
    with pytest.raises(ValueError, match=r"num_samples=1000000000000 is more than the limit of 10,000"):
        wm.forecast(FRAMES, num_samples=10**12)
    # each within its limit, together 10 000 x 10 000 frames of 2x2x32 latents = 47.7 GiB
    with pytest.raises(ValueError, match=r"47\.7 GiB of latents .* more than the limit of 16\.0 GiB"):
        wm.forecast(FRAMES, horizon=10_000, num_samples=10_000)


@pytest.mark.parametrize("generator", [0, np.random.default_rng(0), "seed"])
def test_a_generator_that_is_not_torch_is_a_type_error(generator):
    with pytest.raises(TypeError, match=r"generator: expected a torch\.Generator or None, got .*manual_seed"):
        tiny().forecast(FRAMES, generator=generator)


@pytest.mark.parametrize("guidance", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_guidance_is_refused_up_front(guidance):
    with pytest.raises(ValueError, match=r"guidance: expected a finite number"):
        tiny().forecast(FRAMES, guidance=guidance)


def test_empty_batch_or_time_axis_is_a_clear_error():
    with pytest.raises(ShapeError, match=r"got shape \(0, 2, 3, 8, 8\) \(empty: b \(clips\)\)"):
        prepare_frames(torch.rand(0, 2, 3, 8, 8))
    with pytest.raises(ShapeError, match=r"empty: t \(frames\)"):
        tiny().forecast(torch.rand(1, 0, 3, 16, 16))
    with pytest.raises(ShapeError, match=r"empty: t \(frames\)"):
        prepare_frames(torch.zeros(0, 3, 8, 8, dtype=torch.uint8))


# ---------------------------------------------------------------- non-finite outputs
def _poison(tensor: torch.Tensor) -> None:
    with torch.no_grad():
        tensor.view(-1)[0] = float("nan")


def test_nan_encoder_weight_is_reported_as_the_encoder():
    wm = tiny()
    _poison(next(wm.encoder.parameters()))
    with pytest.raises(ValueError, match=r"^the encoder \(ToyEncoder\) produced non-finite values"):
        wm.forecast(FRAMES)


def test_nan_compressor_statistic_is_reported_as_compressor_encode():
    wm = tiny()
    _poison(wm.compressor.latent_norm.mean)
    with pytest.raises(ValueError, match=r"^compressor\.encode \(Identity\) produced non-finite values \(\d+ of 256"):
        wm.forecast(FRAMES)


def test_nan_forecaster_weight_is_reported_as_the_forecaster():
    wm = tiny()
    _poison(list(wm.forecaster.parameters())[-1])
    with pytest.raises(ValueError, match=r"^the forecaster \(FlowForecaster\) produced non-finite values"):
        wm.forecast(FRAMES, horizon=2)


def test_nan_in_decoding_is_reported_as_compressor_decode_or_the_probe():
    wm = tiny()
    fc = wm.forecast(FRAMES)
    assert torch.isfinite(fc.latents).all()
    with torch.no_grad():
        wm.compressor.feature_norm.std.fill_(float("inf"))  # encode gives 0, decode inf * z
    with pytest.raises(ValueError, match=r"^compressor\.decode \(Identity\) produced non-finite values"):
        fc.features
    wm = tiny()
    fc = wm.forecast(FRAMES)
    _poison(wm.probes["depth"].head.linear.weight)
    with pytest.raises(ValueError, match=r"^the 'depth' probe \(DepthHead\) produced non-finite values"):
        fc.decode("depth")


# ---------------------------------------------------------------- frame size policy
def test_frames_of_another_size_are_resized_with_one_warning_naming_the_sizes():
    wm = tiny(resolution=16)
    frames = torch.rand(1, 2, 3, 24, 32)
    with pytest.warns(ResizeWarning, match=r"frames are 32x24 \(W x H\) but the model was trained on 16x16: "
                                           r"resizing them to 16x16"):
        warned = wm.forecast(frames, num_samples=2, generator=torch.Generator().manual_seed(0))
    small = F.interpolate(frames[0], size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        by_hand = wm.forecast(small[None], num_samples=2, generator=torch.Generator().manual_seed(0))
        silent = wm.forecast(frames, num_samples=2, generator=torch.Generator().manual_seed(0), resize="silent")
    torch.testing.assert_close(warned.latents, by_hand.latents, atol=1e-5, rtol=0)
    torch.testing.assert_close(silent.latents, warned.latents, atol=0, rtol=0)
    assert warned.decode("depth").shape == (1, 2, 1, 24, 32)  # decoded at the size given
    with pytest.raises(ValueError, match=r"frames are 32x24 \(W x H\) but the model was trained on 16x16; resize"):
        wm.forecast(frames, resize="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_is = wm.forecast(frames, resize="none")
        assert wm.encode(frames, resize="silent").shape == (1, 2, 2, 2, 32)
    assert as_is.latents.shape[3:5] == (3, 4)  # the encoder's own grid of the 24x32 frames
    with pytest.raises(ValueError, match=r"resize: expected one of \('warn', 'silent', 'error', 'none'\)"):
        wm.forecast(frames, resize="squash")
    with pytest.warns(ResizeWarning, match="32x24"):
        wm.encode(frames)


def test_a_model_without_a_recorded_size_encodes_frames_as_they_are():
    wm = tiny()
    assert wm.trained_size is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wm.forecast(torch.rand(1, 2, 3, 24, 32), resize="error").latents.shape[3:5] == (3, 4)


def test_forecast_command_says_when_it_resizes(tmp_path, capsys):
    write_frames(torch.rand(2, 3, 120, 160), tmp_path / "frames")
    assert main(["forecast", "--input", str(tmp_path / "frames"), "--horizon", "1", "--samples", "1",
                 "--steps", "1", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resizing the input frames from 160x120 to 64x64 (the resolution the model was trained at" in out


# ---------------------------------------------------------------- unreadable files, unfitted PCA
def test_corrupt_png_and_gif_are_errors_naming_the_file(tmp_path, capsys):
    folder = tmp_path / "frames"
    write_frames(torch.rand(2, 3, 8, 8), folder)
    bad = sorted(folder.iterdir())[1]
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    with pytest.raises(ValueError, match=rf"could not read {bad} as an image \(corrupt or truncated file\?\)"):
        read_frames(folder)
    save_gif(torch.rand(3, 3, 8, 8), tmp_path / "a.gif")
    data = (tmp_path / "a.gif").read_bytes()
    (tmp_path / "a.gif").write_bytes(data[: len(data) // 2])  # truncated GIF
    with pytest.raises(ValueError, match=r"a\.gif as an animated image \(corrupt or truncated file\?\)"):
        read_video(tmp_path / "a.gif")
    assert main(["forecast", "--input", str(folder), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    assert str(bad) in capsys.readouterr().err


def test_unfitted_pca_says_it_is_not_fitted():
    pca = PCA(8)
    for call in (lambda: pca.encode(torch.randn(2, 4, 4, 32)), lambda: pca.decode(torch.randn(2, 4, 4, 8))):
        with pytest.raises(RuntimeError, match=r"PCA is not fitted; call fit\(features\)"):
            call()
    pca.fit(torch.randn(64, 2, 2, 32))
    assert pca.encode(torch.randn(2, 4, 4, 32)).shape == (2, 4, 4, 8)
    restored = PCA(8)
    restored.load_state_dict(pca.state_dict())
    assert torch.equal(restored.encode(torch.ones(1, 2, 2, 32)), pca.encode(torch.ones(1, 2, 2, 32)))
