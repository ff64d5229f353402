"""The demo renders a ToyWorld clip (rgb | depth | normals | segmentation) to GIF and PNG."""

from __future__ import annotations

from PIL import Image

from featureflow.data import ToyWorld
from featureflow.demo import run_demo, toyworld_panels


def test_run_demo_writes_gif_and_png(tmp_path, capsys):
    out = run_demo(tmp_path / "demo", seed=3, progress=False, model="no-such-model")
    assert out == tmp_path / "demo"
    with Image.open(out / "toyworld.gif") as gif:
        assert gif.n_frames == 24 and gif.size == (4 * 128, 128)
    with Image.open(out / "toyworld.png") as png:
        assert png.mode == "RGB" and png.size[0] > png.size[1] / 6
    assert "only the ToyWorld clip was rendered" in capsys.readouterr().out


def test_panels_put_the_four_views_side_by_side():
    world = ToyWorld(resolution=8)
    clip = world.clip(0, 2)
    panels = toyworld_panels(clip, far=world.far)
    assert panels.shape == (2, 3, 8, 32)
    assert (panels[:, :, :, :8] == clip.rgb).all()
