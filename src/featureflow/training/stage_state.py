"""The bookkeeping of a pipeline run: stage seeds, stage fingerprints and invalidation, saved stages.

Example:
    >>> stage_seed(0, "flow") == stage_seed(0, "flow") != stage_seed(0, "regression")
    True
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

from torch import nn

from featureflow.training import distributed as ddp
from featureflow.training.config import PipelineConfig
from featureflow.training.fingerprint import config_hash, jsonable
from featureflow.training.loop import fingerprint_diff
from featureflow.training.registry import StageContext
from featureflow.utils import JSONLLogger
from featureflow.utils.component_io import load_component, save_component
from featureflow.utils.io import save_json

__all__ = ["CKPT_EVERY", "StageRun", "stage_seed", "unsharded", "save_stage", "load_stage", "stage_done", "legacy_seed",
           "fresh_log"]

#: Checkpoint interval (optimizer steps) of every trainable stage when ``train.ckpt_every`` is not set.
CKPT_EVERY = 250

# Settings that change neither what a stage computes nor its result (left out of fingerprints).
_RUNTIME_KEYS = ("ckpt_every", "log_every")


# The data settings the encoder stage depends on.
_ENCODER_DATA_KEYS = ("world", "dataset", "resolution")


def stage_seed(seed: int, stage: str) -> int:
    """The seed of one stage: a hash of the config's ``seed`` and the stage name (< 2**31).

    Example:
        >>> stage_seed(0, "flow") == stage_seed(0, "flow") != stage_seed(0, "regression")
        True
    """
    digest = hashlib.sha256(f"featureflow-stage:{int(seed)}:{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _without_runtime(section: Any) -> Any:
    if isinstance(section, dict):
        return {k: _without_runtime(v) for k, v in section.items() if k not in _RUNTIME_KEYS}
    return section


class StageRun:
    """One pipeline run: the config (checked as a `PipelineConfig`), the work directory, this
    rank, the pipeline log, and the fingerprint of every stage seen so far.

    Example:
        >>> import tempfile
        >>> run = StageRun({"data": {}, "workdir": tempfile.mkdtemp()}, progress=False, info=ddp.DistInfo())
        >>> run.ctx("flow").log_path.name, run.ctx("flow").ckpt_every
        ('flow.jsonl', 250)
    """

    def __init__(self, cfg: dict[str, Any], progress: bool, info: ddp.DistInfo) -> None:
        self.cfg, self.info = cfg, info
        self.spec = PipelineConfig.from_dict(cfg)  # every section checked before anything trains
        self.progress = progress and info.is_main
        self.work = Path(cfg.get("workdir", "runs/pipeline"))
        self.seed = int(cfg.get("seed", 0))
        self.log = JSONLLogger(self.work / "logs" / "pipeline.jsonl" if info.is_main else None)
        self.prints: dict[str, str] = {}

    def ctx(self, stage: str, log_name: str | None = None) -> StageContext:
        """The `StageContext` a trainer of ``stage`` gets (its seed, log, checkpoint folder)."""
        return StageContext(config=self.cfg, seed=stage_seed(self.seed, stage),
                            log_path=self.work / "logs" / f"{log_name or stage}.jsonl",
                            ckpt_dir=self.work / "checkpoints" / stage, progress=self.progress, info=self.info,
                            ckpt_every=CKPT_EVERY, device=self.info.device)

    def describe(self, stage: str, section: Any, after: str | None) -> dict[str, Any]:
        """What a stage is built from: its section, the data settings, its seed, the previous stage.

        The encoder depends only on the dataset's kind and resolution (a trained ToyEncoder
        renders its own frames), so changing which clips are used retrains from the features on.
        """
        data = self.cfg["data"]
        if stage == "encoder":
            data = {k: v for k, v in data.items() if k in _ENCODER_DATA_KEYS}
        return jsonable({"section": _without_runtime(section), "data": data,
                         "seed": stage_seed(self.seed, stage), "after": self.prints.get(after) if after else None})

    def needs_run(self, stage: str, desc: dict[str, Any], done: Callable[[], bool], outputs: list[Path]) -> bool:
        """True if ``stage`` must run; a finished stage with another fingerprint is removed first (rank 0)."""
        fp = config_hash(desc)
        self.prints[stage] = fp
        record_path = self.work / "stages" / f"{stage.replace('/', '_')}.json"
        decision = False
        if self.info.is_main:
            if not done():
                decision = True
            elif not record_path.is_file():
                warnings.warn(f"stage {stage!r} in {self.work} has no fingerprint (made by an older featureflow); "
                              "reusing it as it is", stacklevel=3)
                save_json({"fingerprint": fp, "built_from": desc}, record_path)
            else:
                record = json.loads(record_path.read_text())
                if record.get("fingerprint") != fp:
                    changed = fingerprint_diff(record.get("built_from", {}), desc)
                    message = (f"stage {stage!r} was built from another configuration ({'; '.join(changed)[:600]}); "
                               f"training it again, and every stage after it")
                    warnings.warn(message, stacklevel=3)
                    self.log.log(stage=stage, event="invalidated", changed=changed)
                    for p in [*outputs, record_path, self.work / "checkpoints" / stage]:
                        if p.is_dir():
                            shutil.rmtree(p)
                        elif p.exists():
                            p.unlink()
                    decision = True
        return bool(ddp.broadcast_object(decision))

    def finished(self, stage: str, desc: dict[str, Any]) -> None:
        """Record that ``stage`` finished, built from ``desc`` (rank 0 writes ``stages/<stage>.json``)."""
        if self.info.is_main:
            save_json({"fingerprint": self.prints[stage], "built_from": desc},
                      self.work / "stages" / f"{stage.replace('/', '_')}.json")


def unsharded(module: nn.Module) -> nn.Module:
    """``module`` itself, or (trained with FSDP2) a plain copy holding the gathered full weights.

    A collective when the module is sharded: every rank must call it.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> unsharded(m) is m
        True
    """
    from torch.distributed.tensor import DTensor
    from featureflow.utils.config import build_component

    state = module.state_dict()
    if not any(isinstance(v, DTensor) for v in state.values()):
        return module
    plain = build_component(module.describe())
    plain.load_state_dict(ddp.full_state_dict(state))
    return plain.eval()


def save_stage(module: nn.Module, directory: Path) -> None:
    """Save a stage's module (``component.json`` last: its presence marks the stage done)."""
    save_component(module, directory, "component")  # component.json is written last: marks the stage done


def load_stage(directory: Path) -> nn.Module:
    """Load a stage's saved module."""
    return load_component(directory, "component")


def stage_done(directory: Path) -> Callable[[], bool]:
    """A check that the stage saved in ``directory`` is complete."""
    return lambda: (directory / "component.json").is_file()


def legacy_seed(ckpt_dir: Path, seed: int) -> int:
    """The seed of an unfinished checkpoint written by an older featureflow (which seeded every
    stage with the config's seed), so that run still resumes; else ``seed``."""
    pointer = ckpt_dir / "latest"
    try:
        state = json.loads((ckpt_dir / pointer.read_text().strip() / "state.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return seed
    if "fingerprint" in state or "seed" not in state.get("settings", {}):
        return seed
    return int(state["settings"]["seed"])


def fresh_log(path: Path) -> None:
    """A stage that starts from scratch starts its log from scratch (no records of a killed attempt)."""
    path.unlink(missing_ok=True)
