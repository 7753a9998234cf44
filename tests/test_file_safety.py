"""What aerialct promises about the user's files (README): one test per rule.

1. ``--overwrite`` replaces only what aerialct made; an output that is or holds an input is refused.
2. A full disk never leaves a corrupt file under a final name (a real small tmpfs, as root).
3. SIGTERM/SIGINT clean up and stop workers; workers die with their parent; stale temporaries
   are removed by the next run.
4. Wrong kinds of input are refused, never turned into results.
5. Every message names the file.

The files beside this one take the same promises to the verbs and cases added since:
``test_file_safety_writers`` (two writers at once, outputs that hold inputs),
``_disk`` (full disks in pack and export), ``_results`` (wrong input refused, exported
models), ``_messages``, ``_secrets`` (signed URLs from a real HTTP server) and
``_signals`` (a signal never crashes a run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from predict_helpers import oracle_bundle, random_image, write_scene
from safety_helpers import (
    FAST,
    TINY,
    alive,
    assert_clean_full_disk_failure,
    children_of,
    dead_pid,
    error_lines,
    flat,
    leftovers,
    start,
    wait_for,
)
from synth_helpers import write_raster

from aerialct.classes import POTSDAM
from aerialct.geo.outputs import MARKER, TMP_MARK


def class_raster(path: Path, data: np.ndarray) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
        dtype=data.dtype.name, crs="EPSG:32633", transform=rasterio.Affine(0.5, 0, 0, 0, -0.5, 0),
    ) as ds:  # fmt: skip
        ds.write(data, 1)
        ds.update_tags(AERIALCT_CLASSES=json.dumps(POTSDAM.to_list()))
    return path


@pytest.fixture
def oracle_cli(cli, monkeypatch):
    import aerialct.cli.predict as cli_predict

    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: oracle_bundle(32))
    return cli


@pytest.fixture
def scene(tmp_path) -> Path:
    from aerialct.data.synth import synth_scene

    synth_scene(tmp_path / "in" / "a.tif", tmp_path / "in" / "a_labels.tif", size=256, gsd=0.5,
                buildings=tmp_path / "in" / "a_buildings.gpkg")  # fmt: skip
    return tmp_path / "in" / "a.tif"


# 1. --overwrite replaces only what aerialct made ------------------------------------------


def test_tile_overwrite_never_deletes_a_user_folder_or_its_inputs(
    cli, scene, tmp_path, monkeypatch
):
    folder = scene.parent
    (folder / "notes.txt").write_text("mine")
    before = sorted(p.name for p in folder.iterdir())
    labels = folder / "a_labels.tif"
    r = cli("tile", scene, "--labels", labels, "-o", folder, "--size", "64", "--overwrite")
    assert r.code == 1 and "would replace the input" in r.err, r.err
    monkeypatch.chdir(folder)
    r = cli("tile", "a.tif", "--labels", "a_labels.tif", "-o", ".", "--size", "64", "--overwrite")
    assert r.code == 1 and "would replace the input" in r.err and "empty name" not in r.err
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    r = cli("tile", scene, "--labels", labels, "-o", other, "--size", "64", "--overwrite")
    assert r.code == 1 and "a folder aerialct did not make" in r.err, r.err
    assert sorted(p.name for p in folder.iterdir()) == before
    assert (other / "keep.txt").read_text() == "mine"
    # aerialct's own chips folder is replaced
    chips = tmp_path / "chips"
    assert cli("tile", scene, "--labels", labels, "-o", chips, "--size", "64").code == 0
    assert (chips / MARKER).is_file()
    r = cli(
        "tile", scene, "--labels", labels, "-o", chips, "--size", "128", "--overwrite", "--json"
    )
    assert r.code == 0, r.err and json.loads(r.out)["chip_size"] == 128
    assert not leftovers(tmp_path)


def test_file_outputs_replace_only_files_of_their_kind(cli, scene, tmp_path):
    classes = class_raster(tmp_path / "c.tif", np.ones((32, 32), np.uint8))
    user_dir = tmp_path / "b.gpkg"
    user_dir.mkdir()
    (user_dir / "x.txt").write_text("mine")
    r = cli("vectorize", classes, "-o", user_dir, "--overwrite")
    assert r.code == 1 and "it is a folder" in r.err
    not_gpkg = tmp_path / "n.gpkg"
    not_gpkg.write_text("my notes")
    r = cli("vectorize", classes, "-o", not_gpkg, "--overwrite")
    assert r.code == 1 and "not a GeoPackage" in r.err
    assert not_gpkg.read_text() == "my notes"
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "x.txt").write_text("mine")
    r = cli("evaluate", classes, classes, "--report", report_dir, "--overwrite")
    assert r.code == 1 and "it is a folder" in r.err
    r = cli("evaluate", classes, classes, "--report", classes, "--overwrite")
    assert r.code == 1 and "would replace the input" in r.err
    potsdam = tmp_path / "pots"
    potsdam.mkdir()
    (potsdam / "x.txt").write_text("mine")
    r = cli("synth", potsdam, "--potsdam", "--size", "64", "--tiles", "2_10", "--overwrite")
    assert r.code == 1 and "a folder aerialct did not make" in r.err
    assert (user_dir / "x.txt").exists() and (report_dir / "x.txt").exists()
    assert (potsdam / "x.txt").exists()
    # what aerialct wrote itself is replaced
    assert cli("vectorize", classes, "-o", tmp_path / "ok.gpkg").code == 0
    assert cli("vectorize", classes, "-o", tmp_path / "ok.gpkg", "--overwrite").code == 0
    r = cli("synth", tmp_path / "p2", "--potsdam", "--size", "64", "--tiles", "2_10")
    assert r.code == 0
    r = cli("synth", tmp_path / "p2", "--potsdam", "--size", "64", "--tiles", "2_10", "--overwrite")
    assert r.code == 0, r.err


def test_predict_refuses_to_write_over_its_input(tmp_path):
    from aerialct.errors import InputError
    from aerialct.predict import predict_scene

    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(40, 40, seed=2))
    before = scene.read_bytes()
    with pytest.raises(InputError, match="would replace the input"):
        predict_scene(oracle_bundle(32), scene, scene, overwrite=True)
    assert scene.read_bytes() == before


def test_retrain_with_overwrite_restores_the_old_run_when_the_new_one_fails(cli, tmp_path):
    from train_helpers import synth_chips

    chips = synth_chips(tmp_path / "chips", size=64, n_side=2, val_every=2)
    run = tmp_path / "run"
    sets = [x for s in FAST for x in ("--set", s)]
    assert cli("train", "--config", TINY, "--data", chips, "-o", run, *sets).code == 0
    old = {n: (run / n).read_bytes() for n in ("best.pt", "last.pt", "metrics.csv")}
    broken = tmp_path / "broken"
    shutil.copytree(chips, broken)
    first = sorted((broken / "train" / "images").iterdir())[0]
    first.write_bytes(first.read_bytes()[:300])  # a truncated chip
    r = cli("train", "--config", TINY, "--data", broken, "-o", run, "--overwrite", *sets)
    assert r.code == 1 and first.name in r.err and "See previous exception" not in r.err, r.err
    assert {n: (run / n).read_bytes() for n in old} == old
    assert not leftovers(tmp_path)
    r = cli("train", "--config", TINY, "--data", chips, "-o", run, "--overwrite", *sets)
    assert r.code == 0, r.err
    assert (run / "best.pt").read_bytes() != old["best.pt"]
    assert not leftovers(tmp_path)
    # a folder that is not a run is never replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("x")
    (mine / "thesis.tex").write_text("mine")
    r = cli("train", "--config", TINY, "--data", chips, "-o", mine, "--overwrite", *sets)
    assert r.code == 1 and "aerialct did not make" in r.err
    assert (mine / "thesis.tex").exists()


def test_an_overwrite_killed_outright_is_repaired_by_the_next_run(tmp_path):
    from aerialct.engine.run_dir import RunFolder

    run = tmp_path / "run"
    old = tmp_path / f"run.aerialct-old-{dead_pid()}"
    old.mkdir()
    (old / "last.pt").write_bytes(b"old run")
    run.mkdir()
    (run / "config.yaml").write_text("my own notes, not a run aerialct made")
    with pytest.raises(Exception, match=r"--resume|holds a run"):
        RunFolder(run, resume=False, overwrite=False)
    assert old.exists() and (run / "config.yaml").exists()  # not ours: both left alone
    (run / MARKER).write_text("{}")  # the new run, killed before its first checkpoint
    with pytest.raises(Exception, match="--resume"):
        RunFolder(run, resume=False, overwrite=False)
    assert (run / "last.pt").read_bytes() == b"old run" and not old.exists()


# 2. Full disks -------------------------------------------------------------------------------


def test_full_disk_predict(oracle_cli, small_disk, tmp_path):
    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(256, 256, seed=3))
    disk = small_disk()
    r = oracle_cli("predict", "x.pt", scene, "--out", disk)
    assert_clean_full_disk_failure(r, disk, disk / "s_classes.tif")


def test_full_disk_synth_tile_vectorize_evaluate(cli, scene, small_disk, tmp_path):
    disk = small_disk()
    r = cli("synth", disk / "data", "--size", "256", "--gsd", "0.5", "--buildings")
    assert_clean_full_disk_failure(r, disk, disk / "data" / "scene.tif")
    shutil.rmtree(disk / "data")
    labels = scene.parent / "a_labels.tif"
    r = cli("tile", scene, "--labels", labels, "-o", disk / "chips", "--size", "64")
    assert_clean_full_disk_failure(r, disk, disk / "chips")
    r = cli("vectorize", labels, "-o", disk / "b.gpkg")
    assert_clean_full_disk_failure(r, disk, disk / "b.gpkg")
    fp = scene.parent / "a_buildings.gpkg"
    r = cli("evaluate", fp, fp, "--review", disk / "review.gpkg")
    assert_clean_full_disk_failure(r, disk, disk / "review.gpkg")


def test_full_disk_train_checkpoint(cli, small_disk, tmp_path):
    from train_helpers import synth_chips

    chips = synth_chips(tmp_path / "chips", size=64, n_side=2, val_every=2)
    disk = small_disk(64 << 10)
    sets = [x for s in FAST for x in ("--set", s)]
    r = cli("train", "--config", TINY, "--data", chips, "-o", disk / "run", *sets)
    assert r.code == 1, r.err
    lines = error_lines(r.err)
    assert len(lines) == 1 and "no space left on device" in lines[0], r.err
    assert not leftovers(disk) and not (disk / "run" / "last.pt").exists()


# 3. Signals ----------------------------------------------------------------------------------


@pytest.fixture
def big_scene(tmp_path) -> tuple[Path, Path]:
    img = random_image(2048, 2048, seed=5)
    lab = (img[0] % 6).astype(np.uint8)
    scene = write_raster(tmp_path / "big.tif", img, compress=None)
    labels = write_raster(tmp_path / "big_labels.tif", lab, compress=None)
    return scene, labels


def records(out: Path) -> list[Path]:
    """The band tasks a tiling into ``out`` has finished and kept for a rerun."""
    tasks = Path(f"{out}.parts") / "tasks"
    done = tasks.glob("*.npz") if tasks.is_dir() else []
    return [p for p in done if TMP_MARK not in p.name]  # not one being written


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_tile_keeps_finished_work_and_stops_workers(big_scene, tmp_path, sig):
    scene, labels = big_scene
    out = tmp_path / "chips"
    p = start(["tile", str(scene), "--labels", str(labels), "-o", str(out), "--size", "32",
               "-j", "2", "--co", "COMPRESS=DEFLATE"], tmp_path)  # fmt: skip
    wait_for(lambda: records(out) and len(children_of(p.pid)) >= 2)
    workers = children_of(p.pid)
    time.sleep(0.3)
    p.send_signal(sig)
    stdout, err = p.communicate(timeout=60)
    assert p.returncode == (143 if sig == signal.SIGTERM else 130), (stdout, err)
    assert "temporary files were removed" in err
    assert "run the same command again to continue" in flat(err)
    wait_for(lambda: not any(alive(w) for w in workers), timeout=10)
    assert not leftovers(tmp_path) and not out.exists() and records(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux parent-death signal")
def test_tile_workers_die_with_a_killed_parent_and_a_rerun_starts_over(big_scene, tmp_path):
    scene, labels = big_scene
    out = tmp_path / "chips"
    args = ["tile", str(scene), "--labels", str(labels), "-o", str(out), "--size", "32", "-j", "2"]
    p = start(args, tmp_path)
    wait_for(lambda: records(out) and len(children_of(p.pid)) >= 2)
    workers = children_of(p.pid)
    p.kill()
    p.communicate(timeout=30)
    wait_for(lambda: not any(alive(w) for w in workers), timeout=10)
    assert records(out)  # SIGKILL keeps the finished work ...
    p = start([*args[:-2], "-j", "1", "--size", "256"], tmp_path)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "other arguments; starting over" in flat(err)  # ... for a rerun with these arguments
    assert not leftovers(tmp_path) and (out / "index.gpkg").exists()
    assert not Path(f"{out}.parts").exists()


def test_sigterm_to_predict_removes_its_temporaries_and_keeps_finished_blocks(tmp_path):
    from aerialct.config import load_config
    from aerialct.engine.checkpoint import make_checkpoint, save_checkpoint
    from aerialct.models import build_model

    cfg = load_config(None, ["model.backbone=tiny_cnn", "model.decoder=fpn",
                             "model.decoder_channels=16", "model.img_size=64"])  # fmt: skip
    model = build_model(cfg.model, num_classes=len(POTSDAM), in_chans=3)
    ckpt = save_checkpoint(tmp_path / "m.pt", make_checkpoint(
        config=cfg, classes=POTSDAM, mean=(120.0,) * 3, std=(70.0,) * 3, in_chans=3,
        chip_size=64, model_state=model.state_dict(), gsd=0.25))  # fmt: skip
    scene = write_raster(tmp_path / "s.tif", random_image(3000, 3000, seed=9), compress=None)
    out = tmp_path / "pred"
    p = start(["predict", str(ckpt), str(scene), "--out", str(out), "--device", "cpu"], tmp_path)
    state = out / ".aerialct-state"
    wait_for(lambda: any(state.glob("*/blocks/*classes.tif")), timeout=120)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert not leftovers(tmp_path) and not (out / "s_classes.tif").exists()
    assert list(state.glob("*/blocks/b000000_classes.tif"))  # kept for the rerun to resume


def test_stale_temporary_checkpoint_is_removed_by_resume(tmp_path, cli):
    from train_helpers import synth_chips

    chips = synth_chips(tmp_path / "chips", size=64, n_side=2, val_every=2)
    run = tmp_path / "run"
    sets = [x for s in FAST for x in ("--set", s)]
    assert cli("train", "--config", TINY, "--data", chips, "-o", run, *sets).code == 0
    stale = run / f"last{TMP_MARK}-{dead_pid()}-0123abcd.pt"
    stale.write_bytes(b"")  # what a train killed while saving leaves
    r = cli("train", "--data", chips, "-o", run, "--resume", "--set", "train.epochs=2")
    assert r.code == 0, r.err
    assert not stale.exists() and "interrupted earlier run" in flat(r.err)


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    from aerialct.geo.outputs import remove_stale_temps

    live = tmp_path / f"x{TMP_MARK}-{os.getpid()}-0123abcd.tif"
    live.write_bytes(b"being written")
    dead = tmp_path / f"x{TMP_MARK}-{dead_pid()}-0123abcd.tif"
    dead.write_bytes(b"left behind")
    assert remove_stale_temps(tmp_path / "x.tif") == [dead]
    assert live.exists() and not dead.exists()


# 4. Wrong kinds of input ---------------------------------------------------------------------


def test_vectorize_refuses_orthophotos_and_16_bit_rasters(cli, scene, tmp_path):
    r = cli("vectorize", scene, "-o", tmp_path / "b.gpkg")
    assert r.code == 1 and "3 bands" in r.err and "not a class raster" in r.err
    grey = write_raster(
        tmp_path / "g.tif", (np.arange(64 * 64).reshape(64, 64) * 7).astype("uint16")
    )
    r = cli("vectorize", grey, "-o", tmp_path / "b.gpkg")
    assert r.code == 1 and "are not classes of its table" in r.err
    flt = write_raster(tmp_path / "f.tif", np.ones((16, 16), np.float32))
    r = cli("vectorize", flt, "-o", tmp_path / "b.gpkg")
    assert r.code == 1 and "float32" in r.err
    assert not (tmp_path / "b.gpkg").exists()


def test_evaluate_refuses_an_orthophoto_or_nan_reference(cli, scene, tmp_path):
    labels = scene.parent / "a_labels.tif"
    r = cli("evaluate", labels, scene)
    assert r.code == 1 and "not an RGB-colour label" in r.err, r.err
    with rasterio.open(labels) as ds:
        prof, data = ds.profile, ds.read(1).astype(np.float32)
    data[:10] = np.nan
    prof.update(dtype="float32", nodata=None)
    with rasterio.open(tmp_path / "nan.tif", "w", **prof) as ds:
        ds.write(data, 1)
    r = cli("evaluate", labels, tmp_path / "nan.tif")
    assert r.code == 1 and "float32" in r.err and "cannot convert" not in r.err


def test_tile_refuses_labels_that_miss_the_image_and_empty_files(cli, scene, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    with rasterio.open(scene) as ds:
        b = ds.bounds
    far = gpd.GeoDataFrame(
        {"class": ["building"]}, geometry=[box(b.left + 1e5, b.bottom, b.right + 1e5, b.top)],
        crs="EPSG:32633",
    )  # fmt: skip
    far.to_file(tmp_path / "far.gpkg")
    r = cli("tile", scene, "--labels-vector", tmp_path / "far.gpkg", "--class-field", "class",
            "-o", tmp_path / "chips")  # fmt: skip
    assert r.code == 1 and "no polygon touches" in r.err and "labels span" in r.err
    assert "image spans" in r.err
    (tmp_path / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    r = cli("tile", scene, "--labels-vector", tmp_path / "empty.geojson", "--class-field", "class",
            "-o", tmp_path / "chips")  # fmt: skip
    assert r.code == 1 and "has no features" in r.err, r.err
    # labels that do cover the image, but make one split all one class: warned loudly
    one = gpd.GeoDataFrame({"class": ["building"]}, geometry=[box(*b)], crs="EPSG:32633")
    one.to_file(tmp_path / "one.gpkg")
    r = cli("tile", scene, "--labels-vector", tmp_path / "one.gpkg", "--class-field", "class",
            "-o", tmp_path / "chips", "--size", "128")  # fmt: skip
    assert r.code == 0 and "100.0% of the label pixels are building" in r.err, r.err


def test_predict_refuses_16_bit_scenes_for_8_bit_models_and_absurd_resampling(
    cli, tmp_path, monkeypatch
):
    import aerialct.cli.predict as cli_predict

    bundle = oracle_bundle(32, mean=(120.0,) * 3, std=(60.0,) * 3)
    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: bundle)
    s16 = tmp_path / "s16.tif"
    write_scene(s16, random_image(64, 64, seed=4).astype(np.uint16) * 16)
    r = cli("predict", "x.pt", s16, "--out", tmp_path / "p")
    assert r.code == 1 and "uint16" in r.err and "gdal_translate -ot Byte -scale" in r.err, r.err
    from affine import Affine

    coarse = tmp_path / "coarse.tif"
    write_scene(
        coarse, random_image(64, 64, seed=4), transform=Affine(30, 0, 368000, 0, -30, 5808000)
    )
    r = cli("predict", "x.pt", coarse, "--out", tmp_path / "p", "--resample-to-training-gsd")
    assert r.code == 1 and "600x" in r.err and "38400x38400 px" in r.err, r.err
    r = cli("predict", "x.pt", coarse, "--out", tmp_path / "p")
    assert r.code == 0 and "--resample-to-training-gsd" not in r.err, r.err


def test_bad_options_are_refused(cli, scene, oracle_cli, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    r = cli("train", "--config", empty, "--data", tmp_path, "-o", tmp_path / "run")
    assert r.code == 1 and "config file is empty" in r.err
    labels = scene.parent / "a_labels.tif"
    r = cli("tile", scene, "--labels", labels, "-o", tmp_path / "c", "--size", "0")
    assert r.code == 2 and "--size" in r.err
    r = cli("tile", scene, "--labels", labels, "-o", tmp_path / "c", "--co", "COMPRESS=BOGUS")
    assert r.code == 1 and "--co COMPRESS=BOGUS" in r.err and "GTiff" in r.err
    r = oracle_cli("predict", "x.pt", scene, "--out", tmp_path / "p", "--co", "COMPRESS=BOGUS")
    assert r.code == 1 and "--co COMPRESS=BOGUS" in r.err
    assert not (tmp_path / "c").exists() and not (tmp_path / "p" / "a_classes.tif").exists()


# 5. Every message names the file -------------------------------------------------------------


def damaged(src: Path, dst: Path) -> Path:
    """A copy with garbage over its middle: it opens, but some blocks cannot be decoded."""
    data = bytearray(src.read_bytes())
    n = len(data)
    data[int(0.3 * n) : int(0.6 * n)] = np.random.default_rng(0).bytes(int(0.6 * n) - int(0.3 * n))
    dst.write_bytes(bytes(data))
    return dst


def test_corrupt_rasters_are_named_with_the_window(oracle_cli, tmp_path):
    good = tmp_path / "good.tif"
    write_scene(good, random_image(256, 256, seed=1), tiled="YES", blockxsize="64", blockysize="64",
                compress="deflate")  # fmt: skip
    bad = damaged(good, tmp_path / "bad.tif")
    r = oracle_cli("predict", "x.pt", bad, "--out", tmp_path / "p")
    assert r.code == 1 and "bad.tif: read failed at col" in r.err and "re-export" in r.err, r.err
    assert "See previous exception" not in r.err
    cls = class_raster(tmp_path / "c.tif", np.ones((256, 256), np.uint8))
    with rasterio.open(cls, "r+") as ds:
        assert ds.count == 1
    src = tmp_path / "cz.tif"
    with rasterio.open(cls) as ds:
        prof = ds.profile | {
            "tiled": True,
            "blockxsize": 64,
            "blockysize": 64,
            "compress": "deflate",
        }
        with rasterio.open(src, "w", **prof) as out:
            out.write(np.random.default_rng(0).integers(0, 6, (1, 256, 256), dtype=np.uint8))
            out.update_tags(**ds.tags())
    badc = damaged(src, tmp_path / "badc.tif")
    r = oracle_cli("vectorize", badc, "-o", tmp_path / "b.gpkg", "--window-size", "64")
    assert r.code == 1 and "badc.tif: read failed at col" in r.err, r.err
    assert "See previous exception" not in r.err


def test_raw_os_errors_become_one_line_with_the_fix(cli, tmp_path):
    target = tmp_path / "heldout.tif"
    target.write_bytes(b"x")
    r = cli("synth", target, "--size", "64")
    assert r.code == 1 and "heldout.tif: exists and is not a folder" in r.err
    assert "Errno" not in r.err
