"""Object-level average precision of scored polygons (COCO style).

For each class and IoU threshold ``t``, predictions are taken in order of
decreasing confidence (stable for ties); each one matches the still unmatched
reference of the same class with the highest IoU >= ``t``, or is a false
positive. The precision envelope (the running maximum from the right) is read
at the 101 recall points 0, 0.01, ..., 1, and AP is their mean (recall points
beyond the reached recall count as 0). AP@[.5:.95] averages the ten thresholds
0.5, 0.55, ..., 0.95; a layer's AP is the mean over the classes that have
references. These are the rules of the COCO evaluation (``pycocotools``), which
the tests use as the independent check.

Candidate pairs come from an STRtree query and their IoUs from one vectorised
shapely call; only the greedy bookkeeping loops, over predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)

__all__ = [
    "IOU_THRESHOLDS",
    "RECALL_POINTS",
    "APScores",
    "average_precision",
    "candidate_ious",
    "object_ap",
]


@dataclass
class APScores:
    """AP@0.5, AP@0.75 and AP@[.5:.95], overall (mean over classes) and per class."""

    ap50: float
    ap75: float
    ap: float  # AP@[.5:.95]
    per_class: dict[str, dict[str, float | int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The scores as a plain dict."""
        return {"ap50": self.ap50, "ap75": self.ap75, "ap": self.ap, "per_class": self.per_class}


def candidate_ious(
    pred: np.ndarray,
    ref: np.ndarray,
    pred_class: np.ndarray | None = None,
    ref_class: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pred_idx, ref_idx, iou)`` of every intersecting pair (of the same class when given)."""
    import shapely

    empty = np.array([], dtype=np.int64)
    if len(pred) == 0 or len(ref) == 0:
        return empty, empty, np.array([], dtype=np.float64)
    pi, ri = shapely.STRtree(ref).query(pred, predicate="intersects")
    if pred_class is not None and ref_class is not None:
        same = np.asarray(pred_class)[pi] == np.asarray(ref_class)[ri]
        pi, ri = pi[same], ri[same]
    inter = shapely.area(shapely.intersection(pred[pi], ref[ri]))
    union = shapely.area(pred)[pi] + shapely.area(ref)[ri] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return pi.astype(np.int64), ri.astype(np.int64), iou


def _precision_at_recall_points(tp: np.ndarray, n_ref: int) -> np.ndarray:
    """101-point interpolated precision from TP flags in score order (COCO's rule)."""
    q = np.zeros(len(RECALL_POINTS))
    if len(tp) == 0:
        return q
    ctp = np.cumsum(tp, dtype=np.float64)
    cfp = np.cumsum(~tp, dtype=np.float64)
    recall = ctp / n_ref
    precision = ctp / (ctp + cfp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    ok = idx < len(recall)
    q[ok] = envelope[idx[ok]]  # recall points out of reach stay 0, as in pycocotools
    return q


def average_precision(
    scores: np.ndarray,
    n_ref: int,
    pi: np.ndarray,
    ri: np.ndarray,
    iou: np.ndarray,
    thresholds: np.ndarray = IOU_THRESHOLDS,
) -> np.ndarray:
    """AP at each threshold for one class: NaN when there is no reference.

    ``scores`` holds the confidence of every prediction; ``(pi, ri, iou)`` are the
    candidate pairs of this class (prediction index, reference index, IoU).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if n_ref == 0:
        return np.full(len(thresholds), np.nan)
    n = len(scores)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    # candidates grouped by prediction (CSR), each group by IoU descending, then reference
    by = np.lexsort((ri, -iou, pi))
    pi, ri, iou = pi[by], ri[by], iou[by]
    starts = np.searchsorted(pi, np.arange(n + 1))
    out = np.empty(len(thresholds))
    ri_list, iou_list, starts_list = ri.tolist(), iou.tolist(), starts.tolist()
    for k, t in enumerate(thresholds.tolist()):
        used = np.zeros(n_ref, dtype=bool)
        tp = np.zeros(n, dtype=bool)
        for rank, d in enumerate(order.tolist()):
            for c in range(starts_list[d], starts_list[d + 1]):
                if iou_list[c] < t:
                    break  # the rest of this group is lower
                if not used[ri_list[c]]:
                    used[ri_list[c]] = True
                    tp[rank] = True
                    break
        out[k] = float(_precision_at_recall_points(tp, n_ref).mean())
    return out


def object_ap(
    pred: np.ndarray,
    ref: np.ndarray,
    scores: np.ndarray,
    pred_class: np.ndarray | None = None,
    ref_class: np.ndarray | None = None,
) -> APScores:
    """COCO-style AP of scored predicted polygons against reference polygons.

    With ``pred_class`` and ``ref_class`` only same-class pairs match and AP is
    computed per class, then averaged over the classes that have references.
    """
    if pred_class is None or ref_class is None:
        pred_class = np.zeros(len(pred), dtype=object)
        ref_class = np.zeros(len(ref), dtype=object)
        names = ["all"]
        labels: dict[str, object] = {"all": 0}
    else:
        pred_class = np.asarray(pred_class, dtype=object)
        ref_class = np.asarray(ref_class, dtype=object)
        names = sorted({str(v) for v in ref_class} | {str(v) for v in pred_class})
        labels = {n: n for n in names}
        pred_class = np.array([str(v) for v in pred_class], dtype=object)
        ref_class = np.array([str(v) for v in ref_class], dtype=object)
    scores = np.asarray(scores, dtype=np.float64)
    pi, ri, iou = candidate_ious(pred, ref, pred_class, ref_class)
    per_class: dict[str, dict[str, float | int]] = {}
    rows = []
    for name in names:
        lab = labels[name]
        p_idx = np.flatnonzero(pred_class == lab)
        r_idx = np.flatnonzero(ref_class == lab)
        # re-index the pairs of this class into 0..len(p_idx), 0..len(r_idx)
        p_map = np.full(len(pred), -1, dtype=np.int64)
        p_map[p_idx] = np.arange(len(p_idx))
        r_map = np.full(len(ref), -1, dtype=np.int64)
        r_map[r_idx] = np.arange(len(r_idx))
        sel = (p_map[pi] >= 0) & (r_map[ri] >= 0)
        aps = average_precision(scores[p_idx], len(r_idx), p_map[pi[sel]], r_map[ri[sel]], iou[sel])
        per_class[name] = {
            "ap50": float(aps[0]),
            "ap75": float(aps[5]),
            "ap": float(np.mean(aps)),
            "predicted": len(p_idx),
            "reference": len(r_idx),
        }
        if len(r_idx):
            rows.append(aps)
    if rows:
        table = np.vstack(rows)  # (classes with references, thresholds)
        ap50, ap75, ap = float(table[:, 0].mean()), float(table[:, 5].mean()), float(table.mean())
    else:
        ap50 = ap75 = ap = float("nan")
    return APScores(ap50=ap50, ap75=ap75, ap=ap, per_class=per_class)
