"""DINOv2 weights: torch.hub (facebookresearch/dinov2) key format → Hugging Face layout.

The released VFMF checkpoints hold the frozen DINOv2 under ``vae.dino_v2.*`` in the
torch.hub format (``cls_token``, ``register_tokens``, ``mask_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1,
mlp.fc2, ls2.gamma}``, ``norm``). Hugging Face's ``Dinov2WithRegistersModel`` (with
registers) and ``Dinov2Model`` (without) hold the same numbers under other names, with
the fused ``qkv`` projection split into query, key and value (hub order: q, k, v along
the output rows) and the fused SwiGLU ``w12`` split into gate and up projections. Both
the transformers 5 names (``attention.q_proj``, ``o_proj``, ``gate_proj``) and the 4.x
names (``attention.attention.query``, ``attention.output.dense``, ``weights_in``) are
produced, chosen from the target model's own keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from featureflow.compat.vfmf.ledger import KeyLedger, LeftoverKeysError, format_keys

__all__ = [
    "HF_LAYOUTS",
    "hub_dinov2_info",
    "dinov2_hf_config",
    "convert_hub_dinov2_state_dict",
    "load_hub_dinov2_state_dict",
    "dinov2_model_from_hub_state_dict",
    "hf_to_hub_dinov2_state_dict",
]

#: Per-layer target names in each transformers layout.
HF_LAYOUTS: dict[str, dict[str, str]] = {
    "v5": {
        "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "proj": "attention.o_proj",
        "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj", "w12": "", "w3": "",
    },
    "v4": {
        "q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
        "proj": "attention.output.dense", "gate": "", "up": "", "down": "",
        "w12": "mlp.weights_in", "w3": "mlp.weights_out",
    },
}  # fmt: skip

#: Attention heads of the released DINOv2 widths (ViT-S/B/L/g); other widths need ``num_heads``.
_HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1536: 24}

_FLAT = re.compile(r"^blocks\.(\d+)\.(norm1|norm2|attn|ls1|ls2|mlp)\.(.+)$")
_CHUNKED = re.compile(r"^blocks\.(\d+)\.(\d+)\.(norm1|norm2|attn|ls1|ls2|mlp)\.(.+)$")


def _blocks(state_dict: Mapping[str, Tensor]) -> dict[int, dict[str, str]]:
    """Layer index -> {suffix after 'blocks.N.': original key}; handles chunked blocks."""
    layers: dict[int, dict[str, str]] = {}
    for key in state_dict:
        m = _CHUNKED.match(key)
        if m:
            idx, suffix = int(m.group(2)), f"{m.group(3)}.{m.group(4)}"
        else:
            m = _FLAT.match(key)
            if not m:
                continue
            idx, suffix = int(m.group(1)), f"{m.group(2)}.{m.group(3)}"
        layers.setdefault(idx, {})[suffix] = key
    if layers and sorted(layers) != list(range(len(layers))):
        raise ValueError(f"DINOv2 state dict has non-contiguous block indices {sorted(layers)}")
    return layers


def hub_dinov2_info(state_dict: Mapping[str, Tensor], num_heads: int | None = None) -> dict[str, Any]:
    """Architecture facts read off a torch.hub DINOv2 state dict.

    Returns a dict with ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
    ``patch_size``, ``image_size``, ``num_register_tokens``, ``use_swiglu_ffn``,
    ``mlp_ratio`` and ``qkv_bias``. The head count is not stored in the weights: it
    follows the released widths (384→6, 768→12, 1024→16, 1536→24) unless given.

    Example:
        >>> import torch
        >>> sd = {"cls_token": torch.zeros(1, 1, 768), "pos_embed": torch.zeros(1, 1 + 37 * 37, 768),
        ...       "patch_embed.proj.weight": torch.zeros(768, 3, 14, 14),
        ...       "register_tokens": torch.zeros(1, 4, 768),
        ...       "blocks.0.mlp.fc1.weight": torch.zeros(3072, 768), "blocks.0.attn.qkv.bias": torch.zeros(2304)}
        >>> info = hub_dinov2_info(sd)
        >>> info["image_size"], info["num_attention_heads"], info["num_register_tokens"]
        (518, 12, 4)
    """
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if key not in state_dict:
            raise LeftoverKeysError(
                f"not a torch.hub DINOv2 state dict: missing {key!r} (expected facebookresearch/dinov2 key names "
                "such as 'cls_token', 'pos_embed', 'patch_embed.proj.weight', 'blocks.0.attn.qkv.weight')"
            )
    hidden = int(state_dict["cls_token"].shape[-1])
    patch = state_dict["patch_embed.proj.weight"]
    positions = int(state_dict["pos_embed"].shape[1]) - 1
    side = math.isqrt(positions)
    if side * side != positions:
        raise ValueError(f"DINOv2 pos_embed holds {positions} patch positions, not a square grid")
    layers = _blocks(state_dict)
    if not layers:
        raise ValueError("not a torch.hub DINOv2 state dict: no 'blocks.N.*' keys")
    first = layers[0]
    swiglu = "mlp.w12.weight" in first
    if swiglu:
        ratio = 4.0
    elif "mlp.fc1.weight" in first:
        ratio = state_dict[first["mlp.fc1.weight"]].shape[0] / hidden
    else:
        raise ValueError("DINOv2 block 0 has neither 'mlp.fc1.weight' nor 'mlp.w12.weight'")
    heads = num_heads if num_heads is not None else _HEADS_BY_WIDTH.get(hidden)
    if heads is None or hidden % heads:
        raise ValueError(f"cannot infer the attention heads of a {hidden}-wide DINOv2; pass num_heads")
    registers = int(state_dict["register_tokens"].shape[1]) if "register_tokens" in state_dict else 0
    return {
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": int(heads),
        "patch_size": int(patch.shape[-1]),
        "num_channels": int(patch.shape[1]),
        "image_size": side * int(patch.shape[-1]),
        "num_register_tokens": registers,
        "use_swiglu_ffn": swiglu,
        "mlp_ratio": int(ratio) if float(ratio).is_integer() else ratio,
        "qkv_bias": "attn.qkv.bias" in first,
        "layer_norm_eps": 1e-6,
    }


def dinov2_hf_config(state_dict: Mapping[str, Tensor], num_heads: int | None = None) -> Any:
    """The transformers config matching a hub state dict: ``Dinov2WithRegistersConfig``
    when it has register tokens, else ``Dinov2Config``.

    Example:
        >>> import torch
        >>> sd = {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8),
        ...       "patch_embed.proj.weight": torch.zeros(8, 3, 4, 4), "blocks.0.mlp.fc1.weight": torch.zeros(32, 8)}
        >>> dinov2_hf_config(sd, num_heads=2).model_type
        'dinov2'
    """
    import transformers

    info = dict(hub_dinov2_info(state_dict, num_heads))
    registers = info.pop("num_register_tokens")
    if registers:
        return transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **info)
    return transformers.Dinov2Config(**info)


def _layout_of(target_keys: list[str]) -> str:
    if any(".attention.q_proj." in k for k in target_keys):
        return "v5"
    if any(".attention.attention.query." in k for k in target_keys):
        return "v4"
    raise ValueError("the target model is not a Hugging Face DINOv2 (no attention q_proj / attention.query keys)")


def convert_hub_dinov2_state_dict(
    state_dict: Mapping[str, Tensor], layout: str = "v5", source: str = "DINOv2 state dict"
) -> dict[str, Tensor]:
    """Rename (and split) a torch.hub DINOv2 state dict into Hugging Face names.

    Every hub key is used exactly once; a key this mapping does not know raises
    :class:`~featureflow.compat.vfmf.ledger.LeftoverKeysError`.

    Args:
        state_dict: hub-format tensors (``blocks.N.*`` or chunked ``blocks.C.N.*``).
        layout: ``"v5"`` (transformers 5 names) or ``"v4"`` (transformers 4 names).
        source: a description for error messages.

    Example:
        >>> import torch
        >>> sd = {"cls_token": torch.zeros(1, 1, 4), "mask_token": torch.zeros(1, 4),
        ...       "pos_embed": torch.zeros(1, 5, 4), "patch_embed.proj.weight": torch.zeros(4, 3, 2, 2),
        ...       "patch_embed.proj.bias": torch.zeros(4), "norm.weight": torch.ones(4), "norm.bias": torch.zeros(4)}
        >>> sd.update({f"blocks.0.{n}": torch.zeros(s) for n, s in [("norm1.weight", 4), ("norm1.bias", 4),
        ...     ("attn.qkv.weight", (12, 4)), ("attn.qkv.bias", 12), ("attn.proj.weight", (4, 4)),
        ...     ("attn.proj.bias", 4), ("ls1.gamma", 4), ("norm2.weight", 4), ("norm2.bias", 4),
        ...     ("mlp.fc1.weight", (16, 4)), ("mlp.fc1.bias", 16), ("mlp.fc2.weight", (4, 16)),
        ...     ("mlp.fc2.bias", 4), ("ls2.gamma", 4)]})
        >>> hf = convert_hub_dinov2_state_dict(sd)
        >>> hf["encoder.layer.0.attention.k_proj.weight"].shape, len(hf)
        (torch.Size([4, 4]), 25)
    """
    if layout not in HF_LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(HF_LAYOUTS)}, got {layout!r}")
    names = HF_LAYOUTS[layout]
    led = KeyLedger(state_dict, source)
    out: dict[str, Tensor] = {}
    top = {
        "cls_token": "embeddings.cls_token",
        "mask_token": "embeddings.mask_token",
        "pos_embed": "embeddings.position_embeddings",
        "register_tokens": "embeddings.register_tokens",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    for src, dst in top.items():
        if src in led:
            out[dst] = led.take(src)
    for idx, keys in _blocks(state_dict).items():
        pre = f"encoder.layer.{idx}."

        def take(suffix: str, keys: dict[str, str] = keys, idx: int = idx) -> Tensor:
            if suffix not in keys:
                raise LeftoverKeysError(f"{source}: block {idx} lacks '{suffix}'")
            return led.take(keys[suffix])

        for src, dst in (("norm1", "norm1"), ("norm2", "norm2")):
            for p in ("weight", "bias"):
                out[f"{pre}{dst}.{p}"] = take(f"{src}.{p}")
        out[f"{pre}layer_scale1.lambda1"] = take("ls1.gamma")
        out[f"{pre}layer_scale2.lambda1"] = take("ls2.gamma")
        for p in ("weight", "bias"):
            if p == "bias" and "attn.qkv.bias" not in keys:
                continue
            q, k, v = take(f"attn.qkv.{p}").chunk(3, dim=0)
            out[f"{pre}{names['q']}.{p}"] = q.clone()
            out[f"{pre}{names['k']}.{p}"] = k.clone()
            out[f"{pre}{names['v']}.{p}"] = v.clone()
            out[f"{pre}{names['proj']}.{p}"] = take(f"attn.proj.{p}")
        if "mlp.w12.weight" in keys:
            for p in ("weight", "bias"):
                w12, w3 = take(f"mlp.w12.{p}"), take(f"mlp.w3.{p}")
                if layout == "v5":
                    gate, up = w12.chunk(2, dim=0)
                    out[f"{pre}{names['gate']}.{p}"], out[f"{pre}{names['up']}.{p}"] = gate.clone(), up.clone()
                    out[f"{pre}{names['down']}.{p}"] = w3
                else:
                    out[f"{pre}{names['w12']}.{p}"], out[f"{pre}{names['w3']}.{p}"] = w12, w3
        else:
            for n in ("fc1", "fc2"):
                for p in ("weight", "bias"):
                    out[f"{pre}mlp.{n}.{p}"] = take(f"mlp.{n}.{p}")
    led.check_consumed()
    return out


def load_hub_dinov2_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "DINOv2 state dict"
) -> None:
    """Load hub-format weights into a Hugging Face DINOv2 ``model``, strictly.

    The layout (transformers 4 or 5 names) is read off ``model``. Missing, unexpected or
    mis-shaped keys raise :class:`~featureflow.compat.vfmf.ledger.LeftoverKeysError`
    listing them.

    Example:
        >>> import transformers
        >>> cfg = transformers.Dinov2WithRegistersConfig(hidden_size=8, num_hidden_layers=1,
        ...     num_attention_heads=2, patch_size=2, image_size=4, num_register_tokens=1)
        >>> m = transformers.Dinov2WithRegistersModel(cfg)
        >>> sd = {"cls_token": m.embeddings.cls_token, "mask_token": m.embeddings.mask_token}
        >>> try:
        ...     load_hub_dinov2_state_dict(m, sd)
        ... except ValueError as e:
        ...     print("missing" in str(e) and "position_embeddings" in str(e))
        True
    """
    own = model.state_dict()
    converted = convert_hub_dinov2_state_dict(state_dict, _layout_of(list(own)), source)
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    wrong = [
        f"{k}: model {tuple(own[k].shape)} vs file {tuple(converted[k].shape)}"
        for k in sorted(set(own) & set(converted))
        if tuple(own[k].shape) != tuple(converted[k].shape)
    ]
    if missing or unexpected or wrong:
        raise LeftoverKeysError(
            f"{source} does not match the Hugging Face {type(model).__name__}: "
            f"missing {format_keys(missing)}; unexpected {format_keys(unexpected)}; shape mismatch {wrong[:5]}"
        )
    with torch.no_grad():
        for k, v in converted.items():
            own[k].copy_(v)


def dinov2_model_from_hub_state_dict(state_dict: Mapping[str, Tensor], num_heads: int | None = None) -> nn.Module:
    """Build the matching Hugging Face DINOv2 (with or without registers) and load the weights.

    Example:
        >>> import torch, transformers
        >>> cfg = transformers.Dinov2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                                 patch_size=2, image_size=4)
        >>> ref = transformers.Dinov2Model(cfg)
        >>> m = dinov2_model_from_hub_state_dict(hf_to_hub_dinov2_state_dict(ref.state_dict()), num_heads=2)
        >>> type(m).__name__, bool(torch.equal(m.layernorm.weight, ref.layernorm.weight))
        ('Dinov2Model', True)
    """
    import transformers

    config = dinov2_hf_config(state_dict, num_heads)
    registers = config.model_type == "dinov2_with_registers"
    cls = transformers.Dinov2WithRegistersModel if registers else transformers.Dinov2Model
    model = cls(config)
    load_hub_dinov2_state_dict(model, state_dict)
    return model.eval()


def hf_to_hub_dinov2_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse map: a Hugging Face DINOv2 state dict (transformers 5 names) → torch.hub keys.

    Fuses query/key/value into ``attn.qkv`` and gate/up into ``mlp.w12``. Useful to export
    weights to the reference code, and for examples.

    Example:
        >>> import transformers
        >>> cfg = transformers.Dinov2WithRegistersConfig(hidden_size=8, num_hidden_layers=1,
        ...     num_attention_heads=2, patch_size=2, image_size=4, num_register_tokens=1)
        >>> hub = hf_to_hub_dinov2_state_dict(transformers.Dinov2WithRegistersModel(cfg).state_dict())
        >>> hub["blocks.0.attn.qkv.weight"].shape, "register_tokens" in hub
        (torch.Size([24, 8]), True)
    """
    top = {
        "embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
        "embeddings.position_embeddings": "pos_embed", "embeddings.register_tokens": "register_tokens",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
    }  # fmt: skip
    per_layer = {
        "norm1": "norm1", "norm2": "norm2", "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
        "attention.o_proj": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.down_proj": "mlp.w3",
    }  # fmt: skip
    out: dict[str, Tensor] = {}
    fused: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        if key in top:
            out[top[key]] = value
            continue
        m = re.match(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$", key)
        if not m:
            raise ValueError(f"unexpected Hugging Face DINOv2 key {key!r}")
        idx, name, param = m.groups()
        if name in ("attention.q_proj", "attention.k_proj", "attention.v_proj", "mlp.gate_proj", "mlp.up_proj"):
            group = "attn.qkv" if name.startswith("attention") else "mlp.w12"
            fused.setdefault(f"blocks.{idx}.{group}.{param}", {})[name.split(".")[-1]] = value
            continue
        full = f"{name}.{param}" if param == "lambda1" else name
        if full not in per_layer:
            raise ValueError(f"unexpected Hugging Face DINOv2 key {key!r}")
        target = per_layer[full]
        out[f"blocks.{idx}.{target}" + ("" if param == "lambda1" else f".{param}")] = value
    for key, parts in fused.items():
        order = ("q_proj", "k_proj", "v_proj") if ".attn.qkv." in key else ("gate_proj", "up_proj")
        out[key] = torch.cat([parts[o] for o in order], dim=0)
    return out
