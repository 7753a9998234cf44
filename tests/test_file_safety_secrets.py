"""Secrets stay out of outputs: signed URLs and credentials, read from a real HTTP server.

A server on 127.0.0.1 (a thread of this test) serves rasters and GeoPackages by byte
ranges, as object stores do, and answers only requests that carry ``token=SECRET``, so
each verb really reads through the signed URL. The token, and the password of a
``user:password@`` URL, must then appear in no output file (rasters, tags, sidecars,
layers, ``dataset.json``, reports), in no ``--json`` and in no line on stderr; every
path is still shown verbatim otherwise (``http://``, not ``http:/``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from http_helpers import RangeHandler, serve
from predict_helpers import oracle_bundle, random_image, write_scene
from safety_helpers import start

from aerialct.classes import POTSDAM

SECRET = "SECRET9f3b"
PASSWORD = "hunter2pw"


class _Ranges(RangeHandler):
    """Files of one folder by byte ranges; 403 without the token."""

    def allowed(self) -> bool:
        return SECRET in self.path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(folder served, base URL)``: an HTTP server on 127.0.0.1 in a thread."""
    root = tmp_path_factory.mktemp("served")
    with serve(root, _Ranges) as url:
        yield root, url


@pytest.fixture
def gdal_http(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")


def secret_free(*texts: str, folder: Path | None = None) -> None:
    for text in texts:
        assert SECRET not in text and PASSWORD not in text, text
    if folder is not None:
        for f in folder.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert SECRET.encode() not in data and PASSWORD.encode() not in data, f


def test_predict_from_a_signed_url_keeps_the_token_out(
    cli, server, gdal_http, tmp_path, monkeypatch
):
    import aerialct.cli.predict as cli_predict

    root, base = server
    write_scene(root / "scene.tif", random_image(48, 48, seed=1))
    import geopandas as gpd
    from shapely.geometry import box

    with rasterio.open(root / "scene.tif") as ds:
        gpd.GeoDataFrame(geometry=[box(*ds.bounds)], crs=ds.crs).to_file(root / "aoi.gpkg")
    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: oracle_bundle(32))
    url = f"/vsicurl/{base}/scene.tif?token={SECRET}"
    aoi = f"/vsicurl/{base}/aoi.gpkg?token={SECRET}"
    out = tmp_path / "pred"
    r = cli("predict", "x.pt", url, "--out", out, "--probabilities", "--quicklook", "--aoi", aoi,
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    secret_free(r.out, r.err, folder=out)
    doc = json.loads(r.out)
    assert doc["scenes"][0]["scene"] == f"/vsicurl/{base}/scene.tif"  # verbatim, without secrets
    with rasterio.open(out / "scene_classes.tif") as ds:
        assert (
            ds.tags()["AERIALCT_SOURCE"] == f"/vsicurl/{base}/scene.tif"
        )  # the path, without secrets
    item = json.loads((out / "scene.stac.json").read_text())  # the STAC Item names it too
    assert item["properties"]["aerialct:source"] == f"/vsicurl/{base}/scene.tif"
    # scenes that fail: each error shows its URL whole (https://, not https:/), without
    # the token or the password, in the table, in --json and in the one-line summary
    gone = f"https://user:{PASSWORD}@127.0.0.1:1/dir/gone.tif?token={SECRET}"
    r = cli("predict", "x.pt", url, gone, "--out", tmp_path / "p3", "--json")
    assert r.code == 3, r.err
    secret_free(r.out, r.err, folder=tmp_path / "p3")
    failed = json.loads(r.out)["scenes"][1]
    assert failed["scene"] == "https://127.0.0.1:1/dir/gone.tif", failed
    assert "https://127.0.0.1:1/dir/gone.tif: not a readable raster" in failed["error"], failed
    assert "1 of 2 scenes failed: gone.tif" in r.err, r.err
    r = cli("predict", "x.pt", url, gone, "--out", tmp_path / "p4")
    assert r.code == 3 and "https://127.0.0.1:1/dir/gone.tif" in r.out + r.err, r.out
    secret_free(r.out, r.err)
    # credentials in the URL: not in the message about it
    r = cli("predict", "x.pt", f"/vsicurl/http://user:{PASSWORD}@127.0.0.1:1/gone.tif?token={SECRET}",
            "--out", tmp_path / "p2")  # fmt: skip
    assert r.code == 1 and "http://127.0.0.1:1/gone.tif" in r.err, r.err
    secret_free(r.out, r.err)


def test_tile_vectorize_evaluate_from_signed_urls(cli, server, gdal_http, tmp_path):
    import geopandas as gpd
    import pyogrio
    from shapely.geometry import box

    root, base = server
    img = random_image(64, 64, seed=2)
    write_scene(root / "scene.tif", img)
    with rasterio.open(root / "scene.tif") as ds:
        b, crs, transform = ds.bounds, ds.crs, ds.transform
    half = box(b.left, b.bottom, (b.left + b.right) / 2, b.top)
    gpd.GeoDataFrame({"class": ["building"]}, geometry=[half], crs=crs).to_file(root / "fp.gpkg")
    classes = np.zeros((64, 64), np.uint8)
    classes[:, :32] = POTSDAM.id_of("building")
    with rasterio.open(root / "classes.tif", "w", driver="GTiff", width=64, height=64, count=1,
                       dtype="uint8", crs=crs, transform=transform) as ds:  # fmt: skip
        ds.write(classes, 1)
        ds.update_tags(AERIALCT_CLASSES=json.dumps(POTSDAM.to_list()))
    signed = {n: f"/vsicurl/{base}/{n}?token={SECRET}" for n in ("scene.tif", "fp.gpkg",
                                                                  "classes.tif")}  # fmt: skip
    # a process of its own: its whole stderr (logs, GDAL's warnings) is what a log file gets
    p = start(["tile", signed["scene.tif"], "--labels-vector", signed["fp.gpkg"], "--burn",
               "building", "--classes", "buildings", "-o", tmp_path / "chips", "--size", "32",
               "--json"], tmp_path, NO_PROXY="127.0.0.1")  # fmt: skip
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "non conformant file extension" in err  # GDAL's warning names the URL ...
    secret_free(out, err, folder=tmp_path / "chips")  # ... without its token
    meta = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert meta["scenes"][0]["image"] == f"/vsicurl/{base}/scene.tif"
    r = cli("vectorize", signed["classes.tif"], "-o", tmp_path / "b.gpkg", "--json")
    assert r.code == 0, r.err
    secret_free(r.out, r.err, folder=tmp_path)
    assert set(pyogrio.read_dataframe(tmp_path / "b.gpkg", layer="building")["source"]) == {
        f"/vsicurl/{base}/classes.tif"
    }
    assert json.loads(r.out)["source"] == f"/vsicurl/{base}/classes.tif"
    item = json.loads((tmp_path / "b.stac.json").read_text())
    assert item["properties"]["aerialct:source"] == f"/vsicurl/{base}/classes.tif"
    # several signed rasters into one GeoPackage (its styles from their class tables)
    import shutil

    shutil.copy(root / "classes.tif", root / "classes2.tif")
    second = f"/vsicurl/{base}/classes2.tif?token={SECRET}"
    r = cli("vectorize", signed["classes.tif"], second, "-o", tmp_path / "two.gpkg", "--json")
    assert r.code == 0, r.err
    secret_free(r.out, r.err, folder=tmp_path)
    assert len(set(pyogrio.read_dataframe(tmp_path / "two.gpkg", layer="building")["source"])) == 2
    r = cli("evaluate", signed["classes.tif"], signed["fp.gpkg"], "--json",
            "--report", tmp_path / "report.json")  # fmt: skip
    assert r.code == 0, r.err
    secret_free(r.out, r.err, folder=tmp_path)
    assert json.loads(r.out)["pairs"][0]["reference"] == f"/vsicurl/{base}/fp.gpkg"
    # a reference that is not there: the message shows the URL whole, without its token
    r = cli("evaluate", signed["classes.tif"], f"/vsicurl/{base}/none.gpkg?token={SECRET}")
    assert r.code == 1 and f"/vsicurl/{base}/none.gpkg" in r.err, r.err
    secret_free(r.out, r.err)
