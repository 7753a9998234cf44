"""predict: exact seamless stitching, georeferencing, nodata, atomic outputs, batch failures."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from aerialct.classes import IGNORE_INDEX, POTSDAM
from aerialct.errors import InputError, OutputExistsError, RasterError
from aerialct.geo.grid import stride_for, window_starts
from aerialct.predict import (
    blend_weights,
    predict_scene,
    predict_scenes,
    weight_sum_1d,
)
from aerialct.predict.quicklook import legend_swatch_boxes
from tests.predict_helpers import (
    CRS,
    TRANSFORM,
    K,
    oracle_bundle,
    oracle_classes,
    random_image,
    write_scene,
)


def read_class_raster(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds


@pytest.mark.parametrize("size,stride", [(32, 24), (512, 384), (7, 3)])
def test_window_starts_cover_the_axis_and_stay_inside(size, stride):
    for length in [1, size - 1, size, size + 1, 3 * stride + size, 1000]:
        starts = window_starts(length, size, stride, even=True)
        cover = np.zeros(max(length, size), bool)
        for s in starts:
            assert s >= 0 and (s + size <= length or length <= size)
            cover[s : s + size] = True
        assert cover[:length].all()
        assert all(b - a <= stride for a, b in itertools.pairwise(starts))


def test_blend_weights_positive_smooth_and_separable():
    w = blend_weights(32)
    assert w.min() > 0.0 and w.max() <= 1.0
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[0, 0] < w[16, 16]
    starts = window_starts(100, 32, 24, even=True)
    total = weight_sum_1d(100, 32, starts)
    assert total.min() > 0.0
    assert stride_for(512, 0.25) == 384
    with pytest.raises(InputError, match="overlap"):
        stride_for(32, 1.0)


def test_streaming_keeps_only_the_overlap_rows_at_full_width():
    import torch

    from aerialct.predict.stream import AccumulatorSpec, RowAccumulator

    rows = tuple(window_starts(16000, 512, 384, even=True))
    acc = RowAccumulator(AccumulatorSpec(6, 512, rows, 16000, 16000, torch.device("cpu")))
    assert acc.carry.shape == (6, 512 - min(b - a for a, b in itertools.pairwise(rows)), 16000)
    assert acc.carry.shape[1] <= 512 - 384 + 8


# (height, width): multiples of the stride (24), not multiples, smaller than one
# window (32) on one or both axes, exactly one window.
SIZES = [(72, 96), (77, 101), (20, 13), (32, 32), (150, 10), (9, 70)]


@pytest.mark.parametrize("hw", SIZES)
def test_oracle_reproduced_exactly_with_georeferencing(tmp_path, hw):
    h, w = hw
    img = random_image(h, w, seed=h * 1000 + w)
    scene = tmp_path / "scene.tif"
    write_scene(scene, img)
    bundle = oracle_bundle(32)
    out = tmp_path / "out" / "scene_classes.tif"
    res = predict_scene(bundle, scene, out, batch_size=3)
    assert res.status == "ok" and res.output == out
    with rasterio.open(out) as ds:
        got = ds.read(1)
        assert ds.crs == rasterio.crs.CRS.from_string(CRS)
        assert ds.transform == TRANSFORM
        assert (ds.width, ds.height) == (w, h)
        assert ds.nodata == IGNORE_INDEX and ds.dtypes[0] == "uint8"
        cmap = ds.colormap(1)
        for c in POTSDAM:
            assert cmap[c.id] == (*c.color, 255)
        assert json.loads(ds.tags()["AERIALCT_CLASSES"]) == POTSDAM.to_list()
        assert ds.descriptions[0] == "class"
        assert ds.profile["tiled"] or min(h, w) < 16
    np.testing.assert_array_equal(got, oracle_classes(img))
    assert sum(res.class_pixels.values()) == h * w
    assert res.nodata_pixels == 0
    # no temporary or part files left; the sidecars: GDAL's category names, the QGIS style
    assert sorted(out.parent.iterdir()) == sorted(
        [out, out.with_name(out.name + ".aux.xml"), out.with_suffix(".qml")]
    )


@pytest.mark.parametrize("hw", [(77, 101), (20, 13), (150, 40)])
def test_the_gpu_layout_is_exact(tmp_path, monkeypatch, hw):
    # the GPU layout (a frame-wide accumulator, writer thread), exercised on the CPU
    import aerialct.predict.stream as stream

    monkeypatch.setitem(stream.ACCUMULATORS, "cpu", stream.BandAccumulator)
    monkeypatch.setitem(stream.THREADED_WRITER, "cpu", True)
    img = random_image(*hw, seed=hw[0] + hw[1])
    scene = tmp_path / "s.tif"
    write_scene(scene, img)
    out = tmp_path / "s_classes.tif"
    predict_scene(oracle_bundle(32), scene, out, batch_size=5, probabilities=True)
    np.testing.assert_array_equal(read_class_raster(out)[0], oracle_classes(img))


def test_large_scene_is_a_cog_with_overviews(tmp_path):
    img = random_image(300, 420, seed=3)
    scene = tmp_path / "big.tif"
    write_scene(scene, img)
    out = tmp_path / "big_classes.tif"
    predict_scene(
        oracle_bundle(64), scene, out, batch_size=16, creation_options={"BLOCKSIZE": "128"}
    )
    with rasterio.open(out) as ds:
        assert ds.overviews(1), "a COG keeps overviews"
        assert ds.block_shapes[0] == (128, 128)
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        np.testing.assert_array_equal(ds.read(1), oracle_classes(img))


def test_tta_flips_is_still_exact(tmp_path):
    img = random_image(50, 61, seed=5)
    scene = tmp_path / "s.tif"
    write_scene(scene, img)
    out = tmp_path / "s_classes.tif"
    predict_scene(oracle_bundle(32), scene, out, tta="flips", overlap=0.5)
    np.testing.assert_array_equal(read_class_raster(out)[0], oracle_classes(img))


def test_nodata_borders_stay_255(tmp_path):
    img = random_image(80, 90, seed=7)
    img[:, :11] = 0  # a nodata band on the left and the top
    img[:, :, :6] = 0
    img[:, 40, 40] = (0, 5, 0)  # one zero band is still data
    scene = tmp_path / "nd.tif"
    write_scene(scene, img, nodata=0)
    out = tmp_path / "nd_classes.tif"
    res = predict_scene(oracle_bundle(32), scene, out)
    got = read_class_raster(out)[0]
    invalid = (img == 0).all(axis=0)
    expected = oracle_classes(img)
    expected[invalid] = IGNORE_INDEX
    np.testing.assert_array_equal(got, expected)
    assert res.nodata_pixels == int(invalid.sum())
    assert got[40, 40] != IGNORE_INDEX


def test_alpha_band_is_the_mask_not_a_data_band(tmp_path):
    img = random_image(40, 50, seed=9)
    alpha = np.full((40, 50), 255, np.uint8)
    alpha[30:] = 0
    scene = tmp_path / "a.tif"
    write_scene(scene, img, alpha=alpha)
    out = tmp_path / "a_classes.tif"
    predict_scene(oracle_bundle(32), scene, out)
    expected = oracle_classes(img)
    expected[30:] = IGNORE_INDEX
    np.testing.assert_array_equal(read_class_raster(out)[0], expected)


def test_probability_raster(tmp_path):
    img = random_image(70, 45, seed=11)
    img[:, :4] = 0
    scene = tmp_path / "p.tif"
    write_scene(scene, img, nodata=0)
    out = tmp_path / "p_classes.tif"
    sharp = 2.0
    res = predict_scene(oracle_bundle(32, sharpness=sharp), scene, out, probabilities=True)
    assert res.probabilities == tmp_path / "p_probabilities.tif"
    p_true = np.exp(sharp) / (np.exp(sharp) + K - 1)
    p_other = 1 / (np.exp(sharp) + K - 1)
    with rasterio.open(res.probabilities) as ds:
        prob = ds.read()
        assert ds.count == K and ds.dtypes[0] == "uint8" and ds.nodata is None
        assert list(ds.descriptions) == POTSDAM.names
        assert ds.tags()["AERIALCT_PROB_SCALE"] == "255"
        assert ds.crs == rasterio.crs.CRS.from_string(CRS) and ds.transform == TRANSFORM
    cls = oracle_classes(img)
    valid = ~(img == 0).all(axis=0)
    top = np.take_along_axis(prob, cls[None].astype(np.int64), 0)[0]
    assert np.abs(top[valid].astype(float) - p_true * 255).max() <= 1.0
    others = prob.sum(axis=0)[valid].astype(float) - top[valid]
    assert np.abs(others - (K - 1) * p_other * 255).max() <= K
    assert (prob[:, ~valid] == 0).all()


def test_failure_mid_scene_leaves_no_output(tmp_path):
    img = random_image(120, 120, seed=13)
    scene = tmp_path / "f.tif"
    write_scene(scene, img)
    out_dir = tmp_path / "out"
    bundle = oracle_bundle(32, fail_after=3)
    with pytest.raises(RuntimeError, match="forced failure"):
        predict_scene(bundle, scene, out_dir / "f_classes.tif", batch_size=2, probabilities=True)
    assert list(out_dir.iterdir()) == []


def test_existing_output_is_refused_then_overwritten(tmp_path):
    img = random_image(40, 40, seed=15)
    scene = tmp_path / "o.tif"
    write_scene(scene, img)
    out = tmp_path / "o_classes.tif"
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        predict_scene(oracle_bundle(32), scene, out)
    assert out.read_bytes() == b"keep"
    # --overwrite replaces only a class raster aerialct wrote, never another file
    with pytest.raises(OutputExistsError, match="not a GeoTIFF written by aerialct"):
        predict_scene(oracle_bundle(32), scene, out, overwrite=True)
    assert out.read_bytes() == b"keep"
    out.unlink()
    predict_scene(oracle_bundle(32), scene, out)
    predict_scene(oracle_bundle(32), scene, out, overwrite=True)
    np.testing.assert_array_equal(read_class_raster(out)[0], oracle_classes(img))


def test_band_count_mismatch_names_the_fix(tmp_path):
    scene = tmp_path / "b.tif"
    # four plain bands (MINISBLACK: GDAL would take a 4th RGB band for alpha)
    write_scene(scene, random_image(40, 40, bands=4, seed=1), photometric="MINISBLACK")
    with pytest.raises(InputError, match=r"4 data band\(s\).*trained on 3.*--bands"):
        predict_scene(oracle_bundle(32), scene, tmp_path / "b_classes.tif")
    res = predict_scene(oracle_bundle(32), scene, tmp_path / "b_classes.tif", bands=[1, 2, 3])
    assert res.status == "ok"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_scene_without_crs_refused_unless_allowed(tmp_path):
    img = random_image(40, 40, seed=17)
    scene = tmp_path / "n.tif"
    write_scene(scene, img, crs=None)
    out = tmp_path / "n_classes.tif"
    with pytest.raises(RasterError, match=r"no CRS.*--allow-no-crs"):
        predict_scene(oracle_bundle(32), scene, out)
    predict_scene(oracle_bundle(32), scene, out, allow_no_crs=True)
    np.testing.assert_array_equal(read_class_raster(out)[0], oracle_classes(img))


def test_gsd_far_from_training_warns_or_resamples(tmp_path, caplog):
    # constant 8x8 blocks: upsampling (bilinear) then sampling back (nearest) is
    # exact away from block edges, so the oracle's classes must come back there
    blocks = random_image(5, 8, seed=19)
    img = blocks.repeat(8, axis=1).repeat(8, axis=2)  # (3, 40, 64)
    coarse = Affine(0.1, 0.0, 368000.0, 0.0, -0.1, 5807000.0)  # 2x the training 0.05
    scene = tmp_path / "g.tif"
    write_scene(scene, img, transform=coarse)
    with caplog.at_level(logging.WARNING, logger="aerialct"):
        predict_scene(oracle_bundle(32), scene, tmp_path / "g_classes.tif")
    assert any("--resample-to-training-gsd" in r.getMessage() for r in caplog.records)
    out = tmp_path / "r" / "g_classes.tif"
    res = predict_scene(oracle_bundle(32), scene, out, resample_to_training_gsd=True)
    assert res.resampled
    assert res.windows == len(window_starts(80, 32, 24, even=True)) * len(
        window_starts(128, 32, 24, even=True)
    )
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height) == (64, 40) and ds.transform == coarse
        got = ds.read(1)
        assert ds.colormap(1)[1] == (0, 0, 255, 255)
    inner = np.zeros((40, 64), bool)
    for i in range(5):
        for j in range(8):
            inner[i * 8 + 1 : i * 8 + 7, j * 8 + 1 : j * 8 + 7] = True
    np.testing.assert_array_equal(got[inner], oracle_classes(img)[inner])
    assert sum(res.class_pixels.values()) == 40 * 64


def test_quicklook_png(tmp_path):
    from PIL import Image

    scene = tmp_path / "q.tif"
    write_scene(scene, random_image(60, 90, seed=21))
    res = predict_scene(oracle_bundle(32), scene, tmp_path / "q_classes.tif", quicklook=True)
    assert res.quicklook == tmp_path / "q_quicklook.png"
    title = "q.tif"  # the oracle bundle has no checkpoint path
    map_box, swatches, size = legend_swatch_boxes((90, 60), POTSDAM, title)
    with Image.open(res.quicklook) as im:
        assert im.size == size and im.mode == "RGB" and im.text["Title"] == title
        px = np.asarray(im)
    x0, y0, x1, y1 = map_box
    assert (x1 - x0, y1 - y0) == (90, 60)
    with rasterio.open(res.output) as c:  # class colours shine through the map
        ids = c.read(1)
    lut = np.array([ci.color for ci in POTSDAM], dtype=float)
    dist = np.abs(px[y0:y1, x0:x1].astype(float)[:, :, None] - lut[None, None]).sum(-1)
    assert (dist.argmin(-1) == ids).mean() > 0.5
    for ci, (sx0, sy0, sx1, sy1) in zip(POTSDAM, swatches, strict=True):  # the legend
        assert tuple(px[(sy0 + sy1) // 2, (sx0 + sx1) // 2]) == ci.color
        assert sx0 >= x1  # beside the map


def test_batch_goes_on_after_a_failed_scene(tmp_path):
    good = tmp_path / "good.tif"
    write_scene(good, random_image(40, 40, seed=23))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00 this is not a tiff")
    third = tmp_path / "third.tif"
    write_scene(third, random_image(33, 35, seed=25))
    res = predict_scenes(oracle_bundle(32), [good, bad, third], tmp_path / "out")
    assert [s.status for s in res.scenes] == ["ok", "failed", "ok"]
    assert "bad.tif" in res.scenes[1].error
    assert (tmp_path / "out" / "third_classes.tif").exists()
    assert not (tmp_path / "out" / "bad_classes.tif").exists()
    d = res.to_dict()
    assert d["ok"] == 2 and d["failed"] == 1


def test_scenes_are_sharded_across_ranks(tmp_path):
    scenes = []
    for i in range(5):
        p = tmp_path / f"s{i}.tif"
        write_scene(p, random_image(20, 20, seed=i))
        scenes.append(p)
    # each rank takes a run of scenes of about equal cost (here: equal sizes)
    res = predict_scenes(oracle_bundle(32), scenes, tmp_path / "out", rank=1, world_size=2)
    assert [s.scene.name for s in res.scenes] == ["s2.tif", "s3.tif", "s4.tif"]
    res = predict_scenes(oracle_bundle(32), scenes, tmp_path / "out", rank=0, world_size=2)
    assert [s.scene.name for s in res.scenes] == ["s0.tif", "s1.tif"]


# --- CLI -------------------------------------------------------------------


@pytest.fixture
def oracle_cli(cli, monkeypatch):
    import aerialct.cli.predict as cli_predict

    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: oracle_bundle(32))
    return cli


def test_cli_partial_failure_exit_3(oracle_cli, tmp_path):
    good = tmp_path / "good.tif"
    write_scene(good, random_image(40, 40, seed=27))
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"not a raster")
    out = tmp_path / "out"
    r = oracle_cli("predict", tmp_path / "x.pt", good, bad, "--out", out, "--json")
    assert r.code == 3, r.err
    summary = json.loads(r.out)
    assert [s["status"] for s in summary["scenes"]] == ["ok", "failed"]
    assert "corrupt.tif" in r.err
    assert (out / "good_classes.tif").exists()


def test_cli_single_scene_errors_exit_1(oracle_cli, tmp_path):
    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(40, 40, seed=29))
    out = tmp_path / "out"
    assert oracle_cli("predict", "x.pt", scene, "--out", out).code == 0
    r = oracle_cli("predict", "x.pt", scene, "--out", out)
    assert r.code == 1 and "--overwrite" in r.err
    r = oracle_cli("predict", "x.pt", scene, "--out", out, "--overwrite", "--co", "BLOCKSIZE=128")
    assert r.code == 0, r.err
    # GDAL's COG driver takes no blocks under 128: refused, not silently ignored
    r = oracle_cli("predict", "x.pt", scene, "--out", out, "--overwrite", "--co", "BLOCKSIZE=64")
    assert r.code == 1 and "--co BLOCKSIZE=64" in r.err and ">= 128" in r.err


def test_cli_usage_errors_exit_2(oracle_cli, tmp_path):
    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(20, 20, seed=31))
    r = oracle_cli("predict", "x.pt", scene, "--out", tmp_path, "--tta", "rot90")
    assert r.code == 2 and "--tta" in r.err
    r = oracle_cli("predict", "x.pt", scene, "--out", tmp_path, "--co", "COMPRESS")
    assert r.code == 2 and "--co" in r.err
    r = oracle_cli("predict", "x.pt", scene, "--out", tmp_path, "--overlap", "1.5")
    assert r.code == 2 and "--overlap" in r.err


def test_cli_end_to_end_with_a_real_checkpoint(cli, tmp_path):
    import torch

    from aerialct.config import config_from_dict
    from aerialct.engine.checkpoint import make_checkpoint, save_checkpoint
    from aerialct.models import build_model

    torch.manual_seed(0)
    cfg = config_from_dict(
        {
            "model": {
                "backbone": "tiny_cnn",
                "decoder": "fpn",
                "decoder_channels": 16,
                "img_size": 64,
            }
        }
    )
    model = build_model(cfg.model, num_classes=K, in_chans=3).eval()
    mean, std = (120.0, 110.0, 100.0), (50.0, 45.0, 40.0)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(
        ckpt,
        make_checkpoint(
            config=cfg,
            classes=POTSDAM,
            mean=mean,
            std=std,
            in_chans=3,
            chip_size=64,
            model_state=model.state_dict(),
            gsd=0.05,
        ),
    )
    one = tmp_path / "one.tif"  # exactly one window: the output is the model's argmax
    img = random_image(64, 64, seed=33)
    write_scene(one, img)
    wide = tmp_path / "wide.tif"
    write_scene(wide, random_image(90, 150, seed=35))
    out = tmp_path / "out"
    r = cli(
        "predict",
        ckpt,
        one,
        wide,
        "--out",
        out,
        "--device",
        "cpu",
        "--json",
        "--probabilities",
        "--quicklook",
    )
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert (
        summary["ok"] == 2 and summary["scenes"][1]["windows"] == 2 * 3
    )  # rows 0, 26; cols 0, 48, 86
    for s in summary["scenes"]:  # a scene's time is its whole prediction, not its writing alone
        assert s["seconds"] >= s["forward_seconds"] > 0
        assert 0 <= s["overhead_share"] < 1
        assert s["pixels_per_second"] == pytest.approx(
            s["width"] * s["height"] / s["seconds"], rel=0.01
        )
    x = (torch.from_numpy(img).float()[None] - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(x).argmax(1)[0].numpy().astype(np.uint8)
    np.testing.assert_array_equal(read_class_raster(out / "one_classes.tif")[0], expected)
    with rasterio.open(out / "wide_classes.tif") as ds:
        got = ds.read(1)
        assert ds.shape == (90, 150) and ds.crs == rasterio.crs.CRS.from_string(CRS)
        assert got.max() < K
    for name in ("wide_probabilities.tif", "wide_quicklook.png", "one_quicklook.png"):
        assert (out / name).exists()


@pytest.mark.gpu
@pytest.mark.parametrize("hw", [(77, 101), (20, 13), (300, 420)])
def test_cuda_path_is_exact(tmp_path, hw):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    img = random_image(*hw, seed=41)
    img[:, :5] = 0
    scene = tmp_path / "g.tif"
    write_scene(scene, img, nodata=0)
    out = tmp_path / "g_classes.tif"
    res = predict_scene(
        oracle_bundle(32), scene, out, device="cuda", batch_size=7, probabilities=True
    )
    assert res.device.startswith("cuda")
    expected = oracle_classes(img)
    expected[(img == 0).all(axis=0)] = IGNORE_INDEX
    np.testing.assert_array_equal(read_class_raster(out)[0], expected)


def test_skip_existing_takes_only_complete_outputs_of_that_scene(oracle_cli, tmp_path):
    scenes = []
    for i in range(3):
        scenes.append(tmp_path / f"s{i}.tif")
        write_scene(scenes[-1], random_image(40, 40, seed=40 + i))
    out = tmp_path / "pred"
    r = oracle_cli("predict", "x.pt", scenes[0], "--out", out, "--json")
    assert r.code == 0, r.err
    before = (out / "s0_classes.tif").stat().st_mtime_ns
    (out / "s1_classes.tif").write_bytes(b"partial")  # a partial or foreign file
    r = oracle_cli("predict", "x.pt", *scenes, "--out", out, "--skip-existing", "--json")
    assert r.code == 3, r.err  # s1: refused (not complete, not ours), s2: predicted
    res = json.loads(r.out)
    assert [s["status"] for s in res["scenes"]] == ["skipped", "failed", "ok"]
    assert res["skipped"] == 1 and "output exists" in res["scenes"][1]["error"]
    assert (out / "s0_classes.tif").stat().st_mtime_ns == before
    assert (out / "s1_classes.tif").read_bytes() == b"partial"
    (out / "s1_classes.tif").unlink()
    r = oracle_cli("predict", "x.pt", *scenes, "--out", out, "--skip-existing", "--json")
    assert [s["status"] for s in json.loads(r.out)["scenes"]] == ["skipped", "ok", "skipped"]
    # with --probabilities the side output is part of "complete"
    r = oracle_cli("predict", "x.pt", scenes[0], "--out", out, "--skip-existing",
                   "--probabilities", "--json")  # fmt: skip
    assert r.code == 1 and "output exists" in r.err


def test_shards_cover_each_scene_exactly_once(oracle_cli, tmp_path):
    scenes = []
    for i in range(7):
        scenes.append(tmp_path / f"t{i}.tif")
        write_scene(scenes[-1], random_image(20, 20, seed=60 + i))
    done = []
    for k in (1, 2, 3):
        order = scenes[::-1] if k == 2 else scenes  # another machine lists them otherwise
        r = oracle_cli("predict", "x.pt", *order, "--out", tmp_path / "p", "--shard", f"{k}/3",
                       "--json")  # fmt: skip
        assert r.code == 0, r.err
        done += [Path(s["scene"]).name for s in json.loads(r.out)["scenes"]]
    assert sorted(done) == sorted(p.name for p in scenes)
    for bad in ("0/3", "4/3", "x", "1/0"):
        r = oracle_cli("predict", "x.pt", *scenes, "--out", tmp_path / "p", "--shard", bad)
        assert r.code == 2 and "--shard" in r.err


def test_aoi_runs_only_touching_windows_and_writes_nodata_outside(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    img = random_image(200, 200, seed=70)
    scene = tmp_path / "a.tif"
    write_scene(scene, img)
    full = predict_scene(oracle_bundle(32), scene, tmp_path / "full_classes.tif")
    with rasterio.open(scene) as ds:
        b, t = ds.bounds, ds.transform
    # the area: columns 20..80, rows 30..90 of the scene, given in WGS84
    area = box(b.left + 20 * t.a, b.top + 90 * t.e, b.left + 80 * t.a, b.top + 30 * t.e)
    gpd.GeoDataFrame(geometry=[area], crs=ds.crs).to_crs("EPSG:4326").to_file(tmp_path / "aoi.gpkg")
    part = predict_scene(oracle_bundle(32), scene, tmp_path / "part_classes.tif",
                         aoi=tmp_path / "aoi.gpkg")  # fmt: skip
    assert 0 < part.windows < full.windows
    got, _ = read_class_raster(tmp_path / "part_classes.tif")
    want, _ = read_class_raster(tmp_path / "full_classes.tif")
    inside = got != 255
    assert inside[35:85, 25:75].all() and not inside[150:, 150:].any()
    np.testing.assert_array_equal(got[inside], want[inside])
    # a scene the area does not touch is skipped, not written
    far = gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs="EPSG:4326")
    far.to_file(tmp_path / "far.gpkg")
    res = predict_scenes(oracle_bundle(32), [scene], tmp_path / "p", aoi=tmp_path / "far.gpkg")
    assert res.scenes[0].status == "skipped" and not (tmp_path / "p" / "a_classes.tif").exists()


def test_gdal_path_scenes_are_skipped_like_files(tmp_path):
    # a /vsi path or URL stays a string (source_path): reruns with --skip-existing and
    # scenes outside --aoi are skipped, as for files, not failed
    import geopandas as gpd
    from shapely.geometry import box

    scene = "/vsimem/test_predict_gdal_path.tif"
    write_scene(scene, random_image(40, 40, seed=80))
    try:
        assert predict_scenes(oracle_bundle(32), [scene], tmp_path / "o").scenes[0].status == "ok"
        again = predict_scenes(oracle_bundle(32), [scene], tmp_path / "o", skip_existing=True)
        assert [(s.status, s.name) for s in again.scenes] == [
            ("skipped", "test_predict_gdal_path.tif")
        ]
        far = gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs="EPSG:4326")
        res = predict_scenes(oracle_bundle(32), [scene], tmp_path / "p", aoi=far)
        assert [(s.status, s.error) for s in res.scenes] == [("skipped", "outside --aoi")]
    finally:
        rasterio.shutil.delete(scene)
