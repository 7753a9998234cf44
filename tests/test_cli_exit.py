"""The aerialct process ends without tearing the interpreter down, and loses nothing doing so."""

from __future__ import annotations

import subprocess
import sys


def _aerialct(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aerialct", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_exit_status_and_streams_survive_the_fast_exit(tmp_path):
    ok = _aerialct("--version")
    assert ok.returncode == 0 and ok.stdout.startswith("aerialct ")
    bad = _aerialct("tile", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "chips"))
    assert bad.returncode == 1
    assert "missing.tif" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    usage = _aerialct("tile", "--size", "0")
    assert usage.returncode == 2


def test_exit_handlers_still_run(tmp_path):
    marker = tmp_path / "ran"
    code = (
        "import atexit, sys; from pathlib import Path; "
        f"atexit.register(lambda: Path({str(marker)!r}).write_text('yes')); "
        "sys.argv = ['aerialct', '--version']; "
        "from aerialct.cli.main import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("aerialct ")
    assert marker.read_text() == "yes"
