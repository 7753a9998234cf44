"""Whole-process measurements for the benchmarks: wall seconds, CPU seconds, peak memory.

Peers are measured the way a user runs them: each command a fresh process, as typed,
alternating with aerialct's (peer, aerialct, peer, aerialct, ...) so that load from other
jobs falls on both, and summarised by medians. CPU seconds (user + system of the process and
the workers it waited for) and peak resident memory come from the kernel's accounting
(through GNU time), which a busy machine inflates far less than wall time.
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    wall: float
    cpu: float
    peak_mb: float


@dataclass
class Series:
    """The runs of one command."""

    name: str
    command: str
    runs: list[Run] = field(default_factory=list)

    def median(self, what: str) -> float:
        return statistics.median(getattr(r, what) for r in self.runs)

    def values(self, what: str, digits: int = 2) -> list[float]:
        return [round(getattr(r, what), digits) for r in self.runs]


GNU_TIME = "/usr/bin/time"


def run_once(command: str, env: dict[str, str] | None = None, cwd: str | None = None) -> Run:
    """Run ``command`` (a shell line) once; its wall time, CPU time and peak RSS.

    The command runs under GNU time, which reports its kernel accounting: CPU time
    including the worker processes it waited for, peak RSS the largest of it and them.
    (A process forked from this one would report this one's memory as its own peak: Linux
    keeps the high-water mark across exec.)
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-f", "%e %U %S %M", "-o", report.name, "/bin/sh", "-c", command],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{command} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        fields = report.read().split()[-4:]
    _, user, system, peak_kb = (float(v) for v in fields)
    return Run(wall, user + system, peak_kb / 1024)


def alternate(
    series: list[Series],
    repeat: int,
    before: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    warmup: bool = True,
) -> None:
    """Run every series' command ``repeat`` times, in turn; ``before[name]`` (a shell line)
    runs untimed before each run of ``name`` (clearing an output). One untimed warm-up
    round first (page cache, bytecode) unless ``warmup`` is False."""
    before = before or {}
    for i in range(repeat + (1 if warmup else 0)):
        for s in series:
            if s.name in before:
                subprocess.run(before[s.name], shell=True, check=True)
            run = run_once(s.command, env)
            if i > 0 or not warmup:
                s.runs.append(run)


def quote(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def typed(command: str, work: str | Path) -> str:
    """``command`` as a user types it: tools by name (not the path they were found at), files
    relative to the work folder ``work``."""
    words = shlex.split(command.replace(str(work) + "/", ""))
    words[0] = Path(words[0]).name
    return " ".join(shlex.quote(w) for w in words)


def commit() -> str:
    """The short commit of the checkout the benchmark runs from (``+`` when it has changes)."""
    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return head.stdout.strip() + ("+" if dirty else "")
