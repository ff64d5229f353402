import json

import pytest
import torch

from featureflow.utils import (
    JSONLLogger,
    atomic_write,
    build_component,
    load_safetensors,
    save_json,
    save_safetensors,
)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"


def test_safetensors_round_trip(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    save_safetensors(tensors, tmp_path / "w.safetensors")
    back = load_safetensors(tmp_path / "w.safetensors")
    assert torch.equal(back["a"], tensors["a"]) and torch.equal(back["b"], tensors["b"])


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    save_safetensors({"a": torch.randn(100)}, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_safetensors(tmp_path / "t.safetensors")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_safetensors(tmp_path / "missing.safetensors")


def test_jsonl_logger(tmp_path):
    with JSONLLogger(tmp_path / "log.jsonl") as log:
        log.log(step=1, loss=0.25)
        log.log(step=2, loss=0.125)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["loss"] == 0.125


def test_save_json_and_unknown_component(tmp_path):
    save_json({"x": [1, 2]}, tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    with pytest.raises(ValueError, match="unknown component type"):
        build_component({"type": "NoSuchThing", "config": {}})


def test_atomic_write_uses_the_usual_file_mode(tmp_path):
    import os

    with atomic_write(tmp_path / "f.txt") as tmp:
        tmp.write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask
