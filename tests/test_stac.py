"""STAC Items of predict and vectorize outputs, validated offline against the published schemas."""

import json

import numpy as np
import pytest
import rasterio
from predict_helpers import oracle_bundle, random_image, write_scene
from stac_helpers import validate, validate_file

from aerialct.stac import SCHEMAS, item_path


@pytest.fixture
def oracle_cli(cli, monkeypatch):
    import aerialct.cli.predict as cli_predict

    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: oracle_bundle(32))
    return cli


def _extensions(doc):
    return {k for k, v in SCHEMAS.items() if v in doc["stac_extensions"]}


def test_predict_vectorize_evaluate_items_beside_the_outputs(oracle_cli, tmp_path):
    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(96, 96, seed=5))
    pred = tmp_path / "pred"
    r = oracle_cli("predict", "x.pt", scene, "-o", pred, "--probabilities", "--quicklook", "--json")
    assert r.code == 0, r.err
    item_file = pred / "s.stac.json"
    assert json.loads(r.out)["stac"] == [str(item_file)]
    doc = validate_file(item_file)
    assert _extensions(doc) == {"projection", "raster", "file", "classification", "processing"}
    props = doc["properties"]
    assert props["proj:code"] == "EPSG:32633" and props["proj:shape"] == [96, 96]
    assert props["aerialct:source"] == str(scene)
    assert props["processing:level"] == "L4" and "aerialct" in props["processing:software"]
    assert set(doc["assets"]) == {"classes", "probabilities", "quicklook", "style", "gdal_pam"}
    classes = doc["assets"]["classes"]
    assert classes["href"] == "./s_classes.tif"
    assert classes["file:checksum"].startswith("1220") and classes["file:size"] > 0
    band = classes["raster:bands"][0]
    assert band["data_type"] == "uint8" and band["nodata"] == 255
    with rasterio.open(pred / "s_classes.tif") as ds:
        counts = np.bincount(ds.read(1).ravel(), minlength=256)
    by_value = {c["value"]: c for c in band["classification:classes"]}
    assert by_value[255]["nodata"] is True
    assert [by_value[i]["count"] for i in range(6)] == counts[:6].tolist()
    assert by_value[1]["name"] == "building" and by_value[1]["color_hint"] == "0000FF"
    from rasterio.warp import transform

    lon, lat = transform("EPSG:32633", "EPSG:4326", [368000.0], [5807000.0])  # top left
    assert doc["bbox"][0] == pytest.approx(lon[0]) and doc["bbox"][3] == pytest.approx(lat[0])
    # the oracle is no checkpoint file: its model facts are what it knows
    assert props["aerialct:model"]["chip_size"] == 32 and props["aerialct:model"]["sha256"] is None

    # vectorize a folder of predict's outputs: the class raster alone (found by its tag)
    out = tmp_path / "b.gpkg"
    r = oracle_cli("vectorize", pred, "--probabilities", pred, "-o", out, "-c", "building",
                   "-c", "car", "--json")  # fmt: skip
    assert r.code == 0, r.err
    vdoc = validate_file(tmp_path / "b.stac.json")
    assert json.loads(r.out)["stac"] == [str(tmp_path / "b.stac.json")]
    assert vdoc["assets"]["data"]["type"] == "application/geopackage+sqlite3"
    assert {c["name"] for c in vdoc["assets"]["data"]["classification:classes"]} == {
        "building",
        "car",
    }
    assert vdoc["properties"]["aerialct:source"] == str(pred / "s_classes.tif")
    derived = [lk for lk in vdoc["links"] if lk["rel"] == "derived_from"]
    assert derived and derived[0]["href"] == "./pred/s.stac.json"
    assert vdoc["properties"]["aerialct:model"]["chip_size"] == 32  # from the raster's tag

    # evaluate adds its scores to the prediction's Item
    r = oracle_cli("evaluate", pred / "s_classes.tif", pred / "s_classes.tif")
    assert r.code == 0, r.err
    scores = validate_file(item_file)["properties"]["aerialct:scores"]
    assert scores["kind"] == "pixel" and scores["overall_accuracy"] == 1.0


def test_an_item_aerialct_did_not_write_is_left_alone(oracle_cli, tmp_path, caplog):
    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(40, 40, seed=6))
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "s.stac.json").write_text('{"mine": true}')
    r = oracle_cli("predict", "x.pt", scene, "-o", pred)
    assert r.code == 0, r.err
    assert json.loads((pred / "s.stac.json").read_text()) == {"mine": True}
    assert "not an Item aerialct wrote" in r.err


def _tiny_checkpoint(path):
    import torch

    from aerialct.classes import POTSDAM
    from aerialct.config import config_from_dict
    from aerialct.engine.checkpoint import make_checkpoint, save_checkpoint
    from aerialct.models import build_model

    torch.manual_seed(0)
    cfg = config_from_dict(
        {"model": {"backbone": "tiny_cnn", "decoder": "fpn", "decoder_channels": 8,
                   "img_size": 32}}
    )  # fmt: skip
    model = build_model(cfg.model, num_classes=len(POTSDAM), in_chans=3).eval()
    save_checkpoint(
        path,
        make_checkpoint(config=cfg, classes=POTSDAM, mean=(120.0,) * 3, std=(50.0,) * 3,
                        in_chans=3, chip_size=32, model_state=model.state_dict(), gsd=0.05),
    )  # fmt: skip
    return path


def test_catalogue_of_a_delivery_with_the_model_item(cli, tmp_path):
    from aerialct.stac import file_sha256

    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for i in range(2):
        write_scene(scenes / f"t{i}.tif", random_image(48, 48, seed=10 + i))
    stac = tmp_path / "stac"
    r = cli("predict", ckpt, scenes, "-o", tmp_path / "pred", "--device", "cpu", "--stac", stac)
    assert r.code == 0, r.err
    assert not list((tmp_path / "pred").glob("*.stac.json"))  # in the catalogue instead
    every_class = [a for i in range(6) for a in ("-c", str(i))]
    r = cli("vectorize", tmp_path / "pred", "-o", tmp_path / "polys", "--format", "fgb",
            *every_class, "--stac", stac)  # fmt: skip
    assert r.code == 0, r.err
    catalog = validate_file(stac / "catalog.json")
    items = sorted(lk["href"] for lk in catalog["links"] if lk["rel"] == "item")
    sha = file_sha256(ckpt)
    model_id = f"model-{sha[:12]}"
    assert items == sorted(
        [f"./{model_id}/{model_id}.json", "./t0/t0.json", "./t1/t1.json",
         "./t0_classes.fgb/t0_classes.fgb.json", "./t1_classes.fgb/t1_classes.fgb.json"]
    )  # fmt: skip
    model = validate_file(stac / model_id / f"{model_id}.json")
    assert _extensions(model) == {"mlm", "file", "classification"}
    mp = model["properties"]
    assert mp["mlm:tasks"] == ["semantic-segmentation"] and mp["mlm:framework"] == "pytorch"
    assert mp["mlm:hyperparameters"]["preset"] == "tiny_cnn"
    assert model["assets"]["model"]["file:checksum"] == "1220" + sha
    assert model["assets"]["model"]["href"] == "../../tiny.pt"
    t0 = validate_file(stac / "t0" / "t0.json")
    facts = t0["properties"]["aerialct:model"]
    assert (facts["sha256"], facts["preset"], facts["decoder"]) == (sha, "tiny_cnn", "fpn")
    assert facts["weights"] is None  # random initialisation, no pretrained weights
    link = next(lk for lk in t0["links"] if lk["rel"] == "derived_from")
    assert link["href"] == f"../{model_id}/{model_id}.json" and link["mlm:name"] == mp["mlm:name"]
    assert t0["assets"]["classes"]["href"] == "../../pred/t0_classes.tif"
    # a scene predicted again replaces its Item; the others stay
    r = cli("predict", ckpt, scenes / "t0.tif", "-o", tmp_path / "pred", "--device", "cpu",
            "--stac", stac, "--overwrite")  # fmt: skip
    assert r.code == 0, r.err
    again = validate_file(stac / "catalog.json")
    assert sorted(lk["href"] for lk in again["links"] if lk["rel"] == "item") == items
    # scores of a building evaluation reach the vectorize output's Item in the catalogue
    poly = tmp_path / "polys" / "t0_classes.fgb"
    r = cli("evaluate", poly, poly, "--stac", stac)
    assert r.code == 0, r.err
    scores = validate_file(stac / "t0_classes.fgb" / "t0_classes.fgb.json")["properties"]
    assert scores["aerialct:scores"]["f1"] == 1.0


def test_stac_folder_of_someone_else_is_refused_before_any_work(oracle_cli, tmp_path):
    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(40, 40, seed=8))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    r = oracle_cli("predict", "x.pt", scene, "-o", tmp_path / "pred", "--stac", theirs)
    assert r.code == 1 and "no catalog.json" in r.err
    assert not (tmp_path / "pred").exists()


def test_validator_rejects_a_broken_item(tmp_path):
    import jsonschema

    doc = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [SCHEMAS["classification"]],
        "id": "x",
        "geometry": None,
        "properties": {"datetime": "2024-01-01T00:00:00Z"},
        "links": [],
        "assets": {"a": {"href": "a.tif", "classification:classes": [{"value": 1,
                                                                      "name": "has space"}]}},
    }  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)
    doc["assets"]["a"]["classification:classes"][0]["name"] = "ok_name"
    validate(doc)


def test_item_path_names():
    assert item_path("pred/a_classes.tif").as_posix() == "pred/a.stac.json"
    assert item_path("out/buildings.gpkg").as_posix() == "out/buildings.stac.json"
