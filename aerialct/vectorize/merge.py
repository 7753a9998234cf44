"""Window pieces merged across window seams: one building is one polygon.

The tracer says which polygon each pixel of a window's border rows and columns
belongs to. Polygons that continue across a seam are found by comparing these
labels on both sides (diagonal neighbours too with 8-connectivity), grouped into
connected components, and their pieces unioned on the integer pixel grid, which is
exact whatever the window size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def seam_pairs(a: np.ndarray, b: np.ndarray, diagonal: bool) -> np.ndarray:
    """Label pairs (N, 2) of pixels adjacent across a seam: a[i] next to b[i] (and b[i+-1])."""
    out = []
    shifts = (0, -1, 1) if diagonal else (0,)
    for s in shifts:
        if s == 0:
            x, y = a, b
        elif s == -1:
            x, y = a[1:], b[:-1]
        else:
            x, y = a[:-1], b[1:]
        both = (x > 0) & (y > 0)
        if both.any():
            out.append(np.stack([x[both], y[both]], axis=1))
    if not out:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(out), axis=0)


@dataclass
class Pieces:
    """Polygons in pixel coordinates, one per building, merged across seams."""

    geoms: np.ndarray
    class_ids: np.ndarray
    prob_sum: np.ndarray
    prob_min: np.ndarray
    windows: int
    seam_groups: int


# beats scipy csgraph.connected_components: 0.022 vs 0.37-0.73 ms, 245 pairs (bench_union_find.py)
def _union_find(pairs: np.ndarray, n: int) -> np.ndarray:
    """Root (the smallest label) of every label 0..n after joining the label ``pairs``.

    Array-parallel union-find: hook each pair's roots onto the smaller one, then
    compress paths by pointer jumping; repeat until every pair shares a root.
    """
    parent = np.arange(n + 1, dtype=np.int64)
    if not len(pairs):
        return parent
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        ra, rb = parent[a], parent[b]
        if np.array_equal(ra, rb):
            return parent
        low = np.minimum(ra, rb)
        np.minimum.at(parent, ra, low)
        np.minimum.at(parent, rb, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped


def merge_pieces(
    pieces: list[np.ndarray],
    label_class: list[np.ndarray],
    pairs: list[np.ndarray],
    stat_psum: list[np.ndarray] | None,
    stat_pmin: list[np.ndarray],
    windows: int,
) -> Pieces:
    """One polygon per building from the windows' pieces and the label pairs at the seams.

    ``pieces`` are the traced polygons in global label order (labels 1..N);
    ``label_class`` and the probability statistics start with a placeholder for label 0.
    ``stat_psum`` is None when no probabilities were read.
    """
    import shapely

    n_labels = sum(len(p) for p in pieces)
    if n_labels == 0:
        empty = np.array([], dtype=np.float64)
        return Pieces(np.array([], dtype=object), np.array([], np.int64), empty, empty, windows, 0)
    geoms = np.concatenate(pieces)
    label_class_arr = np.concatenate(label_class)
    pair_arr = np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)
    root = _union_find(pair_arr, n_labels)
    labels = np.arange(1, n_labels + 1)
    piece_root = root[labels]
    uniq, inverse, counts = np.unique(piece_root, return_inverse=True, return_counts=True)
    merged = np.empty(len(uniq), dtype=object)
    single = counts[inverse] == 1
    merged[inverse[single]] = geoms[single]
    multi = np.flatnonzero(counts > 1)
    if len(multi):
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)])
        for g in multi:
            members = geoms[order[starts[g] : starts[g + 1]]]
            merged[g] = shapely.union_all(shapely.make_valid(members), grid_size=1.0)

    if stat_psum is not None:
        psum = np.bincount(inverse, weights=np.concatenate(stat_psum)[1:], minlength=len(uniq))
        pmin = np.full(len(uniq), np.inf)
        np.minimum.at(pmin, inverse, np.concatenate(stat_pmin)[1:])
    else:
        psum = np.full(len(uniq), np.nan)
        pmin = np.full(len(uniq), np.nan)
    return Pieces(merged, label_class_arr[uniq], psum, pmin, windows, len(multi))
