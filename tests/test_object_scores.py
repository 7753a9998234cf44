"""Building AP (COCO style): hand-computed values and pycocotools on rasterised masks."""

from __future__ import annotations

import json
import logging

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

from aerialct.evaluate import evaluate_buildings
from aerialct.evaluate.object_scores import average_precision, object_ap

CRS = "EPSG:32633"


def box(x, y, w=10, h=10):
    return shapely.box(x, y, x + w, y + h)


def test_hand_computed_ap():
    # two references; scores 0.9 (hit), 0.8 (miss), 0.7 (hit):
    # recall 1/2, 1/2, 1; precision 1, 1/2, 2/3 -> envelope 1, 2/3, 2/3
    # recall points 0..0.50 (51) read 1, points 0.51..1 (50) read 2/3
    ref = np.array([box(0, 0), box(100, 0)], dtype=object)
    pred = np.array([box(0, 0), box(50, 0), box(100, 0)], dtype=object)
    r = object_ap(pred, ref, np.array([0.9, 0.8, 0.7]))
    assert r.ap50 == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert r.ap == pytest.approx(r.ap50)  # perfect overlaps: the same at every threshold
    # the miss ranked last: precision 1 up to recall 1
    assert object_ap(pred, ref, np.array([0.9, 0.1, 0.7])).ap50 == pytest.approx(1.0)
    # a shifted box (IoU 8/12 = 0.667) counts up to the threshold 0.65, then misses:
    # AP 1 at 0.5..0.65 (4 thresholds), then recall 1/2 at precision 1 -> 51/101
    shifted = np.array([box(0, 0), box(102, 0)], dtype=object)
    r = object_ap(shifted, ref, np.array([0.9, 0.8]))
    assert r.ap50 == pytest.approx(1.0)
    assert r.ap == pytest.approx((4 * 1.0 + 6 * 51 / 101) / 10)
    assert r.ap75 == pytest.approx(51 / 101)
    # no reference: undefined, no prediction: 0
    assert np.isnan(average_precision(np.array([0.5]), 0, *([np.array([], int)] * 2),
                                      np.array([]))).all()  # fmt: skip
    assert object_ap(np.array([], dtype=object), ref, np.array([])).ap == 0.0


def test_a_confident_duplicate_is_a_false_positive():
    ref = np.array([box(0, 0)], dtype=object)
    pred = np.array([box(0, 0), box(0, 0, w=9)], dtype=object)  # IoU 1 and 0.9
    # the higher score takes the reference, whatever its IoU
    r = object_ap(pred, ref, np.array([0.6, 0.9]))
    per = average_precision(
        np.array([0.6, 0.9]), 1, np.array([0, 1]), np.array([0, 0]), np.array([1.0, 0.9])
    )
    assert per[0] == pytest.approx(1.0) and per[-1] == pytest.approx(0.5 * 101 / 101)
    assert r.ap50 == pytest.approx(1.0)


def random_layout(seed, n_ref=40, size=400):
    """Rectangles and L-shapes on the integer grid (so masks have the polygons' exact areas)."""
    rng = np.random.default_rng(seed)
    ref, ref_cls, pred, pred_cls, scores = [], [], [], [], []
    for _ in range(n_ref):
        x, y = rng.integers(0, size - 30, 2)
        w, h = rng.integers(6, 25, 2)
        g = box(x, y, w, h)
        if rng.random() < 0.3:
            g = shapely.union(g, box(x, y, 4, h + 5))
        c = str(rng.choice(["building", "hall"]))
        ref.append(g)
        ref_cls.append(c)
        r = rng.random()
        if r < 0.75:  # a detection, shifted and resized a little, sometimes twice
            for _ in range(1 + (rng.random() < 0.15)):
                dx, dy, dw, dh = rng.integers(-3, 4, 4)
                pred.append(box(x + dx, y + dy, max(3, w + dw), max(3, h + dh)))
                pred_cls.append(
                    c if rng.random() < 0.9 else ("hall" if c == "building" else "building")
                )
                scores.append(rng.random())
    for _ in range(12):  # false positives
        x, y = rng.integers(0, size - 20, 2)
        pred.append(box(x, y, *rng.integers(4, 15, 2)))
        pred_cls.append(str(rng.choice(["building", "hall"])))
        scores.append(rng.random())
    arr = lambda v: np.array(v, dtype=object)  # noqa: E731
    return arr(ref), arr(ref_cls), arr(pred), arr(pred_cls), np.array(scores), size


def coco_ap(ref, ref_cls, pred, pred_cls, scores, size):
    """AP@0.5, AP@0.75, AP@[.5:.95] from pycocotools on masks burnt from the polygons."""
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from rasterio.features import rasterize

    def rle(g):
        m = rasterize([(g, 1)], out_shape=(size, size), dtype="uint8")
        r = mask_utils.encode(np.asfortranarray(m))
        r["counts"] = r["counts"].decode()
        return r, float(m.sum())

    cats = sorted(set(ref_cls) | set(pred_cls))
    cid = {c: i + 1 for i, c in enumerate(cats)}
    anns = []
    for i, (g, c) in enumerate(zip(ref, ref_cls, strict=True)):
        r, area = rle(g)
        anns.append({"id": i + 1, "image_id": 1, "category_id": cid[c], "segmentation": r,
                     "area": area, "iscrowd": 0, "bbox": list(shapely.bounds(g))})  # fmt: skip
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": size, "height": size}], "annotations": anns,
                  "categories": [{"id": v, "name": k} for k, v in cid.items()]}  # fmt: skip
    gt.createIndex()
    dets = []
    for g, c, s in zip(pred, pred_cls, scores, strict=True):
        r, _ = rle(g)
        dets.append({"image_id": 1, "category_id": cid[c], "segmentation": r, "score": float(s)})
    dt = gt.loadRes(dets)
    ev = COCOeval(gt, dt, "segm")
    ev.params.maxDets = [1, 10, 10_000]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K), area 'all', all detections
    per_class = {}
    for k, c in enumerate(cats):
        p = prec[:, :, k]
        if (p > -1).any():
            per_class[c] = (p[0].mean(), p[5].mean(), p.mean())
    valid = prec > -1
    overall = tuple(float(prec[sel][valid[sel]].mean()) for sel in (np.s_[0], np.s_[5], np.s_[:]))
    return overall, per_class


@pytest.mark.parametrize("seed", [0, 1])
def test_ap_equals_pycocotools_on_rasterised_masks(seed):
    ref, ref_cls, pred, pred_cls, scores, size = random_layout(seed)
    # class-aware (COCO's categories)
    ours = object_ap(pred, ref, scores, pred_cls, ref_cls)
    (ap50, ap75, ap), per = coco_ap(ref, ref_cls, pred, pred_cls, scores, size)
    assert 0.05 < ours.ap < ours.ap50 < 0.95  # a test that can tell right from wrong
    assert ours.ap50 == pytest.approx(ap50, abs=1e-9)
    assert ours.ap75 == pytest.approx(ap75, abs=1e-9)
    assert ours.ap == pytest.approx(ap, abs=1e-9)
    for c, (c50, c75, cap) in per.items():
        d = ours.per_class[c]
        assert (d["ap50"], d["ap75"], d["ap"]) == pytest.approx((c50, c75, cap), abs=1e-9)
    # class-agnostic: one category on both sides
    one = np.array(["b"] * len(ref), dtype=object), np.array(["b"] * len(pred), dtype=object)
    agnostic = object_ap(pred, ref, scores)
    (a50, _, a), _ = coco_ap(ref, one[0], pred, one[1], scores, size)
    assert agnostic.ap50 == pytest.approx(a50, abs=1e-9)
    assert agnostic.ap == pytest.approx(a, abs=1e-9)
    assert agnostic.ap != pytest.approx(ours.ap)  # the classes change the matching


def write_layer(path, geoms, **fields):
    gpd.GeoDataFrame(fields, geometry=list(geoms), crs=CRS).to_file(path)
    return path


def test_evaluate_buildings_reports_ap_and_matches_by_class(tmp_path, cli):
    ref = [box(0, 0), box(100, 0), box(200, 0)]
    pred = [box(0, 0), box(100, 0), box(200, 0), box(300, 0)]
    write_layer(
        tmp_path / "r.gpkg", ref, id=[1, 2, 3], **{"class": ["building", "building", "hall"]}
    )
    write_layer(tmp_path / "p.gpkg", pred, id=[1, 2, 3, 4],
                mean_confidence=[0.9, 0.8, 0.95, 0.3],
                **{"class": ["building", "building", "building", "hall"]})  # fmt: skip
    r = evaluate_buildings(tmp_path / "p.gpkg", tmp_path / "r.gpkg", review=tmp_path / "rv.gpkg")
    # the third prediction lies on the hall but says building: no match
    assert r.class_aware and (r.true_positives, r.false_positives, r.false_negatives) == (2, 2, 1)
    # building: scores 0.95 (miss), 0.9, 0.8 (hits) of 2 -> precision 0, 1/2, 2/3 at recall 0, .5, 1
    assert r.ap_per_class["building"]["ap50"] == pytest.approx(2 / 3)
    assert r.ap_per_class["hall"]["ap50"] == 0.0
    assert r.ap50 == pytest.approx((2 / 3 + 0) / 2)
    tp = pyogrio.read_dataframe(tmp_path / "rv.gpkg", layer="tp")
    fp = pyogrio.read_dataframe(tmp_path / "rv.gpkg", layer="fp")
    fn = pyogrio.read_dataframe(tmp_path / "rv.gpkg", layer="fn")
    assert sorted(tp["id"]) == [1, 2] and sorted(tp["confidence"]) == pytest.approx([0.8, 0.9])
    assert sorted(fp["id"]) == [3, 4] and sorted(fp["confidence"]) == pytest.approx([0.3, 0.95])
    assert list(fn["ref_id"]) == [3] and list(fn["class"]) == ["hall"]
    # CLI: the AP table and the JSON fields
    out = cli("evaluate", tmp_path / "p.gpkg", tmp_path / "r.gpkg", "--json")
    assert out.code == 0, out.err
    d = json.loads(out.out)
    assert d["ap50"] == pytest.approx(1 / 3) and d["score_field"] == "mean_confidence"
    out = cli("evaluate", tmp_path / "p.gpkg", tmp_path / "r.gpkg")
    assert "AP@[.5:.95]" in out.out and "hall" in out.out
    # no confidence attribute: scores without AP
    write_layer(tmp_path / "n.gpkg", pred)
    r = evaluate_buildings(tmp_path / "n.gpkg", tmp_path / "r.gpkg")
    assert r.ap is None and not r.class_aware and r.true_positives == 3


def test_disjoint_class_names_are_reported(tmp_path, caplog):
    write_layer(tmp_path / "r.gpkg", [box(0, 0)], **{"class": ["Building"]})
    write_layer(tmp_path / "p.gpkg", [box(0, 0)], mean_confidence=[0.9], **{"class": ["building"]})
    with caplog.at_level(logging.WARNING, logger="aerialct"):
        r = evaluate_buildings(tmp_path / "p.gpkg", tmp_path / "r.gpkg")
    assert r.true_positives == 0 and r.ap == 0.0
    assert "share no 'class' value (building vs Building)" in caplog.text
