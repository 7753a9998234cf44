"""Outputs the GIS world uses as they are: styles QGIS loads, class names GDAL shows, GeoPackage
1.3, quiet logs for cron, class rasters found by tag and GDAL paths kept verbatim."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from predict_helpers import oracle_bundle, random_image, write_scene

from aerialct.classes import POTSDAM
from aerialct.geo.classraster import tag_class_raster, write_class_sidecars
from aerialct.geo.tags import PROB_SCALE_TAG
from aerialct.styles import REVIEW_COLOURS, read_layer_styles

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
CRS = "EPSG:32632"


def _class_raster(path: Path, data: np.ndarray, crs: str | None = CRS) -> Path:
    from affine import Affine

    prof = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
            "dtype": "uint8", "nodata": 255}  # fmt: skip
    if crs:
        prof |= {"crs": crs, "transform": Affine(0.5, 0, 500000, 0, -0.5, 5700000)}
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data.astype(np.uint8), 1)
        tag_class_raster(ds, POTSDAM)
    write_class_sidecars(path, POTSDAM)
    return path


def _prob_raster(path: Path, classes: np.ndarray) -> Path:
    from affine import Affine

    k = len(POTSDAM)
    probs = np.zeros((k, *classes.shape), np.uint8)
    for c in range(k):
        probs[c][classes == c] = 230
    with rasterio.open(
        path, "w", driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=k,
        dtype="uint8", crs=CRS, transform=Affine(0.5, 0, 500000, 0, -0.5, 5700000),
    ) as ds:  # fmt: skip
        ds.write(probs)
        ds.update_tags(AERIALCT_CLASSES=json.dumps(POTSDAM.to_list()), **{PROB_SCALE_TAG: "255"})
    return path


def _scene(h: int = 40, w: int = 40) -> np.ndarray:
    a = np.zeros((h, w), np.uint8)  # impervious
    a[4:14, 4:16] = 1  # buildings
    a[20:30, 22:36] = 1
    a[30:34, 4:8] = 4  # a car
    return a


@pytest.fixture
def outputs(tmp_path):
    """A class raster with its probabilities, its buildings and a review against a reference."""
    from aerialct.evaluate import evaluate_buildings
    from aerialct.vectorize import vectorize

    a = _scene()
    pred = _class_raster(tmp_path / "a_classes.tif", a)
    _prob_raster(tmp_path / "a_probabilities.tif", a)
    buildings = tmp_path / "buildings.gpkg"
    vectorize(pred, buildings, classes=["building", "car"],
              probabilities=tmp_path / "a_probabilities.tif")  # fmt: skip
    ref = a.copy()
    ref[20:30, 22:36] = 0  # one building the reference lacks (fp)
    ref[34:38, 30:38] = 1  # one the prediction missed (fn)
    _class_raster(tmp_path / "ref.tif", ref)
    vectorize(tmp_path / "ref.tif", tmp_path / "ref.gpkg")
    review = tmp_path / "review.gpkg"
    evaluate_buildings(buildings, tmp_path / "ref.gpkg", review=review)
    return {"classes": pred, "buildings": buildings, "review": review, "dir": tmp_path}


def test_geopackages_carry_their_styles(outputs):
    rows = read_layer_styles(outputs["buildings"])
    by_name = {r["styleName"]: r for r in rows}
    assert set(by_name) == {"by class", "confidence"}
    assert by_name["by class"]["useAsDefault"] == 1 and by_name["confidence"]["useAsDefault"] == 0
    assert {r["f_table_name"] for r in rows} == {"classes"}
    qml = ET.fromstring(by_name["by class"]["styleQML"].split("\n", 1)[1])
    renderer = qml.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class"
    cats = {c.get("value"): c.get("symbol") for c in renderer.iter("category")}
    assert set(cats) == {"building", "car"}
    colours = {
        s.get("name"): next(p.get("v") for p in s.iter("prop") if p.get("k") == "color")
        for s in renderer.iter("symbol")
    }
    assert colours[cats["building"]].startswith("0,0,255,")  # the class table's colours
    assert colours[cats["car"]].startswith("255,255,0,")
    grad = ET.fromstring(by_name["confidence"]["styleQML"].split("\n", 1)[1]).find("renderer-v2")
    assert grad.get("type") == "graduatedSymbol" and grad.get("attr") == "mean_confidence"
    sld = ET.fromstring(by_name["by class"]["styleSLD"])
    assert sld.tag.endswith("StyledLayerDescriptor")
    review = {r["f_table_name"]: r for r in read_layer_styles(outputs["review"])}
    assert set(review) == {"tp", "fp", "fn"}
    for layer, rgb in REVIEW_COLOURS.items():
        assert f"{rgb[0]},{rgb[1]},{rgb[2]},255" in review[layer]["styleQML"]  # outline
    # registered as the attributes table QGIS makes, with GeoPackage times, version 1.3
    con = sqlite3.connect(outputs["buildings"])
    kinds = dict(con.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
    assert kinds["layer_styles"] == "attributes"
    assert con.execute("PRAGMA user_version").fetchone()[0] == 10300
    stamp = con.execute("SELECT update_time FROM layer_styles").fetchone()[0]
    assert stamp.endswith("Z") and "T" in stamp
    con.close()


def test_appending_a_layer_adds_its_style(outputs):
    from aerialct.vectorize import vectorize

    vectorize(outputs["classes"], outputs["buildings"], classes=["car"], layer="cars",
              append=True)  # fmt: skip
    rows = read_layer_styles(outputs["buildings"])
    assert sorted((r["f_table_name"], r["styleName"], r["useAsDefault"]) for r in rows) == [
        ("cars", "by class", 1),
        ("classes", "by class", 1),
        ("classes", "confidence", 0),
    ]


def test_class_raster_palette_names_inside_and_beside(outputs):
    from gdal_helpers import gdal_category_names

    pred = outputs["classes"]
    qml = ET.parse(pred.with_suffix(".qml")).getroot()
    entries = [(int(e.get("value")), e.get("label")) for e in qml.iter("paletteEntry")]
    assert entries == [(c.id, c.name) for c in POTSDAM] + [(255, "nodata")]
    assert gdal_category_names(pred) == POTSDAM.names  # exactly the classes, from .aux.xml
    rat = ET.parse(str(pred) + ".aux.xml").getroot().find(".//GDALRasterAttributeTable")
    rows = [[f.text for f in row] for row in rat.iter("Row")]
    assert rows[1] == ["1", "building", "0", "0", "255", "255"] and len(rows) == len(POTSDAM)
    # the .tif copied alone still names its classes (band metadata inside the TIFF)
    alone = outputs["dir"] / "alone"
    alone.mkdir()
    shutil.copy(pred, alone)
    with rasterio.open(alone / pred.name) as ds:
        assert ds.tags(1)["CLASS_1"] == "building"
        assert len(ds.tags(1)) >= len(POTSDAM)


def _system_gdal() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return None
    r = subprocess.run([SYSTEM_PYTHON, "-c", "from osgeo import gdal; print(gdal.__version__)"],
                       capture_output=True, text=True)  # fmt: skip
    return r.stdout.strip() if r.returncode == 0 else None


def test_gdal_36_opens_the_geopackages_without_a_warning(outputs):
    version = _system_gdal()
    if version is None:
        pytest.skip("no system GDAL Python bindings (Debian: apt-get install python3-gdal)")
    code = (
        "import sys\nfrom osgeo import gdal\nmsgs = []\n"
        "gdal.PushErrorHandler(lambda c, n, m: msgs.append(m))\n"
        "for p in sys.argv[1:]:\n    ds = gdal.OpenEx(p)\n    assert ds is not None, p\n"
        "    ds = None\nprint('|'.join(msgs))\n"
    )
    paths = [str(outputs["buildings"]), str(outputs["review"])]
    r = subprocess.run([SYSTEM_PYTHON, "-c", code, *paths], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"GDAL {version}: {r.stdout}"


def _qgis_available() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _qgis_available(), reason="QGIS's Python (python3-qgis) not installed")
def test_qgis_opens_the_outputs_styled(outputs):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": "/tmp"}
    env.pop("PYTHONPATH", None)
    paths = [outputs["buildings"], outputs["review"], outputs["classes"]]
    r = subprocess.run([SYSTEM_PYTHON, ROOT / "tests" / "qgis_check.py", *paths],
                       capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    layers = json.loads(r.stdout)["layers"]
    b = layers["buildings.gpkg:classes"]
    assert b["valid"] and b["renderer"] == "categorizedSymbol" and b["attribute"] == "class"
    assert [(c["value"], c["color"][:3]) for c in b["categories"]] == [
        ("building", [0, 0, 255]),
        ("car", [255, 255, 0]),
    ]
    assert b["styles"] == ["by class", "confidence"]
    for name, rgb in REVIEW_COLOURS.items():
        layer = layers[f"review.gpkg:{name}"]
        assert layer["renderer"] == "singleSymbol" and layer["color"][:3] == list(rgb)
    review = [layers[f"review.gpkg:{n}"]["features"] for n in ("tp", "fp", "fn")]
    assert review == [1, 2, 1]  # a building matched; a building and the car unmatched; one missed
    raster = layers["a_classes.tif:a_classes.tif"]
    assert raster["renderer"] == "paletted"
    assert [(c["value"], c["label"]) for c in raster["classes"]] == [
        *((c.id, c.name) for c in POTSDAM),
        (255, "nodata"),
    ]


# --- logs -------------------------------------------------------------------------------


def test_logs_are_plain_lines_off_a_terminal_and_go_to_a_file_as_json(cli, tmp_path):
    long = tmp_path / ("a_very_long_folder_name_" * 5)
    long.mkdir()
    raster = _class_raster(long / "nocrs.tif", _scene(), crs=None)  # logs "has no CRS"
    log = tmp_path / "run.log"
    r = cli("vectorize", raster, "-o", tmp_path / "b.geojson", "--log-file", log)
    assert r.code == 0, r.err
    line = next(x for x in r.err.splitlines() if "has no CRS" in x)
    assert line == f"warning: {raster} has no CRS; the output will have none"  # not wrapped
    assert all(x == x.rstrip() for x in r.err.splitlines())
    logged = log.read_text().splitlines()
    assert any(x.endswith(f"warning: {raster} has no CRS; the output will have none")
               for x in logged)  # fmt: skip
    assert any(" info: " in x and "polygons" in x for x in logged)  # the CLI's own lines too
    r = cli("vectorize", raster, "-o", tmp_path / "c.geojson", "--log-format", "json",
            "--log-file", tmp_path / "j.log", "-q")  # fmt: skip
    assert r.code == 0, r.err
    docs = [json.loads(x) for x in r.err.splitlines() if x.startswith("{")]
    assert docs and docs[0]["level"] == "warning" and "has no CRS" in docs[0]["message"]
    assert "polygons" not in r.err  # -q after the verb hides the info line
    filed = [json.loads(x) for x in (tmp_path / "j.log").read_text().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(filed[0])


def test_quiet_and_verbose_after_the_verb(cli, tmp_path):
    from aerialct.cli.app import hoist_global_options

    assert hoist_global_options(["predict", "m.pt", "s.tif", "-o", "o", "-q"]) == [
        "-q", "predict", "m.pt", "s.tif", "-o", "o"]  # fmt: skip
    assert hoist_global_options(["-v", "tile", "x", "--log-file", "f.log", "--", "-q"]) == [
        "-v", "--log-file", "f.log", "tile", "x", "--", "-q"]  # fmt: skip
    raster = _class_raster(tmp_path / "c.tif", _scene())
    loud = cli("vectorize", raster, "-o", tmp_path / "a.gpkg")
    quiet = cli("vectorize", raster, "-o", tmp_path / "b.gpkg", "--quiet")
    assert loud.code == quiet.code == 0
    assert "polygons, total area" in loud.err and "polygons, total area" not in quiet.err
    r = cli("vectorize", raster, "-o", tmp_path / "c.gpkg", "--log-format", "xml")
    assert r.code == 2 and "--log-format" in r.err


def test_log_lines_in_a_subprocess_are_not_wrapped(tmp_path):
    # a real process whose stderr is a pipe, as under cron
    raster = _class_raster(tmp_path / ("x" * 120 + ".tif"), _scene(), crs=None)
    main = "from aerialct.cli.main import main; main()"
    r = subprocess.run([sys.executable, "-c", main, "vectorize", str(raster),
                        "-o", str(tmp_path / "o.geojson")],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"warning: {raster} has no CRS; the output will have none" in r.stderr.splitlines()


# --- inputs ---------------------------------------------------------------------------


def test_vectorize_folder_takes_class_rasters_by_tag(cli, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    a = _scene()
    _class_raster(pred / "scene_one.tif", a)  # any name: the tag says what it is
    _prob_raster(pred / "scene_one_probabilities.tif", a)
    write_scene(pred / "photo.tif", random_image(20, 20, seed=1))  # not a class raster
    r = cli("vectorize", pred, "-o", tmp_path / "out.gpkg", "--json")
    assert r.code == 0, r.err
    assert [x["source"] for x in json.loads(r.out)["rasters"]] == [str(pred / "scene_one.tif")]
    empty = tmp_path / "photos"
    empty.mkdir()
    write_scene(empty / "photo.tif", random_image(20, 20, seed=2))
    r = cli("vectorize", empty, "-o", tmp_path / "x.gpkg")
    assert r.code == 1 and "no class raster" in r.err and str(empty) in r.err


def test_predict_json_keeps_urls_verbatim(cli, monkeypatch, tmp_path):
    import aerialct.cli.predict as cli_predict

    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: oracle_bundle(32))
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "2")
    url = "http://127.0.0.1:9/tiles/a.tif?token=secret"
    good = tmp_path / "g.tif"
    write_scene(good, random_image(40, 40, seed=3))
    r = cli("predict", "x.pt", url, good, "-o", tmp_path / "o", "--json")
    assert r.code == 3
    scenes = [s["scene"] for s in json.loads(r.out)["scenes"]]
    assert scenes == ["http://127.0.0.1:9/tiles/a.tif", str(good)]  # no "http:/", no token
