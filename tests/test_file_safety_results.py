"""Nothing silently wrong: wrong input refused, never a confident result with exit 0.

README, "What aerialct promises about your files", rule 4. Each test gives a verb an
input that used to produce a wrong result (exported models without the clip bounds,
labels of no pixel, points, conflicting options, coerced class tables, tiny float
scenes, half-matched folders) and checks the refusal or the right result.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from predict_helpers import write_scene
from safety_helpers import SETS, TINY, error_lines, json_out, tiny_checkpoint
from shapely.geometry import Point, box
from synth_helpers import write_raster

from aerialct.classes import BUILDINGS, POTSDAM


def classes_of(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_exported_models_predict_exactly_what_the_checkpoint_predicts(cli, tmp_path):
    import onnx

    from aerialct.engine.checkpoint import load_checkpoint
    from aerialct.export import export_model

    low, high = (60.0, 70.0, 80.0), (180.0, 190.0, 200.0)
    ckpt = tiny_checkpoint(tmp_path / "best.pt", low=low, high=high, sharpen=1000.0)
    scene = tmp_path / "scene.tif"
    img = np.random.default_rng(3).integers(0, 256, (3, 96, 80), dtype=np.uint8)
    img[:, :40] = np.where(img[:, :40] > 128, 255, 0)  # half the scene beyond the clip bounds
    write_scene(scene, img)
    # the same weights without the clip bounds: what a format that drops them predicts
    unclipped = tiny_checkpoint(tmp_path / "unclipped.pt", sharpen=1000.0)
    models = {"pt": ckpt, "unclipped": unclipped}
    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.ts"), ("pt", "slim.pt")):
        models[name] = export_model(ckpt, tmp_path / name, fmt).output
    slim = load_checkpoint(tmp_path / "slim.pt")
    assert slim["normalization"]["low"] == list(low), slim["normalization"]
    assert slim["normalization"]["high"] == list(high) and slim["exported"]
    assert slim.get("optimizer") is None
    rasters = {}
    for name, model in models.items():
        out = tmp_path / f"pred_{name.replace('.', '_')}"
        r = cli("predict", model, scene, "--out", out, "--device", "cpu")
        assert r.code == 0, (name, r.err)
        rasters[name] = classes_of(out / "scene_classes.tif")
    reference = rasters.pop("pt")
    assert len(np.unique(reference)) > 1
    assert not np.array_equal(rasters.pop("unclipped"), reference)  # the bounds matter here
    for name, got in rasters.items():
        assert np.array_equal(got, reference), (name, int((got != reference).sum()))
    # the ONNX metadata states the whole input formula, with its numbers
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert "(clip(raw, low, high) - mean) / std" in meta["input"]
    assert json.loads(meta["low"]) == list(low) and json.loads(meta["high"]) == list(high)
    info = json_out(cli("info", tmp_path / "m.onnx", "--json"))
    assert info["low"] == list(low) and info["format"] == "onnx"


def test_training_on_labels_of_no_pixel_is_refused(cli, tmp_path):
    from train_helpers import write_chips

    rng = np.random.default_rng(0)
    chips = [("train" if i % 4 else "val", rng.integers(0, 255, (3, 32, 32), dtype=np.uint8),
              np.full((32, 32), 255, np.uint8)) for i in range(8)]  # fmt: skip
    data = write_chips(tmp_path / "chips", chips)
    run = tmp_path / "run"
    r = cli("train", "--config", TINY, "--data", data, "-o", run, *SETS)
    assert r.code == 1 and "every mask pixel" in r.err and "is ignore" in r.err, r.err
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()
    # chips cut by tile carry their class shares: refused before any training
    img = write_raster(tmp_path / "a.tif", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
    lab = write_raster(tmp_path / "l.tif", np.full((64, 64), 255, np.uint8))
    assert cli("tile", img, "--labels", lab, "-o", tmp_path / "tiled", "--size", "32").code == 0
    r = cli("train", "--config", TINY, "--data", tmp_path / "tiled", "-o", tmp_path / "r2", *SETS)
    assert r.code == 1 and "every label pixel of the 'train' split is ignore" in r.err, r.err


def test_points_are_refused_as_an_area_or_as_labels(cli, tmp_path, monkeypatch):
    from predict_helpers import oracle_bundle, random_image

    import aerialct.cli.predict as cli_predict

    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: oracle_bundle(32))
    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(64, 64, seed=2))
    with rasterio.open(scene) as ds:
        b = ds.bounds
    points = gpd.GeoDataFrame({"class": ["building"] * 2},
                              geometry=[Point(b.left + 1, b.top - 1), Point(b.left + 2, b.top - 2)],
                              crs="EPSG:32633")  # fmt: skip
    points.to_file(tmp_path / "points.gpkg")
    r = cli("predict", "x.pt", scene, "--out", tmp_path / "p", "--aoi", tmp_path / "points.gpkg")
    assert r.code == 1 and "2 of 2 features are Point, not polygons" in r.err, r.err
    assert not (tmp_path / "p" / "s_classes.tif").exists()
    r = cli("tile", scene, "--labels-vector", tmp_path / "points.gpkg", "--burn", "building",
            "-o", tmp_path / "chips")  # fmt: skip
    assert r.code == 1 and "not polygons" in r.err and not (tmp_path / "chips").exists()


def test_class_map_conflicts_and_strays_are_refused(cli, tmp_path):
    img = write_raster(tmp_path / "a.tif", np.zeros((3, 64, 64), np.uint8))
    with rasterio.open(img) as ds:
        b = ds.bounds
    gpd.GeoDataFrame({"kind": ["house"]}, geometry=[box(*b)], crs="EPSG:32633").to_file(
        tmp_path / "v.gpkg"
    )
    common = ["-o", tmp_path / "chips", "--size", "32", "--labels-vector", tmp_path / "v.gpkg"]
    r = cli("tile", img, *common, "--class-field", "kind", "--class-map", "house=building",
            "--class-map", "house=tree")  # fmt: skip
    assert r.code == 2 and "'house' is mapped to both 'building' and 'tree'" in r.err, r.err
    r = cli("tile", img, *common, "--burn", "building", "--class-map", "house=tree")
    assert r.code == 1 and "--class-map maps values of --class-field" in r.err, r.err
    assert not (tmp_path / "chips").exists()


def test_tile_refuses_labels_of_another_class_table(cli, tmp_path):
    img = write_raster(tmp_path / "a.tif", np.zeros((3, 64, 64), np.uint8))
    lab = np.zeros((64, 64), np.uint8)
    lab[:, 32:] = 1  # building in the Potsdam table, building in the buildings table too
    lab[:8] = 3  # tree: no such id in the buildings table
    labels = write_raster(tmp_path / "l.tif", lab)
    with rasterio.open(labels, "r+") as ds:
        ds.update_tags(AERIALCT_CLASSES=json.dumps(POTSDAM.to_list()))
    r = cli("tile", img, "--labels", labels, "--classes", "buildings", "-o", tmp_path / "c")
    assert r.code == 1 and "differs from --classes's" in r.err and "l.tif" in r.err, r.err
    # without --classes, the labels' own table is taken
    res = json_out(cli("tile", img, "--labels", labels, "-o", tmp_path / "c", "--size", "32",
                       "--json"))  # fmt: skip
    assert list(res["class_pixels"])[:6] == POTSDAM.names and res["class_pixels"]["tree"] == 512
    b_labels = write_raster(tmp_path / "b.tif", (lab == 1).astype(np.uint8))
    with rasterio.open(b_labels, "r+") as ds:
        ds.update_tags(AERIALCT_CLASSES=json.dumps(BUILDINGS.to_list()))
    res = json_out(cli("tile", img, "--labels", b_labels, "-o", tmp_path / "d", "--size", "32",
                       "--json"))  # fmt: skip
    assert res["class_pixels"]["building"] == 32 * 56 and "tree" not in res["class_pixels"]


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("classes: []\n", 1, "'classes' is empty"),
        ("classes:\n  - {id: 0, name: road, color: [1, 1, 1]}\n  - id: 1\n    name:\n"
         "    color: [2, 2, 2]\n", 4, "class #1: name: class name None is not a name"),
        ("classes:\n  - id: 0\n    name: road\n    color: [1, 1, 1]\n"
         "    exclude_from_mean: \"false\"\n", 5, "exclude_from_mean: 'false' is not true or false"),
        ("classes:\n  - {id: 0, name: Road, color: [1, 1, 1]}\n"
         "  - {id: 1, name: road, color: [2, 2, 2]}\n", None, "differ in more than case"),
        ("classes:\n  - {id: 0, name: flat roof, color: [1, 1, 1]}\n", 2, "write 'flat_roof'"),
        ("classes:\n  - {id: '0', name: road, color: [1, 1, 1]}\n", 2, "id: '0' is not a whole"),
    ],
)  # fmt: skip
def test_class_table_yaml_is_refused_with_the_line_and_the_key(cli, tmp_path, body, line, words):
    table = tmp_path / "t.yaml"
    table.write_text(body)
    img = write_raster(tmp_path / "a.tif", np.zeros((3, 32, 32), np.uint8))
    r = cli("tile", img, "--classes", table, "-o", tmp_path / "c")
    assert r.code == 1, r.err
    (msg,) = error_lines(r.err)
    assert words in msg and "t.yaml" in msg and "internal error" not in msg, msg
    if line is not None:
        assert f"t.yaml, line {line}:" in msg, msg


def test_a_tiny_float_scene_is_refused_not_predicted(cli, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.pt", low=(20.0,) * 3, high=(240.0,) * 3)
    scene = tmp_path / "tiny.tif"
    reflectance = np.random.default_rng(0).uniform(0.02, 0.4, (3, 3, 3)).astype(np.float32)
    write_scene(scene, reflectance)
    r = cli("predict", ckpt, scene, "--out", tmp_path / "p", "--device", "cpu")
    assert r.code == 1 and "tiny.tif: band 1 (float32)" in r.err, r.err
    assert not (tmp_path / "p" / "tiny_classes.tif").exists()
    fine = tmp_path / "fine.tif"
    write_scene(fine, np.full((3, 3, 3), 130, np.uint8))  # a few pixels of one roof
    assert cli("predict", ckpt, fine, "--out", tmp_path / "p", "--device", "cpu").code == 0


def test_folder_evaluate_counts_what_is_missing_and_names_what_is_left_over(cli, tmp_path):
    preds, refs = tmp_path / "pred", tmp_path / "ref"
    preds.mkdir()
    refs.mkdir()

    def layer(path: Path, boxes: list) -> None:
        gpd.GeoDataFrame(geometry=[box(*b) for b in boxes], crs="EPSG:32633").to_file(path)

    squares = [(i * 10, 0, i * 10 + 5, 5) for i in range(4)]
    layer(preds / "a.gpkg", squares)
    layer(refs / "a.gpkg", squares)
    layer(refs / "b.gpkg", squares)  # nobody mapped b: its four buildings are missed
    layer(preds / "c.gpkg", squares)  # no reference for c: named, not scored
    res = json_out(cli("evaluate", preds, refs, "--json"))
    assert res["true_positives"] == 4 and res["false_negatives"] == 4
    assert res["recall"] == pytest.approx(0.5)
    assert [Path(m).name for m in res["missing"]] == ["b.gpkg"]
    assert [Path(m).name for m in res["unmatched"]] == ["c.gpkg"]
    r = cli("evaluate", preds, refs)
    assert "1 predictions have no reference; they are not scored: c.gpkg" in " ".join(r.err.split())


def test_synth_refuses_a_compression_gdal_does_not_know(cli, tmp_path):
    r = cli("synth", tmp_path / "s", "--size", "64", "--compress", "BOGUS")
    assert r.code == 2 and "--compress" in r.err and "BOGUS" in r.err, r.err
    assert not (tmp_path / "s").exists()
    assert cli("synth", tmp_path / "s", "--size", "64", "--compress", "lzw").code == 0
