"""Pixel metrics: confusion matrix and the scores derived from it.

Shared by training (validation mIoU) and ``aerialct evaluate``. The confusion
matrix has rows = reference class, columns = predicted class. Pixels whose
reference *or* prediction is ``ignore_index`` (255: unlabelled reference,
nodata prediction) are never counted.

Scores of class ``c`` with ``tp = cm[c, c]``, ``fp = col_sum - tp``,
``fn = row_sum - tp``::

    IoU = tp / (tp + fp + fn)          precision = tp / (tp + fp)
    F1  = 2 tp / (2 tp + fp + fn)      recall    = tp / (tp + fn)

A score whose denominator is 0 is NaN (JSON null). ``mean_iou`` and ``mean_f1``
average over the classes that are not excluded and occur in the reference or
the prediction (``tp + fp + fn > 0``). ``overall_accuracy`` is the trace over
all counted pixels, excluded classes included (the ISPRS convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aerialct.classes import IGNORE_INDEX
from aerialct.data.potsdam import EXCLUDED_FROM_MEAN
from aerialct.errors import InputError

__all__ = ["PixelScores", "confusion_matrix", "scores_from_confusion"]


def confusion_matrix(
    pred: np.ndarray, ref: np.ndarray, num_classes: int, ignore_index: int | None = IGNORE_INDEX
) -> np.ndarray:
    """Count (reference, prediction) pairs into an int64 ``(K, K)`` matrix.

    ``pred`` and ``ref`` are integer arrays of the same shape (any shape).
    Values other than ``0..K-1`` and ``ignore_index`` raise :class:`InputError`,
    because silently dropping them would hide a class-table mismatch.
    """
    k = int(num_classes)
    if k <= 0:
        raise InputError(f"num_classes must be positive, got {num_classes}")
    p = np.asarray(pred)
    r = np.asarray(ref)
    if p.shape != r.shape:
        raise InputError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    p = p.ravel()
    r = r.ravel()
    if ignore_index is not None:
        valid = (r != ignore_index) & (p != ignore_index)
        if not valid.all():
            p = p[valid]
            r = r[valid]
    if p.size == 0:
        return np.zeros((k, k), dtype=np.int64)
    for name, a in (("prediction", p), ("reference", r)):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= k:
            bad = lo if lo < 0 else hi
            raise InputError(
                f"{name} holds class id {bad}, outside 0..{k - 1} (ignore {ignore_index}); "
                "check that prediction and reference use the same class table"
            )
    # uint8 * k would overflow; int64 keeps the index exact for any K.
    codes = r.astype(np.int64) * k + p.astype(np.int64)
    return np.bincount(codes, minlength=k * k).reshape(k, k).astype(np.int64)


@dataclass
class PixelScores:
    """Per-class and summary pixel scores (see the module docstring for formulas)."""

    classes: list[str]
    per_class: dict[str, dict[str, float]]
    mean_iou: float
    mean_f1: float
    overall_accuracy: float
    confusion: list[list[int]]
    excluded: list[str] = field(default_factory=list)
    pixels: int = 0

    def to_dict(self) -> dict:
        """Plain lists and dicts, for the JSON report."""
        return {
            "classes": list(self.classes),
            "per_class": {k: dict(v) for k, v in self.per_class.items()},
            "mean_iou": self.mean_iou,
            "mean_f1": self.mean_f1,
            "overall_accuracy": self.overall_accuracy,
            "confusion": [list(map(int, row)) for row in self.confusion],
            "excluded": list(self.excluded),
            "pixels": int(self.pixels),
        }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_confusion(
    cm: np.ndarray,
    class_names: Sequence[str],
    exclude: Sequence[str | int] = EXCLUDED_FROM_MEAN,
) -> PixelScores:
    """Scores from a confusion matrix (rows = reference, cols = prediction).

    ``exclude`` names (or ids) the classes left out of the means; names that are
    not in ``class_names`` are skipped so the default (Potsdam's clutter) works with any
    class table. The CLI checks user-given names before calling this.
    """
    cm = np.asarray(cm, dtype=np.int64)
    names = [str(n) for n in class_names]
    k = len(names)
    if cm.shape != (k, k):
        raise InputError(f"confusion matrix shape {cm.shape} does not match {k} class names")
    tp = np.diag(cm).astype(np.float64)
    ref_sum = cm.sum(axis=1).astype(np.float64)
    pred_sum = cm.sum(axis=0).astype(np.float64)
    fp = pred_sum - tp
    fn = ref_sum - tp
    iou = _ratio(tp, tp + fp + fn)
    precision = _ratio(tp, pred_sum)
    recall = _ratio(tp, ref_sum)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)

    lowered = {n.lower(): i for i, n in enumerate(names)}
    excluded_ids: set[int] = set()
    for e in exclude:
        if isinstance(e, int) or str(e).isdigit():
            if 0 <= int(e) < k:
                excluded_ids.add(int(e))
        elif str(e).lower() in lowered:
            excluded_ids.add(lowered[str(e).lower()])
    present = (tp + fp + fn) > 0
    keep = np.array([present[i] and i not in excluded_ids for i in range(k)], dtype=bool)
    mean_iou = float(iou[keep].mean()) if keep.any() else float("nan")
    mean_f1 = float(f1[keep].mean()) if keep.any() else float("nan")
    total = float(cm.sum())
    oa = float(tp.sum() / total) if total > 0 else float("nan")

    per_class = {
        names[i]: {
            "iou": float(iou[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(ref_sum[i]),
            "predicted": int(pred_sum[i]),
        }
        for i in range(k)
    }
    return PixelScores(
        classes=names,
        per_class=per_class,
        mean_iou=mean_iou,
        mean_f1=mean_f1,
        overall_accuracy=oa,
        confusion=cm.tolist(),
        excluded=[names[i] for i in sorted(excluded_ids)],
        pixels=int(total),
    )
