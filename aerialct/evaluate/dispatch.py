"""``evaluate``: pick pixel or building scores by the kind of inputs; write the report."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from aerialct.errors import InputError
from aerialct.evaluate.buildings import (
    VECTOR_SUFFIXES,
    BuildingEvaluation,
    evaluate_building_files,
    evaluate_buildings,
    match_vector_folders,
)
from aerialct.evaluate.pixel import (
    FileSet,
    PixelEvaluation,
    describe,
    evaluate_pixels,
    is_raster,
    match_chips,
    match_folders,
    members,
)
from aerialct.evaluate.reference import rasterize_reference
from aerialct.geo.inputs import source_label, suffix_of
from aerialct.progress import ProgressFn
from aerialct.render import json_text

log = logging.getLogger("aerialct")

Given = FileSet | str
"""An input as evaluate takes it: a file set, or one GDAL path / URL as given."""


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

    Wherever a folder goes, a quoted glob (``"pred/*_buildings.gpkg"``) can name the
    files instead.
    """
    from aerialct.geo.outputs import atomic_output, check_output

    inputs = [p for p in (prediction, reference, index) if p is not None]
    if report is not None:
        check_output(report, overwrite, kind="json", inputs=inputs)
    pred = _file_set(prediction)
    result: PixelEvaluation | BuildingEvaluation
    if index is not None:
        if reference is not None:
            raise InputError("give either REFERENCE or --index, not both")
        if not isinstance(pred, Path):
            raise InputError(f"{prediction}: with --index give a folder, not a pattern")
        result = _against_chips(pred, Path(index), split, exclude, progress)
    else:
        if reference is None:
            raise InputError("give a REFERENCE (raster, vector or folder) or --index CHIPS")
        ref = _file_set(reference)
        if _is_set(pred) != _is_set(ref):
            raise InputError(
                f"{_describe(pred)} and {_describe(ref)}: one is a folder or pattern, the other "
                "a file; give two files, or two folders or patterns"
            )
        if _is_set(pred):
            assert not isinstance(pred, str) and not isinstance(ref, str)  # sets (_is_set)
            result = _folders(pred, ref, exclude, iou_threshold, progress)
        else:
            assert isinstance(pred, Path | str) and isinstance(ref, Path | str)  # single files
            result = _files(
                pred, ref, exclude=exclude, iou_threshold=iou_threshold, pred_layer=pred_layer,
                ref_layer=ref_layer, review=review, overwrite=overwrite, progress=progress,
                score_field=score_field, burn=burn,
            )  # fmt: skip
    if review is not None and result.kind != "building":
        log.warning("--review applies to building evaluation only; not written")
    if report is not None:
        with atomic_output(report, overwrite, kind="json", inputs=inputs) as tmp:
            tmp.write_text(json_text(result.to_dict()))
    return result


def _file_set(path: str | os.PathLike) -> Given:
    """A file or folder as given, or the files a quoted glob matches (InputError if none)."""
    from aerialct.geo.inputs import glob_paths, is_gdal_path, is_pattern

    s = os.fspath(path)
    if is_gdal_path(s):  # a URL or /vsi path: one file, as given (its "?" is no glob)
        return s
    p = Path(s)
    if p.exists():
        return p
    if is_pattern(s):
        return glob_paths(s, files_only=True)
    raise InputError(f"{p}: no such file or folder; check the path")


def _describe(files: Given) -> str:
    return files if isinstance(files, str) else describe(files)


def _is_set(files: Given) -> bool:
    if isinstance(files, str):
        return False
    return not isinstance(files, Path) or files.is_dir()


def _against_chips(
    pred: Path,
    index: Path,
    split: str | None,
    exclude: Sequence[str | int] | None,
    progress: ProgressFn | None,
) -> PixelEvaluation:
    """Pixel scores of a folder of predictions against the chip masks of ``split``."""
    if not pred.is_dir():
        raise InputError(f"{pred}: with --index the prediction must be a folder of rasters")
    pairs, missing, table = match_chips(pred, index, split)
    if missing:
        log.warning("%d chips have no prediction in %s; they are skipped", len(missing), pred)
    return evaluate_pixels(
        pairs, exclude=exclude, classes=table, missing=missing, progress=progress
    )


def _folders(
    pred: FileSet,
    ref: FileSet,
    exclude: Sequence[str | int] | None,
    iou_threshold: float,
    progress: ProgressFn | None,
) -> PixelEvaluation | BuildingEvaluation:
    """Two folders or patterns: building scores of polygon files, else pixel scores of rasters."""
    refs = members(ref)
    vector_dirs = not any(is_raster(q) for q in refs)
    if vector_dirs and any(q.suffix.lower() in VECTOR_SUFFIXES for q in refs):
        vpairs, missing = match_vector_folders(pred, ref)
        unmatched = _unmatched(pred, vpairs, lambda q: q.suffix.lower() in VECTOR_SUFFIXES)
        if missing:
            log.warning("%d references have no prediction in %s; their buildings count as "
                        "missed (false negatives): %s", len(missing), describe(pred),
                        _names(missing))  # fmt: skip
        return evaluate_building_files(
            vpairs, iou_threshold=iou_threshold, missing=missing, progress=progress,
            prediction=describe(pred), reference=describe(ref), unmatched=unmatched,
        )  # fmt: skip
    pairs, missing = match_folders(pred, ref)
    unmatched = _unmatched(pred, pairs, is_raster)
    if missing:
        log.warning("%d references have no prediction in %s; their pixels are not scored: %s",
                    len(missing), describe(pred), _names(missing))  # fmt: skip
    result = evaluate_pixels(pairs, exclude=exclude, missing=missing, progress=progress)
    result.unmatched = unmatched
    return result


def _unmatched(pred: FileSet, pairs: Sequence[tuple[Path, Path]], kind: Callable) -> list[str]:
    """Predictions of the set that no reference was paired with (warned: they are not scored)."""
    paired = {p for p, _ in pairs}
    out = [str(q) for q in members(pred) if kind(q) and q not in paired]
    if out:
        log.warning("%d predictions have no reference; they are not scored: %s", len(out),
                    _names(out))  # fmt: skip
    return out


def _names(paths: Sequence[str]) -> str:
    names = [Path(p).name for p in paths]
    return ", ".join(names[:5]) + (f", ... {len(names) - 5} more" if len(names) > 5 else "")


def _files(
    pred: Path | str,
    ref: Path | str,
    *,
    exclude: Sequence[str | int] | None,
    iou_threshold: float,
    pred_layer: str | None,
    ref_layer: str | None,
    review: str | os.PathLike | None,
    overwrite: bool,
    progress: ProgressFn | None,
    score_field: str,
    burn: str,
) -> PixelEvaluation | BuildingEvaluation:
    """Two files: building scores of two vectors, pixel scores of a raster against a raster
    or against polygons burnt onto its grid."""
    pred_vector = suffix_of(pred) in VECTOR_SUFFIXES
    ref_vector = suffix_of(ref) in VECTOR_SUFFIXES
    if pred_vector and ref_vector:
        return evaluate_buildings(
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
    if ref_vector:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="aerialct-ref-") as d:
            burnt = Path(d) / f"{Path(source_label(ref)).stem}.tif"
            table = rasterize_reference(pred, ref, burnt, burn=burn, layer=ref_layer)
            result = evaluate_pixels(
                [(pred, burnt)], exclude=exclude, classes=table, progress=progress
            )
        result.pairs[0].reference = str(ref)
        return result
    if pred_vector:
        raise InputError(
            f"{pred} and {ref}: one is a vector, the other a raster; compare rasters with "
            "rasters (pixel scores) or polygons with polygons (building scores); "
            "vectorise the raster first (aerialct vectorize)"
        )
    return evaluate_pixels([(pred, ref)], exclude=exclude, progress=progress)
