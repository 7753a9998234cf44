"""Building scores: predicted polygons against reference polygons.

One-to-one matching at IoU >= a threshold, greedily from the highest IoU. Candidate
pairs come from an STRtree query; intersection areas are computed for all candidate
pairs at once with shapely's array functions. Polygons with a confidence attribute
also get COCO-style AP (:mod:`aerialct.evaluate.object_scores`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from aerialct.errors import InputError
from aerialct.evaluate.pixel import FileSet, describe, members, pair_by_name
from aerialct.geo.inputs import source_path
from aerialct.progress import ProgressFn, as_progress

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger("aerialct")

VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".fgb", ".shp"}


@dataclass
class BuildingEvaluation:
    """Building scores of one polygon file pair, or of folders of them pooled (``files``)."""

    kind: str  # "building"
    prediction: str
    reference: str
    iou_threshold: float
    predicted: int
    reference_count: int
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    mean_iou: float
    crs: str | None
    reprojected: bool = False
    review: str | None = None
    seconds: float = 0.0
    # object-level AP from per-polygon confidence (COCO style, aerialct.evaluate.object_scores);
    # None when the prediction has no ``score_field`` attribute
    ap50: float | None = None
    ap75: float | None = None
    ap: float | None = None  # AP@[.5:.95]
    ap_per_class: dict = field(default_factory=dict)
    score_field: str | None = None
    class_aware: bool = False
    files: list[dict] = field(default_factory=list)
    """Folders of polygon files: one score per matched file pair (pooled above)."""
    missing: list[str] = field(default_factory=list)
    """Folders: references without a prediction (their buildings count as missed)."""
    unmatched: list[str] = field(default_factory=list)
    """Folders: predictions without a reference (not scored)."""

    def to_dict(self) -> dict:
        """Every field, as the JSON report holds them."""
        return dict(vars(self))


def match_buildings(
    pred: np.ndarray,
    ref: np.ndarray,
    iou_threshold: float = 0.5,
    pred_class: np.ndarray | None = None,
    ref_class: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of two polygon arrays at IoU >= ``iou_threshold``.

    Returns ``(pred_idx, ref_idx, iou)`` of the matches (highest IoU first) and
    the best IoU of every prediction and every reference with any partner
    (0 when none), for the review layers. Ties are broken by index. With
    ``pred_class`` and ``ref_class``, only pairs of the same class are partners.
    """
    import shapely

    if not 0 < iou_threshold <= 1:
        raise InputError(f"--iou-threshold must be in (0, 1], got {iou_threshold}")
    best_pred = np.zeros(len(pred))
    best_ref = np.zeros(len(ref))
    empty = np.array([], dtype=np.int64)
    if len(pred) == 0 or len(ref) == 0:
        return empty, empty, np.array([], dtype=np.float64), best_pred, best_ref
    tree = shapely.STRtree(ref)
    pi, ri = tree.query(pred, predicate="intersects")
    if pred_class is not None and ref_class is not None:
        same = np.asarray(pred_class)[pi] == np.asarray(ref_class)[ri]
        pi, ri = pi[same], ri[same]
    if len(pi) == 0:
        return empty, empty, np.array([], dtype=np.float64), best_pred, best_ref
    inter = shapely.area(shapely.intersection(pred[pi], ref[ri]))
    union = shapely.area(pred)[pi] + shapely.area(ref)[ri] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.maximum.at(best_pred, pi, iou)
    np.maximum.at(best_ref, ri, iou)
    ok = iou >= iou_threshold - 1e-12
    pi, ri, iou = pi[ok], ri[ok], iou[ok]
    order = np.lexsort((ri, pi, -iou))
    used_p = np.zeros(len(pred), dtype=bool)
    used_r = np.zeros(len(ref), dtype=bool)
    keep = []
    # bookkeeping only (no geometry): greedy one-to-one from the highest IoU
    for k in order.tolist():
        a, b = pi[k], ri[k]
        if not used_p[a] and not used_r[b]:
            used_p[a] = used_r[b] = True
            keep.append(k)
    keep_arr = np.asarray(keep, dtype=np.int64)
    return pi[keep_arr], ri[keep_arr], iou[keep_arr], best_pred, best_ref


def _polygon_array(frame: gpd.GeoDataFrame, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The polygons of ``frame`` and the row numbers they come from (empty rows dropped)."""
    import shapely

    geoms = np.array(
        [g if g is not None and not g.is_empty else None for g in frame.geometry.values],
        dtype=object,
    )
    kind = shapely.get_type_id(geoms)
    bad = ~np.isin(kind, (3, 6)) & (kind >= 0)
    if bad.any():
        raise InputError(
            f"{path}: {int(bad.sum())} features are not polygons; give a polygon layer"
        )
    invalid = (kind >= 0) & ~shapely.is_valid(geoms)
    if invalid.any():
        log.info("%s: %d invalid geometries repaired with make_valid", path, int(invalid.sum()))
        # make_valid may return polygons plus lines; buffer(0) keeps the areas only
        geoms[invalid] = shapely.buffer(shapely.make_valid(geoms[invalid]), 0)
    missing = kind < 0
    if missing.any():
        log.info("%s: %d features without geometry are ignored", path, int(missing.sum()))
    return geoms[~missing], np.flatnonzero(~missing)


def evaluate_buildings(
    prediction: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    iou_threshold: float = 0.5,
    pred_layer: str | None = None,
    ref_layer: str | None = None,
    review: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    score_field: str = "mean_confidence",
    class_field: str = "class",
) -> BuildingEvaluation:
    """Building-level precision, recall, F1 and AP of predicted against reference polygons.

    When both layers have ``class_field``, only polygons of the same class match
    (multi-class layers). When the prediction has ``score_field`` (written by
    ``vectorize --probabilities``), COCO-style AP@0.5, AP@0.75 and AP@[.5:.95] are
    computed from it (:mod:`aerialct.evaluate.object_scores`).
    """
    from aerialct.geo.outputs import check_output
    from aerialct.geo.vector import read_polygons

    t0 = time.perf_counter()
    if not 0 < iou_threshold <= 1:
        raise InputError(f"--iou-threshold must be in (0, 1], got {iou_threshold}")
    if review is not None:
        check_output(review, overwrite, inputs=[prediction, reference])
    prog = as_progress(progress)
    prog(0, total=3, description="evaluating buildings")
    pf = read_polygons(prediction, pred_layer)
    rf = read_polygons(reference, ref_layer)
    prog(1)
    pf, reprojected = _to_reference_crs(pf, rf, prediction, reference)
    pred, p_rows = _polygon_array(pf, source_path(prediction))
    ref, r_rows = _polygon_array(rf, source_path(reference))
    pred_class, ref_class = _class_columns(
        pf, rf, p_rows, r_rows, class_field, prediction, reference
    )
    m = _Matches(*match_buildings(pred, ref, iou_threshold, pred_class, ref_class))
    scores = _score_column(pf, score_field, p_rows, source_path(prediction))
    aps = None
    if scores is not None:
        from aerialct.evaluate.object_scores import object_ap

        aps = object_ap(pred, ref, scores, pred_class, ref_class)
    prog(1)
    tp = len(m.pi)
    if review is not None:
        ids = (_ids(pf, p_rows), _ids(rf, r_rows))
        _write_review(review, overwrite, rf.crs, pred, ref, m, ids, scores, pred_class, ref_class)
    prog(1)
    n_pred, n_ref = len(pred), len(ref)
    return BuildingEvaluation(
        kind="building",
        prediction=str(prediction),
        reference=str(reference),
        iou_threshold=iou_threshold,
        **_counts(n_pred, n_ref, tp, float(m.iou.sum())),
        crs=rf.crs.to_string() if rf.crs is not None else None,
        reprojected=reprojected,
        review=str(review) if review is not None else None,
        seconds=time.perf_counter() - t0,
        ap50=aps.ap50 if aps else None,
        ap75=aps.ap75 if aps else None,
        ap=aps.ap if aps else None,
        ap_per_class=aps.per_class if aps else {},
        score_field=score_field if aps else None,
        class_aware=pred_class is not None,
    )


def _to_reference_crs(
    pf: gpd.GeoDataFrame,
    rf: gpd.GeoDataFrame,
    prediction: str | os.PathLike,
    reference: str | os.PathLike,
) -> tuple[gpd.GeoDataFrame, bool]:
    """The predicted polygons in the reference's CRS, and whether they were reprojected."""
    if (pf.crs is None) != (rf.crs is None):
        which = prediction if pf.crs is None else reference
        raise InputError(
            f"{which}: has no CRS while the other file has one; assign it "
            "(ogr2ogr -a_srs EPSG:XXXX) before evaluating"
        )
    if pf.crs is not None and pf.crs != rf.crs:
        log.warning(
            "%s is in %s, %s in %s: the prediction is reprojected to the reference CRS",
            prediction,
            pf.crs.to_string(),
            reference,
            rf.crs.to_string(),
        )
        return pf.to_crs(rf.crs), True
    return pf, False


def _class_columns(
    pf: gpd.GeoDataFrame,
    rf: gpd.GeoDataFrame,
    p_rows: np.ndarray,
    r_rows: np.ndarray,
    class_field: str,
    prediction: str | os.PathLike,
    reference: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Each polygon's class when both layers have ``class_field`` (class-aware matching)."""
    if not (class_field in pf.columns and class_field in rf.columns):
        if class_field in pf.columns or class_field in rf.columns:
            log.info(
                "only one layer has a %r attribute: buildings are matched regardless of class",
                class_field,
            )
        return None, None
    pred_class = pf[class_field].to_numpy()[p_rows].astype(str).astype(object)
    ref_class = rf[class_field].to_numpy()[r_rows].astype(str).astype(object)
    if len(pred_class) and len(ref_class) and not set(pred_class) & set(ref_class):
        log.warning(
            "%s and %s share no %r value (%s vs %s), so nothing can match; rename the "
            "classes to agree or drop the attribute from one layer",
            prediction, reference, class_field,
            ", ".join(sorted(set(pred_class))[:5]), ", ".join(sorted(set(ref_class))[:5]),
        )  # fmt: skip
    return pred_class, ref_class


class _Matches(NamedTuple):
    """What :func:`match_buildings` returns."""

    pi: np.ndarray
    ri: np.ndarray
    iou: np.ndarray
    best_pred: np.ndarray
    best_ref: np.ndarray


def _write_review(
    review: str | os.PathLike,
    overwrite: bool,
    crs: Any,
    pred: np.ndarray,
    ref: np.ndarray,
    m: _Matches,
    ids: tuple[np.ndarray, np.ndarray],
    scores: np.ndarray | None,
    pred_class: np.ndarray | None,
    ref_class: np.ndarray | None,
) -> None:
    """The tp, fp and fn layers of one building evaluation, for review in QGIS."""
    from aerialct.geo.vector import Layer, write_layers

    pi, ri, iou = m.pi, m.ri, m.iou
    matched_p = np.zeros(len(pred), dtype=bool)
    matched_p[pi] = True
    matched_r = np.zeros(len(ref), dtype=bool)
    matched_r[ri] = True
    fp_i = np.flatnonzero(~matched_p)
    fn_i = np.flatnonzero(~matched_r)
    # the prediction's own 1-based ``id`` (as vectorize writes it) and confidence
    p_id, r_id = ids
    tp_f = {"id": p_id[pi], "ref_id": r_id[ri], "iou": iou}
    fp_f = {"id": p_id[fp_i], "best_iou": m.best_pred[fp_i]}
    fn_f = {"ref_id": r_id[fn_i], "best_iou": m.best_ref[fn_i]}
    if scores is not None:
        tp_f["confidence"], fp_f["confidence"] = scores[pi], scores[fp_i]
    if pred_class is not None and ref_class is not None:
        tp_f["class"], fp_f["class"], fn_f["class"] = (
            pred_class[pi],
            pred_class[fp_i],
            ref_class[fn_i],
        )
    tp_f |= {"pred_index": pi.astype(np.int64), "ref_index": ri.astype(np.int64)}
    fp_f["pred_index"] = fp_i.astype(np.int64)
    fn_f["ref_index"] = fn_i.astype(np.int64)
    layers = {
        "tp": Layer(pred[pi], tp_f, crs),
        "fp": Layer(pred[fp_i], fp_f, crs),
        "fn": Layer(ref[fn_i], fn_f, crs),
    }
    from aerialct.styles import review_style

    write_layers(review, layers, overwrite=overwrite, styles=[review_style(n) for n in layers])


def _ids(frame: gpd.GeoDataFrame, rows: np.ndarray) -> np.ndarray:
    """The layer's integer ``id`` attribute, or the 1-based feature number without one."""
    if "id" in frame.columns:
        try:
            return frame["id"].to_numpy()[rows].astype(np.int64)
        except (TypeError, ValueError):
            pass
    return (rows + 1).astype(np.int64)


def _score_column(
    frame: gpd.GeoDataFrame, name: str, rows: np.ndarray, path: str | Path
) -> np.ndarray | None:
    if name not in frame.columns:
        log.info(
            "%s: no %r attribute, so no AP; vectorize with --probabilities to score polygons",
            path,
            name,
        )
        return None
    try:
        scores = frame[name].to_numpy()[rows].astype(np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: attribute {name!r} is not numeric ({e}); fix the layer") from e
    if np.isnan(scores).any():
        raise InputError(
            f"{path}: {int(np.isnan(scores).sum())} polygons have no {name!r}; "
            "vectorize again with --probabilities"
        )
    return scores


def match_vector_folders(
    pred_dir: FileSet, ref_dir: FileSet
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair polygon files of two folders (or file lists) by name: ``<stem>.*`` with
    ``<stem>[_buildings|_classes].*``."""
    refs = [p for p in members(ref_dir) if p.suffix.lower() in VECTOR_SUFFIXES]
    preds = [p for p in members(pred_dir) if p.suffix.lower() in VECTOR_SUFFIXES]
    by_stem: dict[str, Path] = {}
    for p in preds:
        for suffix in ("", "_buildings", "_classes"):
            if p.stem.endswith(suffix):
                by_stem.setdefault(p.stem.removesuffix(suffix) if suffix else p.stem, p)
    pairs, missing = pair_by_name(
        refs, lambda ref: by_stem.get(ref.stem) or by_stem.get(ref.stem.removesuffix("_buildings"))
    )
    if not pairs:
        raise InputError(
            f"{describe(pred_dir)} and {describe(ref_dir)}: no polygon files with names in "
            "common; name the predictions like the references (<name>.gpkg or "
            "<name>_buildings.gpkg)"
        )
    return pairs, missing


def _counts(n_pred: int, n_ref: int, tp: int, iou_sum: float) -> dict[str, Any]:
    """Counts, precision, recall, F1 and the matches' mean IoU (NaN where undefined)."""
    nan = float("nan")
    return {
        "predicted": n_pred,
        "reference_count": n_ref,
        "true_positives": tp,
        "false_positives": n_pred - tp,
        "false_negatives": n_ref - tp,
        "precision": tp / n_pred if n_pred else nan,
        "recall": tp / n_ref if n_ref else nan,
        "f1": 2 * tp / (n_pred + n_ref) if n_pred + n_ref else nan,
        "mean_iou": iou_sum / tp if tp else nan,
    }


def evaluate_building_files(
    pairs: Sequence[tuple[Path, Path]],
    *,
    iou_threshold: float = 0.5,
    missing: Sequence[str] = (),
    progress: ProgressFn | None = None,
    prediction: str = "",
    reference: str = "",
    unmatched: Sequence[str] = (),
) -> BuildingEvaluation:
    """Building scores of several (prediction, reference) polygon files, pooled into one.

    Each pair is matched on its own; TP, FP and FN are summed, and the pooled mean IoU
    weighs every match equally. ``files`` holds each pair's own scores. The buildings of
    ``missing`` references (no prediction) are false negatives of the pooled scores: a
    scene nobody mapped is not mapped. ``unmatched`` predictions (no reference) are listed,
    not scored.
    """
    t0 = time.perf_counter()
    each = [evaluate_buildings(p, r, iou_threshold=iou_threshold) for p, r in pairs]
    tp = sum(e.true_positives for e in each)
    n_pred = sum(e.predicted for e in each)
    n_ref = sum(e.reference_count for e in each) + sum(_building_count(m) for m in missing)
    iou_sum = sum(e.mean_iou * e.true_positives for e in each if e.true_positives)
    return BuildingEvaluation(
        kind="building",
        prediction=prediction,
        reference=reference,
        iou_threshold=iou_threshold,
        **_counts(n_pred, n_ref, tp, iou_sum),
        crs=each[0].crs if each else None,
        reprojected=any(e.reprojected for e in each),
        seconds=time.perf_counter() - t0,
        files=[
            {k: v for k, v in e.to_dict().items() if k not in ("files", "missing", "kind")}
            for e in each
        ],
        missing=list(missing),
        unmatched=list(unmatched),
    )


def _building_count(path: str | os.PathLike) -> int:
    """Reference buildings in a polygon file (its first layer, as evaluate reads it)."""
    from aerialct.geo.vector import read_polygons

    frame = read_polygons(path)
    return int((frame.geometry.notna() & ~frame.geometry.is_empty).sum())
