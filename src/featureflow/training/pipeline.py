"""Run every training stage from one JSON config: encoder → features → compressor → forecasters → probes.

Each stage writes into ``workdir/<stage>/`` and records a fingerprint of everything it
was built from (its config section, the data settings, its seed and the fingerprint of
the stage before it) in ``workdir/stages/<stage>.json``. A finished stage whose
fingerprint still matches is reused, so a killed run resumes by running the same
command again (the forecaster stages also resume inside from their checkpoints). A
stage whose config changed is trained again, and so is every stage after it (the
fingerprints chain).

Reproducible: every stage seeds torch with its own seed, derived from the config's
``seed`` and the stage name (:func:`stage_seed`), before it builds its model, so the
same config gives a bit-identical model (on one thread).

Under ``torchrun`` the stages run once, together: every trainable stage trains through
:func:`~featureflow.training.loop.fit` on every rank (DistributedDataParallel, each rank
on its slice of the global batch), feature extraction is sharded over the ranks, the
latents are computed by rank 0 while the others wait; then every rank loads what rank 0
wrote (the work directory must be on a shared file system across nodes). Only rank 0
writes files and logs.

Config (JSON; every section but ``data`` optional with defaults)::

    {
      "workdir": "runs/toyworld", "seed": 0, "output": "runs/toyworld/model",
      "data": {"world": "toyworld", "resolution": 64, "train_clips": 512, "clip_length": 8, "stride": 2},
      "encoder": {"type": "ToyEncoder", "config": {...}, "train": {"steps": 1500, ...}},
      "features": {"shard_size": 64, "batch_size": 16},
      "compressor": {"type": "FeatureVAE", "config": {...}, "train": {"steps": 2000, ...}},
      "forecaster": {"denoiser": {...}, "flow": {...}, "train": {"steps": 3000, "ckpt_every": 250, ...}},
      "regression": {"model": {...}, "train": {"steps": 3000, ...}},
      "probes": {"heads": {"segmentation": {...}, ...}, "clips": 128, "train": {"steps": 1500, ...}}
    }

The encoder and compressor are built by component type and trained by the trainer
registered for that type (:mod:`featureflow.training.registry`); an encoder without a
``train`` section is used frozen (e.g. ``DINOv2Encoder``). A frame-folder dataset
works too: ``"data": {"world": "frames", "root": DIR, "clip_length": 8}`` (every
sub-folder of DIR is one clip), and so does any dataset of
:func:`featureflow.data.dataset_from_config` (``"dataset": "video" | "kubric" | "cityscapes"``);
the probe stage needs ToyWorld's targets and is skipped otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from featureflow.training import distributed as ddp
from featureflow.training.config import PipelineConfig
from featureflow.training.pipeline_data import clips_of, probe_data
from featureflow.training.registry import StageContext, trainable_types, trainer_for
from featureflow.training.stage_state import (
    CKPT_EVERY, StageRun, fresh_log, legacy_seed, load_stage, save_stage, stage_done, stage_seed, unsharded,
)
from featureflow.utils.config import build_component
from featureflow.utils.io import load_safetensors, save_json, save_safetensors

__all__ = ["run_pipeline", "load_config", "register", "stage_seed", "STAGES", "CKPT_EVERY"]

STAGES = ("encoder", "features", "compressor", "latents", "flow", "regression", "probes", "assemble")

def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a pipeline config (JSON) with a clear error on bad files.

    Example:
        >>> import json, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.json"; _ = p.write_text(json.dumps({"data": {}}))
        >>> load_config(p)
        {'data': {}}
    """
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


def _shared_stage(run: StageRun, stage: str, section: Any, after: str | None, build: Callable[[StageContext], nn.Module],
                  out: Path, log_name: str | None = None) -> nn.Module:
    """Build + train a stage on every rank (its training runs through `fit`, data-parallel under
    torchrun), rank 0 saves it, then every rank loads the saved copy."""
    desc = run.describe(stage, section, after)
    todo = run.needs_run(stage, desc, stage_done(out), [out, run.work / "logs" / f"{log_name or stage}.jsonl"])
    if todo:
        ctx = run.ctx(stage, log_name)
        if run.info.is_main and not (ctx.ckpt_dir / "latest").is_file():
            fresh_log(ctx.log_path)  # no checkpoint to continue: records of a killed attempt go
        ddp.barrier(f"starting stage {stage}", long=True)
        torch.manual_seed(ctx.seed)  # the model's initial weights come from the stage's seed (same on every rank)
        module = unsharded(build(ctx).eval()).cpu()  # FSDP2: gather the full weights (every rank takes part)
        if run.info.is_main:
            save_stage(module, out)
            run.finished(stage, desc)
        ddp.barrier(f"saving stage {stage}", long=True)
    return load_stage(out)


def _stage_encoder(run: StageRun) -> nn.Module:
    spec = run.cfg.get("encoder", {"type": "ToyEncoder", "config": {}})

    def build(ctx: StageContext) -> nn.Module:
        encoder = build_component({"type": spec["type"], "config": spec.get("config", {})})
        train = spec.get("train")
        if train:
            trainer = trainer_for("encoder", spec["type"])
            if trainer is None:
                raise ValueError(f"encoder type {spec['type']!r} has no registered trainer (trainable: "
                                 f"{trainable_types('encoder')}); drop encoder.train to use it frozen, or register "
                                 "one with featureflow.training.registry.register_trainer")
            trainer(encoder, None, dict(train), ctx)
        return encoder

    return _shared_stage(run, "encoder", spec, None, build, run.work / "encoder")


def _stage_features(run: StageRun, encoder: nn.Module) -> Any:
    from featureflow.training.features import FeatureShards, extract_features

    out = run.work / "features"
    fcfg = run.cfg.get("features", {})
    desc = run.describe("features", fcfg, "encoder")
    todo = run.needs_run("features", desc, lambda: (out / "index.json").is_file(), [out])
    if todo:  # every rank encodes its share of the shards; rank 0 writes the index
        extract_features(encoder, clips_of(run.cfg), out, shard_size=int(fcfg.get("shard_size", 64)),
                         batch_size=int(fcfg.get("batch_size", 8)), progress=run.progress,
                         fingerprint=run.prints["features"])
        run.finished("features", desc)
        ddp.barrier("feature extraction", long=True)
    return FeatureShards(out)


def _stage_compressor(run: StageRun, shards: Any) -> nn.Module:
    spec = run.cfg.get("compressor", {"type": "FeatureVAE", "config": {}})

    def build(ctx: StageContext) -> nn.Module:
        feats = shards.tensor("features").float()
        frames = feats.reshape(-1, *feats.shape[2:])  # (N*T, h, w, D)
        conf = dict(spec.get("config", {}))
        conf.setdefault("feature_dim", int(frames.shape[-1]))
        comp = build_component({"type": spec["type"], "config": conf})
        trainer = trainer_for("compressor", spec["type"])
        if trainer is None:
            raise ValueError(f"compressor type {spec['type']!r} has no registered trainer (known: "
                             f"{trainable_types('compressor')}); register one with "
                             "featureflow.training.registry.register_trainer('compressor', ...)")
        trainer(comp, frames, dict(spec.get("train", {})), ctx)
        return comp

    return _shared_stage(run, "compressor", spec, "features", build, run.work / "compressor")


@torch.no_grad()
def _stage_latents(run: StageRun, shards: Any, compressor: nn.Module) -> Tensor:
    path = run.work / "latents.safetensors"
    desc = run.describe("latents", {}, "compressor")
    todo = run.needs_run("latents", desc, path.is_file, [path])
    with ddp.main_first(run.info, "latents") as first:
        if first and todo:
            feats = shards.tensor("features").float()
            n, t = feats.shape[:2]
            flat = feats.reshape(n * t, *feats.shape[2:])
            lat = torch.cat([compressor.encode(chunk) for chunk in flat.split(512)])
            save_safetensors({"latents": lat.reshape(n, t, *lat.shape[1:])}, path)
            run.finished("latents", desc)
    return load_safetensors(path)["latents"]


def _stage_forecaster(run: StageRun, latents: Tensor, kind: str, encoder: nn.Module, compressor: nn.Module) -> nn.Module | None:
    """Train the flow or regression forecaster on every rank (DDP); rank 0 saves; all load its copy."""
    from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster
    from featureflow.training.config import ForecasterStageConfig
    from featureflow.training.forecaster import frames_to_latents, train_forecaster

    flow_spec = run.spec.forecaster or ForecasterStageConfig(denoiser={})  # a flow forecaster is always trained
    spec = flow_spec if kind == "flow" else run.spec.regression
    if spec is None:
        return None
    fcfg = run.cfg.get("forecaster", {})
    section = fcfg if kind == "flow" else run.cfg.get("regression")
    out = run.work / kind
    described = {"denoiser": fcfg.get("denoiser", {}), kind: section if kind == "regression" else fcfg}
    desc = run.describe(kind, described, "latents")
    todo = run.needs_run(kind, desc, stage_done(out), [out])
    if todo:
        ctx = run.ctx(kind)
        den_cfg = dict(flow_spec.denoiser or {})
        den_cfg.setdefault("latent_dim", int(latents.shape[-1]))
        torch.manual_seed(ctx.seed)  # the model's initial weights come from the stage's seed
        den = Denoiser(**den_cfg)
        model: nn.Module = (FlowForecaster if kind == "flow" else RegressionForecaster)(den, **spec.model)
        if getattr(model, "residual", False) and "residual_scale" not in model.config:
            model.fit_residual_scale(latents)  # (next - last) / scale has unit variance, like the source noise
        config = spec.fit_config(seed=legacy_seed(ctx.ckpt_dir, ctx.seed), ckpt_every=ctx.ckpt_every)
        stream = spec.stream
        data: Any = latents
        encode = None
        if stream:
            # fresh procedural clips as training goes (never the same clip twice in a run),
            # encoded by the frozen encoder and compressor of the earlier stages
            if run.cfg["data"].get("world", "toyworld") != "toyworld":
                raise ValueError("train.stream needs data.world = 'toyworld' (fresh clips are rendered as training goes)")
            from featureflow.data import ToyWorldClips

            data_cfg = run.cfg["data"]
            data = ToyWorldClips("train", length=int(stream.get("clip_length", data_cfg.get("clip_length", 8))),
                                 stride=int(stream.get("stride", data_cfg.get("stride", 1))),
                                 resolution=int(data_cfg.get("resolution", 64)),
                                 warmup=int(data_cfg.get("warmup", 0)), modalities=("rgb",))
            if ctx.device.type != "cpu":
                # the frozen stages encode on the training device; copies, as the CPU ones are saved
                encoder, compressor = (copy.deepcopy(m).to(ctx.device) for m in (encoder, compressor))
            encode = frames_to_latents(encoder, compressor)
        result = train_forecaster(model, data, config, progress=run.progress, log_path=ctx.log_path,
                                  ckpt_dir=ctx.ckpt_dir, resume=True, encode=encode, device=ctx.device)
        if result.ema is not None:
            result.ema.copy_to(model)
        model = unsharded(model.eval()).cpu()  # FSDP2: gather the full weights (every rank takes part)
        if run.info.is_main:
            save_stage(model, out)
            run.finished(kind, desc)
        ddp.barrier(f"saving the {kind} forecaster", long=True)
    return load_stage(out)


def _stage_probes(run: StageRun, shards: Any, compressor: nn.Module) -> dict[str, nn.Module]:
    from featureflow.training.probes import train_probe

    from featureflow.data import dataset_labels

    pcfg = run.cfg.get("probes")
    if not pcfg:
        return {}
    available = {"rgb", *dataset_labels(clips_of(run.cfg))}  # the frames themselves are the RGB head's target
    wanted = dict(pcfg.get("heads", {}))
    skipped = sorted(set(wanted) - available)
    if skipped:
        message = (f"probe heads {skipped} not trained: the dataset has no such labels (it has {sorted(available)}); "
                   "train them later with featureflow.training.train_probe on (features, target) batches and "
                   "add them to the model (see docs/training.md)")
        warnings.warn(message, stacklevel=2)
        run.log.log(stage="probes", event="skipped", heads=skipped, labels=sorted(available))
    cache: list[tuple[Tensor, dict[str, Tensor]]] = []
    train = dict(pcfg.get("train", {}))
    batch = int(train.pop("batch_size", 32))
    heads: dict[str, nn.Module] = {}
    for name, spec in wanted.items():
        if name in skipped:
            continue
        section = {"head": spec, "clips": pcfg.get("clips", 128), "train": pcfg.get("train", {})}

        def build(ctx: StageContext, spec: dict[str, Any] = spec, name: str = name) -> nn.Module:
            if not cache:
                cache.append(probe_data(run.cfg, shards, compressor, int(pcfg.get("clips", 128))))
            head = build_component(spec)
            x, targets = cache[0]
            y = targets[name]
            gen = torch.Generator().manual_seed(ctx.seed)

            def batches() -> Any:
                while True:
                    idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
                    yield x[idx], y[idx]

            settings = {"seed": ctx.seed, "ckpt_every": ctx.ckpt_every, **train}
            train_probe(head, batches(), progress=ctx.progress, log_path=ctx.log_path, ckpt_dir=ctx.ckpt_dir,
                        resume=True, device=ctx.device, **settings)
            return head

        heads[name] = _shared_stage(run, f"probes/{name}", section, "compressor", build, run.work / "probes" / name,
                                   log_name=f"probe_{name}")
    return heads


def run_pipeline(
    cfg: dict[str, Any] | PipelineConfig, *, progress: bool = True, until: str | None = None, only: str | None = None
) -> Path | None:
    """Run the stages of ``cfg`` in order (reusing finished ones); return the saved model directory.

    Works the same under ``torchrun`` (see the module docstring); only rank 0 returns the
    path, the other ranks return ``None``.

    Args:
        cfg: the pipeline config (see the module docstring), as JSON or a
            :class:`~featureflow.training.config.PipelineConfig`; every section is checked
            first (an unknown key fails before anything trains).
        progress: show progress bars.
        until: stop after this stage (one of `STAGES`); the model is saved only by "assemble".
        only: ``"flow"`` or ``"regression"``: run the stages before the forecasters (or
            reuse them), then train just that forecaster and stop. Two processes, one
            per forecaster, train both at once once the latents exist.

    Example:
        >>> run_pipeline({"data": {}}, until="nope")
        Traceback (most recent call last):
        ...
        ValueError: until must be one of ('encoder', 'features', 'compressor', 'latents', 'flow', 'regression', 'probes', 'assemble'), got 'nope'
    """
    from featureflow.world import WorldModel

    if until is not None and until not in STAGES:
        raise ValueError(f"until must be one of {STAGES}, got {until!r}")
    if only not in (None, "flow", "regression"):
        raise ValueError(f"only must be 'flow' or 'regression', got {only!r}")
    if isinstance(cfg, PipelineConfig):
        cfg = cfg.to_dict()
    info = ddp.setup()  # CUDA (this rank's GPU) when present, else the CPU
    run = StageRun(cfg, progress, info)
    if info.is_main:
        run.work.mkdir(parents=True, exist_ok=True)
        save_json(cfg, run.work / "pipeline_config.json")
    flow = regression = None

    def stop_before(name: str) -> bool:
        run.log.log(stage=name, event="start")
        return until is not None and STAGES.index(name) > STAGES.index(until)

    try:
        if stop_before("encoder"):
            return None
        encoder = _stage_encoder(run)
        if stop_before("features"):
            return None
        shards = _stage_features(run, encoder)
        if stop_before("compressor"):
            return None
        compressor = _stage_compressor(run, shards)
        if stop_before("latents"):
            return None
        latents = _stage_latents(run, shards, compressor)
        if stop_before("flow"):
            return None
        if only in (None, "flow"):
            flow = _stage_forecaster(run, latents, "flow", encoder, compressor)
        if stop_before("regression"):
            return None
        if only in (None, "regression"):
            regression = _stage_forecaster(run, latents, "regression", encoder, compressor)
        if only is not None:
            run.log.log(stage=only, event="done")
            return None
        if stop_before("probes"):
            return None
        probes = _stage_probes(run, shards, compressor)
        if stop_before("assemble"):
            return None
        if flow is None:
            raise ValueError("the config has no 'forecaster' section: a world model needs a flow forecaster")
        out = Path(cfg.get("output", run.work / "model"))
        with ddp.main_first(info, "assemble") as first:
            if first:
                model = WorldModel(encoder, compressor, flow, probes,
                                   baselines={"regression": regression} if regression else None)
                model.metadata = {"data": cfg["data"], "seed": cfg.get("seed", 0)}
                dtype = torch.bfloat16 if cfg.get("store_bf16", False) else None
                model.save_pretrained(out, dtype=dtype)
                run.log.log(stage="assemble", event="done", output=str(out))
        return out if info.is_main else None
    finally:
        run.log.close()


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.workdir:
        cfg["workdir"] = args.workdir
    try:
        out = run_pipeline(cfg, progress=not args.no_progress, until=args.until, only=args.only)
    finally:
        ddp.teardown()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model written to {out}" if out else f"stopped after stage {args.only or args.until!r}")
        if out is not None and not json.loads((Path(out) / "config.json").read_text()).get("probes"):
            print("note: the model has no probe heads (no probes section, or the data has no labels for them): it "
                  "forecasts features and latents but cannot decode pictures yet. Train heads with "
                  "featureflow.training.train_probe on (features, target) batches, put them in model.probes "
                  "and save_pretrained again (docs/training.md, 'Probe heads for your own data').")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``featureflow train --config CFG.json`` (all stages, resumable; also under torchrun)."""
    p = sub.add_parser("train", help="run every training stage from a JSON config (resumable; works under torchrun)")
    p.add_argument("--config", required=True, help="pipeline config (JSON)")
    p.add_argument("--workdir", default=None, help="override the config's workdir")
    p.add_argument("--until", default=None, choices=STAGES, help="stop after this stage")
    p.add_argument("--only", default=None, choices=("flow", "regression"),
                   help="train just this forecaster (earlier stages are run or reused) and stop")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=_run)
