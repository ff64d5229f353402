"""Safe readers, key ledger, head discovery and the recipe record of featureflow.compat.vfmf."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featureflow.compat.vfmf import (
    KeyLedger,
    LeftoverKeysError,
    ReleasedRecipe,
    UnsafeCheckpointError,
    find_head_checkpoints,
    load_torch_file,
    read_feature_stats,
    read_forecaster_state_dict,
    read_head_state_dict,
    read_vae_state_dict,
)


class Opaque:
    pass


def test_load_torch_file_is_weights_only(tmp_path):
    torch.save({"w": torch.arange(3)}, tmp_path / "ok.pt")
    assert load_torch_file(tmp_path / "ok.pt")["w"].tolist() == [0, 1, 2]
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert load_torch_file(tmp_path / "legacy.pt")["w"].tolist() == [1.0, 1.0]  # not memory-mappable: plain read
    torch.save({"w": Opaque()}, tmp_path / "bad.pt")
    with pytest.raises(UnsafeCheckpointError) as err:
        load_torch_file(tmp_path / "bad.pt", "head checkpoint")
    text = str(err.value)
    assert "head checkpoint" in text and "bad.pt" in text and "Opaque" in text and "weights_only=True" in text
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_torch_file(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="junk.pt"):
        load_torch_file(tmp_path / "junk.pt")


def test_forecaster_entries(tmp_path):
    sd = {"a": torch.zeros(1)}
    torch.save({"model_state_dict": sd, "ema_state_dict": {"a": torch.ones(1)}, "optimizer_state_dict": {},
                "scheduler_state_dict": {}}, tmp_path / "f.pt")
    assert read_forecaster_state_dict(tmp_path / "f.pt")["a"].item() == 1.0
    assert read_forecaster_state_dict(tmp_path / "f.pt", "model")["a"].item() == 0.0
    with pytest.raises(ValueError, match="weights must be one of"):
        read_forecaster_state_dict(tmp_path / "f.pt", "best")
    torch.save({"ema_state_dict": sd, "epoch": 2399, "step": 10, "wandb": {"run": {"id": "x", "name": "y"}}},
               tmp_path / "g.pt")  # the released train.py also saves epoch, step and wandb run info
    assert list(read_forecaster_state_dict(tmp_path / "g.pt")) == ["a"]
    torch.save({"ema_state_dict": sd, "pca": {"components": torch.zeros(2)}}, tmp_path / "p.pt")
    with pytest.raises(ValueError, match="\\['pca'\\] hold tensors"):
        read_forecaster_state_dict(tmp_path / "p.pt")
    torch.save({"ema_state_dict": {"a": 3}}, tmp_path / "h.pt")
    with pytest.raises(ValueError, match="flat mapping of str -> Tensor"):
        read_forecaster_state_dict(tmp_path / "h.pt")
    torch.save({"state": sd}, tmp_path / "v.pt")
    with pytest.raises(ValueError, match="'model_state_dict'"):
        read_vae_state_dict(tmp_path / "v.pt")


def test_head_reader_strips_prefix_and_rejects_strays(tmp_path):
    torch.save({"epoch": 2, "state_dict": {"head.x": torch.zeros(1)}}, tmp_path / "h.ckpt")
    assert list(read_head_state_dict(tmp_path / "h.ckpt")) == ["x"]
    torch.save({"state_dict": {"head.x": torch.zeros(1), "dino.y": torch.zeros(1)}}, tmp_path / "s.ckpt")
    with pytest.raises(ValueError, match="dino.y"):
        read_head_state_dict(tmp_path / "s.ckpt")


def test_feature_stats(tmp_path):
    np.savez(tmp_path / "s.npz", mean=np.arange(4, dtype=np.float32)[None], std=np.full((1, 4), 2.0, np.float32))
    mean, std = read_feature_stats(tmp_path / "s.npz", channels=4)
    assert mean.tolist() == [0, 1, 2, 3] and std.tolist() == [2, 2, 2, 2] and mean.dtype == torch.float32
    np.savez(tmp_path / "x.npz", mean=np.zeros(4), std=np.ones(4), count=np.ones(1))
    with pytest.raises(ValueError, match="unexpected array"):
        read_feature_stats(tmp_path / "x.npz")
    np.savez(tmp_path / "m.npz", mean=np.zeros(4))
    with pytest.raises(ValueError, match="missing array"):
        read_feature_stats(tmp_path / "m.npz")
    np.savez(tmp_path / "n.npz", mean=np.zeros(2), std=-np.ones(2))
    with pytest.raises(ValueError, match="non-negative"):
        read_feature_stats(tmp_path / "n.npz")
    np.savez(tmp_path / "i.npz", mean=np.zeros(2, np.int64), std=np.ones(2))
    with pytest.raises(ValueError, match="1-D float array"):
        read_feature_stats(tmp_path / "i.npz")


def test_ledger_accounts_for_every_key():
    led = KeyLedger({"t.a": torch.zeros(1), "t.b": torch.zeros(1), "c": torch.zeros(1)}, "file.pt")
    assert sorted(led.take_prefix("t.")) == ["a", "b"]
    with pytest.raises(LeftoverKeysError, match=r"file.pt: 1 released key\(s\) were not used.*'c'"):
        led.check_consumed()
    with pytest.raises(LeftoverKeysError, match="required key 'd' is missing"):
        led.take("d")
    assert led.take_prefix("zzz.", required=False) == {}
    with pytest.raises(LeftoverKeysError, match="no keys start with 'zzz.'"):
        led.take_prefix("zzz.")


def test_head_discovery_follows_released_names(tmp_path):
    names = {
        "segmentation": "train_kubric_vae_224_l[2,_5,_8,_11]_fgbg_seg_head_batch_size=128_lr=1e-5",
        "depth": "train_kubric_vae_224_l[2,_5,_8,_11]_depth_head_batch_size=128_lr=1e-5",
        "normals": "train_kubric_vae_224_l[2,_5,_8,_11]_normals_head_batch_size=128_lr=1e-5",
    }
    for task, name in names.items():
        path = tmp_path / name / "lightning_logs" / "version_0" / "checkpoints" / "epoch=1-step=3640.ckpt"
        path.parent.mkdir(parents=True)
        path.touch()
    found = find_head_checkpoints(tmp_path)
    assert {t: p.parts[len(tmp_path.parts)] for t, p in found.items()} == names
    (tmp_path / "mystery.ckpt").touch()
    with pytest.raises(ValueError, match="mystery.ckpt"):
        find_head_checkpoints(tmp_path)
    with pytest.raises(FileNotFoundError):
        find_head_checkpoints(tmp_path / "nope")


def test_recipe_validation():
    assert ReleasedRecipe.from_dict({"steps": 4}).steps == 4
    with pytest.raises(ValueError, match="unknown ReleasedRecipe field"):
        ReleasedRecipe.from_dict({"nfe": 4})
    with pytest.raises(ValueError, match="context_posterior"):
        ReleasedRecipe(context_posterior="mode")
    with pytest.raises(ValueError, match="steps"):
        ReleasedRecipe(steps=0)


def test_head_state_dict_from_a_reexported_safetensors_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    from featureflow.compat.vfmf.readers import read_head_state_dict

    save_file({"head.projects.0.bias": torch.arange(2.0)}, str(tmp_path / "h.safetensors"))
    state = read_head_state_dict(tmp_path / "h.safetensors")
    assert list(state) == ["projects.0.bias"] and state["projects.0.bias"].tolist() == [0.0, 1.0]
