"""The command line: --threads on every sub-command, help text on every option, --num-samples."""

from __future__ import annotations

import argparse

import pytest
import torch

from featureflow.cli import apply_threads, build_parser, main
from featureflow.utils import threads as threads_mod
from featureflow.utils.threads import default_threads, set_threads


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("command", [["demo"], ["forecast", "--input", "x"], ["train", "--config", "c.json"]])
def test_threads_option_is_parsed_and_applied(command, keep_threads):
    args = build_parser().parse_args([*command, "--threads", "3"])
    assert args.threads == 3
    assert apply_threads(args) == 3 and torch.get_num_threads() == 3
    args = build_parser().parse_args([*command, "--threads", "1"])
    assert apply_threads(args) == 1 and torch.get_num_threads() == 1


def test_threads_default_is_applied_by_main(tmp_path, monkeypatch, keep_threads, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads_mod, "_available_cpus", lambda: 2)
    torch.set_num_threads(2)
    assert main(["demo", "--model", "none", "--out", str(tmp_path), "--no-progress", "--seed", "1"]) == 0
    assert torch.get_num_threads() == 1  # 2 CPUs -> 1 thread
    assert main(["demo", "--model", "none", "--out", str(tmp_path), "--no-progress", "--threads", "2"]) == 0
    assert torch.get_num_threads() == 2


def test_default_threads_policy(monkeypatch, keep_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    torch.set_num_threads(8)  # stands in for torch's default (physical cores)
    monkeypatch.setattr(threads_mod, "_available_cpus", lambda: 2)
    assert default_threads() == 1
    monkeypatch.setattr(threads_mod, "_available_cpus", lambda: 16)
    monkeypatch.setattr(threads_mod, "_load_average", lambda: 0.2)
    assert default_threads() == 8  # idle CPUs, capped by torch's default
    monkeypatch.setattr(threads_mod, "_load_average", lambda: 13.5)
    assert default_threads() == 2  # 16 - 13.5 idle -> 2
    monkeypatch.setattr(threads_mod, "_load_average", lambda: 40.0)
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    torch.set_num_threads(5)
    assert default_threads() == 5  # the user's choice is kept


def test_bad_thread_counts_are_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--threads", "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        set_threads(0)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_subcommand_has_help():
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in _subparsers(build_parser()).items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not missing, f"options without help text: {missing}"


@pytest.mark.parametrize("command", [["demo"], ["forecast", "--input", "x"]])
def test_num_samples_is_the_main_spelling_and_samples_an_alias(command, capsys):
    parser = build_parser()
    assert parser.parse_args([*command, "--num-samples", "3"]).num_samples == 3
    assert parser.parse_args([*command, "--samples", "5"]).num_samples == 5
    with pytest.raises(SystemExit):
        parser.parse_args([command[0], "--help"])
    assert "--num-samples K, --samples K" in capsys.readouterr().out
