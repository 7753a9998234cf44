"""GeoPackages written with sqlite3 (aerialct.geo.gpkg) read back as pyogrio/GDAL's own."""

from __future__ import annotations

import sqlite3

import numpy as np
import pyogrio
import pytest
import shapely

from aerialct.geo.gpkg import check_gpkg, writable
from aerialct.geo.vector import Layer, write_layers

LCC = (
    'PROJCS["custom lcc",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
    'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Lambert_Conformal_Conic_2SP"],'
    'PARAMETER["standard_parallel_1",45.1],PARAMETER["standard_parallel_2",47.3],'
    'PARAMETER["latitude_of_origin",44],PARAMETER["central_meridian",3.3],'
    'PARAMETER["false_easting",700000],PARAMETER["false_northing",6600000],UNIT["metre",1]]'
)


def _layer(crs):
    geoms = np.array(
        [
            shapely.box(0, 0, 2, 1),
            shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (2, 1), (2, 2), (1, 2)]]),
            shapely.MultiPolygon([shapely.box(5, 5, 6, 6), shapely.box(7, 7, 8, 9)]),
            None,
            shapely.Polygon(),
        ],
        dtype=object,
    )
    fields = {
        "id": np.arange(1, 6, dtype=np.int64),
        "class": np.array(["building", "building", "tree", None, "x"], dtype=object),
        "area": np.array([2.0, 15.0, 3.0, np.nan, 0.0]),
        "keep": np.array([True, False, True, True, False]),
    }
    return Layer(geoms, fields, crs)


@pytest.mark.parametrize("crs", ["EPSG:32633", LCC, None], ids=["epsg", "custom", "none"])
def test_sqlite_geopackage_reads_as_pyogrios_own(tmp_path, crs):
    ours, theirs = tmp_path / "ours.gpkg", tmp_path / "theirs.gpkg"
    write_layers(ours, {"building": _layer(crs)})
    # the reference: the same layer through pyogrio (a layer option forces that path)
    write_layers(theirs, {"building": _layer(crs)}, layer_options={"SPATIAL_INDEX": "YES"})
    with sqlite3.connect(theirs) as db:
        version = db.execute("PRAGMA user_version").fetchone()
    with sqlite3.connect(ours) as db:  # written by sqlite3, not by GDAL
        assert db.execute("PRAGMA user_version").fetchone() == version == (10300,)  # 1.3
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "gpkg_ogr_contents" not in tables  # GDAL's own table: GDAL wrote this one
    a = pyogrio.read_dataframe(ours)
    b = pyogrio.read_dataframe(theirs)
    assert list(a.columns) == list(b.columns)
    assert [str(t) for t in a.dtypes] == [str(t) for t in b.dtypes]
    for col in ("id", "class", "area", "keep"):
        assert a[col].tolist() == b[col].tolist() or (
            col == "area" and np.allclose(a[col], b[col], equal_nan=True)
        )
    assert shapely.equals_exact(a.geometry.values[:3], b.geometry.values[:3]).all()
    assert a.geometry.isna().tolist() == b.geometry.isna().tolist()
    assert a.geometry.values[4].is_empty and b.geometry.values[4].is_empty
    assert (a.crs is None) == (crs is None)
    if crs is not None:
        assert a.crs == b.crs
    info = pyogrio.read_info(ours, layer="building")
    assert info["geometry_type"] == "MultiPolygon" and info["features"] == 5
    np.testing.assert_allclose(info["total_bounds"], [0, 0, 8, 9])


def test_rtree_and_its_triggers_follow_edits(tmp_path):
    path = tmp_path / "b.gpkg"
    write_layers(path, {"building": _layer("EPSG:32633")})
    check_gpkg(path)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, minx, maxx, miny, maxy FROM rtree_building_geom").fetchall()
        assert rows == [(1, 0, 2, 0, 1), (2, 0, 4, 0, 4), (3, 5, 8, 5, 9)]
        db.execute("DELETE FROM building WHERE fid = 2")  # the delete trigger needs no ST_ function
        assert db.execute("SELECT count(*) FROM rtree_building_geom").fetchone() == (2,)
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert {f"rtree_building_geom_{t}" for t in ("insert", "update1", "update2", "update3",
                                                  "update4", "delete")} <= names  # fmt: skip
    layers = [name for name, _ in pyogrio.list_layers(path)]
    assert layers == ["building"]


def test_what_the_sqlite_writer_leaves_to_pyogrio():
    assert writable({"a": np.zeros(2, np.int64), "b": np.zeros(2)}, "MultiPolygon")
    assert not writable({"a": np.zeros(2, np.int32)}, "MultiPolygon")  # GDAL: MEDIUMINT
    assert not writable({"a": np.zeros(2, np.float32)}, "MultiPolygon")
    assert not writable({"a": np.array([1, "x"], dtype=object)}, "MultiPolygon")
    assert not writable({"fid": np.zeros(2, np.int64)}, "MultiPolygon")
    assert not writable({}, "CircularString")


def test_check_gpkg_names_a_damaged_file(tmp_path):
    path = tmp_path / "b.gpkg"
    write_layers(path, {"building": _layer(None)})
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # a page of garbage
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="GeoPackage"):
        check_gpkg(path)


@pytest.mark.parametrize("crs", ["EPSG:32633", LCC, None], ids=["epsg", "custom", "none"])
def test_facts_read_with_sqlite_match_pyogrios(tmp_path, crs):
    from pyproj import CRS

    from aerialct.geo.gpkg import read_facts, read_values

    ours, theirs = tmp_path / "ours.gpkg", tmp_path / "theirs.gpkg"
    write_layers(ours, {"building": _layer(crs)})
    write_layers(theirs, {"building": _layer(crs)}, layer_options={"SPATIAL_INDEX": "YES"})
    for path in (ours, theirs):  # written by sqlite3, and by GDAL
        (facts,) = read_facts(path)
        info = pyogrio.read_info(path, layer="building", force_feature_count=True,
                                 force_total_bounds=True)  # fmt: skip
        assert facts["name"] == "building" and facts["features"] == info["features"] == 5
        np.testing.assert_allclose(facts["total_bounds"], info["total_bounds"])
        assert facts["fields"] == list(info["fields"])
        if crs is None:
            assert facts["crs"] is None
        else:
            assert CRS.from_user_input(facts["crs"]) == CRS.from_user_input(info["crs"])
        assert read_values(path, "building", "class") == ["building", "tree", "None", "x"]
    (tmp_path / "not.gpkg").write_text("no database")
    assert read_facts(tmp_path / "not.gpkg") is None
