"""Shared pieces of the file-safety tests: a real full disk, real processes, tiny models.

``start`` runs ``python -m aerialct`` as a process of its own; ``tiny_checkpoint`` writes
an untrained model checkpoint in a second. The full disk itself is the ``small_disk``
fixture (conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aerialct.geo.outputs import TMP_MARK

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny-cpu.yaml"
#: a training run of the tiny preset that takes a second or two
FAST = ["train.batch_size=4", "train.warmup_steps=1", "data.stats_chips=8", "train.epochs=1"]
SETS = [x for s in FAST for x in ("--set", s)]


def leftovers(folder: Path) -> list[Path]:
    """Temporaries, moved-aside runs and lock files under ``folder``."""
    return [
        p
        for p in folder.rglob("*")
        if TMP_MARK in p.name or ".aerialct-old" in p.name or p.name.endswith(".aerialct-lock")
    ]


def error_lines(err: str) -> list[str]:
    """The ``error:`` lines of stderr; never a traceback or a raw SQLite message."""
    assert "Traceback" not in err and "sqlite" not in err.lower(), err
    return [line for line in err.splitlines() if line.startswith("error:")]


def flat(text: str) -> str:
    return " ".join(text.split())


def assert_clean_full_disk_failure(r, disk: Path, final: Path) -> None:
    """Exit 1, one ``no space left`` line naming the output, nothing left on the disk."""
    assert r.code == 1, (r.out, r.err)
    lines = error_lines(r.err)
    assert len(lines) == 1 and "no space left on device" in lines[0], r.err
    assert str(final) in lines[0] or final.name in lines[0], r.err
    assert not final.exists()
    assert sorted(p.name for p in disk.rglob("*") if p.is_file()) == ["filler"]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(args: list, cwd: Path, stderr: Path | None = None, **env: str) -> subprocess.Popen:
    """``python -m aerialct ARGS`` in a process of its own (stdout piped; stderr piped, or
    into the file ``stderr``, to be read while it runs)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    err = subprocess.PIPE if stderr is None else open(stderr, "w")  # noqa: SIM115
    # a shell's background jobs ignore SIGINT, and Python keeps an ignored SIGINT ignored
    return subprocess.Popen(
        [sys.executable, "-m", "aerialct", *map(str, args)], cwd=cwd, env=full,
        stdout=subprocess.PIPE, stderr=err, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def wait_for(cond, timeout: float = 60.0) -> None:
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)


def tiny_checkpoint(
    path: Path,
    *,
    low: tuple[float, ...] | None = None,
    high: tuple[float, ...] | None = None,
    sharpen: float = 1.0,
    chip_size: int = 32,
    seed: int = 0,
) -> Path:
    """An untrained tiny CNN checkpoint (Potsdam classes, 3 bands, mean 120, std 60).

    ``sharpen`` scales the last layer, so that classes rarely tie: argmaxes of runtimes
    that differ by float rounding then agree.
    """
    import torch

    from aerialct.classes import POTSDAM
    from aerialct.config import load_config
    from aerialct.engine.checkpoint import make_checkpoint, save_checkpoint
    from aerialct.models import build_model

    torch.manual_seed(seed)
    cfg = load_config(None, ["model.backbone=tiny_cnn", "model.decoder=fpn",
                             "model.decoder_channels=16", f"model.img_size={chip_size}"])  # fmt: skip
    model = build_model(cfg.model, num_classes=len(POTSDAM), in_chans=3)
    state = model.state_dict()
    if sharpen != 1.0:
        last = [k for k, v in state.items() if k.endswith("weight") and v.ndim == 4][-1]
        state[last] = state[last] * sharpen
    return save_checkpoint(path, make_checkpoint(
        config=cfg, classes=POTSDAM, mean=(120.0,) * 3, std=(60.0,) * 3, in_chans=3,
        chip_size=chip_size, model_state=state, gsd=0.05, low=low, high=high))  # fmt: skip


def json_out(r) -> dict:
    assert r.code == 0, r.err
    return json.loads(r.out)


def hold_lock(output: Path, seconds: float = 60.0) -> subprocess.Popen:
    """Another process that holds the lock of ``output`` (aerialct.geo.locks) until killed."""
    code = (
        "import sys, time\n"
        "from aerialct.geo.locks import output_lock\n"
        "with output_lock(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(float(sys.argv[2]))\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(output), str(seconds)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p
