"""Run every training stage from one JSON config: encoder → features → compressor → forecasters → probes.

Each stage writes into ``workdir/<stage>/`` and is skipped when its output already
exists, so a killed run is resumed by running the same command again (the forecaster
stages also resume inside from their own checkpoints).

Config (JSON; every section but ``data`` optional with defaults)::

    {
      "workdir": "runs/toyworld", "seed": 0, "output": "runs/toyworld/model",
      "data": {"world": "toyworld", "resolution": 64, "train_clips": 512, "clip_length": 8, "stride": 2},
      "encoder": {"type": "ToyEncoder", "config": {...}, "train": {"steps": 1500, ...}},
      "features": {"shard_size": 64, "batch_size": 16},
      "compressor": {"type": "FeatureVAE", "config": {...}, "train": {"steps": 2000, ...}},
      "forecaster": {"denoiser": {...}, "flow": {...}, "train": {"steps": 3000, ...}},
      "regression": {"train": {"steps": 3000, ...}},
      "probes": {"heads": {"segmentation": {...}, ...}, "clips": 128, "train": {"steps": 1500, ...}}
    }

A frame folder or video dataset works too: ``"data": {"world": "frames", "root": DIR,
"clip_length": 8}`` (every sub-folder of DIR is one clip); the probe stage then needs
targets and is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from featureflow.utils import JSONLLogger
from featureflow.utils.component_io import load_component, save_component
from featureflow.utils.config import build_component
from featureflow.utils.io import load_safetensors, save_json, save_safetensors

__all__ = ["run_pipeline", "load_config", "register", "STAGES"]

STAGES = ("encoder", "features", "compressor", "latents", "flow", "regression", "probes", "assemble")


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a pipeline config (JSON) with a clear error on bad files."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pipeline config not found: {p}")
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not valid JSON: {err}") from None
    if not isinstance(cfg, dict) or "data" not in cfg:
        raise ValueError(f"{p}: expected a JSON object with at least a 'data' section")
    return cfg


def _save_module(module: nn.Module, directory: Path) -> None:
    save_component(module, directory, "component")  # component.json is written last: marks the stage done


def _load_module(directory: Path) -> nn.Module:
    return load_component(directory, "component")


def _done(directory: Path) -> bool:
    return (directory / "component.json").is_file()


class _FolderClips(torch.utils.data.Dataset):
    """Clips from a folder of frame folders (one sub-folder per clip)."""

    def __init__(self, root: str, length: int, resolution: int | None) -> None:
        from featureflow.data import read_frames

        self._read = read_frames
        self.dirs = sorted(p for p in Path(root).iterdir() if p.is_dir()) or [Path(root)]
        self.length, self.resolution = length, resolution

    def __len__(self) -> int:
        return len(self.dirs)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        frames = self._read(self.dirs[i])
        if frames.shape[0] < self.length:
            raise ValueError(f"{self.dirs[i]} has {frames.shape[0]} frames; clip_length is {self.length}")
        frames = frames[: self.length]
        if self.resolution is not None:
            frames = torch.nn.functional.interpolate(frames, size=(self.resolution, self.resolution),
                                                     mode="bilinear", antialias=True, align_corners=False)
        return {"rgb": frames.clamp(0, 1)}


def _clips(cfg: dict[str, Any], split: str = "train", size: int | None = None) -> Any:
    data = cfg["data"]
    kind = data.get("world", "toyworld")
    if kind == "toyworld":
        from featureflow.data import ToyWorldClips

        return ToyWorldClips(split, length=int(data.get("clip_length", 8)), stride=int(data.get("stride", 1)),
                             size=size or int(data.get("train_clips", 256)),
                             resolution=int(data.get("resolution", 64)), warmup=int(data.get("warmup", 0)))
    if kind == "frames":
        return _FolderClips(data["root"], int(data.get("clip_length", 8)), data.get("resolution"))
    raise ValueError(f"data.world must be 'toyworld' or 'frames', got {kind!r}")


def _stage_encoder(cfg: dict[str, Any], work: Path, progress: bool) -> nn.Module:
    out = work / "encoder"
    if _done(out):
        return _load_module(out)
    spec = cfg.get("encoder", {"type": "ToyEncoder", "config": {}})
    torch.manual_seed(int(cfg.get("seed", 0)))  # initial weights from the run's seed
    encoder = build_component({"type": spec["type"], "config": spec.get("config", {})})
    train = spec.get("train")
    if train:
        if spec["type"] != "ToyEncoder" or cfg["data"].get("world", "toyworld") != "toyworld":
            raise ValueError("encoder training is only defined for a ToyEncoder on ToyWorld")
        from featureflow.data import ToyWorld
        from featureflow.training.toy_encoder import train_toy_encoder

        world = ToyWorld(resolution=int(cfg["data"].get("resolution", 64)))
        train_toy_encoder(encoder, world, progress=progress, log_path=work / "logs" / "encoder.jsonl",
                          seed=int(cfg.get("seed", 0)), **train)
    encoder.eval()
    _save_module(encoder, out)
    return encoder


def _stage_features(cfg: dict[str, Any], work: Path, encoder: nn.Module, progress: bool) -> Any:
    from featureflow.training.features import FeatureShards, extract_features

    out = work / "features"
    if not (out / "index.json").is_file():
        fcfg = cfg.get("features", {})
        extract_features(encoder, _clips(cfg), out, shard_size=int(fcfg.get("shard_size", 64)),
                         batch_size=int(fcfg.get("batch_size", 8)), progress=progress)
    return FeatureShards(out)


def _stage_compressor(cfg: dict[str, Any], work: Path, shards: Any, progress: bool) -> nn.Module:
    out = work / "compressor"
    if _done(out):
        return _load_module(out)
    spec = cfg.get("compressor", {"type": "FeatureVAE", "config": {}})
    feats = shards.tensor("features").float()
    frames = feats.reshape(-1, *feats.shape[2:])  # (N*T, h, w, D)
    conf = dict(spec.get("config", {}))
    conf.setdefault("feature_dim", int(frames.shape[-1]))
    torch.manual_seed(int(cfg.get("seed", 0)))
    comp = build_component({"type": spec["type"], "config": conf})
    if spec["type"] == "FeatureVAE":
        from featureflow.training.vae import train_vae

        train_vae(comp, frames, progress=progress, log_path=work / "logs" / "compressor.jsonl",
                  seed=int(cfg.get("seed", 0)), **spec.get("train", {}))
    elif spec["type"] == "PCA":
        comp.fit(frames.split(1024))
    else:
        from featureflow.compressors import fit_statistics

        fit_statistics(comp, frames.split(1024))
    comp.eval()
    _save_module(comp, out)
    return comp


@torch.no_grad()
def _stage_latents(work: Path, shards: Any, compressor: nn.Module) -> Tensor:
    path = work / "latents.safetensors"
    if path.is_file():
        return load_safetensors(path)["latents"]
    feats = shards.tensor("features").float()
    n, t = feats.shape[:2]
    lat = torch.cat([compressor.encode(chunk) for chunk in feats.reshape(n * t, *feats.shape[2:]).split(512)])
    lat = lat.reshape(n, t, *lat.shape[1:])
    save_safetensors({"latents": lat}, path)
    return lat


def _stage_forecaster(
    cfg: dict[str, Any], work: Path, latents: Tensor, kind: str, progress: bool,
    encoder: nn.Module | None = None, compressor: nn.Module | None = None,
) -> nn.Module | None:
    from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster
    from featureflow.training.forecaster import frames_to_latents, train_forecaster

    out = work / kind
    if _done(out):
        return _load_module(out)
    fcfg = cfg.get("forecaster", {})
    section = fcfg if kind == "flow" else cfg.get("regression")
    if section is None:
        return None
    den_cfg = dict(fcfg.get("denoiser", {}))
    den_cfg.setdefault("latent_dim", int(latents.shape[-1]))
    torch.manual_seed(int(cfg.get("seed", 0)))  # the model's initial weights come from the run's seed
    den = Denoiser(**den_cfg)
    if kind == "flow":
        model: nn.Module = FlowForecaster(den, **fcfg.get("flow", {}))
    else:
        model = RegressionForecaster(den, **section.get("model", {}))
    if getattr(model, "residual", False) and "residual_scale" not in model.config:
        model.fit_residual_scale(latents)  # (next - last) / scale has unit variance, like the source noise
    train = dict(section.get("train", {}))
    stream = train.pop("stream", None)
    data: Any = latents
    encode = None
    if stream:
        # fresh procedural clips as training goes (never the same clip twice in a run),
        # encoded by the frozen encoder and compressor of the earlier stages
        if cfg["data"].get("world", "toyworld") != "toyworld" or encoder is None or compressor is None:
            raise ValueError("train.stream needs data.world = 'toyworld' (fresh clips are rendered as training goes)")
        from featureflow.data import ToyWorldClips

        data_cfg = cfg["data"]
        data = ToyWorldClips("train", length=int(stream.get("clip_length", data_cfg.get("clip_length", 8))),
                             stride=int(stream.get("stride", data_cfg.get("stride", 1))),
                             resolution=int(data_cfg.get("resolution", 64)), warmup=int(data_cfg.get("warmup", 0)),
                             modalities=("rgb",))
        encode = frames_to_latents(encoder, compressor)
    result = train_forecaster(model, data, progress=progress, log_path=work / "logs" / f"{kind}.jsonl",
                              ckpt_dir=work / "checkpoints" / kind, resume=True, encode=encode,
                              seed=int(cfg.get("seed", 0)), **train)
    if result.ema is not None:
        result.ema.copy_to(model)
    model.eval()
    _save_module(model, out)
    return model


@torch.no_grad()
def _probe_data(cfg: dict[str, Any], shards: Any, compressor: nn.Module, clips: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Compressor-reconstructed features and pixel targets of the first ``clips`` training clips."""
    ds = _clips(cfg)
    n = min(clips, len(ds))
    feats, targets = [], {}
    for i in range(n):
        f = shards[i]["features"].float()
        feats.append(compressor.decode(compressor.encode(f)))
        item = ds[i]
        for key in ("segmentation", "depth", "normals", "rgb"):
            if key in item:
                targets.setdefault(key, []).append(item[key])
    x = torch.cat(feats)
    return x, {k: torch.cat(v) for k, v in targets.items()}


def _stage_probes(cfg: dict[str, Any], work: Path, shards: Any, compressor: nn.Module, progress: bool) -> dict[str, nn.Module]:
    from featureflow.training.probes import train_probe

    pcfg = cfg.get("probes")
    if not pcfg or cfg["data"].get("world", "toyworld") != "toyworld":
        return {}
    heads: dict[str, nn.Module] = {}
    pending = {name: spec for name, spec in pcfg.get("heads", {}).items() if not _done(work / "probes" / name)}
    data = _probe_data(cfg, shards, compressor, int(pcfg.get("clips", 128))) if pending else None
    train = dict(pcfg.get("train", {}))
    batch = int(train.pop("batch_size", 32))
    for name, spec in pcfg.get("heads", {}).items():
        out = work / "probes" / name
        if _done(out):
            heads[name] = _load_module(out)
            continue
        assert data is not None
        head = build_component(spec)
        x, targets = data
        y = targets[name]
        gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)))

        def batches(x: Tensor = x, y: Tensor = y, gen: torch.Generator = gen) -> Any:
            while True:
                idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
                yield x[idx], y[idx]

        train_probe(head, batches(), progress=progress, log_path=work / "logs" / f"probe_{name}.jsonl",
                    seed=int(cfg.get("seed", 0)), **train)
        head.eval()
        _save_module(head, out)
        heads[name] = head
    return heads


def run_pipeline(
    cfg: dict[str, Any], *, progress: bool = True, until: str | None = None, only: str | None = None
) -> Path | None:
    """Run the stages of ``cfg`` in order (skipping finished ones); return the saved model directory.

    Args:
        cfg: the pipeline config (see the module docstring).
        progress: show progress bars.
        until: stop after this stage (one of `STAGES`); the model is saved only by "assemble".
        only: ``"flow"`` or ``"regression"``: run the stages before the forecasters (or
            reuse them), then train just that forecaster and stop. Two processes, one
            per forecaster, train both at once once the latents exist.
    """
    from featureflow.world import WorldModel

    if until is not None and until not in STAGES:
        raise ValueError(f"until must be one of {STAGES}, got {until!r}")
    if only not in (None, "flow", "regression"):
        raise ValueError(f"only must be 'flow' or 'regression', got {only!r}")
    flow = regression = None
    work = Path(cfg.get("workdir", "runs/pipeline"))
    work.mkdir(parents=True, exist_ok=True)
    save_json(cfg, work / "pipeline_config.json")
    log = JSONLLogger(work / "logs" / "pipeline.jsonl")

    def stage(name: str) -> bool:
        log.log(stage=name, event="start")
        return until is not None and STAGES.index(name) > STAGES.index(until)

    if stage("encoder"):
        return None
    encoder = _stage_encoder(cfg, work, progress)
    if stage("features"):
        return None
    shards = _stage_features(cfg, work, encoder, progress)
    if stage("compressor"):
        return None
    compressor = _stage_compressor(cfg, work, shards, progress)
    if stage("latents"):
        return None
    latents = _stage_latents(work, shards, compressor)
    if stage("flow"):
        return None
    if only in (None, "flow"):
        flow = _stage_forecaster(cfg, work, latents, "flow", progress, encoder, compressor)
    if stage("regression"):
        return None
    if only in (None, "regression"):
        regression = _stage_forecaster(cfg, work, latents, "regression", progress, encoder, compressor)
    if only is not None:
        log.log(stage=only, event="done")
        return None
    if stage("probes"):
        return None
    probes = _stage_probes(cfg, work, shards, compressor, progress)
    if stage("assemble"):
        return None
    assert flow is not None
    model = WorldModel(encoder, compressor, flow, probes, baselines={"regression": regression} if regression else None)
    model.metadata = {"data": cfg["data"], "seed": cfg.get("seed", 0)}
    out = Path(cfg.get("output", work / "model"))
    dtype = torch.bfloat16 if cfg.get("store_bf16", False) else None
    model.save_pretrained(out, dtype=dtype)
    log.log(stage="assemble", event="done", output=str(out))
    log.close()
    return out


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.workdir:
        cfg["workdir"] = args.workdir
    out = run_pipeline(cfg, progress=not args.no_progress, until=args.until, only=args.only)
    print(f"model written to {out}" if out else f"stopped after stage {args.only or args.until!r}")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``featureflow train --config CFG.json`` (all stages, resumable)."""
    p = sub.add_parser("train", help="run every training stage from a JSON config (resumable)")
    p.add_argument("--config", required=True, help="pipeline config (JSON)")
    p.add_argument("--workdir", default=None, help="override the config's workdir")
    p.add_argument("--until", default=None, choices=STAGES, help="stop after this stage")
    p.add_argument("--only", default=None, choices=("flow", "regression"),
                   help="train just this forecaster (earlier stages are run or reused) and stop")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=_run)
