"""Nothing lost: two writers of one output, and outputs that are (or hold) inputs.

README, "What aerialct promises about your files", rule 1 and "Two commands at once"
(CONTRACTS.md, "Locks"): every writer of an output holds its lock; a second writer
waits (``vectorize --append``) or fails with one line naming the holder's pid; a lock
whose holder died is taken over, with a log line. Real processes, real files.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
from predict_helpers import oracle_bundle, random_image, write_scene
from safety_helpers import (
    SETS,
    TINY,
    dead_pid,
    error_lines,
    flat,
    hold_lock,
    leftovers,
    start,
    tiny_checkpoint,
    wait_for,
)

from aerialct.classes import POTSDAM
from aerialct.geo.locks import LOCK_SUFFIX, lock_path


def buildings_raster(path: Path, n: int, seed: int) -> Path:
    """A class raster of ``n`` separate one-building blocks (Potsdam table), EPSG:32633."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    a = np.zeros((side * 4, side * 4), np.uint8)
    for i in range(n):
        r, c = divmod(i, side)
        a[r * 4 : r * 4 + 2 + rng.integers(0, 2), c * 4 : c * 4 + 2] = POTSDAM.id_of("building")
    prof = dict(driver="GTiff", width=a.shape[1], height=a.shape[0], count=1, dtype="uint8",
                crs="EPSG:32633", transform=rasterio.Affine(0.5, 0, 0, 0, -0.5, 0))  # fmt: skip
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(a, 1)
        ds.update_tags(AERIALCT_CLASSES=json.dumps(POTSDAM.to_list()))
    return path


def test_two_appends_to_one_geopackage_keep_every_polygon(tmp_path):
    rasters = [buildings_raster(tmp_path / f"r{i}.tif", 400 + 100 * i, i) for i in range(2)]
    out = tmp_path / "all.gpkg"
    # another writer holds the layer: both appenders wait for it, then add in turn
    holder = hold_lock(out)
    logs = [tmp_path / f"err{i}.txt" for i in range(2)]
    runs = [start(["vectorize", r, "-o", out, "--append"], tmp_path, stderr=log)
            for r, log in zip(rasters, logs, strict=True)]  # fmt: skip
    waiting = f"another aerialct (pid {holder.pid} on host"
    wait_for(lambda: all(waiting in flat(log.read_text()) for log in logs), timeout=120)
    assert all(p.poll() is None for p in runs)
    holder.kill()  # dies holding it: the kernel frees the lock, an appender takes it over
    assert [p.wait(timeout=120) for p in runs] == [0, 0], [log.read_text() for log in logs]
    errs = flat(" ".join(log.read_text() for log in logs))
    assert "is writing it; waiting for it to finish" in errs
    assert f"took over the lock of pid {holder.pid}" in errs
    frame = pyogrio.read_dataframe(out, layer="building")
    assert len(frame) == 400 + 500 and sorted(frame["id"]) == list(range(1, 901))
    assert not [p for p in leftovers(tmp_path) if p.parent == tmp_path]


def test_two_appends_race_without_losing_a_run(tmp_path):
    rasters = [buildings_raster(tmp_path / f"r{i}.tif", 300, i) for i in range(3)]
    out = tmp_path / "all.gpkg"
    runs = [start(["vectorize", r, "-o", out, "--append"], tmp_path) for r in rasters]
    outs = [p.communicate(timeout=180) for p in runs]
    assert [p.returncode for p in runs] == [0, 0, 0], outs
    frame = pyogrio.read_dataframe(out)
    assert len(frame) == 900 and sorted(frame["id"]) == list(range(1, 901))
    assert {Path(s).name for s in frame["source"]} == {"r0.tif", "r1.tif", "r2.tif"}


def test_the_same_raster_spelled_twice_is_appended_once(cli, tmp_path, monkeypatch):
    raster = buildings_raster(tmp_path / "r.tif", 20, 0)
    out = tmp_path / "b.gpkg"
    monkeypatch.chdir(tmp_path)
    assert cli("vectorize", "r.tif", "-o", out, "--append").code == 0
    r = cli("vectorize", raster, "-o", out, "--append")
    assert r.code == 1 and "already holds the polygons of" in r.err, r.err
    (tmp_path / "link.tif").symlink_to(raster)
    assert cli("vectorize", "link.tif", "-o", out, "--append").code == 1
    assert len(pyogrio.read_dataframe(out)) == 20


def test_a_second_writer_fails_naming_the_first(cli, tmp_path, monkeypatch):
    import aerialct.cli.predict as cli_predict

    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: oracle_bundle(32))
    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(64, 64, seed=1))
    out = tmp_path / "pred"
    holder = hold_lock(out / "s_classes.tif")
    try:
        r = cli("predict", "x.pt", scene, "--out", out)
        assert r.code == 1, r.err
        (line,) = error_lines(r.err)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in line, line
        assert "is writing this output" in line and "s_classes.tif" in line
        assert not (out / "s_classes.tif").exists()
        chips = tmp_path / "chips"
        holder2 = hold_lock(chips)
        try:
            r = cli("tile", scene, "-o", chips, "--size", "32")
            assert r.code == 1 and f"pid {holder2.pid}" in r.err and not chips.exists(), r.err
        finally:
            holder2.kill()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed outright): its lock file stays, the next writer takes it over
    assert lock_path(out / "s_classes.tif").exists()
    r = cli("predict", "x.pt", scene, "--out", out)
    assert r.code == 0, r.err
    assert f"took over the lock of pid {holder.pid}" in flat(r.err)
    assert not leftovers(out) and (out / "s_classes.tif").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(cli, tmp_path):
    raster = buildings_raster(tmp_path / "r.tif", 5, 0)
    out = tmp_path / "b.gpkg"
    pid = dead_pid()
    lock_path(out).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    r = cli("vectorize", raster, "-o", out, "--append")
    assert r.code == 0, r.err
    assert f"took over the lock of pid {pid}" in flat(r.err)
    assert not list(tmp_path.glob(f"*{LOCK_SUFFIX}"))


def test_two_trainings_into_one_run_folder(tmp_path, cli):
    from train_helpers import synth_chips

    chips = synth_chips(tmp_path / "chips", size=64, n_side=2, val_every=2)
    run = tmp_path / "run"
    first = start(["train", "--config", TINY, "--data", chips, "-o", run, *SETS,
                   "--set", "train.epochs=50"], tmp_path)  # fmt: skip
    try:
        wait_for(lambda: lock_path(run).exists() or first.poll() is not None, timeout=120)
        r = cli("train", "--config", TINY, "--data", chips, "-o", run, *SETS)
        assert r.code == 1, r.err
        (line,) = error_lines(r.err)
        assert f"pid {first.pid}" in line and "aerialct train" in line, line
        r = cli("train", "--config", TINY, "--data", chips, "-o", run, "--overwrite", *SETS)
        assert r.code == 1 and f"pid {first.pid}" in r.err
    finally:
        first.terminate()
        _, err = first.communicate(timeout=60)
    assert first.returncode == 143, err
    # the first run stopped before its first checkpoint: the next run starts over it
    assert not (run / "last.pt").exists()
    r = cli("train", "--config", TINY, "--data", chips, "-o", run, *SETS)
    assert r.code == 0, r.err
    assert (run / "best.pt").exists() and not leftovers(tmp_path)


def test_train_and_predict_refuse_outputs_that_hold_their_inputs(cli, tmp_path, monkeypatch):
    from train_helpers import synth_chips

    chips = synth_chips(tmp_path / "chips", size=64, n_side=2, val_every=2)
    before = sorted(p.relative_to(chips) for p in chips.rglob("*"))
    for out in (chips, tmp_path):
        r = cli("train", "--config", TINY, "--data", chips, "-o", out, "--overwrite", *SETS)
        assert r.code == 1 and "would mix the run into the chips" in r.err, r.err
    assert sorted(p.relative_to(chips) for p in chips.rglob("*")) == before
    import aerialct.cli.predict as cli_predict

    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: oracle_bundle(32))
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_scene(scenes / "a.tif", random_image(40, 40, seed=1))
    r = cli("predict", "x.pt", scenes, "--out", scenes)
    assert r.code == 1 and "holds the scene" in r.err and "choose another --out" in r.err, r.err
    assert sorted(p.name for p in scenes.iterdir()) == ["a.tif"]


def test_export_overwrite_replaces_only_a_model_of_its_kind(cli, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes")
    text = tmp_path / "notes.txt"
    text.write_text("my notes")
    for path, fmt in ((notes, "onnx"), (text, "torchscript"), (text, "pt")):
        r = cli("export", ckpt, "--format", fmt, "-o", path, "--overwrite")
        assert r.code == 1 and "--overwrite replaces only" in r.err, (fmt, r.err)
    assert notes.read_text() == "my notes" and text.read_text() == "my notes"
    r = cli("export", ckpt, "--format", "torchscript", "-o", ckpt, "--overwrite")
    assert r.code == 1 and "is the checkpoint itself" in r.err
    other = tiny_checkpoint(tmp_path / "other.pt", seed=1)
    r = cli("export", ckpt, "--format", "torchscript", "-o", other, "--overwrite")
    assert r.code == 1 and "a TorchScript model exported by aerialct" in r.err
    # its own kind is replaced
    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.ts")):
        assert cli("export", ckpt, "--format", fmt, "-o", tmp_path / name).code == 0
        r = cli("export", ckpt, "--format", fmt, "-o", tmp_path / name, "--overwrite")
        assert r.code == 0, (fmt, r.err)
    r = cli("export", ckpt, "--format", "onnx", "-o", tmp_path / "m.onnx")
    assert r.code == 1 and "output exists" in r.err
    assert not leftovers(tmp_path)


def test_writers_of_one_stac_catalogue_take_turns(tmp_path):
    """Ranks or array tasks adding to one ``--stac`` catalogue: a writer waits for the one
    that holds the catalogue, then adds its Item beside the other's."""
    import datetime as dt
    import threading

    import pystac

    from aerialct.stac import write_catalog

    def item(name: str) -> pystac.Item:
        when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        return pystac.Item(name, None, None, when, {"aerialct:made_by": "aerialct"})

    root = tmp_path / "stac"
    write_catalog(root, [item("first")])
    holder = hold_lock(root / "catalog.json")
    done = threading.Event()
    writer = threading.Thread(target=lambda: (write_catalog(root, [item("second")]), done.set()))
    try:
        writer.start()
        assert not done.wait(1.5)  # waits for the holder
    finally:
        holder.kill()
        holder.wait()
    assert done.wait(30)
    writer.join()
    ids = {link["href"] for link in json.loads((root / "catalog.json").read_text())["links"]}
    assert any("first" in h for h in ids) and any("second" in h for h in ids), ids
