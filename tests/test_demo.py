"""`aerialct demo`: the whole pipeline on a synthetic city."""

from __future__ import annotations

import json

import pytest


def test_demo_runs_the_pipeline_and_reports(cli, tmp_path):
    out = tmp_path / "demo"
    r = cli(
        "demo", "--out", out, "--epochs", "1", "--city-size", "320", "--heldout-size", "192",
        "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    res = json.loads(r.out)
    for key in (
        "classes_raster",
        "probabilities",
        "quicklook",
        "buildings",
        "review",
        "checkpoint",
    ):
        assert (out / res[key].split(str(out) + "/", 1)[1]).exists(), key
    pixels = json.loads((out / "report_pixels.json").read_text())
    assert pixels["mean_iou"] == pytest.approx(res["mean_iou"])
    assert set(res["per_class_iou"]) == {
        "impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter",
    }  # fmt: skip
    buildings = json.loads((out / "report_buildings.json").read_text())
    assert buildings["reference_count"] == res["reference_buildings_count"] > 0
    assert 0.0 <= res["building_f1"] <= 1.0

    import rasterio

    with rasterio.open(res["classes_raster"]) as c, rasterio.open(res["scene"]) as s:
        assert c.crs == s.crs and c.transform == s.transform
        assert c.colormap(1)[1][:3] == (0, 0, 255)  # building blue, Potsdam legend
    # STAC Items beside the outputs, with the scores of the evaluation
    from stac_helpers import validate_file

    item = validate_file(out / "prediction" / "heldout.stac.json")["properties"]
    assert item["aerialct:scores"]["mean_iou"] == pytest.approx(res["mean_iou"])
    assert item["aerialct:model"]["sha256"] and item["aerialct:model"]["preset"]
    polys = validate_file(out / "buildings.stac.json")["properties"]
    assert polys["aerialct:scores"]["f1"] == pytest.approx(res["building_f1"])


def test_demo_refuses_existing_output(cli, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = cli("demo", "--out", out, "--epochs", "1")
    assert r.code == 1
    assert "--overwrite" in r.err
    assert (out / "keep.txt").read_text() == "mine"


def test_demo_unknown_preset_suggests(cli, tmp_path):
    r = cli("demo", "--out", tmp_path / "d", "--config", "tiny-cp")
    assert r.code == 1
    assert "tiny-cpu" in r.err


@pytest.mark.slow
def test_demo_as_shipped_learns_buildings(tmp_path):
    """The README's first command: the tiny CT preset learns buildings in a few CPU minutes."""
    from aerialct.demo import run_demo

    res = run_demo(tmp_path / "demo", device="cpu")
    assert res.building_iou > 0.5, res.per_class_iou
    assert res.building_f1 > 0.3


def test_demo_overwrite_only_replaces_demo_folders(cli, tmp_path):
    out = tmp_path / "not-a-demo"
    out.mkdir()
    (out / "precious.tif").write_bytes(b"data")
    r = cli("demo", "--out", out, "--overwrite", "--epochs", "1")
    assert r.code == 1
    assert "a folder aerialct did not make" in r.err
    assert (out / "precious.tif").read_bytes() == b"data"
