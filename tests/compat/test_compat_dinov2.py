"""DINOv2 torch.hub key format -> Hugging Face layout (featureflow.compat.vfmf.dinov2_keys)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from featureflow.compat.vfmf import (  # noqa: E402
    LeftoverKeysError,
    convert_hub_dinov2_state_dict,
    dinov2_model_from_hub_state_dict,
    hf_to_hub_dinov2_state_dict,
    hub_dinov2_info,
    load_hub_dinov2_state_dict,
)


def tiny_hf(registers: int = 2, swiglu: bool = False, layers: int = 3, seed: int = 0) -> torch.nn.Module:
    """A tiny HF DINOv2 with every tensor random (layer scales, tokens, norms included)."""
    kw = dict(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, patch_size=4, image_size=16,
              use_swiglu_ffn=swiglu)
    if registers:
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


def hub_from_hf(model: torch.nn.Module, chunks: int = 0) -> dict[str, torch.Tensor]:
    """Independent inverse written for the test: HF tensors -> facebookresearch/dinov2 keys."""
    sd = model.state_dict()
    emb = "embeddings."
    hub = {
        "cls_token": sd[emb + "cls_token"], "mask_token": sd[emb + "mask_token"],
        "pos_embed": sd[emb + "position_embeddings"],
        "patch_embed.proj.weight": sd[emb + "patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd[emb + "patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"],
    }
    if emb + "register_tokens" in sd:
        hub["register_tokens"] = sd[emb + "register_tokens"]
    n = model.config.num_hidden_layers
    per_chunk = n // chunks if chunks else n
    for i in range(n):
        blk = f"blocks.{i // per_chunk}.{i}." if chunks else f"blocks.{i}."
        L = f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            hub[blk + f"norm1.{p}"] = sd[L + f"norm1.{p}"]
            hub[blk + f"norm2.{p}"] = sd[L + f"norm2.{p}"]
            hub[blk + f"attn.qkv.{p}"] = torch.cat(
                [sd[L + f"attention.{x}_proj.{p}"] for x in "qkv"], dim=0)
            hub[blk + f"attn.proj.{p}"] = sd[L + f"attention.o_proj.{p}"]
            if model.config.use_swiglu_ffn:
                hub[blk + f"mlp.w12.{p}"] = torch.cat([sd[L + f"mlp.gate_proj.{p}"], sd[L + f"mlp.up_proj.{p}"]])
                hub[blk + f"mlp.w3.{p}"] = sd[L + f"mlp.down_proj.{p}"]
            else:
                hub[blk + f"mlp.fc1.{p}"] = sd[L + f"mlp.fc1.{p}"]
                hub[blk + f"mlp.fc2.{p}"] = sd[L + f"mlp.fc2.{p}"]
        hub[blk + "ls1.gamma"] = sd[L + "layer_scale1.lambda1"]
        hub[blk + "ls2.gamma"] = sd[L + "layer_scale2.lambda1"]
    return {k: v.clone() for k, v in hub.items()}


def _assert_same_model(ref: torch.nn.Module, got: torch.nn.Module) -> None:
    a, b = ref.state_dict(), got.state_dict()
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = torch.rand(2, 3, 16, 24)  # non-square, exercises position interpolation too
    with torch.no_grad():
        out_a = ref(pixel_values=x, output_hidden_states=True)
        out_b = got(pixel_values=x, output_hidden_states=True)
    assert torch.equal(out_a.last_hidden_state, out_b.last_hidden_state)
    for ha, hb in zip(out_a.hidden_states, out_b.hidden_states):
        assert torch.equal(ha, hb)


@pytest.mark.parametrize(
    "registers, swiglu, chunks",
    [(2, False, 0), (0, False, 0), (4, True, 0), (2, False, 3)],
    ids=["registers", "no-registers", "swiglu", "chunked-blocks"],
)
def test_hub_to_hf_reproduces_the_model(registers, swiglu, chunks):
    ref = tiny_hf(registers, swiglu)
    hub = hub_from_hf(ref, chunks)
    got = dinov2_model_from_hub_state_dict(hub, num_heads=2)
    expected_type = "Dinov2WithRegistersModel" if registers else "Dinov2Model"
    assert type(got).__name__ == expected_type
    _assert_same_model(ref, got)


def test_every_hub_key_is_consumed_and_every_hf_key_filled():
    ref = tiny_hf()
    hub = hub_from_hf(ref)
    converted = convert_hub_dinov2_state_dict(hub)
    assert set(converted) == set(ref.state_dict())
    # qkv really split in q, k, v order
    W = hub["blocks.1.attn.qkv.weight"]
    assert torch.equal(converted["encoder.layer.1.attention.q_proj.weight"], W[:16])
    assert torch.equal(converted["encoder.layer.1.attention.v_proj.weight"], W[32:])


def test_library_inverse_round_trips():
    ref = tiny_hf(registers=1, swiglu=True)
    hub = hf_to_hub_dinov2_state_dict(ref.state_dict())
    mine = hub_from_hf(ref)
    assert sorted(hub) == sorted(mine)
    assert all(torch.equal(hub[k], mine[k]) for k in hub)


def test_info_reads_architecture():
    info = hub_dinov2_info(hub_from_hf(tiny_hf(registers=4)), num_heads=2)
    assert info["image_size"] == 16 and info["patch_size"] == 4 and info["num_register_tokens"] == 4
    assert info["num_hidden_layers"] == 3 and info["mlp_ratio"] == 4
    with pytest.raises(ValueError, match="num_heads"):
        hub_dinov2_info(hub_from_hf(tiny_hf()))  # width 16 is not a released DINOv2 width


def test_leftover_and_missing_keys_are_errors():
    ref = tiny_hf()
    hub = hub_from_hf(ref)
    extra = dict(hub, **{"blocks.0.attn.extra_bias": torch.zeros(3)})
    with pytest.raises(LeftoverKeysError, match="blocks.0.attn.extra_bias"):
        convert_hub_dinov2_state_dict(extra)
    missing = {k: v for k, v in hub.items() if k != "blocks.2.ls2.gamma"}
    with pytest.raises(LeftoverKeysError, match="block 2 lacks 'ls2.gamma'"):
        convert_hub_dinov2_state_dict(missing)
    other = tiny_hf(registers=0)  # no register tokens: the hub dict's registers are unexpected
    with pytest.raises(LeftoverKeysError, match="register_tokens"):
        load_hub_dinov2_state_dict(other, hub)
    with pytest.raises(ValueError, match="not a torch.hub DINOv2"):
        hub_dinov2_info({"foo": torch.zeros(1)})


def test_transformers4_layout_names():
    hub = hub_from_hf(tiny_hf(swiglu=True))
    v4 = convert_hub_dinov2_state_dict(hub, layout="v4")
    assert "encoder.layer.0.attention.attention.query.weight" in v4
    assert "encoder.layer.0.attention.output.dense.bias" in v4
    assert torch.equal(v4["encoder.layer.0.mlp.weights_in.weight"], hub["blocks.0.mlp.w12.weight"])
