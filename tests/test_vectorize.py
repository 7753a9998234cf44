import json
import math

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from scipy import ndimage

from aerialct.classes import POTSDAM, ClassInfo, ClassTable
from aerialct.errors import InputError, OutputExistsError
from aerialct.geo.vector import list_layers
from aerialct.vectorize import regularize_polygons, trace_polygons, vectorize
from aerialct.vectorize.geometry import canonical
from aerialct.vectorize.merge import union_find

PX = 0.5  # metres per pixel
ORIGIN = (500000.0, 5800000.0)
BUILDING = POTSDAM.id_of("building")
CAR = POTSDAM.id_of("car")


def write_classes(path, arr, table=POTSDAM, crs="EPSG:32633", px=PX):
    h, w = arr.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype="uint8",
        crs=crs,
        transform=from_origin(*ORIGIN, px, px),
        nodata=255,
    ) as ds:
        ds.write(arr.astype(np.uint8), 1)
        if table is not None:
            ds.update_tags(AERIALCT_CLASSES=json.dumps(table.to_list()))
    return path


def read(path, layer=None):
    return pyogrio.read_dataframe(path, layer=layer)


def blank(h=60, w=80):
    return np.zeros((h, w), dtype=np.uint8)  # 0 = impervious surfaces


def test_rectangles_areas_perimeters_and_attributes(tmp_path):
    a = blank()
    a[5:15, 10:30] = BUILDING  # 10 x 20 px = 50 m², perimeter 30 m
    a[30:34, 50:53] = BUILDING  # 4 x 3 px = 3 m², perimeter 7 m
    a[40:50, 5:10] = CAR  # not a building
    a[55:58, 70:80] = 255  # nodata
    src = write_classes(tmp_path / "c.tif", a)
    r = vectorize(src, tmp_path / "b.gpkg")
    assert r.count == 2 and r.layer == "building" and r.driver == "GPKG"
    f = read(tmp_path / "b.gpkg", "building")
    assert f.crs.to_epsg() == 32633
    f = f.sort_values("area", ascending=False)
    assert f["area"].tolist() == pytest.approx([50.0, 3.0])
    assert f["perimeter"].tolist() == pytest.approx([30.0, 7.0])
    assert f["pixels"].tolist() == [200, 12]
    assert set(f["class"]) == {"building"}
    assert sorted(f["id"]) == [1, 2]
    assert set(f["source"]) == {str(src)}
    assert f.geometry.is_valid.all()
    # map coordinates: the first building's bounds follow from the transform
    big = f.geometry.iloc[0]
    x0, y0 = ORIGIN
    assert big.bounds == pytest.approx((x0 + 10 * PX, y0 - 15 * PX, x0 + 30 * PX, y0 - 5 * PX))
    assert r.total_area == pytest.approx(53.0)


def test_holes_and_fill_holes(tmp_path):
    a = blank()
    a[10:30, 10:30] = BUILDING  # 400 px
    a[15:19, 15:19] = 0  # 16 px hole = 4 m²
    a[22:24, 22:23] = 0  # 2 px hole = 0.5 m²
    src = write_classes(tmp_path / "c.tif", a)
    vectorize(src, tmp_path / "keep.gpkg")
    g = read(tmp_path / "keep.gpkg").geometry.iloc[0]
    assert g.area == pytest.approx((400 - 18) * PX * PX)
    assert len(shapely.get_parts(g)[0].interiors) == 2
    vectorize(src, tmp_path / "fill.gpkg", fill_holes=1.0)
    g = read(tmp_path / "fill.gpkg").geometry.iloc[0]
    assert g.area == pytest.approx((400 - 16) * PX * PX)  # small hole filled, big kept
    assert len(shapely.get_parts(g)[0].interiors) == 1


def test_touching_and_diagonal_pixels(tmp_path):
    a = blank(20, 20)
    a[2:6, 2:6] = BUILDING
    a[2:6, 6:9] = BUILDING  # shares an edge with the first: one component
    a[10, 10] = BUILDING
    a[11, 11] = BUILDING  # diagonal neighbour
    a[12, 11] = CAR  # another class touching the building does not join it
    src = write_classes(tmp_path / "c.tif", a)
    r8 = vectorize(src, tmp_path / "b8.gpkg", connectivity=8)
    r4 = vectorize(src, tmp_path / "b4.gpkg", connectivity=4)
    assert r8.count == 2
    assert r4.count == 3
    f8 = read(tmp_path / "b8.gpkg").sort_values("area")
    assert f8["area"].tolist() == pytest.approx([2 * PX * PX, 28 * PX * PX])
    diag = f8.geometry.iloc[0]
    assert diag.is_valid and len(shapely.get_parts(diag)) == 2
    both = vectorize(src, tmp_path / "both.gpkg", classes=["building", str(CAR)])
    f = read(tmp_path / "both.gpkg", "classes")
    assert both.count_by_class == {"building": 2, "car": 1}
    assert sorted(f["class"]) == ["building", "building", "car"]


@pytest.mark.parametrize("connectivity", [8, 4])
def test_windows_give_identical_polygons(tmp_path, connectivity):
    rng = np.random.default_rng(3)
    a = blank(97, 131)
    a[rng.random(a.shape) < 0.35] = BUILDING
    for _ in range(12):  # larger buildings, many crossing window borders
        r, c = rng.integers(0, 80), rng.integers(0, 110)
        a[r : r + rng.integers(5, 30), c : c + rng.integers(5, 40)] = BUILDING
    a[40:60, 40:90] = BUILDING
    a[45:55, 50:80] = 0  # a courtyard crossing seams
    src = write_classes(tmp_path / "c.tif", a)
    structure = np.ones((3, 3)) if connectivity == 8 else None
    expected = ndimage.label(a == BUILDING, structure=structure)[1]
    results = {}
    for ws in (1000, 64, 33, 16):
        out = tmp_path / f"w{ws}.gpkg"
        r = vectorize(src, out, window_size=ws, connectivity=connectivity)
        f = read(out)
        assert r.count == expected == len(f)
        assert f.geometry.is_valid.all()
        assert f["pixels"].sum() == int((a == BUILDING).sum())
        results[ws] = f
        if ws < 1000:
            assert r.seam_merges > 0
    base = np.asarray(results[1000].geometry.values)
    for ws, f in results.items():
        assert (f["id"].to_numpy() == results[1000]["id"].to_numpy()).all()
        same = shapely.equals_exact(base, np.asarray(f.geometry.values), tolerance=0)
        assert same.all(), f"window {ws}: {(~same).sum()} polygons differ"


@pytest.mark.parametrize("connectivity", [8, 4])
def test_tracer_agrees_with_gdal_polygonize(connectivity):
    """Golden values from an independent tool: GDAL's polygoniser via rasterio."""
    from rasterio.features import shapes
    from shapely.geometry import shape

    rng = np.random.default_rng(11)
    structure = np.ones((3, 3)) if connectivity == 8 else None
    for _ in range(25):
        h, w = rng.integers(1, 50, size=2)
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        labels = ndimage.label(mask, structure=structure)[0].astype(np.int32)
        gdal = [shape(g) for g, _ in shapes(labels, mask=mask, connectivity=connectivity)]
        traced = trace_polygons(mask, connectivity, offset=(3, 7))
        ours = shapely.transform(traced.polygons, lambda xy: xy - [3, 7])
        a = sorted(g.wkt for g in canonical(np.array(gdal, dtype=object)))
        b = sorted(g.wkt for g in canonical(ours))
        assert a == b
        # border maps name the polygon that holds each edge pixel
        polys = shapely.make_valid(ours)
        rows, cols = np.arange(h), np.arange(w)
        for border, pixels, xs, ys in (
            (traced.top, mask[0], cols, np.zeros(w)),
            (traced.bottom, mask[-1], cols, np.full(w, h - 1)),
            (traced.left, mask[:, 0], np.zeros(h), rows),
            (traced.right, mask[:, -1], np.full(h, w - 1), rows),
        ):
            assert ((border > 0) == pixels).all()
            on = border > 0
            inside = shapely.contains_xy(polys[border[on] - 1], xs[on] + 0.5, ys[on] + 0.5)
            assert inside.all()


def test_union_find_joins_pairs_to_the_smallest_label():
    rng = np.random.default_rng(2)
    n = 200
    pairs = rng.integers(1, n + 1, size=(150, 2))
    root = union_find(pairs, n)
    parent = list(range(n + 1))  # a plain sequential union-find as the reference

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected = [find(i) for i in range(n + 1)]
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(expected):
        groups.setdefault(r, []).append(i)
    for members in groups.values():
        assert set(root[members].tolist()) == {min(members)}


def test_morphology_is_window_independent(tmp_path):
    rng = np.random.default_rng(5)
    a = blank(70, 70)
    a[10:40, 10:45] = BUILDING
    a[rng.random(a.shape) < 0.03] = BUILDING  # salt noise
    src = write_classes(tmp_path / "c.tif", a)
    whole = vectorize(src, tmp_path / "whole.gpkg", morph=["open:1"])
    tiled = vectorize(src, tmp_path / "tiled.gpkg", morph=["open:1"], window_size=16)
    assert whole.count == tiled.count == 1  # isolated pixels removed by the opening
    g1 = read(tmp_path / "whole.gpkg").geometry.iloc[0]
    g2 = read(tmp_path / "tiled.gpkg").geometry.iloc[0]
    assert g1.equals_exact(g2, 0)
    # closing then opening (a halo of 6 pixels) on the noisy raster, against scipy directly
    ops = ["close:2", "open:1"]
    ref_mask = ndimage.binary_opening(
        ndimage.binary_closing(a == BUILDING, np.ones((3, 3)), iterations=2),
        np.ones((3, 3)),
        iterations=1,
    )
    expected = ndimage.label(ref_mask, structure=np.ones((3, 3)))[1]
    frames = []
    for ws in (1000, 16, 23):
        r = vectorize(src, tmp_path / f"m{ws}.gpkg", morph=ops, window_size=ws)
        assert r.count == expected
        frames.append(read(tmp_path / f"m{ws}.gpkg"))
        assert frames[-1]["pixels"].sum() == int(ref_mask.sum())
    for f in frames[1:]:
        same = shapely.equals_exact(
            np.asarray(frames[0].geometry.values), np.asarray(f.geometry.values), tolerance=0
        )
        assert same.all()
    with pytest.raises(InputError, match="OP:RADIUS"):
        vectorize(src, tmp_path / "x.gpkg", morph=["smooth:2"])


def test_min_area_simplify_regularize(tmp_path):
    a = blank(120, 120)
    a[2:4, 2:4] = BUILDING  # 1 m²
    # a rotated rectangle (30 degrees), 40 x 20 px, drawn on the pixel grid
    yy, xx = np.mgrid[0:120, 0:120] + 0.5
    cx, cy, t = 70.0, 70.0, math.radians(30)
    u = (xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)
    v = -(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)
    a[(np.abs(u) <= 20) & (np.abs(v) <= 10)] = BUILDING
    src = write_classes(tmp_path / "c.tif", a)
    r = vectorize(src, tmp_path / "m.gpkg", min_area=2.0)
    assert r.count == 1 and r.dropped_small == 1
    raw = read(tmp_path / "m.gpkg").geometry.iloc[0]
    vectorize(src, tmp_path / "s.gpkg", min_area=2.0, simplify=1.0)
    simple = read(tmp_path / "s.gpkg").geometry.iloc[0]
    n_raw, n_simple = shapely.get_num_coordinates(raw), shapely.get_num_coordinates(simple)
    assert n_simple < n_raw / 3
    assert simple.area == pytest.approx(raw.area, rel=0.05)
    vectorize(src, tmp_path / "r.gpkg", min_area=2.0, regularize=True)
    reg = read(tmp_path / "r.gpkg").geometry.iloc[0]
    assert reg.is_valid
    ring = np.asarray(shapely.get_parts(reg)[0].exterior.coords)
    assert len(ring) == 5  # a rectangle
    d = np.diff(ring, axis=0)
    for k in range(4):
        e1, e2 = d[k], d[(k + 1) % 4]
        cos = abs(e1 @ e2) / (np.linalg.norm(e1) * np.linalg.norm(e2))
        assert cos < 1e-9  # right angles
    angle = math.degrees(math.atan2(d[0][1], d[0][0])) % 90
    assert min(abs(angle - 30), abs(angle - 60)) < 3  # along the building's direction
    assert reg.area == pytest.approx(40 * 20 * PX * PX, rel=0.08)


def test_regularize_keeps_an_l_shape():
    l_shape = shapely.Polygon([(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)])
    out = regularize_polygons(np.array([l_shape], dtype=object), 0.1)[0]
    assert shapely.equals(shapely.normalize(out), shapely.normalize(l_shape))


def test_probabilities_give_confidence(tmp_path):
    a = blank(30, 30)
    a[5:10, 5:10] = BUILDING
    a[20:25, 20:28] = BUILDING
    src = write_classes(tmp_path / "c.tif", a)
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, size=(len(POTSDAM), 30, 30)).astype(np.uint8)
    with rasterio.open(
        tmp_path / "p.tif",
        "w",
        driver="GTiff",
        width=30,
        height=30,
        count=len(POTSDAM),
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(*ORIGIN, PX, PX),
    ) as ds:
        ds.write(probs)
        ds.update_tags(AERIALCT_PROB_SCALE="255")
    vectorize(src, tmp_path / "b.gpkg", probabilities=tmp_path / "p.tif", window_size=16)
    f = read(tmp_path / "b.gpkg").sort_values("area")
    band = probs[BUILDING].astype(float) / 255
    small, big = band[5:10, 5:10], band[20:25, 20:28]
    assert f["mean_confidence"].tolist() == pytest.approx([small.mean(), big.mean()])
    assert f["min_confidence"].tolist() == pytest.approx([small.min(), big.min()])
    # a probability raster on another grid is refused with the difference spelled out
    write_classes(tmp_path / "other.tif", np.zeros((31, 30)))
    with pytest.raises(
        InputError, match=r"other.tif and .*p.tif: grids differ \(size 30x31 vs 30x30\)"
    ):
        vectorize(tmp_path / "other.tif", tmp_path / "x.gpkg", probabilities=tmp_path / "p.tif")


def test_overwrite_append_and_formats(tmp_path):
    a = blank(20, 20)
    a[2:5, 2:5] = BUILDING
    a[10:12, 10:15] = CAR
    src = write_classes(tmp_path / "c.tif", a)
    out = tmp_path / "b.gpkg"
    vectorize(src, out)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        vectorize(src, out)
    vectorize(src, out, classes=["car"], append=True)  # a new layer
    assert sorted(list_layers(out)) == ["building", "car"]
    src2 = write_classes(tmp_path / "d.tif", a)
    vectorize(src2, out, append=True)  # more features in the same layer, ids continue
    assert read(out, "building")["id"].tolist() == [1, 2]
    with pytest.raises(InputError, match="already holds the polygons of"):
        vectorize(src, out, append=True)  # the same raster again would duplicate polygons
    assert read(out, "building")["id"].tolist() == [1, 2]
    vectorize(src, out, overwrite=True)
    assert list_layers(out) == ["building"]
    for suffix in (".geojson", ".fgb"):
        r = vectorize(src, tmp_path / f"b{suffix}")
        assert len(read(tmp_path / f"b{suffix}")) == r.count == 1
    with pytest.raises(InputError, match="extension"):
        vectorize(src, tmp_path / "b.shpx")
    assert not list(tmp_path.glob("*aerialct-tmp*"))


def test_class_names_come_from_the_raster_tag(tmp_path):
    table = ClassTable((ClassInfo(0, "ground", (0, 0, 0)), ClassInfo(1, "roof", (255, 0, 0))))
    a = np.zeros((10, 10), dtype=np.uint8)
    a[2:5, 2:5] = 1
    src = write_classes(tmp_path / "c.tif", a, table=table)
    with pytest.raises(InputError, match="unknown class 'building'"):
        vectorize(src, tmp_path / "b.gpkg")
    r = vectorize(src, tmp_path / "b.gpkg", classes=["roof"])
    assert r.layer == "roof" and r.count == 1


def test_empty_result_writes_an_empty_layer(tmp_path):
    src = write_classes(tmp_path / "c.tif", blank(10, 10))
    r = vectorize(src, tmp_path / "b.gpkg")
    assert r.count == 0
    assert len(read(tmp_path / "b.gpkg")) == 0


def test_cli_vectorize(cli, tmp_path):
    a = blank(20, 20)
    a[2:6, 2:6] = BUILDING
    src = write_classes(tmp_path / "c.tif", a)
    out = tmp_path / "b.gpkg"
    r = cli("vectorize", src, "--out", out, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["count"] == 1
    r = cli("vectorize", src, "--out", out)
    assert r.code == 1 and "--overwrite" in r.err
    r = cli("vectorize", src, "--out", out, "--overwrite", "--append")
    assert r.code == 2
    r = cli("vectorize", src, "--out", out, "--overwrite", "--morph", "blur:1")
    assert r.code == 2 and "--morph" in r.err
    for bad in (["--connectivity", "6"], ["--window-size", "8"], ["--min-area", "-1"],
                ["--format", "shp"]):  # fmt: skip
        r = cli("vectorize", src, "--out", out, "--overwrite", *bad)
        assert r.code == 2 and bad[0] in r.err, (bad, r.err)
    r = cli("vectorize", src, "--out", out, "--overwrite", "--class", "castle")
    assert r.code == 1 and "unknown class 'castle'" in r.err
    r = cli("vectorize", tmp_path / "missing.tif", "--out", tmp_path / "m.gpkg")
    assert r.code == 1 and "no such file" in r.err
    r = cli("vectorize", src, "--out", out, "--overwrite", "--min-area", "1", "--simplify", "0.5")
    assert r.code == 0 and "building" in r.out


def test_many_rasters_in_one_process(cli, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(3):
        a = blank(20, 20)
        a[2 : 5 + i, 2:5] = BUILDING
        a[10:12, 10:15] = BUILDING
        write_classes(pred / f"s{i}_classes.tif", a)
    r = cli("vectorize", pred, "-o", tmp_path / "all.gpkg", "--json")
    assert r.code == 0, r.err
    frame = read(tmp_path / "all.gpkg")
    assert frame["id"].tolist() == list(range(1, 7))
    assert sorted(set(frame["source"])) == sorted(str(p) for p in pred.glob("*.tif"))
    r = cli("vectorize", f"{pred}/s*_classes.tif", "-o", tmp_path / "each", "--format", "fgb")
    assert r.code == 0, r.err
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == [
        "s0_classes.fgb", "s0_classes.stac.json", "s1_classes.fgb", "s1_classes.stac.json",
        "s2_classes.fgb", "s2_classes.stac.json",
    ]  # fmt: skip
    # one broken raster: reported, the others written, exit 3
    write_raster_rgb = np.zeros((3, 8, 8), np.uint8)
    with rasterio.open(pred / "rgb.tif", "w", driver="GTiff", width=8, height=8, count=3,
                       dtype="uint8") as ds:  # fmt: skip
        ds.write(write_raster_rgb)
    r = cli("vectorize", pred, "-o", tmp_path / "tagged.gpkg")  # a folder: class rasters only
    assert r.code == 0 and len(read(tmp_path / "tagged.gpkg")) == 6, r.err
    r = cli("vectorize", f"{pred}/*.tif", "-o", tmp_path / "partial.gpkg")
    assert r.code == 3 and "rgb.tif" in r.err
    assert len(read(tmp_path / "partial.gpkg")) == 6
    # several CRSs cannot share one layer
    other = tmp_path / "utm32"
    other.mkdir()
    write_classes(other / "x_classes.tif", blank(8, 8), crs="EPSG:32632")
    r = cli(
        "vectorize", pred / "s0_classes.tif", other / "x_classes.tif", "-o", tmp_path / "m.gpkg"
    )
    assert r.code == 1 and "one layer holds one CRS" in r.err
    assert not (tmp_path / "m.gpkg").exists()


def test_the_vectorize_command_does_not_load_pandas(tmp_path):
    """Shell loops pay start-up per file: the verb skips pyogrio's pandas imports."""
    import subprocess
    import sys

    a = blank(20, 20)
    a[2:5, 2:5] = BUILDING
    src = write_classes(tmp_path / "c.tif", a)
    code = (
        "import sys, atexit; "
        "atexit.register(lambda: print('HEAVY', [m for m in ('pandas', 'geopandas') "
        "if m in sys.modules])); "
        f"sys.argv = ['aerialct', 'vectorize', {str(src)!r}, '-o', {str(tmp_path / 'b.gpkg')!r}]; "
        "from aerialct.cli.main import main; main()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert len(read(tmp_path / "b.gpkg")) == 1
