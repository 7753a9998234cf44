import json

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from aerialct.classes import POTSDAM
from aerialct.errors import InputError, OutputExistsError
from aerialct.evaluate import evaluate, evaluate_buildings, evaluate_pixels, match_buildings
from aerialct.geo.vector import list_layers

K = len(POTSDAM)
CRS = "EPSG:32633"


def write_raster(path, arr, *, origin=(500000.0, 5800000.0), px=0.5, crs=CRS, tag=True):
    arr = np.asarray(arr, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype="uint8",
        crs=crs,
        transform=from_origin(*origin, px, px),
        nodata=255 if arr.shape[0] == 1 else None,
    ) as ds:
        ds.write(arr)
        if tag:
            ds.update_tags(AERIALCT_CLASSES=json.dumps(POTSDAM.to_list()))
    return path


def random_pair(seed, shape=(53, 47)):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, K, size=shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.6, ref, rng.integers(0, K, size=shape)).astype(np.uint8)
    ref[rng.random(shape) < 0.1] = 255
    pred[rng.random(shape) < 0.03] = 255
    return pred, ref


def direct_scores(pred, ref, exclude=("clutter",)):
    """Per-pixel reference computation, independent of aerialct.evaluate.metrics."""
    p, r = pred.ravel(), ref.ravel()
    valid = (p != 255) & (r != 255)
    p, r = p[valid], r[valid]
    out = {}
    ious = []
    for c, name in enumerate(POTSDAM.names):
        tp = np.sum((p == c) & (r == c))
        fp = np.sum((p == c) & (r != c))
        fn = np.sum((p != c) & (r == c))
        iou = tp / (tp + fp + fn) if tp + fp + fn else np.nan
        out[name] = {"iou": iou, "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan}
        if name not in exclude and tp + fp + fn:
            ious.append(iou)
    return out, float(np.mean(ious)), float(np.mean(p == r)), int(valid.sum())


def test_pixel_scores_match_direct_computation_in_blocks(tmp_path):
    pred, ref = random_pair(0)
    write_raster(tmp_path / "p.tif", pred)
    write_raster(tmp_path / "r.tif", ref)
    res = evaluate_pixels([(tmp_path / "p.tif", tmp_path / "r.tif")], rows_per_block=7)
    per_class, miou, oa, n = direct_scores(pred, ref)
    assert res.scores.pixels == n
    assert res.scores.mean_iou == pytest.approx(miou)
    assert res.scores.overall_accuracy == pytest.approx(oa)
    for name in POTSDAM.names:
        assert res.scores.per_class[name]["iou"] == pytest.approx(per_class[name]["iou"])
        assert res.scores.per_class[name]["f1"] == pytest.approx(per_class[name]["f1"])
    assert res.unpredicted == int(((ref != 255) & (pred == 255)).sum())
    assert res.scores.excluded == ["clutter"]
    everything = evaluate_pixels([(tmp_path / "p.tif", tmp_path / "r.tif")], exclude=[])
    assert everything.scores.mean_iou == pytest.approx(direct_scores(pred, ref, ())[1])
    with pytest.raises(InputError, match="unknown class 'roads'"):
        evaluate_pixels([(tmp_path / "p.tif", tmp_path / "r.tif")], exclude=["roads"])


def test_grid_mismatch_says_how(tmp_path):
    pred, ref = random_pair(1)
    write_raster(tmp_path / "p.tif", pred)
    write_raster(tmp_path / "r.tif", ref[:, :-1])
    with pytest.raises(InputError, match=r"grids differ \(size 47x53 vs 46x53\).*gdalwarp"):
        evaluate(tmp_path / "p.tif", tmp_path / "r.tif")
    write_raster(tmp_path / "shifted.tif", ref, origin=(500001.0, 5800000.0))
    with pytest.raises(InputError, match="transform"):
        evaluate(tmp_path / "p.tif", tmp_path / "shifted.tif")
    write_raster(tmp_path / "crs.tif", ref, crs="EPSG:25832")
    with pytest.raises(InputError, match="CRS"):
        evaluate(tmp_path / "p.tif", tmp_path / "crs.tif")


def test_rgb_reference_is_decoded_through_the_legend(tmp_path):
    pred, ref = random_pair(2)
    ref[ref == 255] = 0
    write_raster(tmp_path / "p.tif", pred)
    write_raster(tmp_path / "rgb.tif", POTSDAM.ids_to_rgb(ref), tag=False)
    write_raster(tmp_path / "r.tif", ref)
    a = evaluate(tmp_path / "p.tif", tmp_path / "rgb.tif")
    b = evaluate(tmp_path / "p.tif", tmp_path / "r.tif")
    assert a.scores.confusion == b.scores.confusion


def test_folders_are_matched_by_name_and_summed(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    pairs = [random_pair(s) for s in (3, 4)]
    for i, (p, r) in enumerate(pairs):
        write_raster(tmp_path / "pred" / f"tile{i}.tif", p)
        write_raster(tmp_path / "ref" / f"tile{i}.tif", r)
    write_raster(tmp_path / "ref" / "tile9.tif", pairs[0][1])  # no prediction
    res = evaluate(tmp_path / "pred", tmp_path / "ref", report=tmp_path / "report.json")
    assert len(res.pairs) == 2
    assert res.missing == [str(tmp_path / "ref" / "tile9.tif")]
    allp = np.concatenate([p.ravel() for p, _ in pairs])
    allr = np.concatenate([r.ravel() for _, r in pairs])
    assert res.scores.mean_iou == pytest.approx(direct_scores(allp, allr)[1])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["kind"] == "pixel"
    assert report["mean_iou"] == pytest.approx(res.scores.mean_iou)
    with pytest.raises(OutputExistsError):
        evaluate(tmp_path / "pred", tmp_path / "ref", report=tmp_path / "report.json")


def make_chips(root, pairs):
    """A minimal chips dataset as CONTRACTS.md describes (dataset.json + index.gpkg)."""
    rows = []
    for i, (split, ref) in enumerate(pairs):
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        name = f"scene_r{i * 64}_c0"
        write_raster(root / split / "masks" / f"{name}.tif", ref)
        rows.append(
            {
                "chip_id": name,
                "image": f"{split}/images/{name}.tif",
                "mask": f"{split}/masks/{name}.tif",
                "scene": "scene",
                "split": split,
                "row_off": i * 64,
                "col_off": 0,
                "width": ref.shape[1],
                "height": ref.shape[0],
                "geometry": shapely.box(0, 0, 1, 1),
            }
        )
    gpd.GeoDataFrame(rows, crs=CRS).to_file(root / "index.gpkg", layer="chips")
    (root / "dataset.json").write_text(
        json.dumps({"format": "aerialct-chips", "version": 1, "classes": POTSDAM.to_list()})
    )


def test_chips_index_mode(tmp_path):
    chips = tmp_path / "chips"
    data = [("test", random_pair(5)), ("test", random_pair(6)), ("train", random_pair(7))]
    make_chips(chips, [(split, ref) for split, (_, ref) in data])
    preds = tmp_path / "preds"
    preds.mkdir()
    for i, (_, (p, _)) in enumerate(data):
        suffix = "_classes" if i == 1 else ""  # as aerialct predict names its outputs
        write_raster(preds / f"scene_r{i * 64}_c0{suffix}.tif", p)
    res = evaluate(preds, index=chips / "index.gpkg", split="test")
    assert len(res.pairs) == 2
    allp = np.concatenate([data[i][1][0].ravel() for i in (0, 1)])
    allr = np.concatenate([data[i][1][1].ravel() for i in (0, 1)])
    assert res.scores.mean_iou == pytest.approx(direct_scores(allp, allr)[1])
    assert len(evaluate(preds, index=chips, split=None).pairs) == 3
    with pytest.raises(InputError, match="no chip in split 'val'"):
        evaluate(preds, index=chips, split="val")


def box(x, y, w=10.0, h=10.0):
    return shapely.box(x, y, x + w, y + h)


def write_polys(path, geoms, crs=CRS):
    gpd.GeoDataFrame({"id": np.arange(len(geoms))}, geometry=list(geoms), crs=crs).to_file(path)
    return path


def test_building_perfect_shifted_split_merged(tmp_path):
    ref = [box(0, 0), box(100, 0), box(200, 0), box(300, 0), box(320, 0)]
    pred = [
        box(0, 0),  # perfect
        box(102, 0),  # shifted by 2 of 10: IoU 8/12
        box(200, 0, w=5),  # split: two halves, IoU 0.5 each
        box(205, 0, w=5),
        box(300, 0, w=30),  # merged: covers two references, IoU 1/3 each
    ]
    r = evaluate_buildings(
        write_polys(tmp_path / "p.gpkg", pred),
        write_polys(tmp_path / "r.gpkg", ref),
        review=tmp_path / "review.gpkg",
    )
    # matches: perfect, shifted, exactly one split half (IoU 0.5 >= 0.5); merged fails
    assert (r.true_positives, r.false_positives, r.false_negatives) == (3, 2, 2)
    assert r.precision == pytest.approx(3 / 5)
    assert r.recall == pytest.approx(3 / 5)
    assert r.f1 == pytest.approx(3 / 5)
    assert r.mean_iou == pytest.approx((1 + 8 / 12 + 0.5) / 3)
    assert set(list_layers(tmp_path / "review.gpkg")) == {"tp", "fp", "fn"}
    fn = pyogrio.read_dataframe(tmp_path / "review.gpkg", layer="fn")
    assert sorted(fn["ref_index"]) == [3, 4]
    assert fn["best_iou"].to_numpy() == pytest.approx([1 / 3, 1 / 3])
    perfect = evaluate_buildings(tmp_path / "r.gpkg", tmp_path / "r.gpkg")
    assert perfect.f1 == 1.0 and perfect.mean_iou == 1.0
    # a lower threshold lets the merged prediction take one reference
    low = evaluate_buildings(tmp_path / "p.gpkg", tmp_path / "r.gpkg", iou_threshold=0.3)
    assert low.true_positives == 4


def test_matching_is_greedy_by_highest_iou():
    ref = np.array([box(0, 0), box(9, 0)], dtype=object)
    # pred 0: ref 0 IoU 9/11, ref 1 IoU 1/19; pred 1: ref 0 IoU 1/3, ref 1 IoU 6/14
    pred = np.array([box(1, 0), box(5, 0)], dtype=object)
    pi, ri, iou, best_pred, best_ref = match_buildings(pred, ref, 0.1)
    assert list(zip(pi.tolist(), ri.tolist(), strict=True)) == [(0, 0), (1, 1)]
    assert iou[0] == pytest.approx(9 / 11)
    assert iou[1] == pytest.approx(6 / 14)
    assert best_ref[0] == pytest.approx(9 / 11)
    assert best_pred[1] == pytest.approx(6 / 14)
    with pytest.raises(InputError):
        match_buildings(pred, ref, 0.0)


def test_building_crs_is_reprojected(tmp_path):
    ref = [box(500000, 5800000), box(500100, 5800000)]
    pred = gpd.GeoSeries(ref, crs=CRS).to_crs("EPSG:4326")
    r = evaluate_buildings(
        write_polys(tmp_path / "p.gpkg", pred, crs="EPSG:4326"),
        write_polys(tmp_path / "r.gpkg", ref),
    )
    assert r.reprojected
    assert r.true_positives == 2 and r.mean_iou > 0.999


def test_cli_evaluate(cli, tmp_path):
    pred, ref = random_pair(8)
    write_raster(tmp_path / "p.tif", pred)
    write_raster(tmp_path / "r.tif", ref)
    r = cli("evaluate", tmp_path / "p.tif", tmp_path / "r.tif", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["mean_iou"] == pytest.approx(direct_scores(pred, ref)[1])
    r = cli("evaluate", tmp_path / "p.tif", tmp_path / "r.tif", "--exclude", "none")
    assert r.code == 0 and "mean IoU" in r.out and "confusion" in r.out
    r = cli("evaluate", tmp_path / "p.tif")
    assert r.code == 2
    for bad in ("1.5", "0", "-0.1"):
        r = cli("evaluate", tmp_path / "p.tif", tmp_path / "r.tif", "--iou-threshold", bad)
        assert r.code == 2 and "--iou-threshold" in r.err, (bad, r.err)
    write_polys(tmp_path / "b.gpkg", [box(0, 0)])
    r = cli("evaluate", tmp_path / "b.gpkg", tmp_path / "p.tif")
    assert r.code == 1 and "vectorise the raster first" in r.err
    r = cli("evaluate", tmp_path / "b.gpkg", tmp_path / "b.gpkg", "--report", tmp_path / "x.json")
    assert r.code == 0 and "F1" in r.out
    assert json.loads((tmp_path / "x.json").read_text())["f1"] == 1.0
    r = cli("evaluate", tmp_path / "b.gpkg", tmp_path / "b.gpkg", "--report", tmp_path / "x.json")
    assert r.code == 1 and "--overwrite" in r.err
