"""The shell workflows in examples/ run end to end on tiny synthetic data."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aerialct.geo.vector import list_layers

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TINY = ["train.epochs=1", "train.batch_size=8", "data.num_workers=0", "train.warmup_steps=0"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # the scripts call `aerialct` and `python3` from PATH: use this interpreter's environment
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _run(args: list[str], **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", *map(str, args)], capture_output=True, text=True, env=_env(**extra), timeout=300
    )


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny-cpu checkpoint: enough for the delivery workflow's plumbing."""
    from train_helpers import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_scripts_are_strict_bash():
    for script in EXAMPLES.glob("*.sh"):
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash"), script
        assert "set -euo pipefail" in text, script
        assert os.access(script, os.X_OK), f"{script} is not executable"


def test_potsdam_reproduction(tmp_path):
    from aerialct.data.synth import synth_potsdam

    root = tmp_path / "potsdam"
    synth_potsdam(root, tiles=["2_10", "2_11", "2_13"], size=192, gsd=0.25, seed=3)
    out = tmp_path / "repro"
    r = _run(
        [EXAMPLES / "potsdam_reproduction.sh", root, out, "tiny-cpu"],
        DEVICE="cpu",
        AERIALCT_SET=" ".join(TINY),
        TILE_ARGS="--size 64 --resize 64 --workers 1",
    )
    assert r.returncode == 0, r.stderr
    table = (out / "results.md").read_text()
    assert "| tiny-cpu |" in table
    report = json.loads((out / "runs" / "tiny-cpu.eval.json").read_text())
    assert 0.0 <= report["mean_iou"] <= 1.0
    assert "clutter" in report["excluded"]
    # rerunning continues: finished steps are kept, the table is rebuilt
    stamp = (out / "runs" / "tiny-cpu.train.json").stat().st_mtime
    r2 = _run([EXAMPLES / "potsdam_reproduction.sh", root, out, "tiny-cpu"], DEVICE="cpu")
    assert r2.returncode == 0, r2.stderr
    assert (out / "runs" / "tiny-cpu.train.json").stat().st_mtime == stamp


def test_delivery_to_buildings_partial_failure(tmp_path, tiny_checkpoint):
    from aerialct.data.synth import synth_scene

    scenes = tmp_path / "delivery"
    scenes.mkdir()
    synth_scene(scenes / "a.tif", size=192, gsd=0.25, seed=1)
    synth_scene(scenes / "b.tif", size=160, gsd=0.25, seed=2, origin=(369000.0, 5808000.0))
    (scenes / "broken.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    r = _run([EXAMPLES / "delivery_to_buildings.sh", tiny_checkpoint, scenes, out], DEVICE="cpu")
    assert r.returncode == 3, r.stderr  # one scene failed, the others were delivered
    assert "broken.tif" in (out / "failed.txt").read_text()
    import pyogrio

    layers = list_layers(out / "buildings.gpkg")
    assert layers == ["building_epsg32633"]
    frame = pyogrio.read_dataframe(out / "buildings.gpkg")
    delivered = {str(out / "classes" / "a_classes.tif"), str(out / "classes" / "b_classes.tif")}
    assert set(frame["source"]) <= delivered


def _popen(args: list, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(**extra), start_new_session=True,
    )  # fmt: skip


def _kill_when(p: subprocess.Popen, cond, timeout: float = 240.0) -> None:
    """SIGKILL the script and everything it started once ``cond()`` holds (or it ends)."""
    import signal
    import time

    t0 = time.time()
    while not cond() and p.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.communicate()


def test_delivery_in_two_crss_survives_a_kill_and_reruns(tmp_path, tiny_checkpoint):
    import pyogrio

    from aerialct.data.synth import synth_scene

    scenes = tmp_path / "delivery"
    scenes.mkdir()
    synth_scene(scenes / "a.tif", size=256, gsd=0.25, seed=1)
    synth_scene(scenes / "b.tif", size=256, gsd=0.25, seed=2, crs="EPSG:32632",
                origin=(700000.0, 5808000.0))  # fmt: skip
    synth_scene(scenes / "c.tif", size=256, gsd=0.25, seed=3, origin=(369000.0, 5808000.0))
    out = tmp_path / "out"
    script = [EXAMPLES / "delivery_to_buildings.sh", tiny_checkpoint, scenes, out]
    p = _popen(script, DEVICE="cpu")
    _kill_when(p, lambda: (out / "classes" / "a_classes.tif").exists())
    assert not (out / "buildings.gpkg").exists()  # never a partial layer under the final name
    done = {f.name: f.stat().st_mtime_ns for f in (out / "classes").glob("*_classes.tif")}
    r = _run(script, DEVICE="cpu")
    assert r.returncode == 0, r.stderr
    for name, mtime in done.items():  # finished scenes were not predicted again
        assert (out / "classes" / name).stat().st_mtime_ns == mtime
    layers = sorted(list_layers(out / "buildings.gpkg"))
    assert layers == ["building_epsg32632", "building_epsg32633"]
    sources = set(
        pyogrio.read_dataframe(out / "buildings.gpkg", layer="building_epsg32633")["source"]
    )
    assert sources <= {str(out / "classes" / f"{s}_classes.tif") for s in ("a", "c")}
    r2 = _run(script, DEVICE="cpu")  # a rerun of a finished delivery changes nothing
    assert r2.returncode == 0, r2.stderr
    assert (
        not (out / "buildings.incomplete.gpkg").exists() and (out / "failed.txt").read_text() == ""
    )


def test_potsdam_reproduction_resumes_a_killed_training(tmp_path):
    from aerialct.data.synth import synth_potsdam

    root = tmp_path / "potsdam"
    synth_potsdam(root, tiles=["2_10", "2_11", "2_13"], size=192, gsd=0.25, seed=3)
    out = tmp_path / "repro"
    script = [EXAMPLES / "potsdam_reproduction.sh", root, out, "tiny-cpu"]
    env = {
        "DEVICE": "cpu",
        "AERIALCT_SET": " ".join([*TINY[1:], "train.epochs=4"]),
        "TILE_ARGS": "--size 64 --resize 64 --workers 1",
    }
    p = _popen(script, **env)
    last = out / "runs" / "tiny-cpu" / "last.pt"
    _kill_when(p, last.exists)
    assert last.exists() and not (out / "runs" / "tiny-cpu.train.json").exists()
    r = _run(script, **env)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "runs" / "tiny-cpu.train.json").read_text())
    assert summary["resumed_from_step"] and summary["resumed_from_step"] > 0
    assert "| tiny-cpu |" in (out / "results.md").read_text()


def test_delivery_refuses_empty_folder(tmp_path, tiny_checkpoint):
    (tmp_path / "empty").mkdir()
    r = _run(
        [EXAMPLES / "delivery_to_buildings.sh", tiny_checkpoint, tmp_path / "empty", tmp_path / "o"]
    )
    assert r.returncode == 1
    assert "no .tif scenes" in r.stderr


@pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
    reason="torchrun not installed beside this interpreter",
)
def test_train_multi_gpu_script_on_cpu(tmp_path):
    from aerialct.data.synth import synth_scene
    from aerialct.tile import tile_scenes

    city = synth_scene(tmp_path / "city.tif", tmp_path / "city_labels.tif", size=256, gsd=0.25)
    chips = tmp_path / "chips"
    tile_scenes([city.image], chips, labels=[city.labels], size=64, val_fraction=0.25, workers=1)
    run = tmp_path / "run"
    args = [EXAMPLES / "train_multi_gpu.sh", ROOT / "configs" / "tiny-cpu.yaml", chips, run]
    for kv in TINY:
        args += ["--set", kv]
    r = _run(args, NPROC="2", DEVICE="cpu", MASTER_PORT="29517")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert (run / "last.pt").exists()
