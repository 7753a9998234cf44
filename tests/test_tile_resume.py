"""`tile` resumes after a kill and splits into shards: the chips folder is the same either way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from synth_helpers import TRANSFORM, write_raster

from aerialct.shards import Shard
from aerialct.tile import tile_scenes

ROOT = Path(__file__).resolve().parent.parent
ARGS = {"size": 32, "val_fraction": 0.25, "val_block": 64, "workers": 1}


@pytest.fixture(scope="module")
def flight(tmp_path_factory) -> Path:
    """Three adjacent 128 px scenes with label rasters (unknown ids too): 12 row bands."""
    from affine import Affine

    d = tmp_path_factory.mktemp("flight")
    rng = np.random.default_rng(7)
    for i in range(3):
        t = TRANSFORM @ Affine.translation(128 * i, 0)
        img = rng.integers(0, 256, size=(3, 128, 128), dtype=np.uint8)
        lab = rng.integers(0, 7, size=(128, 128), dtype=np.uint8)  # 6 is no Potsdam class
        write_raster(d / f"tile{i}.tif", img, transform=t)
        write_raster(d / f"tile{i}_labels.tif", lab, transform=t)
    return d


def images(flight: Path) -> list[Path]:
    return [flight / f"tile{i}.tif" for i in range(3)]


def labels(flight: Path) -> list[Path]:
    return [flight / f"tile{i}_labels.tif" for i in range(3)]


def records(out: Path) -> list[Path]:
    tasks = Path(f"{out}.parts") / "tasks"
    done = tasks.glob("*.npz") if tasks.is_dir() else []
    return sorted(p for p in done if ".aerialct-tmp" not in p.name)  # not one being written


def same_chips(a: Path, b: Path) -> None:
    """Two chips folders hold the same chips (byte for byte), index and header."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.suffix == ".tif":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert json.loads((a / "dataset.json").read_text()) == json.loads(
        (b / "dataset.json").read_text()
    )
    fa, fb = pyogrio.read_dataframe(a / "index.gpkg"), pyogrio.read_dataframe(b / "index.gpkg")
    assert fa.equals(fb)


@pytest.fixture(scope="module")
def reference(flight, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "chips"
    tile_scenes(images(flight), out, labels=labels(flight), **ARGS)
    return out


def test_a_killed_tile_resumes_to_the_same_folder(flight, reference, tmp_path, cli):
    out = tmp_path / "chips"
    args = ["tile", *map(str, images(flight))]
    for lab in labels(flight):
        args += ["--labels", str(lab)]
    args += ["--out", str(out), "--size", "32", "--val-fraction", "0.25", "--val-block", "64",
             "-j", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "aerialct", *args], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    t0 = time.time()
    while len(records(out)) < 3 and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    assert not out.exists() and 3 <= len(records(out)) < 12
    kept = len(records(out))
    # a chip of a finished band lost on the way: that band is cut again
    from aerialct.tile.work import Record

    rows = next(r.rows for r in map(Record.load, records(out)) if r is not None and r.rows)
    victim = Path(f"{out}.parts") / "chips" / rows[0].image
    victim.write_bytes(victim.read_bytes()[:100])
    r = cli(*args)
    assert r.code == 0, r.err
    assert f"resumed: {kept - 1} of 12 row bands kept" in " ".join(r.err.split())
    assert "damaged or missing; cutting it again" in " ".join(r.err.split())
    assert not Path(f"{out}.parts").exists()
    same_chips(reference, out)


def test_shards_joined_equal_one_process(flight, reference, tmp_path):
    out = tmp_path / "chips"
    for k in (3, 1, 2):
        result = tile_scenes(images(flight), out, labels=labels(flight), shard=Shard(k, 3), **ARGS)
        assert result.complete == (k == 2) and result.tasks == 12
    assert result.chips == 12 * 4 - result.skipped_nodata
    same_chips(reference, out)


def test_a_shard_refuses_the_work_of_another_run(flight, tmp_path):
    from aerialct.errors import InputError

    out = tmp_path / "chips"
    tile_scenes(images(flight), out, labels=labels(flight), shard=Shard(1, 2), **ARGS)
    with pytest.raises(InputError, match="other inputs or options"):
        tile_scenes(images(flight), out, labels=labels(flight), shard=Shard(2, 2),
                    **(ARGS | {"size": 16}))  # fmt: skip
    # a plain run with other arguments starts over (the work is aerialct's own)
    result = tile_scenes(images(flight), out, labels=labels(flight), **(ARGS | {"size": 64}))
    assert result.complete and result.tasks_kept == 0 and result.chip_size == 64
    assert not Path(f"{out}.parts").exists()


@pytest.mark.parametrize("workers,cpus", [(None, 4), (3, 2)])
def test_processes_and_decoding_threads_make_the_same_folder(
    flight, tmp_path, monkeypatch, workers, cpus
):
    # one process decoding on one thread; then GDAL decodes each band on 4 threads, or three
    # processes share the bands, one thread each: the chips, index and header are the same
    import aerialct.tile.run as run_mod
    import aerialct.tile.worker as worker_mod

    args = {**ARGS, "creation_options": {"COMPRESS": "NONE"}}
    monkeypatch.setattr(run_mod, "usable_cpus", lambda: 1)
    tile_scenes(images(flight), tmp_path / "one", labels=labels(flight), **args)
    monkeypatch.setattr(run_mod, "usable_cpus", lambda: cpus)
    assert run_mod.plan(workers, 12, False) == ((1, 4) if workers is None else (3, 1))
    seen = []
    monkeypatch.setattr(worker_mod, "_read_band", _spy(worker_mod._read_band, seen))
    out = tmp_path / "chips"
    tile_scenes(images(flight), out, labels=labels(flight), **{**args, "workers": workers})
    same_chips(tmp_path / "one", out)
    if workers is None:  # in this process: every band decoded on 4 threads, the scene let go
        assert seen == [4] * 12
        assert worker_mod._kept.src is None and worker_mod._kept.raw is None


def _spy(read_band, seen):
    def spy(job):
        seen.append(job.read_threads)
        return read_band(job)

    return spy


def test_the_default_is_a_process_per_cpu_or_per_four_for_uncompressed_chips(monkeypatch):
    import aerialct.tile.run as run_mod

    for cpus, want in ((1, (1, 1)), (2, (1, 2)), (8, (2, 4)), (16, (4, 4))):
        monkeypatch.setattr(run_mod, "usable_cpus", lambda c=cpus: c)
        assert run_mod.plan(None, 100, compressed=False) == want
        assert run_mod.plan(None, 100, compressed=True) == (min(cpus, 8), max(1, cpus // 8))
    assert run_mod.plan(None, 1, compressed=True) == (1, 16)  # never more processes than tasks
    assert run_mod.plan(2, 100, compressed=False) == (2, 8)
    monkeypatch.setattr(run_mod, "usable_cpus", lambda: 96)  # a many-core machine: 8 unasked
    assert run_mod.plan(None, 500, compressed=False) == (8, 12)
    assert run_mod.plan(None, 500, compressed=True) == (8, 12)
    assert run_mod.plan(32, 500, compressed=True) == (32, 3)
