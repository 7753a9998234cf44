"""Full disks in the verbs added last: pack, tile --pack, export.

A real 512 KiB tmpfs (the ``small_disk`` fixture, root only): each verb fails with one
line naming its output and exit 1, no SIGBUS, no C++ abort, nothing left on the disk.
The verbs run as processes of their own: a crash is an exit status, not a dead test run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import CliResult
from safety_helpers import (
    assert_clean_full_disk_failure,
    leftovers,
    start,
    tiny_checkpoint,
)
from synth_helpers import write_raster


def chips_of(cli, tmp_path: Path, size: int = 256) -> Path:
    rng = np.random.default_rng(0)
    img = write_raster(tmp_path / "a.tif", rng.integers(0, 255, (3, size, size), dtype=np.uint8))
    lab = write_raster(tmp_path / "l.tif", rng.integers(0, 6, (size, size), dtype=np.uint8))
    r = cli("tile", img, "--labels", lab, "-o", tmp_path / "chips", "--size", "32")
    assert r.code == 0, r.err
    return tmp_path / "chips"


def run(args: list, cwd: Path) -> CliResult:
    p = start(args, cwd)
    out, err = p.communicate(timeout=300)
    return CliResult(p.returncode, out, err)


def test_full_disk_pack_and_tile_pack(cli, small_disk, tmp_path):
    chips = chips_of(cli, tmp_path)  # 64 chips: 200 KiB of images to pack
    disk = small_disk(96 << 10)
    r = run(["pack", chips, "-o", disk / "packed"], tmp_path)
    assert_clean_full_disk_failure(r, disk, disk / "packed")
    img, lab = tmp_path / "a.tif", tmp_path / "l.tif"
    r = run(["tile", img, "--labels", lab, "-o", disk / "c", "--size", "32", "--pack"], tmp_path)
    assert r.code == 1 and "no space left on device" in r.err, r.err
    assert sorted(p.name for p in disk.rglob("*") if p.is_file()) == ["filler"]


def test_full_disk_export(small_disk, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.pt", chip_size=32)
    disk = small_disk(8 << 10)
    for fmt, name in (("torchscript", "m.ts"),):  # torch's own writer aborted the process
        r = run(["export", ckpt, "--format", fmt, "-o", disk / name], tmp_path)
        assert_clean_full_disk_failure(r, disk, disk / name)
    assert not leftovers(tmp_path)
