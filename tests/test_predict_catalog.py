"""A flight is one map: catalogs of tiles, blocks shared by processes, resume, checked reruns.

Every identity here is bitwise (np.array_equal on class and probability rasters), with a
real (tiny, random-init) CNN whose outputs depend on the other windows of a batch.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from aerialct.predict import BlockShape, find_jobs, predict_scene, predict_scenes
from aerialct.predict.plan import WindowGrid, plan_blocks, run_frame, runs
from aerialct.shards import Shard, share_by_cost
from tests.predict_helpers import (
    city,
    cut_tiles,
    random_image,
    save_tiny_checkpoint,
    tiny_bundle,
    write_scene,
)

CHIP, BATCH = 32, 3
SMALL = BlockShape(rows=3, cols=4)  # bands of 3 window rows, column parts of 6 windows
TILE = 96


@pytest.fixture(scope="module")
def flight(tmp_path_factory):
    """A 288 px synthetic city cut into 3x3 adjacent tiles of 96 px, and the whole scene
    predicted in one piece (the reference)."""
    root = tmp_path_factory.mktemp("flight")
    image, transform = city()
    whole = root / "whole.tif"
    write_scene(whole, image, transform=transform)
    tiles = cut_tiles(root / "flight", image, transform, TILE)
    ref = root / "ref"
    predict_scene(
        tiny_bundle(CHIP), whole, ref / "whole_classes.tif", batch_size=BATCH, probabilities=True
    )
    return root, tiles, read(ref / "whole_classes.tif"), read(ref / "whole_probabilities.tif")


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def crop(a: np.ndarray, tile: Path) -> np.ndarray:
    r, c = (int(v) for v in tile.stem.split("_")[1:])
    return a[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]


def assert_tiles_equal_whole(out: Path, tiles: list[Path], cls: np.ndarray, prob: np.ndarray):
    for t in tiles:
        np.testing.assert_array_equal(read(out / f"{t.stem}_classes.tif"), crop(cls, t))
        np.testing.assert_array_equal(read(out / f"{t.stem}_probabilities.tif"), crop(prob, t))


def test_blocks_cover_the_grid_once_and_frames_hold_every_touching_window():
    grid = WindowGrid.of(290, 301, 32, 24, 3)
    blocks = plan_blocks(grid, SMALL)
    cover = np.zeros((290, 301), int)
    for b in blocks:
        cover[b.top : b.bottom, b.left : b.right] += 1
        f = b.frame
        assert f.cols[0] % 3 == 0  # whole batches
        touching_rows = [
            j for j, y in enumerate(grid.rows) if y < b.bottom and grid.row_bottom(j) > b.top
        ]
        touching_cols = [
            k for k, x in enumerate(grid.cols) if x < b.right and grid.col_right(k) > b.left
        ]
        assert f.rows[0] == touching_rows[0] and f.rows[1] == touching_rows[-1] + 1
        assert f.cols[0] <= touching_cols[0] and f.cols[1] == touching_cols[-1] + 1
    assert (cover == 1).all()
    assert len({b.part for b in blocks}) == 3  # 13 window columns in parts of 6
    # consecutive bands of a part stream as one frame
    assert [len(r) for r in runs(blocks)] == [4, 4, 4]
    assert run_frame(blocks[:4]).rows == (0, len(grid.rows))


@pytest.mark.parametrize("size,stride,parts", [(64, 48, 1), (512, 384, 1), (512, 384, 3)])
def test_default_column_parts_are_sized_in_pixels_not_windows(size, stride, parts):
    # a part costs a process its halo when it starts it: small windows must not split a
    # scene of a few thousand pixels (parts of 64 windows split 4096 px of 64 px windows
    # in two, 9% more windows than one pass); 512 px windows keep parts of 64 windows
    width = {1: 4096, 3: 50_000}[parts] if size == 512 else 4096
    grid = WindowGrid.of(4096, width, size, stride, 8)
    blocks = plan_blocks(grid)
    assert len({b.part for b in blocks}) == parts
    frames = [run_frame(r) for r in runs(blocks)]
    ran = sum((f.cols[1] - f.cols[0]) * (f.rows[1] - f.rows[0]) for f in frames)
    if parts == 1:  # one process streams the bands of one part: every window once
        assert ran == grid.windows
    assert BlockShape().part_windows(384) == 64 and BlockShape(cols=6).part_windows(48) == 6


def test_shares_by_cost_are_consecutive_and_cover_everything_once():
    costs = [5, 1, 1, 1, 9, 2, 2, 3]
    shares = [share_by_cost(costs, k, 3) for k in range(3)]
    assert sorted(i for s in shares for i in s) == list(range(8))
    assert all(s.step == 1 for s in shares)
    assert [list(s) for s in shares] == [[0, 1, 2, 3], [4], [5, 6, 7]]
    assert [list(share_by_cost([1, 1], k, 3)) for k in range(3)] == [[0], [], [1]]


def test_a_catalog_is_predicted_as_the_whole_mosaic(flight, tmp_path):
    _root, tiles, cls, prob = flight
    out = tmp_path / "pred"
    res = predict_scenes(
        tiny_bundle(CHIP), tiles, out,
        batch_size=BATCH, probabilities=True, block_shape=SMALL,
    )  # fmt: skip
    assert [s.status for s in res.scenes] == ["ok"] * 9
    assert [s.scene.name for s in res.scenes] == [t.name for t in tiles]
    assert_tiles_equal_whole(out, tiles, cls, prob)
    (job,) = res.jobs
    assert job.catalog and job.name == "flight" and job.blocks == job.blocks_run == 8
    with rasterio.open(out / "t_1_2_classes.tif") as ds, rasterio.open(tiles[5]) as src:
        assert ds.transform == src.transform and ds.crs == src.crs and ds.shape == (TILE, TILE)
        assert ds.tags()["AERIALCT_SOURCE"] == str(tiles[5].resolve())
        made = json.loads(ds.tags()["AERIALCT_PREDICTION"])
        assert made["catalog"]["tiles"] == 9 and made["source"]["size"] == tiles[5].stat().st_size
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no state left
    # each file on its own (the behaviour before catalogs) differs at the seams
    alone = tmp_path / "alone"
    predict_scenes(tiny_bundle(CHIP), tiles, alone, batch_size=BATCH, catalog=False)
    assert not np.array_equal(read(alone / "t_1_1_classes.tif"), crop(cls, tiles[4]))


def test_mosaic_writes_one_cog_equal_to_the_whole(flight, tmp_path):
    root, tiles, cls, prob = flight
    out = tmp_path / "pred"
    res = predict_scenes(tiny_bundle(CHIP), tiles, out, batch_size=BATCH,
                         probabilities=True, mosaic=True, quicklook=True)  # fmt: skip
    assert [(s.status, s.output.name) for s in res.scenes] == [("ok", "flight_classes.tif")]
    np.testing.assert_array_equal(read(out / "flight_classes.tif"), cls)
    np.testing.assert_array_equal(read(out / "flight_probabilities.tif"), prob)
    with rasterio.open(out / "flight_classes.tif") as ds, rasterio.open(root / "whole.tif") as w:
        assert ds.transform == w.transform and ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert (out / "flight_quicklook.png").is_file()


def test_a_mosaic_from_the_cli_is_delivered_like_a_scene(cli, tmp_path, monkeypatch):
    import aerialct.cli.predict as cli_predict

    image, transform = city((96, 96), seed=5)
    cut_tiles(tmp_path / "flight", image, transform, 48)
    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: tiny_bundle(CHIP))
    out = tmp_path / "pred"
    glob = str(tmp_path / "flight" / "*.tif")
    r = cli("predict", tmp_path / "x.pt", glob, "--out", out, "--mosaic", "--quicklook",
            "--batch-size", BATCH, "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads(r.out)["stac"] == [str(out / "flight.stac.json")]
    item = assert_delivered(out, "flight", str(tmp_path / "flight"), probabilities=False)
    assert item["properties"]["proj:shape"] == [96, 96] and "quicklook" in item["assets"]


def test_shards_split_a_catalog_by_blocks_and_the_last_one_writes(flight, tmp_path):
    _root, tiles, cls, prob = flight
    out = tmp_path / "pred"
    kw = dict(batch_size=BATCH, probabilities=True, block_shape=SMALL)
    done = []
    for k in (1, 2, 3):
        res = predict_scenes(tiny_bundle(CHIP), tiles, out, shard=Shard(k, 3), **kw)
        (job,) = res.jobs
        assert 0 < job.blocks_run < job.blocks
        done += [s.scene.name for s in res.scenes if s.status == "ok"]
        if k < 3:
            assert job.pending and job.state is not None and job.state.is_dir()
    assert sorted(done) == sorted(t.name for t in tiles)
    assert_tiles_equal_whole(out, tiles, cls, prob)
    assert not (out / ".aerialct-state").exists()


def test_catalog_recognition(flight, tmp_path, caplog):
    _root, tiles, _, _ = flight
    image, transform = city((96, 96), seed=5)
    far = tmp_path / "far.tif"  # touches nothing: a scene of its own
    write_scene(far, image, transform=transform @ Affine.translation(1000, 0))
    again = tmp_path / "again.tif"  # over tile t_0_0: another date of one place
    write_scene(again, image, transform=transform)
    with caplog.at_level(logging.INFO, logger="aerialct"):
        jobs = find_jobs([*tiles, far, again])
    assert [(j.name, j.catalog, len(j.tiles)) for j in jobs] == [
        ("again", False, 1), ("far", False, 1), ("flight", True, 8), ("t_0_0", False, 1)
    ]  # fmt: skip
    assert find_jobs([*tiles, far])[1].name == "flight"
    assert any("2 inputs overlap another input" in r.getMessage() for r in caplog.records)
    assert all(not j.catalog for j in find_jobs(tiles, catalog=False))
    # one folder, two CRSs: a catalog per CRS, named after the folder and the EPSG code
    mixed = tmp_path / "mixed"
    cut_tiles(mixed, image, transform, 48)
    for p in cut_tiles(tmp_path / "utm32", image, transform, 48):
        with rasterio.open(p) as src:
            write_scene(mixed / f"u{p.name}", src.read(), crs="EPSG:32632", transform=src.transform)
    names = [(j.name, len(j.tiles)) for j in find_jobs(sorted(mixed.iterdir()))]
    assert names == [("mixed_epsg32632", 4), ("mixed_epsg32633", 4)]


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(transform=Affine(0.25, 0, 368048.0, 0, -0.25, 5808000.0)), "pixel size 0.5 x 0.5 vs 0.25"),
        (dict(transform=Affine(0.5, 0, 368048.2, 0, -0.5, 5808000.0)), "grids offset by 0.4 px"),
        (dict(img=np.zeros((4, 96, 96), np.uint8)), "band count 3 vs 4"),
    ],
)  # fmt: skip
def test_touching_tiles_on_another_grid_are_refused_in_one_line(tmp_path, change, words):
    a = tmp_path / "a.tif"
    write_scene(a, random_image(96, 96), transform=Affine(0.5, 0, 368000.0, 0, -0.5, 5808000.0))
    b = tmp_path / "b.tif"  # touches a's right edge
    kw = {"transform": Affine(0.5, 0, 368048.0, 0, -0.5, 5808000.0), **change}
    img = kw.pop("img", random_image(96, 96, seed=1))
    write_scene(b, img, photometric="MINISBLACK", **kw)
    res = predict_scenes(tiny_bundle(CHIP), [a, b], tmp_path / "out", batch_size=BATCH)
    assert [s.status for s in res.scenes] == ["failed", "failed"]
    err = res.scenes[0].error
    assert "a.tif and " in err and "b.tif" in err and words in err and "--no-catalog" in err
    assert not (tmp_path / "out" / "a_classes.tif").exists()
    ok = predict_scenes(tiny_bundle(CHIP), [a], tmp_path / "out", batch_size=BATCH, catalog=False)
    assert ok.ok


def test_a_catalog_with_a_gap_and_a_vrt_of_tiles(flight, tmp_path):
    with rasterio.open(flight[0] / "whole.tif") as ds:
        image, transform = ds.read(), ds.transform
    holed = cut_tiles(tmp_path / "holed", image, transform, TILE, skip={(1, 1)})
    ref_jobs = find_jobs(holed)
    (job,) = ref_jobs
    assert job.catalog and job.cover is not None and len(job.tiles) == 8
    # the reference: the same mosaic as a VRT file, predicted as one scene
    vrt = tmp_path / "holed.vrt"
    vrt.write_text(job.vrt_xml)
    ref = tmp_path / "ref" / "holed_classes.tif"
    predict_scene(tiny_bundle(CHIP), vrt, ref, batch_size=BATCH)
    whole = read(ref)
    out = tmp_path / "pred"
    predict_scenes(tiny_bundle(CHIP), holed, out, batch_size=BATCH, block_shape=SMALL)
    for t in holed:
        np.testing.assert_array_equal(read(out / f"{t.stem}_classes.tif"), crop(whole, t))
    # the VRT of tiles: one output per source tile, the same pixels; --mosaic: its gap is nodata
    out2 = tmp_path / "from_vrt"
    res = predict_scenes(tiny_bundle(CHIP), [vrt], out2, batch_size=BATCH, block_shape=SMALL)
    assert sorted(s.output.name for s in res.scenes) == sorted(
        f"{t.stem}_classes.tif" for t in holed
    )
    for t in holed:
        np.testing.assert_array_equal(read(out2 / f"{t.stem}_classes.tif"), crop(whole, t))
    predict_scenes(tiny_bundle(CHIP), [vrt], out2, batch_size=BATCH, mosaic=True)
    mosaic = read(out2 / "holed_classes.tif")
    assert (mosaic[:, TILE : 2 * TILE, TILE : 2 * TILE] == 255).all()
    hole = np.zeros(mosaic.shape, bool)
    hole[:, TILE : 2 * TILE, TILE : 2 * TILE] = True
    np.testing.assert_array_equal(mosaic[~hole], whole[~hole])


# --- processes: shards from a Slurm array, a kill and a resume ---------------------


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "JOB_COMPLETION", "AERIALCT_SHARD"))
    }
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1", **extra)
    return env


def test_array_tasks_as_processes_join_into_one_run(flight, tmp_path):
    # three array tasks at once, on the checkpoint of the model that made the one-process
    # reference: the first from the environment a Slurm job array sets, the others from the
    # one a Kubernetes indexed Job sets (both engines name the same shares)
    root, tiles, cls, prob = flight
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.pt", CHIP)
    glob = str(root / "flight" / "*.tif")
    args = [sys.executable, "-m", "aerialct", "--quiet", "predict", str(ckpt), glob,
            "--device", "cpu", "--batch-size", str(BATCH), "--probabilities", "--json",
            "--out", str(tmp_path / "arr")]  # fmt: skip
    procs = [
        subprocess.Popen(
            args,
            env=_env(SLURM_ARRAY_TASK_ID=str(k), SLURM_ARRAY_TASK_COUNT="3")
            if k == 0
            else _env(JOB_COMPLETION_INDEX=str(k), AERIALCT_SHARD_COUNT="3"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(3)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]
    runs_ = [json.loads(o)["jobs"][0] for o, _ in outs]
    assert sorted(r["blocks_run"] for r in runs_) == [1, 1, 1]  # 3 bands, one per task
    assert sum(json.loads(o)["ok"] for o, _ in outs) == 9
    assert_tiles_equal_whole(tmp_path / "arr", tiles, cls, prob)
    assert not (tmp_path / "arr" / ".aerialct-state").exists()
    for t in tiles:  # joined outputs get what every predicted raster gets
        assert_delivered(tmp_path / "arr", t.stem, str(t), probabilities=True)


def assert_delivered(out: Path, stem: str, source: str, probabilities: bool) -> dict:
    """The output ``stem`` has its STAC Item (valid), QGIS style, GDAL sidecar, model tag and
    class names inside the TIFF; the Item."""
    from stac_helpers import validate_file

    classes = out / f"{stem}_classes.tif"
    item = validate_file(out / f"{stem}.stac.json")
    assert item["id"] == stem and item["properties"]["aerialct:source"] == source
    assets = {"classes", "style", "gdal_pam"} | ({"probabilities"} if probabilities else set())
    assert assets <= set(item["assets"])
    assert (out / f"{stem}_classes.qml").is_file()
    assert (out / f"{stem}_classes.tif.aux.xml").is_file()
    with rasterio.open(classes) as ds:
        assert "AERIALCT_MODEL" in ds.tags() and "AERIALCT_PREDICTION" in ds.tags()
        assert ds.tags(1)["CLASS_0"] == "impervious_surfaces"
    return item


KILLABLE = """
import sys, time
from pathlib import Path
from aerialct.predict import BlockShape, predict_scenes
from tests.predict_helpers import tiny_bundle

bundle = tiny_bundle({chip})
forward = bundle.model.forward
calls = [0]

def slow(x):
    calls[0] += 1
    if calls[0] > {hang_after}:
        time.sleep(3600)  # killed here, mid-scene
    return forward(x)

bundle.model.forward = slow
predict_scenes(bundle, [Path(sys.argv[1])], Path(sys.argv[2]), batch_size={batch},
               probabilities=True, block_shape=BlockShape({rows}, 64))
"""


def test_a_killed_run_resumes_from_its_last_block(flight, tmp_path, caplog):
    root, _, cls, prob = flight
    out = tmp_path / "pred"
    # 4 batches a window row; band 0 (window rows 0-2) is done after 12: hang in band 1
    script = KILLABLE.format(chip=CHIP, hang_after=3 * 4 + 2, batch=BATCH, rows=3)
    proc = subprocess.Popen([sys.executable, "-c", script, str(root / "whole.tif"), str(out)],
                            env=_env(), stderr=subprocess.PIPE)  # fmt: skip
    blocks = out / ".aerialct-state"
    deadline = time.time() + 120
    while time.time() < deadline and not list(blocks.glob("*/blocks/b000000_classes.tif")):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = sorted(p.name for p in blocks.glob("*/blocks/*.tif"))
    assert kept == ["b000000_classes.tif", "b000000_probabilities.tif"]  # one of 4 bands
    assert not (out / "whole_classes.tif").exists()
    res = predict_scenes(tiny_bundle(CHIP), [root / "whole.tif"], out, batch_size=BATCH,
                         probabilities=True, block_shape=BlockShape(3, 64))  # fmt: skip
    (job,) = res.jobs
    assert res.scenes[0].status == "ok" and job.blocks_run == job.blocks - 1
    np.testing.assert_array_equal(read(out / "whole_classes.tif"), cls)
    np.testing.assert_array_equal(read(out / "whole_probabilities.tif"), prob)
    assert not blocks.exists()


def test_a_changed_argument_starts_over_with_a_log_line(flight, tmp_path, caplog):
    root, _tiles, _, _ = flight
    out = tmp_path / "pred"
    from tests.predict_helpers import oracle_bundle

    failing = oracle_bundle(CHIP, fail_after=40)
    with pytest.raises(RuntimeError, match="forced failure"):
        predict_scene(failing, root / "whole.tif", out / "whole_classes.tif", batch_size=BATCH,
                      block_shape=SMALL)  # fmt: skip
    assert len(list((out / ".aerialct-state").glob("*/blocks/*.tif"))) >= 1
    with caplog.at_level(logging.WARNING, logger="aerialct"):
        predict_scene(oracle_bundle(CHIP), root / "whole.tif", out / "whole_classes.tif",
                      batch_size=BATCH, block_shape=SMALL, overlap=0.5)  # fmt: skip
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "other arguments (overlap)" in msg and "starting over" in msg
    assert not (out / ".aerialct-state").exists()


# --- --skip-existing checks what it skips --------------------------------------------


def test_skip_existing_checks_every_output(flight, tmp_path):
    root, _tiles, _, _ = flight
    out = tmp_path / "pred"
    kw = dict(batch_size=BATCH, probabilities=True, quicklook=True, skip_existing=True)
    scene = root / "whole.tif"
    first = predict_scenes(tiny_bundle(CHIP), [scene], out, **kw)
    assert first.scenes[0].status == "ok"
    again = predict_scenes(tiny_bundle(CHIP), [scene], out, **kw)
    assert again.scenes[0].status == "skipped"
    cls = out / "whole_classes.tif"
    good = cls.read_bytes()
    cls.unlink()  # a writer killed between renaming its side outputs and its class raster
    again = predict_scenes(tiny_bundle(CHIP), [scene], out, **kw)
    assert again.scenes[0].status == "ok" and cls.read_bytes() == good

    cls.write_bytes(good[: int(len(good) * 0.6)])  # truncated to 60%
    res = predict_scenes(tiny_bundle(CHIP), [scene], out, **kw)
    assert res.scenes[0].status == "failed"
    assert "not a complete prediction" in res.scenes[0].error
    cls.write_bytes(good)

    other = tmp_path / "other"  # another folder's scene of the same name
    other.mkdir()
    write_scene(other / "whole.tif", random_image(288, 288, seed=9))
    res = predict_scenes(tiny_bundle(CHIP), [other / "whole.tif"], out, **kw)
    assert res.scenes[0].status == "failed" and "predicted from" in res.scenes[0].error

    res = predict_scenes(tiny_bundle(CHIP, seed=1), [scene], out, **kw)  # another model
    assert "another model" in res.scenes[0].error

    prob = out / "whole_probabilities.tif"
    good_p = prob.read_bytes()
    prob.write_bytes(good_p[: int(len(good_p) * 0.6)])
    res = predict_scenes(tiny_bundle(CHIP), [scene], out, **kw)
    assert "whole_probabilities.tif" in res.scenes[0].error
    prob.write_bytes(good_p)

    png = out / "whole_quicklook.png"
    from PIL import Image

    with Image.open(png) as im:
        px = np.asarray(im).copy()
        info = dict(im.text)
    px[5, 5] = 255 - px[5, 5]  # a changed pixel in a PNG that decodes fine
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    for k, v in info.items():
        meta.add_text(k, v)
    Image.fromarray(px).save(png, pnginfo=meta)
    res = predict_scenes(tiny_bundle(CHIP), [scene], out, **kw)
    assert "whole_quicklook.png" in res.scenes[0].error and "checksum" in res.scenes[0].error


def test_the_gpu_layout_restarts_blocks_exactly(flight, tmp_path, monkeypatch):
    # the GPU's accumulator (one window high, frame-wide) and writer thread, on the CPU
    import aerialct.predict.stream as stream

    monkeypatch.setitem(stream.ACCUMULATORS, "cpu", stream.BandAccumulator)
    monkeypatch.setitem(stream.THREADED_WRITER, "cpu", True)
    root, tiles, _, _ = flight
    kw = dict(batch_size=BATCH, probabilities=True)
    ref = tmp_path / "ref" / "whole_classes.tif"
    predict_scene(tiny_bundle(CHIP), root / "whole.tif", ref, **kw)
    out = tmp_path / "pred"
    for k in (1, 2):
        predict_scenes(tiny_bundle(CHIP), tiles, out, shard=Shard(k, 2), block_shape=SMALL, **kw)
    assert_tiles_equal_whole(out, tiles, read(ref), read(ref.with_name("whole_probabilities.tif")))


def test_a_catalog_predicted_at_the_training_pixel_size(flight, tmp_path):
    # tiles at 1 m for a model trained at 0.5 m: predicted on the 0.5 m grid, warped back
    with rasterio.open(flight[0] / "whole.tif") as ds:
        image = ds.read()[:, ::3, ::3][:, :96, :96]
    coarse = Affine(1.0, 0, 368000.0, 0, -1.0, 5808000.0)
    whole = tmp_path / "w.tif"
    write_scene(whole, np.ascontiguousarray(image), transform=coarse)
    tiles = cut_tiles(tmp_path / "tiles", image, coarse, 48)
    kw = dict(batch_size=BATCH, probabilities=True, resample_to_training_gsd=True)
    res = predict_scene(tiny_bundle(CHIP), whole, tmp_path / "ref" / "w_classes.tif", **kw)
    assert res.resampled
    out = tmp_path / "pred"
    got = predict_scenes(tiny_bundle(CHIP), tiles, out, block_shape=SMALL, **kw)
    assert [s.status for s in got.scenes] == ["ok"] * 4 and got.jobs[0].blocks > 1
    cls, prob = (
        read(tmp_path / "ref" / "w_classes.tif"),
        read(tmp_path / "ref" / "w_probabilities.tif"),
    )
    for t in tiles:
        r, c = (int(v) for v in t.stem.split("_")[1:])
        win = np.s_[:, r * 48 : (r + 1) * 48, c * 48 : (c + 1) * 48]
        np.testing.assert_array_equal(read(out / f"{t.stem}_classes.tif"), cls[win])
        np.testing.assert_array_equal(read(out / f"{t.stem}_probabilities.tif"), prob[win])


def test_a_catalog_with_an_area_of_interest(flight, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    root, tiles, _, _ = flight
    with rasterio.open(root / "whole.tif") as ds:
        t, crs = ds.transform, ds.crs
    # the area: pixels 20..80 of the mosaic, inside tile t_0_0 near t_0_1
    area = gpd.GeoDataFrame(
        geometry=[box(t.c + 20 * t.a, t.f + 80 * t.e, t.c + 80 * t.a, t.f + 20 * t.e)], crs=crs
    )
    kw = dict(batch_size=BATCH, aoi=area)
    ref = tmp_path / "ref" / "whole_classes.tif"
    predict_scene(tiny_bundle(CHIP), root / "whole.tif", ref, **kw)
    out = tmp_path / "pred"
    res = predict_scenes(tiny_bundle(CHIP), tiles, out, block_shape=SMALL, **kw)
    status = {s.scene.stem: s.status for s in res.scenes}
    assert status == {"t_0_0": "ok", **{t.stem: "skipped" for t in tiles[1:]}}
    np.testing.assert_array_equal(read(out / "t_0_0_classes.tif"), crop(read(ref), tiles[0]))
    assert not (out / "t_0_1_classes.tif").exists()


@pytest.mark.parametrize("error", ["locked", "exists"])
def test_an_output_another_process_is_writing_is_waited_for(tmp_path, monkeypatch, error):
    # two array tasks finish a tile's last blocks at the same moment: the second finds the
    # output locked by the first (or already renamed) and waits for its file, not a failure
    import threading
    from types import SimpleNamespace

    import aerialct.predict.job as job_mod
    from aerialct.errors import LockedError, OutputExistsError

    classes = tmp_path / "t_1_0_classes.tif"
    out = SimpleNamespace(classes=classes)

    def write_output(*_a, **_k):
        if error == "locked":
            raise LockedError(classes, "pid 1 on this machine")
        raise OutputExistsError(f"{classes}: exists")

    monkeypatch.setattr(job_mod, "write_output", write_output)
    run = SimpleNamespace(
        ctx=object(), replace=set(), written=set(), state=SimpleNamespace(root=tmp_path),
        _incomplete=lambda o: None,
    )  # fmt: skip
    run._written_by_another = lambda o, wait: job_mod._JobRun._written_by_another(run, o, wait)
    threading.Timer(0.5, classes.write_bytes, args=(b"the other process's file",)).start()
    job_mod._JobRun._write(run, 3, out)
    assert run.written == {3}
