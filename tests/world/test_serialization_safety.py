"""Saving a WorldModel over an existing one: old or new model, never a mix, no stray temp files;
weights checksums; bad config files and weights are clear errors."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import featureflow.utils.atomic_dir as atomic_dir
import featureflow.world.serialization as serialization
from featureflow.compressors import Identity
from featureflow.encoders import PixelPatchEncoder
from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.probes import PixelPatchRGBHead
from featureflow.utils.atomic_dir import atomic_directory, backup_path, recover_directory
from featureflow.world import WorldModel

def build(seed: int) -> WorldModel:
    torch.manual_seed(seed)
    den = Denoiser(latent_dim=48, width=16, depth=1, heads=2, max_context=2)
    return WorldModel(PixelPatchEncoder(4), Identity(48), FlowForecaster(den), {"rgb": PixelPatchRGBHead(4)})


BUILD = """
import torch
from featureflow.compressors import Identity
from featureflow.encoders import PixelPatchEncoder
from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.probes import PixelPatchRGBHead
from featureflow.world import WorldModel
""" + inspect.getsource(build)


OLD, NEW = build(1), build(2)


def which(directory: Path) -> str:
    """'old' or 'new' according to the weights that load from ``directory`` (else fail)."""
    loaded = WorldModel.from_pretrained(directory).state_dict()
    for name, model in (("old", OLD), ("new", NEW)):
        if all(torch.equal(loaded[k], v) for k, v in model.state_dict().items()):
            return name
    raise AssertionError("the directory loads as neither the old nor the new model")


def entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


@pytest.mark.parametrize("fail_in", ["weights", "config", "swap"])
def test_failed_save_over_existing_model_keeps_the_old_one_and_no_temp(tmp_path, monkeypatch, fail_in):
    target = tmp_path / "m"
    OLD.save_pretrained(target)
    if fail_in == "weights":
        def boom(tensors, path, metadata=None):
            Path(path).write_bytes(b"partial")
            raise RuntimeError("disk full")
        monkeypatch.setattr(serialization, "save_safetensors", boom)
    elif fail_in == "config":
        monkeypatch.setattr(serialization, "save_json", lambda obj, path: (_ for _ in ()).throw(RuntimeError("disk full")))
    else:  # the second rename (temporary directory -> target) fails after old -> backup
        real, calls = os.rename, []

        def rename(src, dst):
            calls.append(src)
            if len(calls) == 2:
                raise OSError("rename failed")
            return real(src, dst)
        monkeypatch.setattr(atomic_dir.os, "rename", rename)
    with pytest.raises((RuntimeError, OSError)):
        NEW.save_pretrained(target)
    monkeypatch.undo()
    assert entries(tmp_path) == ["m"]  # no temporary directory, no backup
    assert entries(target) == ["config.json", "model.safetensors"]
    assert which(target) == "old"
    NEW.save_pretrained(target)  # and a later save still works
    assert which(target) == "new" and entries(tmp_path) == ["m"]


KILL = BUILD + """
import os, shutil, signal, sys
import featureflow.utils.atomic_dir as ad
import featureflow.utils.io as io
kill_at, count = int(sys.argv[2]), [0]
def hook(real):
    def wrapped(*args, **kwargs):
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapped
io.os.replace = hook(os.replace)   # file renames inside the temporary directory
ad.os.rename = hook(os.rename)     # old -> backup, temporary -> target
ad.shutil.rmtree = hook(shutil.rmtree)  # removing the backup
build(2).save_pretrained(sys.argv[1])
"""


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5, 6])
def test_save_killed_at_any_step_leaves_old_or_new_model(tmp_path, kill_at):
    """A real SIGKILL before each file-system step of a save over an existing model
    (1-2 renames into the temporary directory, 3 old -> backup, 4 temporary -> target,
    5 remove backup; 6 = not killed): the next load sees the old or the new model and
    leaves no temporary directory or backup behind."""
    target = tmp_path / "m"
    OLD.save_pretrained(target)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL, str(target), str(kill_at)], env=env, capture_output=True)
    assert proc.returncode == (0 if kill_at == 6 else -9), proc.stderr.decode()[-2000:]
    got = which(target)
    assert got == ("old" if kill_at <= 4 else "new")
    assert entries(tmp_path) == ["m"], entries(tmp_path)
    assert entries(target) == ["config.json", "model.safetensors"]


def test_recovery_restores_the_backup_and_removes_a_stale_one(tmp_path):
    target = tmp_path / "m"
    OLD.save_pretrained(target)
    os.rename(target, backup_path(target))  # killed between the two renames
    assert which(target) == "old" and entries(tmp_path) == ["m"]
    NEW.save_pretrained(tmp_path / "other")
    os.rename(tmp_path / "other", backup_path(target))  # killed before the backup was removed
    assert which(target) == "old" and entries(tmp_path) == ["m"]
    assert recover_directory(target) is False


def test_other_files_in_the_directory_survive_a_save(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "README.md").write_text("my notes")
    (target / "extra").mkdir()
    (target / "extra" / "log.txt").write_text("log")
    OLD.save_pretrained(target)
    NEW.save_pretrained(target)
    assert entries(target) == ["README.md", "config.json", "extra", "model.safetensors"]
    assert (target / "README.md").read_text() == "my notes" and (target / "extra" / "log.txt").read_text() == "log"
    assert which(target) == "new" and entries(tmp_path) == ["m"]


def test_atomic_directory_refuses_a_file_and_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        with atomic_directory(tmp_path / "f"):
            pass
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="current working directory"):
        with atomic_directory("."):
            pass


# ---------------------------------------------------------------- integrity checks
def test_checksum_is_written_and_a_bit_flip_is_an_error_naming_the_file(tmp_path):
    d = tmp_path / "m"
    NEW.save_pretrained(d)
    config = json.loads((d / "config.json").read_text())
    assert len(config["weights_sha256"]) == 64
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-5] ^= 0x10  # one bit in the tensor data (the end of the file)
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors does not match the SHA-256"):
        WorldModel.from_pretrained(d)
    loaded = WorldModel.from_pretrained(d, verify=False)  # explicitly skipped: loads the flipped weights
    assert not all(torch.equal(loaded.state_dict()[k], v) for k, v in NEW.state_dict().items())
    NEW.save_pretrained(d, checksum=False)
    assert "weights_sha256" not in json.loads((d / "config.json").read_text())
    assert which(d) == "new"


@pytest.mark.parametrize("version", [-5, 0, True, 1.0])
def test_unknown_format_versions_are_refused(tmp_path, version):
    d = tmp_path / "m"
    NEW.save_pretrained(d)
    config = json.loads((d / "config.json").read_text())
    config["format_version"] = version
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format_version"):
        WorldModel.from_pretrained(d)


def test_integer_weights_where_floats_are_expected_are_refused(tmp_path):
    d = tmp_path / "m"
    NEW.save_pretrained(d, checksum=False)
    state = load_file(str(d / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point() and k.startswith("forecaster."))
    state[key] = state[key].to(torch.int64)
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"dtype mismatch: {key} expected floating-point vs weights torch.int64"):
        WorldModel.from_pretrained(d)


@pytest.mark.parametrize(
    "config, match",
    [
        ([1, 2, 3], "expected a JSON object with 'format_version' and 'components', got a JSON list"),
        ({"format_version": 1}, "expected 'components' to be an object with encoder, compressor, forecaster"),
        ({"format_version": 1, "components": {"encoder": {}}}, r"got \['encoder'\]"),
        ({"format_version": 1, "components": [], "probes": {}}, "got list"),
    ],
)
def test_malformed_config_json_is_a_value_error_naming_the_file(tmp_path, config, match):
    d = tmp_path / "m"
    NEW.save_pretrained(d)
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match) as err:
        WorldModel.from_pretrained(d)
    assert str(d / "config.json") in str(err.value)


def test_loaded_model_forecasts_like_the_saved_one(tmp_path):
    NEW.save_pretrained(tmp_path / "m")
    frames = torch.rand(1, 2, 3, 8, 8)
    a = NEW.forecast(frames, 2, 2, generator=torch.Generator().manual_seed(0))
    b = WorldModel.from_pretrained(tmp_path / "m").forecast(frames, 2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.latents, b.latents)

