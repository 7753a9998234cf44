"""Pixel and building-level evaluation (``aerialct evaluate``).

Pixel level: a prediction class raster against a reference label raster, or a
folder of predictions against a folder of references (matched by file name), or
a folder of predictions against the masks of a chips dataset (``index.gpkg``,
one split). Rasters are read in blocks of rows, so their size does not matter;
their grids must match. Reference pixels 255 (ignore) are never counted;
prediction pixels 255 (nodata) where the reference has a label are reported as
``unpredicted`` and left out of the matrix.

Building level: predicted polygons against reference polygons, one-to-one
matching at IoU >= a threshold, greedily from the highest IoU. Candidate pairs
come from an STRtree query; intersection areas are computed for all candidate
pairs at once with shapely's array functions.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aerialct.classes import IGNORE_INDEX, POTSDAM, ClassTable
from aerialct.errors import InputError
from aerialct.evaluate.metrics import PixelScores, confusion_matrix, scores_from_confusion
from aerialct.geo.io import jsonable
from aerialct.progress import ProgressFn, as_progress

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger("aerialct")

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2"}
VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".fgb", ".shp"}
DEFAULT_EXCLUDE = ("clutter",)


@dataclass
class PairResult:
    prediction: str
    reference: str
    pixels: int
    unpredicted: int
    mean_iou: float
    overall_accuracy: float


@dataclass
class PixelEvaluation:
    """Pixel scores summed over all pairs (``scores``) plus one line per pair."""

    kind: str  # "pixel"
    scores: PixelScores
    pairs: list[PairResult]
    unpredicted: int
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            **self.scores.to_dict(),
            "unpredicted": self.unpredicted,
            "pairs": [vars(p) for p in self.pairs],
            "missing": list(self.missing),
            "seconds": self.seconds,
        }


@dataclass
class BuildingEvaluation:
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

    def to_dict(self) -> dict:
        return dict(vars(self))


# --- pixel level ---------------------------------------------------------------


def _resolve_exclude(table: ClassTable, exclude: Sequence[str | int] | None) -> list[str]:
    """Explicit names must exist; the default (clutter, and the classes the table marks
    ``exclude_from_mean``) is skipped when absent."""
    if exclude is None:
        return [n for n in DEFAULT_EXCLUDE if n in table.names] + table.excluded_from_mean
    out = []
    for e in exclude:
        try:
            out.append(table.names[table.id_of(e)])
        except ValueError as err:
            raise InputError(f"--exclude: {err}") from None
    return out


def _pair_confusion(
    pred_path: Path, ref_path: Path, table: ClassTable | None, rows_per_block: int
) -> tuple[np.ndarray, int, ClassTable]:
    """Confusion matrix of one raster pair read in blocks of rows; also the unpredicted count."""
    from rasterio.windows import Window

    from aerialct.geo.io import (
        check_class_raster,
        check_class_values,
        open_raster,
        raster_class_table,
        read_window,
        require_same_grid,
    )

    with open_raster(pred_path) as p, open_raster(ref_path) as r:
        require_same_grid(p, r, what="the prediction")
        pt, rt = raster_class_table(p, default=None), raster_class_table(r, default=None)
        if pt is not None and rt is not None and pt.names != rt.names:
            raise InputError(
                f"{pred_path} and {ref_path}: class tables differ ({pt.names} vs {rt.names}); "
                "evaluate against a reference with the model's classes"
            )
        found = pt or rt
        if table is None:
            table = found or POTSDAM
        elif found is not None and found.names != table.names:
            raise InputError(
                f"{pred_path}: classes {found.names} differ from the first pair's {table.names}; "
                "evaluate rasters of one class table together"
            )
        check_class_raster(p, "prediction (class raster)")
        if r.count >= 3 and r.dtypes[0] == "uint8":
            rgb_reference = True
        else:
            rgb_reference = False
            check_class_raster(r, "reference (class raster or RGB-colour label)")
        k = len(table)
        cm = np.zeros((k, k), dtype=np.int64)
        unpredicted = unknown = labelled_all = 0
        step = max(1, rows_per_block)
        for row in range(0, r.height, step):
            win = Window(0, row, r.width, min(step, r.height - row))
            pred = read_window(p, 1, window=win)
            check_class_values(str(pred_path), pred, table, p.nodata, win)
            if rgb_reference:
                ref, colours = table.rgb_to_ids(read_window(r, (1, 2, 3), window=win))
                unknown += sum(colours.values())
            else:
                ref = read_window(r, 1, window=win)
                check_class_values(str(ref_path), ref, table, r.nodata, win)
            labelled = ref != IGNORE_INDEX
            labelled_all += int(np.count_nonzero(labelled))
            unpredicted += int(np.count_nonzero(labelled & (pred == IGNORE_INDEX)))
            try:
                cm += confusion_matrix(pred, ref, k)
            except InputError as e:
                raise InputError(f"{pred_path} vs {ref_path}: {e}") from None
        pixels = r.width * r.height
        if rgb_reference and unknown > 0.5 * pixels:
            raise InputError(
                f"{ref_path}: {unknown / pixels:.0%} of its pixels have colours outside the legend, "
                "so it is not an RGB-colour label (an orthophoto?); give the reference labels"
            )
        if labelled_all == 0:
            raise InputError(
                f"{ref_path}: holds no labelled pixel (all ignore or nodata); nothing to score "
                "against: give the reference labels"
            )
    return cm, unpredicted, table


def evaluate_pixels(
    pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    *,
    exclude: Sequence[str | int] | None = None,
    classes: ClassTable | None = None,
    missing: Sequence[str] = (),
    rows_per_block: int = 1024,
    progress: ProgressFn | None = None,
) -> PixelEvaluation:
    """Pixel scores over (prediction, reference) raster pairs, summed into one matrix.

    ``classes`` fixes the class table; otherwise it comes from the rasters' tag
    ``AERIALCT_CLASSES`` (prediction first), else POTSDAM.
    """
    t0 = time.perf_counter()
    if not pairs:
        raise InputError("no prediction/reference pair to evaluate; check the paths and names")
    prog = as_progress(progress)
    prog(0, total=len(pairs), description="evaluating pixels")
    table = classes
    total: np.ndarray | None = None
    results: list[PairResult] = []
    unpredicted_all = 0
    for pred_path, ref_path in pairs:
        cm, unpredicted, table = _pair_confusion(
            Path(pred_path), Path(ref_path), table, rows_per_block
        )
        total = cm if total is None else total + cm
        excluded = _resolve_exclude(table, exclude)
        s = scores_from_confusion(cm, table.names, exclude=excluded)
        results.append(
            PairResult(
                str(pred_path), str(ref_path), s.pixels, unpredicted, s.mean_iou, s.overall_accuracy
            )
        )
        unpredicted_all += unpredicted
        prog(1)
    assert table is not None and total is not None
    scores = scores_from_confusion(total, table.names, exclude=_resolve_exclude(table, exclude))
    if unpredicted_all:
        log.warning(
            "%d labelled reference pixels have no prediction (nodata 255); they are not counted",
            unpredicted_all,
        )
    return PixelEvaluation(
        "pixel", scores, results, unpredicted_all, list(missing), time.perf_counter() - t0
    )


def _is_raster(p: Path) -> bool:
    return p.suffix.lower() in RASTER_SUFFIXES


def match_folders(pred_dir: Path, ref_dir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair rasters of two folders by file name; return pairs and the unmatched references."""
    refs = sorted(p for p in ref_dir.iterdir() if p.is_file() and _is_raster(p))
    if not refs:
        raise InputError(f"{ref_dir}: no reference raster (.tif) in the folder; check the path")
    preds = {p.name: p for p in pred_dir.iterdir() if p.is_file() and _is_raster(p)}
    by_stem = {p.stem: p for p in preds.values()}
    pairs, missing = [], []
    for ref in refs:
        pred = preds.get(ref.name) or by_stem.get(ref.stem) or by_stem.get(f"{ref.stem}_classes")
        if pred is None:
            missing.append(str(ref))
        else:
            pairs.append((pred, ref))
    if not pairs:
        raise InputError(
            f"{pred_dir} and {ref_dir}: no file name in common; predictions must be named like "
            f"the references (e.g. {refs[0].name})"
        )
    return pairs, missing


def match_chips(
    pred_dir: Path, index: Path, split: str | None
) -> tuple[list[tuple[Path, Path]], list[str], ClassTable]:
    """Pair predictions with the chip masks of a chips dataset (one split or all).

    ``index`` is the chips folder or its ``index.gpkg``. A chip's prediction is
    ``PRED_DIR/<name>_classes.tif`` (what ``aerialct predict`` writes) or
    ``PRED_DIR/<name>.tif``, where ``<name>`` is the mask's file stem or the chip id,
    also looked for under ``PRED_DIR/<split>/``.
    """
    from aerialct.data.index import read_index

    root = index.parent if index.suffix.lower() == ".gpkg" else index
    chips = read_index(root)
    frame = chips.frame
    if split is not None:
        if split not in set(frame["split"]):
            raise InputError(
                f"{root / 'index.gpkg'}: no chip in split {split!r}; splits are "
                f"{', '.join(sorted(set(frame['split'])))}"
            )
        frame = frame[frame["split"] == split]
    pairs, missing = [], []
    for _, row in frame.iterrows():
        mask = chips.mask_path(row)
        if mask is None:
            continue
        names = []
        for stem in dict.fromkeys((mask.stem, str(row["chip_id"]))):
            names += [f"{stem}_classes.tif", f"{stem}.tif"]
        folders = (pred_dir, pred_dir / str(row["split"]))
        pred = next((f / n for f in folders for n in names if (f / n).exists()), None)
        if pred is None:
            missing.append(str(row["chip_id"]))
        else:
            pairs.append((pred, mask))
    if not pairs:
        raise InputError(
            f"{pred_dir}: no prediction for any labelled chip of split {split!r}; name them "
            "like the masks (<chip>_classes.tif as aerialct predict writes, or <chip>.tif)"
        )
    return pairs, missing, chips.classes


def rasterize_reference(
    prediction: Path,
    reference: Path,
    out: Path,
    *,
    burn: str = "building",
    layer: str | None = None,
) -> ClassTable:
    """Burn reference polygons onto the prediction's grid with its class table; return the table.

    Every polygon is class ``burn``; pixels no polygon covers are the table's
    ``background`` class, or ignore when the table has none (e.g. Potsdam), so they
    are not scored. Polygons in another CRS are reprojected.
    """
    import rasterio
    import shapely
    from rasterio import features

    from aerialct.geo.io import (
        check_class_raster,
        class_tags,
        gtiff_profile,
        open_raster,
        raster_class_table,
    )
    from aerialct.geo.vector import read_polygons

    with open_raster(prediction) as p:
        check_class_raster(p, "prediction (class raster)")
        table = raster_class_table(p)
        assert table is not None
        try:
            value = table.id_of(burn)
        except ValueError as e:
            raise InputError(f"{reference}: cannot burn the polygons as {burn!r}: {e}") from e
        frame = read_polygons(reference, layer)
        if frame.crs is not None and p.crs is not None and frame.crs != p.crs:
            frame = frame.to_crs(p.crs)
        geoms = [g for g in frame.geometry.values if g is not None and not g.is_empty]
        fill = IGNORE_INDEX if table.background is None else table.background
        b = p.bounds
        if not geoms or not shapely.intersects(
            shapely.union_all(geoms), shapely.box(b.left, b.bottom, b.right, b.top)
        ):
            raise InputError(
                f"{reference}: no polygon touches {prediction}; check the reference's CRS and extent"
            )
        data = features.rasterize(
            [(g, value) for g in geoms],
            out_shape=(p.height, p.width),
            transform=p.transform,
            fill=fill,
            dtype="uint8",
        )
        prof = gtiff_profile(p.width, p.height, 1, "uint8", p.crs, p.transform, IGNORE_INDEX,
                             compress="DEFLATE")  # fmt: skip
        with rasterio.open(out, "w", **prof) as dst:
            dst.write(data, 1)
            dst.update_tags(**class_tags(table))
    return table


# --- building level ------------------------------------------------------------


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


def _polygon_array(frame: gpd.GeoDataFrame, path: Path) -> tuple[np.ndarray, np.ndarray]:
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
    from aerialct.geo.io import check_output
    from aerialct.geo.vector import Layer, read_polygons, write_layers

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
    reprojected = False
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
        pf = pf.to_crs(rf.crs)
        reprojected = True
    pred, p_rows = _polygon_array(pf, Path(prediction))
    ref, r_rows = _polygon_array(rf, Path(reference))
    class_aware = class_field in pf.columns and class_field in rf.columns
    pred_class = ref_class = None
    if class_aware:
        pred_class = pf[class_field].to_numpy()[p_rows].astype(str).astype(object)
        ref_class = rf[class_field].to_numpy()[r_rows].astype(str).astype(object)
        if len(pred_class) and len(ref_class) and not set(pred_class) & set(ref_class):
            log.warning(
                "%s and %s share no %r value (%s vs %s), so nothing can match; rename the "
                "classes to agree or drop the attribute from one layer",
                prediction, reference, class_field,
                ", ".join(sorted(set(pred_class))[:5]), ", ".join(sorted(set(ref_class))[:5]),
            )  # fmt: skip
    elif class_field in pf.columns or class_field in rf.columns:
        log.info(
            "only one layer has a %r attribute: buildings are matched regardless of class",
            class_field,
        )
    pi, ri, iou, best_pred, best_ref = match_buildings(
        pred, ref, iou_threshold, pred_class, ref_class
    )
    scores = _score_column(pf, score_field, p_rows, Path(prediction))
    aps = None
    if scores is not None:
        from aerialct.evaluate.object_scores import object_ap

        aps = object_ap(pred, ref, scores, pred_class, ref_class)
    prog(1)
    tp = len(pi)
    fp = len(pred) - tp
    fn = len(ref) - tp
    precision = tp / len(pred) if len(pred) else float("nan")
    recall = tp / len(ref) if len(ref) else float("nan")
    f1 = 2 * tp / (len(pred) + len(ref)) if (len(pred) + len(ref)) else float("nan")
    mean_iou = float(iou.mean()) if tp else float("nan")

    if review is not None:
        crs = rf.crs
        matched_p = np.zeros(len(pred), dtype=bool)
        matched_p[pi] = True
        matched_r = np.zeros(len(ref), dtype=bool)
        matched_r[ri] = True
        fp_i = np.flatnonzero(~matched_p)
        fn_i = np.flatnonzero(~matched_r)
        # the prediction's own 1-based ``id`` (as vectorize writes it) and confidence
        p_id, r_id = _ids(pf, p_rows), _ids(rf, r_rows)
        tp_f = {"id": p_id[pi], "ref_id": r_id[ri], "iou": iou}
        fp_f = {"id": p_id[fp_i], "best_iou": best_pred[fp_i]}
        fn_f = {"ref_id": r_id[fn_i], "best_iou": best_ref[fn_i]}
        if scores is not None:
            tp_f["confidence"], fp_f["confidence"] = scores[pi], scores[fp_i]
        if class_aware:
            assert pred_class is not None and ref_class is not None
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
        write_layers(review, layers, overwrite=overwrite)
    prog(1)
    return BuildingEvaluation(
        kind="building",
        prediction=str(prediction),
        reference=str(reference),
        iou_threshold=iou_threshold,
        predicted=len(pred),
        reference_count=len(ref),
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        precision=precision,
        recall=recall,
        f1=f1,
        mean_iou=mean_iou,
        crs=rf.crs.to_string() if rf.crs is not None else None,
        reprojected=reprojected,
        review=str(review) if review is not None else None,
        seconds=time.perf_counter() - t0,
        ap50=aps.ap50 if aps else None,
        ap75=aps.ap75 if aps else None,
        ap=aps.ap if aps else None,
        ap_per_class=aps.per_class if aps else {},
        score_field=score_field if aps else None,
        class_aware=class_aware,
    )


def _ids(frame: gpd.GeoDataFrame, rows: np.ndarray) -> np.ndarray:
    """The layer's integer ``id`` attribute, or the 1-based feature number without one."""
    if "id" in frame.columns:
        try:
            return frame["id"].to_numpy()[rows].astype(np.int64)
        except (TypeError, ValueError):
            pass
    return (rows + 1).astype(np.int64)


def _score_column(
    frame: gpd.GeoDataFrame, name: str, rows: np.ndarray, path: Path
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
    pred_dir: Path, ref_dir: Path
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair polygon files of two folders by name: ``<stem>.*`` with ``<stem>[_buildings|_classes].*``."""
    refs = sorted(p for p in ref_dir.iterdir() if p.suffix.lower() in VECTOR_SUFFIXES)
    preds = sorted(p for p in pred_dir.iterdir() if p.suffix.lower() in VECTOR_SUFFIXES)
    by_stem: dict[str, Path] = {}
    for p in preds:
        for suffix in ("", "_buildings", "_classes"):
            if p.stem.endswith(suffix):
                by_stem.setdefault(p.stem.removesuffix(suffix) if suffix else p.stem, p)
    pairs, missing = [], []
    for ref in refs:
        pred = by_stem.get(ref.stem) or by_stem.get(ref.stem.removesuffix("_buildings"))
        if pred is None:
            missing.append(str(ref))
        else:
            pairs.append((pred, ref))
    if not pairs:
        raise InputError(
            f"{pred_dir} and {ref_dir}: no polygon files with names in common; name the "
            "predictions like the references (<name>.gpkg or <name>_buildings.gpkg)"
        )
    return pairs, missing


def evaluate_building_files(
    pairs: Sequence[tuple[Path, Path]],
    *,
    iou_threshold: float = 0.5,
    missing: Sequence[str] = (),
    progress: ProgressFn | None = None,
    prediction: str = "",
    reference: str = "",
) -> BuildingEvaluation:
    """Building scores of several (prediction, reference) polygon files, pooled into one.

    Each pair is matched on its own; TP, FP and FN are summed, and the pooled mean IoU
    weighs every match equally. ``files`` holds each pair's own scores.
    """
    t0 = time.perf_counter()
    each = [evaluate_buildings(p, r, iou_threshold=iou_threshold) for p, r in pairs]
    tp = sum(e.true_positives for e in each)
    n_pred = sum(e.predicted for e in each)
    n_ref = sum(e.reference_count for e in each)
    iou_sum = sum(e.mean_iou * e.true_positives for e in each if e.true_positives)
    return BuildingEvaluation(
        kind="building",
        prediction=prediction,
        reference=reference,
        iou_threshold=iou_threshold,
        predicted=n_pred,
        reference_count=n_ref,
        true_positives=tp,
        false_positives=n_pred - tp,
        false_negatives=n_ref - tp,
        precision=tp / n_pred if n_pred else float("nan"),
        recall=tp / n_ref if n_ref else float("nan"),
        f1=2 * tp / (n_pred + n_ref) if n_pred + n_ref else float("nan"),
        mean_iou=iou_sum / tp if tp else float("nan"),
        crs=each[0].crs if each else None,
        reprojected=any(e.reprojected for e in each),
        seconds=time.perf_counter() - t0,
        files=[
            {k: v for k, v in e.to_dict().items() if k not in ("files", "missing", "kind")}
            for e in each
        ],
        missing=list(missing),
    )


# --- dispatch and report -----------------------------------------------------------


def evaluate(
    prediction: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    *,
    index: str | os.PathLike | None = None,
    split: str | None = "test",
    exclude: Sequence[str | int] | None = None,
    iou_threshold: float = 0.5,
    pred_layer: str | None = None,
    ref_layer: str | None = None,
    review: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    score_field: str = "mean_confidence",
    burn: str = "building",
) -> PixelEvaluation | BuildingEvaluation:
    """Evaluate by the kind of inputs; write ``report`` (JSON, atomic) when given.

    - raster + raster: pixel scores of one pair;
    - folder + folder: pixel scores of rasters matched by file name;
    - folder + ``index`` (a chips folder or its index.gpkg): pixel scores against
      the chip masks of ``split`` (None: all splits);
    - raster + vector: pixel scores against the polygons rasterised onto the prediction's
      grid (:func:`rasterize_reference`: polygons are ``burn``, the rest background);
    - vector + vector: building-level scores;
    - folder + folder of polygon files: building scores of files matched by name,
      pooled, with each file's own scores in ``files``.
    """
    from aerialct.geo.io import atomic_output, check_output

    inputs = [p for p in (prediction, reference, index) if p is not None]
    if report is not None:
        check_output(report, overwrite, kind="json", inputs=inputs)
    pred = Path(prediction)
    if not pred.exists():
        raise InputError(f"{pred}: no such file or folder; check the path")
    result: PixelEvaluation | BuildingEvaluation
    if index is not None:
        if reference is not None:
            raise InputError("give either REFERENCE or --index, not both")
        if not pred.is_dir():
            raise InputError(f"{pred}: with --index the prediction must be a folder of rasters")
        pairs, missing, table = match_chips(pred, Path(index), split)
        if missing:
            log.warning("%d chips have no prediction in %s; they are skipped", len(missing), pred)
        result = evaluate_pixels(
            pairs, exclude=exclude, classes=table, missing=missing, progress=progress
        )
    else:
        if reference is None:
            raise InputError("give a REFERENCE (raster, vector or folder) or --index CHIPS")
        ref = Path(reference)
        if not ref.exists():
            raise InputError(f"{ref}: no such file or folder; check the path")
        if pred.is_dir() != ref.is_dir():
            raise InputError(
                f"{pred} and {ref}: one is a folder, the other a file; give two files or two folders"
            )
        vector_dirs = pred.is_dir() and not any(_is_raster(q) for q in ref.iterdir())
        if vector_dirs and any(q.suffix.lower() in VECTOR_SUFFIXES for q in ref.iterdir()):
            vpairs, missing = match_vector_folders(pred, ref)
            if missing:
                log.warning("%d references have no prediction in %s", len(missing), pred)
            result = evaluate_building_files(
                vpairs, iou_threshold=iou_threshold, missing=missing, progress=progress,
                prediction=str(pred), reference=str(ref),
            )  # fmt: skip
        elif pred.is_dir():
            pairs, missing = match_folders(pred, ref)
            if missing:
                log.warning("%d references have no prediction in %s", len(missing), pred)
            result = evaluate_pixels(pairs, exclude=exclude, missing=missing, progress=progress)
        elif pred.suffix.lower() in VECTOR_SUFFIXES and ref.suffix.lower() in VECTOR_SUFFIXES:
            result = evaluate_buildings(
                pred,
                ref,
                iou_threshold=iou_threshold,
                pred_layer=pred_layer,
                ref_layer=ref_layer,
                review=review,
                overwrite=overwrite,
                progress=progress,
                score_field=score_field,
            )
        elif ref.suffix.lower() in VECTOR_SUFFIXES and pred.suffix.lower() not in VECTOR_SUFFIXES:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="aerialct-ref-") as d:
                burnt = Path(d) / f"{ref.stem}.tif"
                table = rasterize_reference(pred, ref, burnt, burn=burn, layer=ref_layer)
                result = evaluate_pixels(
                    [(pred, burnt)], exclude=exclude, classes=table, progress=progress
                )
            result.pairs[0].reference = str(ref)
        elif pred.suffix.lower() in VECTOR_SUFFIXES:
            raise InputError(
                f"{pred} and {ref}: one is a vector, the other a raster; compare rasters with "
                "rasters (pixel scores) or polygons with polygons (building scores); "
                "vectorise the raster first (aerialct vectorize)"
            )
        else:
            result = evaluate_pixels([(pred, ref)], exclude=exclude, progress=progress)
    if review is not None and result.kind != "building":
        log.warning("--review applies to building evaluation only; not written")
    if report is not None:
        with atomic_output(report, overwrite, kind="json", inputs=inputs) as tmp:
            tmp.write_text(json.dumps(jsonable(result.to_dict()), indent=2) + "\n")
    return result


__all__ = [
    "BuildingEvaluation",
    "PixelEvaluation",
    "evaluate",
    "evaluate_buildings",
    "evaluate_pixels",
    "match_buildings",
    "match_chips",
    "match_folders",
]
