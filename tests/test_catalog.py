"""A flight is one map: vectorising a catalog of adjacent class rasters, alone or in shards."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from catalog_helpers import city_classes, cut, write_class_raster

from aerialct.shards import Shard
from aerialct.vectorize import vectorize, vectorize_many

ROWS = [0, 170, 340, 512]  # uneven tiles: 170, 170 and 172 rows
COLS = [0, 200, 301, 512]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """A 512 px town at 0.5 m (class raster and 6-band probabilities), whole and cut 3 x 3."""
    d = tmp_path_factory.mktemp("city")
    whole = city_classes(d / "whole.tif", size=512, seed=3)
    with rasterio.open(whole) as ds:
        labels, transform, crs = ds.read(1), ds.transform, ds.crs
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, size=(6, *labels.shape), dtype=np.uint8)
    write_class_raster(d / "whole_probabilities.tif", probs, transform, crs)
    cut(whole, d / "pred", ROWS, COLS, "_classes")
    cut(d / "whole_probabilities.tif", d / "pred", ROWS, COLS, "_probabilities")
    return d


def tiles(city):
    return sorted((city / "pred").glob("*_classes.tif"))


def frame(path):
    from aerialct.geo.vector import list_layers

    return pyogrio.read_dataframe(path, layer=list_layers(path)[0])  # not QGIS's layer_styles


def same_polygons(a, b, columns=("class", "area", "perimeter", "pixels")):
    """The same buildings: count, attributes and geometries (normalised, in any order)."""
    assert len(a) == len(b)
    ka = a.sort_values(["pixels", "area", "perimeter"]).reset_index(drop=True)
    kb = b.sort_values(["pixels", "area", "perimeter"]).reset_index(drop=True)
    ga = shapely.normalize(np.asarray(ka.geometry.values))
    gb = shapely.normalize(np.asarray(kb.geometry.values))
    assert shapely.equals_exact(ga, gb, tolerance=1e-9).all()
    assert shapely.area(shapely.symmetric_difference(ga, gb)).max() < 1e-9
    for c in columns:
        np.testing.assert_array_equal(ka[c].to_numpy(), kb[c].to_numpy(), err_msg=c)


def identical(a, b):
    """The same file content: every row and column, geometries exactly, in the same order."""
    assert list(a.columns) == list(b.columns)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert shapely.equals_exact(
        np.asarray(a.geometry.values), np.asarray(b.geometry.values), 0
    ).all()


@pytest.mark.parametrize("options", [
    {"window_size": 64},
    {"window_size": 48, "morph": ["open:1", "close:2"], "min_area": 3.0, "simplify": 0.3,
     "probabilities": True},
])  # fmt: skip
def test_a_catalog_gives_the_polygons_of_its_mosaic(city, tmp_path, options):
    opts = dict(options)
    with_probs = opts.pop("probabilities", False)
    whole = vectorize(city / "whole.tif", tmp_path / "whole.gpkg",
                      probabilities=city / "whole_probabilities.tif" if with_probs else None,
                      **opts)  # fmt: skip
    batch = vectorize_many(tiles(city), tmp_path / "catalog.gpkg",
                           probabilities=city / "pred" if with_probs else None, **opts)  # fmt: skip
    assert not batch.failed and batch.mosaics == 1
    assert batch.across_files > 5  # buildings over the seams are one polygon each
    columns = ["class", "area", "perimeter", "pixels"]
    if with_probs:
        columns += ["mean_confidence", "min_confidence"]
    same_polygons(frame(tmp_path / "whole.gpkg"), frame(tmp_path / "catalog.gpkg"), columns)
    assert sum(r.count for r in batch.results) == whole.count
    # tile by tile (a folder --out), the seams cut buildings into pieces
    apart = vectorize_many(tiles(city), tmp_path / "apart", **{k: v for k, v in opts.items()})
    assert sum(r.count for r in apart.results) > whole.count


def test_a_missing_tile_is_a_gap_of_the_map(city, tmp_path):
    """Without its middle tile the catalog is the mosaic with nodata there."""
    with rasterio.open(city / "whole.tif") as ds:
        labels, transform, crs = ds.read(1), ds.transform, ds.crs
    labels[ROWS[1] : ROWS[2], COLS[1] : COLS[2]] = 255
    holed = write_class_raster(tmp_path / "holed.tif", labels, transform, crs)
    vectorize(holed, tmp_path / "holed.gpkg", window_size=64)
    rest = [p for p in tiles(city) if p.name != "r1_c1_classes.tif"]
    batch = vectorize_many(rest, tmp_path / "catalog.gpkg", window_size=64)
    assert batch.mosaics == 1 and len(batch.results) == 8
    same_polygons(frame(tmp_path / "holed.gpkg"), frame(tmp_path / "catalog.gpkg"))


def test_shards_joined_equal_one_process(city, tmp_path):
    one = vectorize_many(tiles(city), tmp_path / "one.gpkg", window_size=64)
    assert one.shard is None and not one.waiting
    out = tmp_path / "sharded.gpkg"
    for k in (2, 3, 1):  # any order: the last to finish joins
        part = vectorize_many(tiles(city), out, window_size=64, shard=Shard(k, 3))
        assert part.waiting == (k != 1)
        assert (tmp_path / "sharded.gpkg.parts").is_dir() == (k != 1)
    assert part.parts_joined == 3 and part.across_files == one.across_files
    assert [r.count for r in part.results] == [r.count for r in one.results]
    identical(frame(tmp_path / "one.gpkg"), frame(out))


def test_one_raster_shards_at_rows_of_windows(city, tmp_path):
    """One big raster (a mosaic VRT, say) is split by rows of windows, not by files."""
    src = city / "whole.tif"
    vectorize(src, tmp_path / "whole.gpkg", window_size=64)
    out = tmp_path / "sharded.gpkg"
    for k in range(1, 5):
        batch = vectorize_many([src], out, window_size=64, shard=Shard(k, 4))
    assert batch.parts_joined == 4
    identical(frame(tmp_path / "whole.gpkg"), frame(out))


def test_shards_from_a_slurm_array_on_the_command_line(city, tmp_path, cli, monkeypatch):
    out = tmp_path / "b.gpkg"
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    for task in ("1", "0"):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
        r = cli("vectorize", city / "pred", "--out", out, "--window-size", "64")
        assert r.code == 0, r.err
        assert f"shard {int(task) + 1}/2 from SLURM_ARRAY_TASK_ID" in r.err
    assert "joined 2 parts" in r.err and "buildings joined across file seams" in r.err
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    r = cli("vectorize", city / "pred", "--out", tmp_path / "one.gpkg", "--window-size", "64")
    assert r.code == 0, r.err
    identical(frame(tmp_path / "one.gpkg"), frame(out))


def test_parts_of_another_run_are_never_joined(city, tmp_path):
    out = tmp_path / "b.gpkg"
    vectorize_many(tiles(city), out, window_size=64, shard=Shard(1, 2))
    other = vectorize_many(tiles(city), out, window_size=64, min_area=5.0, shard=Shard(2, 2))
    assert other.waiting and not out.exists()  # part 1 was made with other options
    done = vectorize_many(tiles(city), out, window_size=64, min_area=5.0, shard=Shard(1, 2))
    assert done.parts_joined == 2
    vectorize_many(tiles(city), tmp_path / "one.gpkg", window_size=64, min_area=5.0)
    identical(frame(tmp_path / "one.gpkg"), frame(out))
    # a complete set of parts whose join nobody did (its claimant died elsewhere): a plain
    # run joins them instead of tracing again
    c = tmp_path / "c.gpkg"
    vectorize_many(tiles(city), c, window_size=64, min_area=5.0, shard=Shard(1, 2))
    (tmp_path / "c.gpkg.parts" / "join.claim").write_text("elsewhere 1\n")
    assert vectorize_many(tiles(city), c, window_size=64, min_area=5.0, shard=Shard(2, 2)).waiting
    (tmp_path / "c.gpkg.parts" / "join.claim").unlink()
    assert vectorize_many(tiles(city), c, window_size=64, min_area=5.0).parts_joined == 2
    assert not (tmp_path / "c.gpkg.parts").exists()
    identical(frame(tmp_path / "one.gpkg"), frame(c))


def test_memory_holds_a_band_of_tiles_not_the_catalog(tmp_path, monkeypatch):
    """Buildings are handed out band by band: the open pieces do not grow with the files."""
    from aerialct.vectorize import merge

    peak: list[int] = []
    close = merge.Frontier.close

    def spy(self, keep_bottom=True):
        peak[-1] = max(peak[-1], self.n)
        return close(self, keep_bottom)

    monkeypatch.setattr(merge.Frontier, "close", spy)
    from rasterio.transform import from_origin

    for n in (4, 8):
        labels = np.zeros((64 * n, 64), dtype=np.uint8)
        starts = range(6, 64 * n - 4, 8)  # 4 px buildings, some across the tile seams
        for r in starts:
            for c in range(2, 64, 8):
                labels[r : r + 4, c : c + 4] = 1
        src = write_class_raster(tmp_path / f"strip{n}.tif", labels, from_origin(0, 0, 1, 1),
                                 "EPSG:32633")  # fmt: skip
        paths = cut(src, tmp_path / f"strip{n}", list(range(0, 64 * n + 1, 64)), [0, 64])
        peak.append(0)
        batch = vectorize_many(paths, tmp_path / f"s{n}.gpkg", window_size=32)
        assert batch.mosaics == 1 and batch.across_files == 8 * (n - 1)
        assert sum(r.count for r in batch.results) == len(starts) * 8
    assert peak[1] == peak[0]  # twice the files, the same pieces held at once


def test_rasters_apart_overlapping_or_off_the_grid_stay_apart(city, tmp_path, caplog):
    from affine import Affine

    src = city / "whole.tif"
    with rasterio.open(src) as ds:
        data, t, crs = ds.read(1), ds.transform, ds.crs
    a = write_class_raster(tmp_path / "a.tif", data[:100, :100], t, crs)
    far = write_class_raster(tmp_path / "far.tif", data[:100, 100:200],
                             t * Affine.translation(1000, 0), crs)  # fmt: skip
    batch = vectorize_many([a, far], tmp_path / "apart.gpkg")
    assert batch.mosaics == 2 and batch.across_files == 0
    # overlapping by 10 columns: vectorised apart, with a warning naming both
    over = write_class_raster(tmp_path / "over.tif", data[:100, 90:190],
                              t * Affine.translation(90, 0), crs)  # fmt: skip
    batch = vectorize_many([a, over], tmp_path / "over.gpkg")
    assert batch.mosaics == 2 and "overlap by 1000 px" in caplog.text
    # touching, but half a pixel off the grid: apart, with a warning
    off = write_class_raster(tmp_path / "off.tif", data[:100, 100:200],
                             t * Affine.translation(100.5, 0), crs)  # fmt: skip
    batch = vectorize_many([a, off], tmp_path / "off.gpkg")
    assert batch.mosaics == 2 and "do not share a pixel grid" in caplog.text


def test_a_folder_of_predictions_on_the_command_line(city, tmp_path, cli):
    """predict's folder holds class and probability rasters: the class rasters are vectorised."""
    r = cli("vectorize", city / "pred", "--out", tmp_path / "b.gpkg", "--json")
    assert r.code == 0, r.err
    import json

    doc = json.loads(r.out)
    assert len(doc["rasters"]) == 9 and doc["mosaics"] == 1 and doc["across_files"] > 5
    # the one map, like any vectorize output, carries its QGIS styles and its STAC Item
    from aerialct.styles import read_layer_styles

    assert {s["styleName"] for s in read_layer_styles(tmp_path / "b.gpkg")} == {"by class"}
    item = json.loads((tmp_path / "b.stac.json").read_text())
    assert doc["stac"] == [str(tmp_path / "b.stac.json")]
    assert len(item["properties"]["aerialct:source"]) == 9
    assert item["properties"]["aerialct:layers"] == {"building": len(frame(tmp_path / "b.gpkg"))}
    r = cli("vectorize", city / "pred", "--probabilities", city / "pred",
            "--out", tmp_path / "p.gpkg")  # fmt: skip
    assert r.code == 0, r.err
    assert frame(tmp_path / "p.gpkg")["mean_confidence"].notna().all()
    styles = read_layer_styles(tmp_path / "p.gpkg")
    assert {s["styleName"] for s in styles} == {"by class", "confidence"}
    r = cli("vectorize", city / "pred", "--out", tmp_path / "x.gpkg", "--shard", "3/2")
    assert r.code == 2 and "--shard" in r.err
