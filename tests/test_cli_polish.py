"""Command-line polish: examples in every --help, 80-column help, completion, a quiet -q."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from train_helpers import tiled_synth

from aerialct.cli.app import app
from aerialct.engine import run as run_mod

VERBS = [
    "demo",
    "evaluate",
    "export",
    "info",
    "pack",
    "predict",
    "synth",
    "tile",
    "train",
    "vectorize",
    "weights",
]
ROOT = Path(__file__).resolve().parents[1]


def test_every_verb_is_listed():
    from aerialct.cli import main  # noqa: F401  (registers the verbs)

    group = typer.main.get_command(app)
    assert sorted(group.commands) == VERBS


@pytest.mark.parametrize("verb", VERBS)
def test_help_has_examples_and_fits_80_columns(cli, monkeypatch, verb):
    monkeypatch.setenv("COLUMNS", "80")
    r = cli(*verb.split(), "--help")
    assert r.code == 0, r.err
    text = r.out
    assert "Example" in text
    examples = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("aerialct ")]
    assert any(ln.startswith(f"aerialct {verb} ") for ln in examples), text
    assert "<bool>" not in text
    assert max(len(ln) for ln in text.splitlines()) <= 80
    assert "…" not in text
    from aerialct.cli import main  # noqa: F401

    command = typer.main.get_command(app)
    for word in verb.split():
        command = command.commands[word]
    if hasattr(command, "commands"):  # each sub-command's help holds the same promises
        for sub in command.commands:
            test_help_has_examples_and_fits_80_columns(cli, monkeypatch, f"{verb} {sub}")
        return
    for param in command.params:
        if isinstance(param, click.Option):
            for name in param.opts + param.secondary_opts:
                assert name in text, f"{verb}: {name} missing or cut in --help"


def test_examples_parse(cli, monkeypatch):
    """Each example's options exist: click accepts them up to the first missing file."""
    monkeypatch.setenv("COLUMNS", "80")
    from aerialct.cli import main  # noqa: F401

    group = typer.main.get_command(app)
    for verb in VERBS:
        text = cli(verb, "--help").out
        for line in text.splitlines():
            words = line.split()
            if words[:2] != ["aerialct", verb]:
                continue
            command, i = group.commands[words[1]], 2
            while hasattr(command, "commands"):  # a verb with sub-commands (weights fetch)
                command, i = command.commands[words[i]], i + 1
            opts = {o for p in command.params for o in p.opts}
            used = [w for w in words[i:] if w.startswith("-")]
            assert set(used) <= opts, (line, set(used) - opts)


def test_shell_completion(cli):
    r = cli("--show-completion", "bash")
    assert r.code == 0 and "_AERIALCT_COMPLETE" in r.out
    env = {**os.environ, "_AERIALCT_COMPLETE": "complete_bash", "COMP_WORDS": "aerialct exp",
           "COMP_CWORD": "1", "PYTHONPATH": str(ROOT)}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "aerialct"], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.stdout.split() == ["export"]
    env["COMP_WORDS"], env["COMP_CWORD"] = "aerialct predict m.pt s.tif --prob", "4"
    out = subprocess.run([sys.executable, "-m", "aerialct"], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.stdout.split() == ["--probabilities"]


def test_loader_workers_fit_the_machine(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert run_mod.loader_workers(4) == 2
    assert run_mod.loader_workers(1) == 1
    assert run_mod.loader_workers(0) == 0


def test_quiet_train_prints_nothing_on_stderr(cli, tmp_path, monkeypatch, recwarn):
    chips = tiled_synth(tmp_path / "city")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    r = cli("-q", "train", "--config", ROOT / "configs" / "tiny-cpu.yaml", "--data", chips,
            "--out", tmp_path / "run", "--set", "train.epochs=1", "--set", "data.num_workers=4",
            "--set", "train.batch_size=4", "--set", "data.stats_chips=8")  # fmt: skip
    assert r.code == 0, r.err
    assert r.err == ""
    assert "trained" in r.out  # the result still goes to stdout
    assert not [w for w in recwarn if "worker" in str(w.message)]
