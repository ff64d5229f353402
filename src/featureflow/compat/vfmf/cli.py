"""``featureflow convert-vfmf``: convert the paper's released checkpoints from the shell.

Example:
    $ featureflow convert-vfmf --forecaster epoch=2399.pt --heads-dir heads/kubric \\
          --feature-stats feature_stats/kubric/movi_a/dino.npz --out vfmf-kubric
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]

HELP = "convert the paper's released VFMF checkpoints into a featureflow model directory"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``convert-vfmf`` sub-command to an ``argparse`` sub-parsers object.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="featureflow")
        >>> _ = register(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["convert-vfmf", "--forecaster", "f.pt", "--feature-stats", "s.npz",
        ...                           "--out", "o"])
        >>> args.weights, args.dino, args.heads_dir is None
        ('ema', 'checkpoint', True)
    """
    p = subparsers.add_parser("convert-vfmf", help=HELP, description=HELP.capitalize() + ".")
    p.add_argument("--forecaster", required=True, metavar="F.pt", help="released forecaster checkpoint (.pt)")
    p.add_argument("--feature-stats", required=True, metavar="S.npz",
                   help="DINOv2 feature statistics (.npz: mean, std)")
    p.add_argument("--heads-dir", metavar="D", default=None,
                   help="directory holding the segmentation / depth / normals head .ckpt files (searched recursively)")
    p.add_argument("--vae", metavar="V.pt", default=None, help="standalone VAE checkpoint (optional; cross-checked)")
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="which forecaster weights to convert (default: ema, as the authors sample)")
    p.add_argument("--dino", choices=("checkpoint", "hub"), default="checkpoint",
                   help="DINOv2 from the checkpoint (self-contained, default) or referenced by hub id")
    p.add_argument("--dino-model", default="facebook/dinov2-with-registers-base",
                   help="hub id or local directory of the DINOv2 for --dino hub")
    p.add_argument("--dino-blocks", nargs="+", type=int, default=[2, 5, 8, 11], metavar="N",
                   help="DINOv2 blocks whose features are concatenated (default: 2 5 8 11, as released)")
    p.add_argument("--dino-heads", type=int, default=None,
                   help="DINOv2 attention heads (only for widths other than the released ViT-S/B/L/g)")
    p.add_argument("--segmentation-head", metavar="H.ckpt", default=None,
                   help="segmentation head file (overrides --heads-dir)")
    p.add_argument("--depth-head", metavar="H.ckpt", default=None, help="depth head file (overrides --heads-dir)")
    p.add_argument("--normals-head", metavar="H.ckpt", default=None, help="normals head file (overrides --heads-dir)")
    p.add_argument("--depth-range", nargs=2, type=float, metavar=("MIN", "MAX"), default=(0.0, 1.0),
                   help="depth of the first and last of the 256 bins (released: normalised depth, 0 1)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the conversion described by parsed ``args``; prints a summary, returns 0."""
    from featureflow.compat.vfmf.convert import convert_vfmf

    heads = {
        task: path
        for task, path in (("segmentation", args.segmentation_head), ("depth", args.depth_head),
                           ("normals", args.normals_head))
        if path is not None
    }
    model = convert_vfmf(
        args.forecaster, feature_stats=args.feature_stats, heads_dir=args.heads_dir, heads=heads or None,
        vae=args.vae, out=args.out, weights=args.weights, dino=args.dino, dino_model=args.dino_model,
        depth_range=tuple(args.depth_range), dino_blocks=tuple(args.dino_blocks), dino_heads=args.dino_heads,
    )
    recipe = model.vfmf_recipe
    print(
        f"wrote {args.out}: DINOv2 ({args.dino}), "
        f"FeatureVAE {model.compressor.feature_dim}->{model.compressor.latent_dim}, "
        f"Denoiser(arch='vfmf', grid={model.forecaster.denoiser.grid}), probes {sorted(model.probes) or 'none'}; "
        f"released recipe: {recipe.solver} {recipe.steps} NFE, context {recipe.max_context}"
    )
    return 0
