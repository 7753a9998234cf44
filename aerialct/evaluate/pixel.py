"""Pixel scores: prediction class rasters against reference label rasters.

One pair, a folder of predictions against a folder of references (matched by file
name), or a folder of predictions against the masks of a chips dataset
(``index.gpkg``, one split). Rasters are read in blocks of rows, so their size does
not matter; their grids must match. Reference pixels 255 (ignore) are never
counted; prediction pixels 255 (nodata) where the reference has a label are
reported as ``unpredicted`` and left out of the matrix.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aerialct.classes import IGNORE_INDEX, POTSDAM, ClassTable
from aerialct.data.potsdam import EXCLUDED_FROM_MEAN
from aerialct.errors import InputError
from aerialct.evaluate.metrics import PixelScores, confusion_matrix, scores_from_confusion
from aerialct.geo.inputs import source_path
from aerialct.progress import ProgressFn, as_progress

log = logging.getLogger("aerialct")

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2"}


@dataclass
class PairResult:
    """The summary scores of one (prediction, reference) raster pair."""

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
    """References without a prediction (folders, chips)."""
    seconds: float = 0.0
    unmatched: list[str] = field(default_factory=list)
    """Predictions without a reference (folders): not scored."""

    def to_dict(self) -> dict:
        """The summed scores, the unpredicted count and one line per pair (the JSON report)."""
        return {
            "kind": self.kind,
            **self.scores.to_dict(),
            "unpredicted": self.unpredicted,
            "pairs": [vars(p) for p in self.pairs],
            "missing": list(self.missing),
            "unmatched": list(self.unmatched),
            "seconds": self.seconds,
        }


def _resolve_exclude(table: ClassTable, exclude: Sequence[str | int] | None) -> list[str]:
    """Explicit names must exist; the default (clutter, and the classes the table marks
    ``exclude_from_mean``) is skipped when absent."""
    if exclude is None:
        return [n for n in EXCLUDED_FROM_MEAN if n in table.names] + table.excluded_from_mean
    out = []
    for e in exclude:
        try:
            out.append(table.names[table.id_of(e)])
        except ValueError as err:
            raise InputError(f"--exclude: {err}") from None
    return out


def _pair_confusion(
    pred_path: str | Path, ref_path: str | Path, table: ClassTable | None, rows_per_block: int
) -> tuple[np.ndarray, int, ClassTable]:
    """Confusion matrix of one raster pair read in blocks of rows; also the unpredicted count."""
    from rasterio.windows import Window

    from aerialct.geo.classraster import check_class_raster, check_class_values, raster_class_table
    from aerialct.geo.io import open_raster, read_window, require_same_grid

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
            source_path(pred_path), source_path(ref_path), table, rows_per_block
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


def is_raster(p: Path) -> bool:
    return p.suffix.lower() in RASTER_SUFFIXES


FileSet = Path | Sequence[Path]
"""A folder, or the files a quoted glob matched (``"pred/*.gpkg"``)."""


def members(files: FileSet) -> list[Path]:
    """The files of a folder (not recursive), or the given files, sorted."""
    if isinstance(files, Path):
        return sorted(p for p in files.iterdir() if p.is_file())
    return sorted(p for p in files if p.is_file())


def pair_by_name(
    refs: Sequence[Path], find: Callable[[Path], Path | None]
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(prediction, reference) pairs for the references ``find`` names a prediction for,
    and the references it names none for."""
    pairs, missing = [], []
    for ref in refs:
        pred = find(ref)
        if pred is None:
            missing.append(str(ref))
        else:
            pairs.append((pred, ref))
    return pairs, missing


def describe(files: FileSet) -> str:
    """How a file set is named in messages: the folder, or its first file and a count."""
    if isinstance(files, Path):
        return str(files)
    return f"{files[0]} and {len(files) - 1} more" if len(files) > 1 else str(files[0])


def match_folders(pred_dir: FileSet, ref_dir: FileSet) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair rasters of two folders (or file lists) by file name; return pairs and the
    unmatched references."""
    refs = [p for p in members(ref_dir) if is_raster(p)]
    if not refs:
        raise InputError(
            f"{describe(ref_dir)}: no reference raster (.tif) among them; check the path"
        )
    preds = {p.name: p for p in members(pred_dir) if is_raster(p)}
    by_stem = {p.stem: p for p in preds.values()}
    pairs, missing = pair_by_name(
        refs,
        lambda ref: (
            preds.get(ref.name) or by_stem.get(ref.stem) or by_stem.get(f"{ref.stem}_classes")
        ),
    )
    if not pairs:
        raise InputError(
            f"{describe(pred_dir)} and {describe(ref_dir)}: no file name in common; predictions "
            f"must be named like the references (e.g. {refs[0].name})"
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
