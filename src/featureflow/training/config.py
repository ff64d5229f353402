"""Typed pipeline configs: one dataclass per stage, read from and written to the JSON config.

:meth:`PipelineConfig.from_dict` checks a whole config before anything trains: an
unknown key anywhere fails at once with its dotted path and the valid keys (a typo in
the probe section does not surface hours later). :meth:`PipelineConfig.to_dict` gives
back the JSON form (what ``featureflow train --config`` reads).

Example:
    >>> cfg = PipelineConfig.from_dict({"data": {"world": "toyworld"}, "forecaster": {"train": {"steps": 5}}})
    >>> cfg.forecaster.fit_config(seed=1).steps, cfg.encoder.type
    (5, 'ToyEncoder')
    >>> PipelineConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featureflow.training.loop import FitConfig

__all__ = [
    "PipelineConfig",
    "ComponentStageConfig",
    "FeaturesStageConfig",
    "ForecasterStageConfig",
    "ProbesStageConfig",
    "PROBE_TRAIN_KEYS",
]

#: The settings of the probe stage's ``train`` section (see `train_probe`).
PROBE_TRAIN_KEYS = ("steps", "lr", "weight_decay", "grad_clip", "batch_size", "seed", "ckpt_every")


def _check(values: Any, allowed: tuple[str, ...] | set[str], where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(values).__name__} {values!r:.80}")
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    return dict(values)


@dataclass
class ComponentStageConfig:
    """The ``encoder`` or ``compressor`` section: a component type, its constructor config,
    and the ``train`` settings of the trainer registered for the type (None: not trained)."""

    type: str
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, values: Any, where: str) -> "ComponentStageConfig":
        """Check and build from JSON."""
        values = _check(values, ("type", "config", "train"), where)
        if not isinstance(values.get("type"), str):
            raise ValueError(f"{where}.type: expected a component type name, got {values.get('type')!r}")
        _check(values.get("config", {}), set(values.get("config", {})), f"{where}.config")
        if values.get("train") is not None:
            _check(values["train"], set(values["train"]), f"{where}.train")
        return cls(type=values["type"], config=dict(values.get("config", {})), train=values.get("train"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {"type": self.type, "config": dict(self.config)}
        if self.train is not None:
            out["train"] = dict(self.train)
        return out


@dataclass
class FeaturesStageConfig:
    """The ``features`` section: clips per shard and clips per encoder batch."""

    shard_size: int = 64
    batch_size: int = 8

    @classmethod
    def from_dict(cls, values: Any, where: str = "features") -> "FeaturesStageConfig":
        """Check and build from JSON."""
        return cls(**_check(values, ("shard_size", "batch_size"), where))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return dataclasses.asdict(self)


@dataclass
class ForecasterStageConfig:
    """The ``forecaster`` (flow) or ``regression`` section.

    Attributes:
        model: the forecaster's constructor settings (``flow`` for the flow section,
            ``model`` for the regression section).
        train: a :class:`~featureflow.training.loop.FitConfig` as JSON (checked), without ``stream``.
        stream: ``{"clip_length", "stride"}`` to train on fresh ToyWorld clips, or None.
        denoiser: the trunk's settings (flow section only; the regression baseline shares them).
    """

    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] | None = None
    denoiser: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, values: Any, where: str) -> "ForecasterStageConfig":
        """Check and build from JSON (``where`` is ``"forecaster"`` or ``"regression"``)."""
        flow = where == "forecaster"
        values = _check(values, ("denoiser", "flow", "train") if flow else ("model", "train"), where)
        train = _check(values.get("train", {}), set(values.get("train", {})), f"{where}.train")
        stream = train.pop("stream", None)
        if stream is not None:
            stream = _check(stream, ("clip_length", "stride"), f"{where}.train.stream")
        FitConfig.from_dict({"seed": 0, **train}, where=f"{where}.train")  # checks every setting now
        return cls(model=dict(values.get("flow" if flow else "model", {})), train=train, stream=stream,
                   denoiser=dict(values.get("denoiser", {})) if flow else None)

    def fit_config(self, seed: int, ckpt_every: int | None = None) -> FitConfig:
        """The stage's :class:`FitConfig`: the forecaster defaults, ``seed`` and ``ckpt_every``
        unless the section sets them, then the section's settings."""
        from featureflow.training.forecaster import forecaster_config

        return forecaster_config(**{"seed": seed, "ckpt_every": ckpt_every, **self.train})

    def to_dict(self, where: str) -> dict[str, Any]:
        """The JSON form of the section named ``where``."""
        train = dict(self.train)
        if self.stream is not None:
            train["stream"] = dict(self.stream)
        if where == "forecaster":
            return {"denoiser": dict(self.denoiser or {}), "flow": dict(self.model), "train": train}
        return {"model": dict(self.model), "train": train}


@dataclass
class ProbesStageConfig:
    """The ``probes`` section: head specs by task, training clips, and the `train_probe` settings."""

    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    clips: int = 128
    train: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Any, where: str = "probes") -> "ProbesStageConfig":
        """Check and build from JSON."""
        values = _check(values, ("heads", "clips", "train"), where)
        heads = _check(values.get("heads", {}), set(values.get("heads", {})), f"{where}.heads")
        for name, spec in heads.items():
            _check(spec, ("type", "config"), f"{where}.heads.{name}")
        train = _check(values.get("train", {}), PROBE_TRAIN_KEYS, f"{where}.train")
        return cls(heads=heads, clips=int(values.get("clips", 128)), train=train)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"heads": dict(self.heads), "clips": self.clips, "train": dict(self.train)}


@dataclass
class PipelineConfig:
    """A whole ``featureflow train`` config; see :mod:`featureflow.training.pipeline` for the stages."""

    data: dict[str, Any]
    workdir: str = "runs/pipeline"
    output: str | None = None
    seed: int = 0
    store_bf16: bool = False
    encoder: ComponentStageConfig = field(default_factory=lambda: ComponentStageConfig("ToyEncoder"))
    features: FeaturesStageConfig = field(default_factory=FeaturesStageConfig)
    compressor: ComponentStageConfig = field(default_factory=lambda: ComponentStageConfig("FeatureVAE"))
    forecaster: ForecasterStageConfig | None = None
    regression: ForecasterStageConfig | None = None
    probes: ProbesStageConfig | None = None

    @classmethod
    def from_dict(cls, values: Any) -> "PipelineConfig":
        """Check a whole config and build it; every unknown key is an error naming its path."""
        names = [f.name for f in dataclasses.fields(cls)]
        values = _check(values, names, "config")
        if "data" not in values:
            raise ValueError("config: a 'data' section is required (e.g. {\"world\": \"toyworld\"})")
        _check(values["data"], set(values["data"]), "data")
        if not isinstance(values.get("seed", 0), int):
            raise ValueError(f"config.seed: expected an int, got {values['seed']!r}")
        out = cls(data=dict(values["data"]), workdir=str(values.get("workdir", "runs/pipeline")),
                  output=values.get("output"), seed=int(values.get("seed", 0)),
                  store_bf16=bool(values.get("store_bf16", False)))
        if "encoder" in values:
            out.encoder = ComponentStageConfig.from_dict(values["encoder"], "encoder")
        if "features" in values:
            out.features = FeaturesStageConfig.from_dict(values["features"])
        if "compressor" in values:
            out.compressor = ComponentStageConfig.from_dict(values["compressor"], "compressor")
        for name in ("forecaster", "regression"):
            if values.get(name) is not None:
                setattr(out, name, ForecasterStageConfig.from_dict(values[name], name))
        if values.get("probes"):
            out.probes = ProbesStageConfig.from_dict(values["probes"])
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (sections left at None are omitted)."""
        out: dict[str, Any] = {"workdir": self.workdir, "seed": self.seed, "data": dict(self.data),
                               "encoder": self.encoder.to_dict(), "features": self.features.to_dict(),
                               "compressor": self.compressor.to_dict()}
        if self.output is not None:
            out["output"] = self.output
        if self.store_bf16:
            out["store_bf16"] = True
        if self.forecaster is not None:
            out["forecaster"] = self.forecaster.to_dict("forecaster")
        if self.regression is not None:
            out["regression"] = self.regression.to_dict("regression")
        if self.probes is not None:
            out["probes"] = self.probes.to_dict()
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PipelineConfig":
        """Read and check a JSON config file."""
        from featureflow.training.pipeline import load_config

        return cls.from_dict(load_config(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON form (atomically)."""
        from featureflow.utils import atomic_write

        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)
