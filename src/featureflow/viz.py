"""Visualisation: colourise depth, normals and segmentation; grids; PNG and GIF writers.

All colourisers return float32 images (…, 3, H, W) in [0, 1], so their outputs can be
placed side by side with RGB frames in :func:`make_grid`.

Example:
    >>> import torch
    >>> from featureflow import viz
    >>> row = [torch.rand(3, 8, 8), viz.colorize_depth(torch.rand(8, 8) + 1)]
    >>> tuple(viz.make_grid([row], pad=1).shape)
    (3, 10, 19)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from featureflow.data.frames import to_uint8
from featureflow.typing import Float, Int, UInt8, typechecked
from featureflow.utils import atomic_write

__all__ = [
    "PALETTE",
    "colorize_depth",
    "colorize_normals",
    "colorize_segmentation",
    "heatmap",
    "make_grid",
    "make_labeled_grid",
    "save_png",
    "save_gif",
    "line_plot",
    "LINE_COLOURS",
]

# Anchors of a perceptually ordered colour map (dark purple -> blue -> green -> yellow).
_CMAP = torch.tensor(
    [
        [0.267, 0.005, 0.329],
        [0.283, 0.141, 0.458],
        [0.254, 0.265, 0.530],
        [0.207, 0.372, 0.553],
        [0.164, 0.471, 0.558],
        [0.128, 0.567, 0.551],
        [0.135, 0.659, 0.518],
        [0.267, 0.749, 0.441],
        [0.478, 0.821, 0.318],
        [0.741, 0.873, 0.150],
        [0.993, 0.906, 0.144],
    ]
)


def _palette(n: int = 256) -> Tensor:
    fixed = [
        (0, 0, 0),  # 0 background
        (150, 150, 150),  # 1 floor
        (230, 25, 75),  # 2 sphere
        (60, 180, 75),  # 3 cube
        (0, 130, 200),  # 4 cylinder
        (255, 225, 25),
        (145, 30, 180),
        (245, 130, 48),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
        (170, 110, 40),
        (128, 0, 0),
        (0, 0, 128),
    ]
    colours = list(fixed)
    i = len(colours)
    while len(colours) < n:  # bit-interleaved colours for the rest, like the VOC palette
        r = g = b = 0
        c, j = i, 0
        while c:
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
            j += 1
        colours.append((r, g, b))
        i += 1
    return torch.tensor(colours[:n], dtype=torch.float32) / 255.0


#: (256, 3) fixed colours for class/instance ids: 0 black (background), 1 grey
#: (floor), 2 red (sphere), 3 green (cube), 4 blue (cylinder), then distinct colours.
PALETTE: Tensor = _palette()


@typechecked
def colorize_depth(
    depth: Float[Tensor, "*batch H W"],
    vmin: float | int | None = None,
    vmax: float | int | None = None,
    inverse: bool = True,
) -> Float[Tensor, "*batch 3 H W"]:
    """Colour depth maps: near is yellow, far is dark purple.

    Args:
        depth: depth in metres, any leading axes.
        vmin: the nearest depth of the colour map's range (default: the input's finite
            minimum over all images, so a clip's colours are stable).
        vmax: the farthest depth of the range (default: the input's finite maximum).
        inverse: colour by inverse depth (disparity), which spreads near depths out.

    Example:
        >>> import torch
        >>> img = colorize_depth(torch.tensor([[1.0, 2.0]]))
        >>> tuple(img.shape), [round(v, 3) for v in img[:, 0, 0].tolist()]
        ((3, 1, 2), [0.993, 0.906, 0.144])
    """
    d = depth.detach().float()
    finite = d[torch.isfinite(d)]
    lo = float(finite.min()) if vmin is None and finite.numel() else (vmin if vmin is not None else 0.0)
    hi = float(finite.max()) if vmax is None and finite.numel() else (vmax if vmax is not None else 1.0)
    if lo <= 0 and inverse:
        raise ValueError(f"inverse depth colouring needs positive depths; got vmin={lo}")
    d = torch.nan_to_num(d, nan=hi, posinf=hi).clamp(lo, hi)
    if inverse:
        x = (1 / d - 1 / hi) / max(1 / lo - 1 / hi, 1e-12)
    else:
        x = (hi - d) / max(hi - lo, 1e-12)
    pos = x.clamp(0, 1) * (len(_CMAP) - 1)
    i0 = pos.floor().long().clamp(max=len(_CMAP) - 2)
    frac = (pos - i0).unsqueeze(-1)
    rgb = _CMAP[i0] * (1 - frac) + _CMAP[i0 + 1] * frac
    return rgb.movedim(-1, -3).contiguous()


@typechecked
def colorize_normals(normals: Float[Tensor, "*batch 3 H W"]) -> Float[Tensor, "*batch 3 H W"]:
    """Map unit normals in [-1, 1] to colours ``(n + 1) / 2``.

    Example:
        >>> import torch
        >>> colorize_normals(torch.tensor([0.0, 0.0, -1.0]).view(3, 1, 1)).flatten().tolist()
        [0.5, 0.5, 0.0]
    """
    return ((normals.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0)


@typechecked
def colorize_segmentation(
    labels: Int[Tensor, "*batch H W"], palette: Float[Tensor, "n 3"] | None = None
) -> Float[Tensor, "*batch 3 H W"]:
    """Colour integer label maps with a fixed palette (:data:`PALETTE` by default).

    Labels are taken modulo the palette size; negative labels are an error.

    Example:
        >>> import torch
        >>> colorize_segmentation(torch.tensor([[0, 2]]))[:, 0, 1].tolist()
        [0.9019607901573181, 0.09803921729326248, 0.29411765933036804]
    """
    pal = PALETTE if palette is None else palette.float()
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, got minimum {int(labels.min())}")
    return pal[labels.long() % len(pal)].movedim(-1, -3).contiguous()


# Anchors of the uncertainty colour map (black -> purple -> orange -> pale yellow).
_HEAT = torch.tensor([[0.0, 0.0, 0.02], [0.32, 0.07, 0.45], [0.73, 0.2, 0.42], [0.98, 0.55, 0.25], [0.99, 0.99, 0.75]])


@typechecked
def heatmap(x: Float[Tensor, "*batch H W"], vmax: float | int | None = None) -> Float[Tensor, "*batch 3 H W"]:
    """Colour a non-negative map (e.g. the spread of sampled futures) dark → bright.

    Args:
        x: values >= 0, any leading axes.
        vmax: the value shown brightest (default: the input's maximum).

    Example:
        >>> import torch
        >>> img = heatmap(torch.tensor([[0.0, 1.0]]))
        >>> tuple(img.shape), img[:, 0, 0].tolist()
        ((3, 1, 2), [0.0, 0.0, 0.019999999552965164])
    """
    top = float(x.max()) if vmax is None else float(vmax)
    u = (x.detach().float() / max(top, 1e-8)).clamp(0, 1) * (len(_HEAT) - 1)
    lo = u.floor().long().clamp(max=len(_HEAT) - 2)
    w = (u - lo).unsqueeze(-1)
    rgb = _HEAT[lo] * (1 - w) + _HEAT[lo + 1] * w
    return rgb.movedim(-1, -3)


def _upscale(image: Tensor, scale: int) -> Tensor:
    return image if scale == 1 else image.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def make_grid(
    rows: Sequence[Sequence[Tensor]], pad: int = 2, pad_value: float = 1.0, scale: int = 1
) -> Tensor:
    """Tile rows of images (3, H, W) into one image (3, H', W').

    All images must share one size; uint8 images are converted to float. ``scale``
    enlarges every image by an integer factor (nearest neighbour) first.

    Example:
        >>> import torch
        >>> tuple(make_grid([[torch.zeros(3, 4, 4)] * 3] * 2, pad=1, scale=2).shape)
        (3, 19, 28)
    """
    if not rows or not all(len(r) for r in rows):
        raise ValueError("make_grid needs at least one non-empty row of images")
    if scale < 1 or pad < 0:
        raise ValueError(f"expected scale >= 1 and pad >= 0, got scale={scale}, pad={pad}")
    images = [[im.float() / 255.0 if im.dtype == torch.uint8 else im.detach().float() for im in r] for r in rows]
    shapes = {tuple(im.shape) for r in images for im in r}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[0] != 3:
        raise ValueError(f"make_grid expects images of one shape (3, H, W); got shapes {sorted(shapes)}")
    _, h, w = next(iter(shapes))
    h, w = h * scale, w * scale
    ncols = max(len(r) for r in images)
    out = torch.full((3, pad + len(images) * (h + pad), pad + ncols * (w + pad)), float(pad_value))
    for i, r in enumerate(images):
        for j, im in enumerate(r):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[:, y : y + h, x : x + w] = _upscale(im, scale)
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except (TypeError, ImportError, OSError):  # pragma: no cover - old Pillow / no FreeType
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int) -> tuple[str, Any]:
    """The largest font (from ``size`` down to 7 px) that fits ``text`` in ``width``; else truncated."""
    for s in range(size, 6, -1):
        font = _font(s)
        if draw.textlength(text, font=font) <= width:
            return text, font
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…", font


def make_labeled_grid(
    rows: Sequence[Sequence[Tensor]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    *,
    col_groups: Sequence[tuple[str, int, int]] | None = None,
    title: str | None = None,
    pad: int = 2,
    pad_value: float = 1.0,
    scale: int = 1,
    font_size: int = 13,
) -> Tensor:
    """:func:`make_grid` with text labels drawn around it (white bands, dark text).

    Row labels go in a band on the left (one per row, centred on it), column labels in
    a band above (one per column), ``col_groups`` above those (``(label, first column,
    number of columns)``, a label spanning several columns with a rule under it) and
    ``title`` on top. A label wider than its column is drawn smaller (down to 7 px),
    then truncated with "…".

    Example:
        >>> import torch
        >>> img = make_labeled_grid([[torch.zeros(3, 8, 8)] * 2], ["rgb"], ["a", "b"],
        ...                         col_groups=[("both", 0, 2)], title="t", scale=4)
        >>> img.shape[0], img.shape[1] > 34, img.shape[2] > 70
        (3, True, True)
    """
    grid = make_grid(rows, pad=pad, pad_value=pad_value, scale=scale)
    ncols = max(len(r) for r in rows)
    for name, labels, n in (("row_labels", row_labels, len(rows)), ("col_labels", col_labels, ncols)):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name} must have one label per {name[:3]} ({n}), got {len(labels)}: {list(labels)}")
    for label, first, count in col_groups or ():
        if first < 0 or count < 1 or first + count > ncols:
            raise ValueError(f"column group {label!r} spans columns {first}..{first + count - 1}; the grid has {ncols}")
    h, w = (int(d) * scale for d in next(iter(rows[0])).shape[-2:])
    line = font_size + 8
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 0
    if row_labels:
        left = int(max(probe.textlength(t, font=_font(font_size)) for t in row_labels)) + 12
    bands = [b for b, on in (("title", title), ("groups", col_groups), ("cols", col_labels)) if on]
    top = line * len(bands)
    fill = int(round(pad_value * 255))
    canvas = Image.new("RGB", (left + grid.shape[-1], top + grid.shape[-2]), (fill, fill, fill))
    canvas.paste(Image.fromarray(to_uint8(grid).permute(1, 2, 0).numpy(), "RGB"), (left, top))
    draw = ImageDraw.Draw(canvas)
    ink = (32, 32, 32)

    def col_x(j: int) -> int:
        return left + pad + j * (w + pad)

    def centred(text: str, x0: int, width: int, y: int) -> None:
        text, font = _fit(draw, text, width, font_size)
        draw.text((x0 + width / 2, y + line / 2), text, fill=ink, font=font, anchor="mm")

    y = 0
    if title:
        centred(title, left, grid.shape[-1], y)
        y += line
    if col_groups:
        for label, first, count in col_groups:
            x0, x1 = col_x(first), col_x(first + count - 1) + w
            centred(label, x0, x1 - x0, y - 2)
            draw.line([(x0 + 2, y + line - 3), (x1 - 2, y + line - 3)], fill=ink, width=1)
        y += line
    if col_labels:
        for j, label in enumerate(col_labels):
            centred(label, col_x(j), w, y)
    for i, label in enumerate(row_labels or ()):
        text, font = _fit(draw, label, left - 8, font_size)
        draw.text((left - 6, top + pad + i * (h + pad) + h / 2), text, fill=ink, font=font, anchor="rm")
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255.0


@typechecked
def save_png(image: Float[Tensor, "3 H W"] | UInt8[Tensor, "3 H W"], path: str | os.PathLike) -> Path:
    """Write one image (3, H, W), float in [0, 1] or uint8, as an 8-bit PNG (atomically).

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = save_png(torch.ones(3, 2, 2), pathlib.Path(tempfile.mkdtemp()) / "x.png")
        >>> p.suffix
        '.png'
    """
    target = Path(path)
    arr = to_uint8(image).permute(1, 2, 0).cpu().numpy()
    with atomic_write(target) as tmp:
        Image.fromarray(arr, "RGB").save(tmp, format="PNG")
    return target


@typechecked
def save_gif(frames: Float[Tensor, "t 3 H W"] | UInt8[Tensor, "t 3 H W"], path: str | os.PathLike, fps: float | int = 8.0, loop: int = 0) -> Path:
    """Write frames (t, 3, H, W), float in [0, 1] or uint8, as an animated GIF (atomically).

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = save_gif(torch.rand(2, 3, 4, 4), pathlib.Path(tempfile.mkdtemp()) / "x.gif")
        >>> p.stat().st_size > 0
        True
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    target = Path(path)
    arrays = to_uint8(frames).permute(0, 2, 3, 1).cpu().numpy()
    images = [Image.fromarray(a, "RGB") for a in arrays]
    with atomic_write(target) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=loop,
            disposal=1,
        )
    return target


#: Line colours of :func:`line_plot`, one per series.
LINE_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (23, 190, 207),
                (140, 86, 75), (127, 127, 127)]


def line_plot(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    diagonal: bool = False,
    markers: bool = True,
    size: tuple[int, int] = (560, 400),
    path: str | os.PathLike | None = None,
) -> Image.Image:
    """A labelled line plot (axes, ticks, title, legend) as a PIL image, drawn without matplotlib.

    Args:
        series: ``[(label, xs, ys), ...]``; non-finite points (and non-positive ones on a
            log axis) are left out.
        xlabel: x-axis label.
        ylabel: y-axis label.
        title: plot title.
        logx: logarithmic x axis.
        logy: logarithmic y axis.
        diagonal: equal axis ranges with the y = x line (for reliability diagrams).
        markers: draw a dot at every point (off for long curves).
        size: (width, height) in pixels.
        path: also write the PNG there (atomically).

    Example:
        >>> img = line_plot([("a", [1, 2, 3], [3.0, 1.0, 2.0])], xlabel="step", ylabel="loss", title="t")
        >>> img.size
        (560, 400)
    """
    W, H = size
    left, right, top, bottom = 64, 16, 40, 48
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def ok(x: float, y: float) -> bool:
        return math.isfinite(x) and math.isfinite(y) and (x > 0 or not logx) and (y > 0 or not logy)

    fx = (lambda v: math.log10(v)) if logx else (lambda v: float(v))
    fy = (lambda v: math.log10(v)) if logy else (lambda v: float(v))
    pts = [(fx(x), fy(y)) for _, xs, ys in series for x, y in zip(xs, ys) if ok(float(x), float(y))] or [(0.0, 0.0), (1.0, 1.0)]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if diagonal:
        x0 = y0 = min(x0, y0)
        x1 = y1 = max(x1, y1)
    x0, x1 = (x0 - 0.5, x1 + 0.5) if x1 - x0 < 1e-12 else (x0, x1)
    y0, y1 = (y0 - 0.5, y1 + 0.5) if y1 - y0 < 1e-12 else (y0, y1)
    ypad, xpad = 0.05 * (y1 - y0), 0.03 * (x1 - x0)
    y0, y1, x0, x1 = y0 - ypad, y1 + ypad, x0 - xpad, x1 + xpad

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (W - left - right), H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom))

    d.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for i in range(5):
        xv, yv = x0 + i * (x1 - x0) / 4, y0 + i * (y1 - y0) / 4
        X, _ = px(xv, y0)
        _, Y = px(x0, yv)
        d.line([X, H - bottom, X, H - bottom + 4], fill=(0, 0, 0))
        d.line([left - 4, Y, left, Y], fill=(0, 0, 0))
        d.text((X - 12, H - bottom + 6), f"{10 ** xv:.3g}" if logx else f"{xv:.3g}", fill=(0, 0, 0), font=font)
        d.text((4, Y - 6), f"{10 ** yv:.3g}" if logy else f"{yv:.3g}", fill=(0, 0, 0), font=font)
    d.text((left, 4), title, fill=(0, 0, 0), font=font)
    xl = xlabel + (" (log scale)" if logx else "")
    d.text(((W - len(xl) * 6) // 2, H - 18), xl, fill=(0, 0, 0), font=font)
    d.text((4, top - 14), ylabel + (" (log scale)" if logy else ""), fill=(0, 0, 0), font=font)
    if diagonal:
        d.line([px(x0, x0), px(x1, x1)], fill=(160, 160, 160), width=1)
    for i, (label, xs, ys) in enumerate(series):
        c = LINE_COLOURS[i % len(LINE_COLOURS)]
        p = [px(fx(x), fy(y)) for x, y in zip(xs, ys) if ok(float(x), float(y))]
        if len(p) > 1:
            d.line(p, fill=c, width=2)
        if markers:
            for X, Y in p:
                d.ellipse([X - 3, Y - 3, X + 3, Y + 3], fill=c)
        d.rectangle([left + 8, top + 8 + 14 * i, left + 18, top + 16 + 14 * i], fill=c)
        d.text((left + 22, top + 6 + 14 * i), label, fill=(0, 0, 0), font=font)
    if path is not None:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out) as tmp:
            img.save(tmp, format="PNG")
    return img
