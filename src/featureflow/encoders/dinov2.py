"""`DINOv2Encoder`: frozen DINOv2 (with or without registers) on Hugging Face transformers.

Features are the patch tokens of the chosen blocks, each passed through the model's
final LayerNorm, concatenated on channels (the ``get_intermediate_layers(..., norm=True)``
features of the DINOv2 reference code, which VFMF forecasts). In transformers'
``hidden_states`` tuple, entry 0 is the embedding output and entry ``i + 1`` the
output of block ``i``, so block ``i`` is ``layernorm(hidden_states[i + 1])``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from featureflow.encoders.base import IMAGENET_MEAN, IMAGENET_STD, grid_size, prepare_images
from featureflow.typing import FrameFeatures, Images, ImagesU8, ShapeError, typechecked
from featureflow.utils import Configurable, register_component

__all__ = ["DINOv2Encoder", "MissingWeightsError"]

_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_TRUE = ("1", "true", "yes", "on")


class MissingWeightsError(FileNotFoundError):
    """Encoder weights are not on this machine and cannot (or may not) be downloaded."""


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "DINOv2Encoder needs Hugging Face transformers, which is not installed; "
            "install the 'hf' extra: pip install 'featureflow[hf]'"
        ) from None
    return transformers


def _offline(local_files_only: bool | None) -> tuple[bool, str]:
    """Whether downloads are off, and why (for the error message)."""
    if local_files_only is not None:
        return bool(local_files_only), f"local_files_only={bool(local_files_only)}"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True, f"{var}={os.environ[var]}"
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True, "huggingface_hub offline mode"
    except ImportError:  # pragma: no cover - huggingface-hub is a core dependency
        pass
    return False, "online"


def _dtype_name(dtype: str | torch.dtype) -> str:
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return name


@contextlib.contextmanager
def _weights_bar(tf: Any, progress: bool) -> Iterator[None]:
    """Hide transformers' "Loading weights" bar (printed on every load) unless ``progress``.

    Only transformers' own bars are switched off (through its tqdm hook); download bars
    of huggingface_hub stay. Older transformers without the hook: all its bars, restored after.
    """
    logging = tf.utils.logging
    if progress:
        yield
    elif hasattr(logging, "set_tqdm_hook"):
        previous = getattr(logging, "_tqdm_hook", None)

        def hidden(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            kwargs = {**kwargs, "disable": True}
            return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

        logging.set_tqdm_hook(hidden)
        try:
            yield
        finally:
            logging.set_tqdm_hook(previous)
    else:  # pragma: no cover - transformers < 5
        enabled = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()
        try:
            yield
        finally:
            if enabled:
                logging.enable_progress_bar()


def _load_pretrained(model: str, revision: str | None, local_files_only: bool | None, dtype: torch.dtype,
                     progress: bool = False) -> nn.Module:
    tf = _transformers()
    with _weights_bar(tf, progress):
        return _from_pretrained(tf, model, revision, local_files_only, dtype)


def _from_pretrained(tf: Any, model: str, revision: str | None, local_files_only: bool | None,
                     dtype: torch.dtype) -> nn.Module:
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MissingWeightsError(
                f"{path} is a directory but has no config.json; expected a Hugging Face model directory "
                "(the output of save_pretrained: config.json + model.safetensors)"
            )
        try:
            return tf.AutoModel.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        except OSError as err:
            raise MissingWeightsError(f"could not load DINOv2 weights from the directory {path}: {err}") from None
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep in model.replace("/", ""):
        raise MissingWeightsError(
            f"{model!r} is not an existing directory and not a Hugging Face Hub id of the form 'owner/name'"
        )
    offline, why = _offline(local_files_only)
    try:
        return tf.AutoModel.from_pretrained(model, revision=revision, local_files_only=offline, dtype=dtype)
    except OSError as err:
        if offline:
            raise MissingWeightsError(
                f"DINOv2 weights {model!r} are not available offline: they are not in the local Hugging Face "
                f"cache and downloading is disabled ({why}). Download them once with network access "
                f"(e.g. `hf download {model}`), or pass a local directory holding config.json and "
                "model.safetensors."
            ) from None
        raise MissingWeightsError(
            f"could not download DINOv2 weights {model!r} from the Hugging Face Hub "
            f"(no network, wrong id or no access?): {err}"
        ) from None


@register_component
class DINOv2Encoder(nn.Module, Configurable):
    """Frozen DINOv2 patch features of several blocks, concatenated on channels.

    Works with any DINOv2 size, with (``Dinov2WithRegistersModel``) or without
    (``Dinov2Model``) registers. Images in [0, 1] (or uint8) are sized by the
    ``resize`` policy, normalised with ImageNet mean/std inside, and encoded; the CLS
    and register tokens are dropped; each chosen block's patch tokens go through the
    model's final LayerNorm. For ViT-B/14 and the default blocks the output of a
    448×448 frame is ``(b, 32, 32, 3072)``. Frame sizes other than the pre-training
    size are fine: transformers interpolates the position embeddings.

    The module is frozen (``requires_grad=False``) and always in eval mode
    (``train()`` is a no-op). Output features are float32 whatever the compute dtype.

    Saving: ``config`` references the weights by hub id or directory
    (``reference=True``, the default; ``is_reference`` is True and a ``WorldModel``
    saves only the reference and re-loads the weights by id). With ``reference=False``
    the config also carries the architecture (``hf_config``), so the encoder is
    rebuilt without any download and its weights travel in ``state_dict()``
    (self-contained; a ViT-B adds ~350 MB in float32).

    Args:
        model: Hub id (e.g. ``"facebook/dinov2-with-registers-base"``,
            ``"facebook/dinov2-small"``) or a local directory written by
            ``save_pretrained``.
        blocks: 0-based block indices (negatives count from the end), in output order.
        local_files_only: never download (``None``: follow ``HF_HUB_OFFLINE`` /
            ``TRANSFORMERS_OFFLINE``). A runtime option, not saved in ``config``.
        progress: show transformers' "Loading weights" bar (off by default; download
            bars are not affected). A runtime option, not saved in ``config``.
        resize: sizing policy for frames that are not a multiple of the patch
            (``"resize"``: nearest multiple, bilinear + antialias; ``"crop"``;
            ``"error"``).
        dtype: compute dtype, ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        revision: Hub revision (branch, tag or commit) to load.
        reference: save by reference (True) or self-contained (False), see above.
        hf_config: the transformers config dict; with ``reference=False`` it builds
            the architecture without loading weights (used by ``from_config``).

    Raises:
        MissingWeightsError: the weights are absent and downloading is disabled (or
            failed); the message says which.
        ImportError: transformers is missing (install ``featureflow[hf]``).

    Example:
        >>> import tempfile, torch, transformers
        >>> cfg = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        ...                                 intermediate_size=32, patch_size=4, image_size=8)
        >>> d = tempfile.mkdtemp(); transformers.Dinov2Model(cfg).save_pretrained(d)
        >>> enc = DINOv2Encoder(d, blocks=(0, 1))
        >>> enc(torch.rand(2, 3, 8, 12)).shape
        torch.Size([2, 2, 3, 32])
    """

    def __init__(
        self,
        model: str | os.PathLike = "facebook/dinov2-with-registers-base",
        blocks: Sequence[int] = (2, 5, 8, 11),
        local_files_only: bool | None = None,
        resize: str = "resize",
        dtype: str | torch.dtype = "float32",
        revision: str | None = None,
        reference: bool = True,
        hf_config: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        grid_size(1, 1, 1, resize)  # validates the policy
        dtype_name = _dtype_name(dtype)
        model = os.fspath(model)
        if not reference and hf_config is not None:
            tf = _transformers()
            cfg = dict(hf_config)
            model_type = cfg.pop("model_type", None)
            if model_type not in _MODEL_TYPES:
                raise ValueError(f"hf_config must describe a DINOv2 model (model_type in {_MODEL_TYPES}); got {model_type!r}")
            net = tf.AutoModel.from_config(tf.AutoConfig.for_model(model_type, **cfg), dtype=_DTYPES[dtype_name])
        else:
            net = _load_pretrained(model, revision, local_files_only, _DTYPES[dtype_name], progress=progress)
        model_type = getattr(net.config, "model_type", None)
        if model_type not in _MODEL_TYPES:
            raise ValueError(f"{model!r} is a {model_type!r} model; DINOv2Encoder expects one of {_MODEL_TYPES}")
        self.model = net
        depth = int(net.config.num_hidden_layers)
        blocks = [int(i) for i in blocks]
        if not blocks or any(not -depth <= i < depth for i in blocks):
            raise ValueError(f"blocks must be a non-empty list of indices in [-{depth}, {depth}) for this "
                             f"{depth}-block model; got {blocks}")
        self.blocks = [i % depth for i in blocks]
        self.patch_size = int(net.config.patch_size)
        self.feature_dim = len(blocks) * int(net.config.hidden_size)
        self.num_register_tokens = int(getattr(net.config, "num_register_tokens", 0) or 0)
        self.resize = resize
        self.local_files_only = local_files_only
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.config: dict[str, Any] = {
            "model": model,
            "blocks": blocks,
            "resize": resize,
            "dtype": dtype_name,
            "revision": revision,
            "reference": bool(reference),
        }
        if not reference:
            self.config["hf_config"] = net.config.to_dict()
        self.requires_grad_(False)
        self.train(False)

    @property
    def is_reference(self) -> bool:
        """True when a saved ``WorldModel`` should store only the hub id / path, not the weights."""
        return bool(self.config["reference"])

    def train(self, mode: bool = True) -> "DINOv2Encoder":
        """Stay in eval mode whatever ``mode`` is: the encoder is frozen (no dropout, fixed statistics)."""
        return super().train(False)

    @typechecked
    def forward(self, images: Images | ImagesU8) -> FrameFeatures:
        """Images ``(b, 3, H, W)`` in [0, 1] (or uint8) → features ``(b, h, w, len(blocks) * hidden)``."""
        x = prepare_images(images, self.patch_size, self.resize)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        weight = self.model.embeddings.patch_embeddings.projection.weight
        x = (x.to(self.mean.device, torch.float32) - self.mean) / self.std
        out = self.model(pixel_values=x.to(weight.device, weight.dtype), output_hidden_states=True)
        hidden = out.hidden_states
        prefix = 1 + self.num_register_tokens
        if hidden[0].shape[1] != prefix + h * w:
            raise ShapeError(
                f"DINOv2 returned {hidden[0].shape[1]} tokens; expected 1 CLS + {self.num_register_tokens} "
                f"registers + {h}x{w} patches"
            )
        feats = [self.model.layernorm(hidden[i + 1][:, prefix:]) for i in self.blocks]
        return torch.cat(feats, dim=-1).reshape(x.shape[0], h, w, self.feature_dim).float()

    def extra_repr(self) -> str:
        return (
            f"model={self.config['model']!r}, blocks={self.blocks}, patch_size={self.patch_size}, "
            f"feature_dim={self.feature_dim}, registers={self.num_register_tokens}, resize={self.resize!r}"
        )
