"""`aerialct tile`: chip grid, georeferencing, labels, index, Potsdam mode, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from rasterio import features
from rasterio.windows import Window
from scipy import ndimage
from synth_helpers import TRANSFORM, read, write_raster

from aerialct.classes import IGNORE_INDEX, POTSDAM
from aerialct.data import potsdam as pots
from aerialct.data.index import read_index
from aerialct.data.synth import generate_scene, synth_potsdam, synth_scene
from aerialct.errors import InputError, RasterError
from aerialct.geo.grid import window_starts
from aerialct.tile import (
    resize_bilinear,
    resize_nearest,
    tile_potsdam,
    tile_scenes,
)

H, W = 300, 420  # not square, not a multiple of the window


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    synth_scene(
        d / "city.tif",
        d / "city_labels.tif",
        size=(H, W),
        seed=11,
        gsd=0.25,
        buildings=d / "buildings.gpkg",
    )
    return d


@pytest.fixture(scope="module")
def chips(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "chips"
    res = tile_scenes(
        [scene / "city.tif"], out, labels=[scene / "city_labels.tif"], size=128, stride=100,
        workers=1,
    )  # fmt: skip
    return out, res


def leftovers(folder):
    return [p.name for p in folder.iterdir() if ".aerialct-tmp" in p.name]


# ------------------------------------------------------------------ grid and georeferencing


def test_window_starts_shift_the_last_window_inside():
    assert window_starts(1000, 256, 200) == [0, 200, 400, 600, 744]
    assert window_starts(512, 256, 256) == [0, 256]
    assert window_starts(100, 256, 128) == [0]
    assert window_starts(256, 256, 64) == [0]


def test_chips_are_exact_windows_of_the_scene(scene, chips):
    out, res = chips
    idx = read_index(out)
    rows = window_starts(H, 128, 100)
    cols = window_starts(W, 128, 100)
    assert len(idx.frame) == res.chips == len(rows) * len(cols)
    assert sorted(set(idx.frame["row_off"])) == rows and sorted(set(idx.frame["col_off"])) == cols
    assert max(cols) == W - 128 and max(rows) == H - 128  # edge windows shifted inside
    with rasterio.open(scene / "city.tif") as img, rasterio.open(scene / "city_labels.tif") as lab:
        for _, row in idx.frame.iterrows():
            win = Window(row["col_off"], row["row_off"], 128, 128)
            with rasterio.open(idx.image_path(row)) as c:
                assert c.crs == img.crs
                assert c.transform == img.transform @ Affine.translation(
                    row["col_off"], row["row_off"]
                )
                assert c.shape == (128, 128) and c.count == 3
                assert np.array_equal(c.read(), img.read(window=win))
                assert tuple(c.bounds) == pytest.approx(tuple(row.geometry.bounds))
            with rasterio.open(idx.mask_path(row)) as m:
                assert m.transform == c.transform and m.nodata == IGNORE_INDEX
                assert np.array_equal(m.read(1), lab.read(1, window=win))
                assert m.colormap(1)[1][:3] == POTSDAM.classes[1].color
    assert (idx.frame["width"] == 128).all() and (idx.frame["height"] == 128).all()


def test_index_columns_and_class_counts_match_the_masks(chips):
    out, res = chips
    idx = read_index(out)
    cols = ["chip_id", "image", "mask", "scene", "split", "row_off", "col_off", "width", "height"]
    cols += [f"px_{n}" for n in POTSDAM.names] + ["px_ignore", "geometry"]
    assert list(idx.frame.columns) == cols
    assert idx.frame.crs.to_epsg() == 32633
    total = np.zeros(256, np.int64)
    for _, row in idx.frame.iterrows():
        m = read(idx.mask_path(row))[0][0]
        counts = np.bincount(m.ravel(), minlength=256)
        total += counts
        for i, n in enumerate(POTSDAM.names):
            assert row[f"px_{n}"] == counts[i]
        assert row["px_ignore"] == counts[IGNORE_INDEX]
        assert row["chip_id"] == f"city_r{row['row_off']}_c{row['col_off']}"
    assert res.class_pixels["building"] == total[1] > 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == "aerialct-chips" and meta["version"] == 1
    assert meta["chip_size"] == 128 and meta["bands"] == 3 and meta["dtype"] == "uint8"
    assert meta["gsd"] == pytest.approx(0.25) and meta["crs"] == "EPSG:32633"
    assert meta["splits"] == {"train": res.chips, "val": 0, "test": 0}
    assert meta["label_mode"] == "raster" and meta["source"] == "geotiff"
    assert idx.classes == POTSDAM and idx.splits == {"train": res.chips}


def test_scene_smaller_than_a_window_is_padded(tmp_path):
    img = np.full((3, 80, 100), 7, np.uint8)
    lab = np.full((80, 100), 2, np.uint8)
    write_raster(tmp_path / "s.tif", img)
    write_raster(tmp_path / "l.tif", lab)
    res = tile_scenes([tmp_path / "s.tif"], tmp_path / "o", labels=[tmp_path / "l.tif"],
                      size=128, workers=1)  # fmt: skip
    assert res.chips == 1
    row = read_index(tmp_path / "o").frame.iloc[0]
    assert (row["width"], row["height"]) == (100, 80)
    data, t, _ = read(tmp_path / "o" / row["image"])
    m = read(tmp_path / "o" / row["mask"])[0][0]
    assert data.shape == (3, 128, 128) and t == TRANSFORM
    assert (data[:, :80, :100] == 7).all() and (data[:, 80:, :] == 0).all()
    assert (m[:80, :100] == 2).all() and (m[80:, :] == IGNORE_INDEX).all()
    assert row["px_ignore"] == 128 * 128 - 80 * 100 and row["px_low_vegetation"] == 8000


def test_nodata_threshold_skips_windows_and_masks_nodata(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(1, 255, (3, 200, 400), dtype=np.uint8)
    img[:, :, :150] = 0  # nodata on the left
    write_raster(tmp_path / "s.tif", img, nodata=0)
    write_raster(tmp_path / "l.tif", np.ones((200, 400), np.uint8))
    res = tile_scenes([tmp_path / "s.tif"], tmp_path / "o", labels=[tmp_path / "l.tif"],
                      size=100, nodata_threshold=0.3, workers=1)  # fmt: skip
    # windows at col 0 (100 % nodata) and 100 (50 %) are skipped; 200, 300 kept
    assert res.skipped_nodata == 2 * 2 and res.chips == 2 * 2
    idx = read_index(tmp_path / "o")
    assert sorted(set(idx.frame["col_off"])) == [200, 300]
    res2 = tile_scenes([tmp_path / "s.tif"], tmp_path / "o2", labels=[tmp_path / "l.tif"],
                       size=100, nodata_threshold=0.6, workers=1)  # fmt: skip
    assert res2.skipped_nodata == 2 and res2.chips == 6
    row = read_index(tmp_path / "o2").frame.query("col_off == 100").iloc[0]
    m = read(tmp_path / "o2" / row["mask"])[0][0]
    assert (m[:, :50] == IGNORE_INDEX).all() and (m[:, 50:] == 1).all()
    assert row["px_ignore"] == 5000
    with pytest.raises(InputError, match="nodata-threshold"):
        tile_scenes([tmp_path / "s.tif"], tmp_path / "o3", size=400, nodata_threshold=0.1)
    assert not (tmp_path / "o3").exists() and leftovers(tmp_path) == []


def test_resize_keeps_labels_uninterpolated(scene, tmp_path):
    res = tile_scenes([scene / "city.tif"], tmp_path / "o", labels=[scene / "city_labels.tif"],
                      size=128, stride=128, resize=96, workers=1)  # fmt: skip
    idx = read_index(tmp_path / "o")
    assert idx.meta["chip_size"] == 96 and idx.meta["gsd"] == pytest.approx(0.25 * 128 / 96)
    legal = set(range(6)) | {IGNORE_INDEX}
    with rasterio.open(scene / "city.tif") as img, rasterio.open(scene / "city_labels.tif") as lab:
        for _, row in idx.frame.iterrows():
            win = Window(row["col_off"], row["row_off"], 128, 128)
            m, t, _ = read(idx.mask_path(row))
            assert set(np.unique(m)) <= legal
            assert np.array_equal(m[0], resize_nearest(lab.read(1, window=win), 96, 96))
            assert t == img.transform @ Affine.translation(row["col_off"], row["row_off"]) @ (
                Affine.scale(128 / 96)
            )
            chip = read(idx.image_path(row))[0]
            assert np.array_equal(chip, resize_bilinear(img.read(window=win), 96, 96))
    assert res.chips == len(idx.frame)


def test_bilinear_matches_scipy_and_nearest_picks_source_values():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 255, (2, 50, 70)).astype(np.uint8)
    ours = resize_bilinear(a, 64, 33)
    ref = np.stack(
        [
            ndimage.zoom(
                b.astype(float), (64 / 50, 33 / 70), order=1, grid_mode=True, mode="nearest"
            )
            for b in a
        ]
    )
    assert np.abs(ours.astype(float) - ref).max() <= 1.0
    lab = rng.integers(0, 6, (50, 70)).astype(np.uint8)
    near = resize_nearest(lab, 64, 33)
    assert near.shape == (64, 33) and set(np.unique(near)) <= set(np.unique(lab))
    assert np.array_equal(resize_nearest(lab, 100, 140)[::2, ::2], lab)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_bilinear_within_one_dn_of_scipy_on_the_ct_resize(dtype):
    rng = np.random.default_rng(2)
    a = rng.integers(0, np.iinfo(dtype).max, (3, pots.CROP_SIZE, pots.CROP_SIZE), endpoint=True)
    a = a.astype(dtype)
    n = pots.RESIZE_TO
    ours = resize_bilinear(a, n, n)
    ref = ndimage.zoom(
        a.astype(float), (1, n / a.shape[1], n / a.shape[2]), order=1, grid_mode=True,
        mode="nearest",
    )  # fmt: skip
    assert ours.dtype == a.dtype and ours.shape == (3, n, n)
    assert np.abs(ours.astype(float) - ref).max() <= 1.0


# ------------------------------------------------------------------ vector labels


@pytest.mark.parametrize("reproject", [False, True])
def test_vector_labels_are_rasterised_on_the_image_grid(scene, tmp_path, reproject):
    frame = pyogrio.read_dataframe(scene / "buildings.gpkg")
    frame["cls"] = "building"
    frame.loc[frame.index[:2], "cls"] = "clutter"
    if reproject:
        frame = frame.to_crs("EPSG:4326")
    pyogrio.write_dataframe(frame, tmp_path / "v.gpkg", layer="b")
    res = tile_scenes([scene / "city.tif"], tmp_path / "o", labels_vector=tmp_path / "v.gpkg",
                      class_field="cls", background="impervious_surfaces", size=128,
                      workers=1)  # fmt: skip
    assert res.label_mode == "vector"
    ref_frame = pyogrio.read_dataframe(scene / "buildings.gpkg")
    ids = [5, 5] + [1] * (len(ref_frame) - 2)
    ref = features.rasterize(
        list(zip(ref_frame.geometry, ids, strict=True)), out_shape=(H, W), transform=TRANSFORM,
        fill=0, dtype="uint8",
    )  # fmt: skip
    idx = read_index(tmp_path / "o")
    agree = []
    for _, row in idx.frame.iterrows():
        m = read(idx.mask_path(row))[0][0]
        want = ref[row["row_off"] : row["row_off"] + 128, row["col_off"] : row["col_off"] + 128]
        agree.append((m == want).mean())
    if reproject:
        assert min(agree) > 0.98  # edges move by the reprojection round trip
    else:
        assert min(agree) == 1.0
    assert read_index(tmp_path / "o").meta["label_mode"] == "vector"


def test_vector_label_errors_name_the_file_and_field(scene, tmp_path):
    frame = pyogrio.read_dataframe(scene / "buildings.gpkg")
    frame["cls"] = "skyscraper"
    pyogrio.write_dataframe(frame, tmp_path / "v.gpkg")
    with pytest.raises(InputError, match=r"v\.gpkg.*'nope'.*cls"):
        tile_scenes([scene / "city.tif"], tmp_path / "o", labels_vector=tmp_path / "v.gpkg",
                    class_field="nope")  # fmt: skip
    with pytest.raises(InputError, match=r"v\.gpkg.*'skyscraper'"):
        tile_scenes([scene / "city.tif"], tmp_path / "o", labels_vector=tmp_path / "v.gpkg",
                    class_field="cls")  # fmt: skip
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ splits and workers


def test_val_fraction_takes_whole_spatial_blocks(tmp_path):
    img = generate_scene((512, 768), seed=2, gsd=0.25)
    write_raster(tmp_path / "s.tif", img.image, transform=img.transform)
    kw = dict(size=64, stride=64, val_fraction=0.25, val_block=128, workers=1)
    a = tile_scenes([tmp_path / "s.tif"], tmp_path / "a", seed=3, **kw)
    tile_scenes([tmp_path / "s.tif"], tmp_path / "b", seed=3, **kw)
    fa, fb = read_index(tmp_path / "a").frame, read_index(tmp_path / "b").frame
    assert list(fa["split"]) == list(fb["split"])  # deterministic by seed
    n_blocks = (512 // 128) * (768 // 128)
    assert a.splits["val"] == round(0.25 * n_blocks) * 4  # 4 chips of 64 per block of 128
    block = (fa["row_off"] // 128).astype(str) + "_" + (fa["col_off"] // 128).astype(str)
    assert (fa.groupby(block)["split"].nunique() == 1).all()  # blocks are never split
    assert fa["mask"].isna().all()  # no labels: no masks


def test_fixed_split_and_two_workers_give_the_same_chips(scene, chips, tmp_path):
    _, res1 = chips
    res = tile_scenes([scene / "city.tif"], tmp_path / "o", labels=[scene / "city_labels.tif"],
                      size=128, stride=100, split="test", workers=2)  # fmt: skip
    assert res.splits["test"] == res1.chips and res.class_pixels == res1.class_pixels
    f = read_index(tmp_path / "o").split("test")
    assert len(f) == res1.chips and f["image"].str.startswith("test/images/").all()


# ------------------------------------------------------------------ Potsdam mode


@pytest.fixture(scope="module")
def potsdam_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pots") / "Potsdam"
    synth_potsdam(root, ["2_10", "2_13", "1_1"], size=520, gsd=0.1, seed=3)
    return root


def _inject_unknown_colours(path, n_rows=3):
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, :n_rows, :10] = np.array([128, 0, 128], np.uint8)[:, None, None]
        ds.write(data)
    return n_rows * 10


def test_potsdam_split_legend_protocol_and_eroded_test_labels(potsdam_root, tmp_path):
    root = tmp_path / "P"
    import shutil

    shutil.copytree(potsdam_root, root)
    n_bad = _inject_unknown_colours(root / "5_Labels_all" / pots.label_name("2_10"))
    res = tile_potsdam(root, tmp_path / "o", workers=1)
    assert res.unknown_pixels == n_bad and res.unknown_values == {"rgb(128, 0, 128)": n_bad}
    assert any("128, 0, 128" in w and "2_10" in w for w in res.warnings)
    assert any("1_1" in w and "no split" in w for w in res.warnings)
    idx = read_index(tmp_path / "o")
    assert idx.meta["source"] == "potsdam" and idx.meta["chip_size"] == 512
    assert idx.meta["window"] == 500 and idx.meta["label_mode"] == "rgb"
    assert set(idx.frame["scene"]) == {"top_potsdam_2_10", "top_potsdam_2_13"}
    assert idx.splits == {"train": 4, "test": 4}  # 520 px: windows at 0 and 20, both axes
    ero = root / "5_Labels_all_noBoundary" / pots.eroded_label_name("2_13")
    with rasterio.open(ero) as e:
        ero_ids, _ = POTSDAM.rgb_to_ids(e.read())
    for _, row in idx.split("test").iterrows():
        m = read(idx.mask_path(row))[0][0]
        src = ero_ids[row["row_off"] : row["row_off"] + 500, row["col_off"] : row["col_off"] + 500]
        assert np.array_equal(m, resize_nearest(src, 512, 512))
        assert row["px_ignore"] > 0  # eroded boundaries are ignore
    train = idx.split("train")
    first = train.query("row_off == 0 and col_off == 0").iloc[0]
    m = read(idx.mask_path(first))[0][0]
    assert (m[:3, :10] == IGNORE_INDEX).all()  # unknown colours -> ignore, not class 0
    assert first["px_ignore"] >= n_bad


def test_potsdam_label_without_crs_gets_the_image_georeferencing(tmp_path):
    root = tmp_path / "P"
    synth_potsdam(root, ["2_10"], size=160, gsd=0.25, label_crs=False, eroded=False)
    res = tile_potsdam(root, tmp_path / "o", size=80, resize=None, workers=1)
    assert res.scenes[0].georef_copied
    idx = read_index(tmp_path / "o")
    with rasterio.open(root / "2_Ortho_RGB" / pots.image_name("2_10")) as img:
        for _, row in idx.frame.iterrows():
            m = rasterio.open(idx.mask_path(row))
            assert m.crs == img.crs
            assert m.transform == img.transform @ Affine.translation(row["col_off"], row["row_off"])
            m.close()


def test_potsdam_label_without_crs_and_other_shape_is_refused(tmp_path, cli):
    root = tmp_path / "P"
    synth_potsdam(root, ["2_10"], size=160, gsd=0.25, eroded=False)
    lab = root / "5_Labels_all" / pots.label_name("2_10")
    write_raster(lab, np.zeros((3, 150, 160), np.uint8), crs=None)
    r = cli("tile", "--dataset", "potsdam", root, "--out", tmp_path / "o")
    assert r.code == 1 and pots.label_name("2_10") in r.err and "differs" in r.err
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_potsdam_split_file(potsdam_root, tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"val": ["2_10"], "train": ["1_1"]}))
    res = tile_potsdam(potsdam_root, tmp_path / "o", split_file=tmp_path / "split.json",
                       size=260, resize=None, workers=1)  # fmt: skip
    assert res.splits == {"train": 4, "val": 4, "test": 0}
    (tmp_path / "bad.txt").write_text("2_10 training\n")
    with pytest.raises(InputError, match=r"bad\.txt:1"):
        tile_potsdam(potsdam_root, tmp_path / "o2", split_file=tmp_path / "bad.txt")


def test_unknown_dataset_layout(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    write_raster(tmp_path / "empty" / "photo.tif", np.zeros((3, 8, 8), np.uint8))
    r = cli("tile", "--dataset", "potsdam", tmp_path / "empty", "--out", tmp_path / "o")
    assert r.code == 1 and "empty" in r.err and "top_potsdam" in r.err
    r = cli("tile", "--dataset", "vaihingen", tmp_path / "empty", "--out", tmp_path / "o")
    assert r.code == 2


# ------------------------------------------------------------------ CLI, overwrite, bad inputs


def test_cli_tile_json_and_overwrite(scene, tmp_path, cli):
    args = ("tile", scene / "city.tif", "--labels", scene / "city_labels.tif", "--out",
            tmp_path / "o", "--size", "200", "--workers", "1")  # fmt: skip
    r = cli(*args, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["chips"] == 6 and out["splits"]["train"] == 6  # rows 0, 100; cols 0, 200, 220
    (tmp_path / "o" / "marker").write_text("old")
    r = cli(*args)
    assert r.code == 1 and "--overwrite" in r.err and str(tmp_path / "o") in r.err
    assert (tmp_path / "o" / "marker").exists()
    r = cli(*args, "--overwrite", "--size", "150")
    assert r.code == 0, r.err
    assert not (tmp_path / "o" / "marker").exists()
    assert read_index(tmp_path / "o").meta["chip_size"] == 150


def _bad_inputs(scene, d):
    (d / "notes.tif").write_text("not a raster")
    write_raster(d / "nocrs.tif", np.zeros((3, 64, 64), np.uint8), crs=None)
    write_raster(d / "shifted.tif", np.zeros((H, W), np.uint8),
                 transform=TRANSFORM @ Affine.translation(3, 0))  # fmt: skip
    synth_scene(d / "corrupt.tif", size=(H, W), seed=1, gsd=0.25)
    b = bytearray((d / "corrupt.tif").read_bytes())
    n = len(b)
    b[n // 3 : 2 * n // 3] = np.random.default_rng(0).integers(0, 256, 2 * n // 3 - n // 3,
                                                                  dtype=np.uint8).tobytes()  # fmt: skip
    (d / "corrupt.tif").write_bytes(bytes(b))
    img = str(scene / "city.tif")
    return [
        ("notes.tif", [str(d / "notes.tif")]),
        ("nocrs.tif", [str(d / "nocrs.tif")]),
        ("shifted.tif", [img, "--labels", str(d / "shifted.tif")]),
        ("corrupt.tif", [str(d / "corrupt.tif")]),
        ("missing.tif", [str(d / "missing.tif")]),
    ]


def test_bad_inputs_fail_with_one_line_naming_the_file(scene, tmp_path, cli):
    d = tmp_path / "in"
    d.mkdir()
    out_parent = tmp_path / "outs"
    out_parent.mkdir()
    for name, args in _bad_inputs(scene, d):
        for workers in ("1", "2"):
            r = cli("tile", *args, "--out", out_parent / "o", "--size", "128", "-j", workers)
            assert r.code == 1, (name, r.err)
            assert name in r.err, (name, r.err)
            assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("error:"), r.err
            assert "Traceback" not in r.err
            assert list(out_parent.iterdir()) == [], name  # nothing partial left behind
            if name not in ("corrupt.tif",):
                break  # only the read failure happens inside the workers


def test_library_raises_typed_errors(scene, tmp_path):
    write_raster(tmp_path / "nocrs.tif", np.zeros((3, 64, 64), np.uint8), crs=None)
    with pytest.raises(RasterError, match="no CRS"):
        tile_scenes([tmp_path / "nocrs.tif"], tmp_path / "o")
    with pytest.raises(InputError, match="2 label rasters for 1 images"):
        tile_scenes([scene / "city.tif"], tmp_path / "o", labels=[scene / "city_labels.tif"] * 2)
    with pytest.raises(InputError, match="--split 'holdout'"):
        tile_scenes([scene / "city.tif"], tmp_path / "o", split="holdout")


def test_read_index_errors(tmp_path):
    with pytest.raises(InputError, match="aerialct tile"):
        read_index(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="not a chips folder"):
        read_index(tmp_path / "x")


def test_glob_patterns_and_label_without_georeferencing(tmp_path):
    for k in range(2):
        s = generate_scene(96, seed=k, gsd=0.5)
        write_raster(tmp_path / f"img_{k}.tif", s.image, transform=s.transform)
        write_raster(tmp_path / f"lab_{k}.tif", s.labels, crs=None)  # no georeferencing
    res = tile_scenes([str(tmp_path / "img_*.tif")], tmp_path / "o", size=64,
                      labels=[str(tmp_path / "lab_*.tif")], workers=1)  # fmt: skip
    assert [s.name for s in res.scenes] == ["img_0", "img_1"]
    assert all(s.georef_copied for s in res.scenes) and res.chips == 8
    idx = read_index(tmp_path / "o")
    row = idx.frame.iloc[-1]
    m, t, crs = read(idx.mask_path(row))
    last = generate_scene(96, seed=1, gsd=0.5)
    assert crs.to_epsg() == 32633 and t == last.transform @ Affine.translation(32, 32)
    assert np.array_equal(m[0], last.labels[32:96, 32:96])


def test_cli_usage_errors(scene, tmp_path, cli):
    r = cli("tile", scene / "city.tif", "--out", tmp_path / "o",
            "--labels-vector", scene / "buildings.gpkg")  # fmt: skip
    assert r.code == 1 and "--class-field" in r.err and "buildings.gpkg" in r.err
    r = cli("tile", scene / "city.tif", "--out", tmp_path / "o", "--split-file", "x.json")
    assert r.code == 2
    assert not (tmp_path / "o").exists()


def test_aoi_keeps_only_windows_that_touch_it(tmp_path):
    import geopandas as gpd
    import pyogrio
    from shapely.geometry import box

    from aerialct.data.synth import synth_scene
    from aerialct.tile import tile_scenes

    image, labels = tmp_path / "s.tif", tmp_path / "s_labels.tif"
    synth_scene(image, labels, size=256, gsd=0.5, seed=3)
    full = tile_scenes([image], tmp_path / "all", labels=[labels], size=64, workers=1)
    with rasterio.open(image) as ds:
        b, crs = ds.bounds, ds.crs
    area = box(b.left + 10, b.top - 40, b.left + 50, b.top - 10)  # inside the top-left 2x2 windows
    gpd.GeoDataFrame(geometry=[area], crs=crs).to_crs("EPSG:4326").to_file(tmp_path / "aoi.gpkg")
    part = tile_scenes([image], tmp_path / "part", labels=[labels], size=64, workers=1,
                       aoi=tmp_path / "aoi.gpkg")  # fmt: skip
    assert full.chips == 16 and part.chips == 4
    index = pyogrio.read_dataframe(tmp_path / "part" / "index.gpkg")
    assert sorted(zip(index["row_off"], index["col_off"], strict=True)) == [
        (0, 0), (0, 64), (64, 0), (64, 64)
    ]  # fmt: skip
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").to_file(tmp_path / "far.gpkg")
    with pytest.raises(InputError, match="touches no window"):
        tile_scenes([image], tmp_path / "none", labels=[labels], size=64, aoi=tmp_path / "far.gpkg")
