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
    """Buildings in pixel coordinates, one polygon each, merged across seams.

    ``tiles`` names, per building, the tile of its top-left piece (its ``source``);
    ``corners`` is that piece's (top, left) pixel, which decides between tiles when
    the parts of a building are joined later; ``merged`` marks buildings made of
    several pieces, ``spans`` those whose pieces come from several tiles (files).
    """

    geoms: np.ndarray
    class_ids: np.ndarray
    prob_sum: np.ndarray
    prob_min: np.ndarray
    tiles: np.ndarray
    corners: np.ndarray
    merged: np.ndarray
    spans: np.ndarray

    @classmethod
    def empty(cls) -> Pieces:
        f = np.array([], dtype=np.float64)
        i = np.array([], dtype=np.int64)
        no = np.zeros(0, dtype=bool)
        return cls(np.array([], dtype=object), i, f, f, i, np.zeros((0, 2)), no, no)

    def __len__(self) -> int:
        return len(self.geoms)

    @property
    def seam_groups(self) -> int:
        return int(self.merged.sum())

    @classmethod
    def concat(cls, parts: list[Pieces]) -> Pieces:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in FIELDS))


FIELDS = ("geoms", "class_ids", "prob_sum", "prob_min", "tiles", "corners", "merged", "spans")


# beats scipy csgraph.connected_components: 0.022 vs 0.37-0.73 ms, 245 pairs (bench_union_find.py)
def union_find(pairs: np.ndarray, n: int) -> np.ndarray:
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


def merge_groups(
    geoms: np.ndarray,
    class_ids: np.ndarray,
    prob_sum: np.ndarray,
    prob_min: np.ndarray,
    tiles: np.ndarray,
    roots: np.ndarray,
    joined: Pieces | None = None,
) -> Pieces:
    """One polygon per group of pieces (pieces with the same ``roots`` value).

    Pieces are unioned on the integer pixel grid (exact); probability sums add up,
    minimums take the least. A group's tile is the one of its top-left piece: the
    least (top, left) corner. ``joined``: the pieces are buildings merged before (the
    open buildings of parts), whose corners, ``merged`` and ``spans`` carry over.
    """
    import shapely

    if not len(geoms):
        return Pieces.empty()
    uniq, first, inverse, counts = np.unique(
        roots, return_index=True, return_inverse=True, return_counts=True
    )
    merged = np.empty(len(uniq), dtype=object)
    single = counts[inverse] == 1
    merged[inverse[single]] = geoms[single]
    if joined is None:
        b = shapely.bounds(geoms)
        corners = np.column_stack([b[:, 1], b[:, 0]])
    else:
        corners = joined.corners
    # the top-left piece of each group: sort by group, then top, then left
    order = np.lexsort((corners[:, 1], corners[:, 0], inverse))
    starts = np.concatenate([[0], np.cumsum(counts)])
    lead = order[starts[:-1]]
    for g in np.flatnonzero(counts > 1):
        members = geoms[order[starts[g] : starts[g + 1]]]
        merged[g] = shapely.union_all(shapely.make_valid(members), grid_size=1.0)
    psum = np.bincount(inverse, weights=prob_sum, minlength=len(uniq))
    pmin = np.full(len(uniq), np.inf)
    with np.errstate(invalid="ignore"):  # NaN when no probabilities were read
        np.minimum.at(pmin, inverse, prob_min)
    low = np.full(len(uniq), np.iinfo(np.int64).max)
    high = np.full(len(uniq), -1)
    np.minimum.at(low, inverse, tiles)
    np.maximum.at(high, inverse, tiles)
    was_merged = counts > 1
    spans = low != high
    if joined is not None:
        was_merged |= np.bincount(inverse, weights=joined.merged, minlength=len(uniq)) > 0
        spans |= np.bincount(inverse, weights=joined.spans, minlength=len(uniq)) > 0
    return Pieces(merged, class_ids[first], psum, pmin, tiles[lead], corners[lead], was_merged,
                   spans)  # fmt: skip


class Frontier:
    """Traced pieces whose buildings may go on past the rows traced so far.

    Pieces get labels 1..n; ``pairs`` join labels across window seams; ``bottom``
    holds, per class, the labels along the last traced row (full width), and ``top``
    (when kept) those along the first one. :meth:`close` merges and hands out every
    building that touches no open line, and keeps the rest, relabelled, so memory
    holds one band of pieces plus the buildings that cross its edges.
    """

    def __init__(self, width: int, ids: list[int], keep_top: bool = False) -> None:
        self.ids = ids
        self.n = 0
        self.geoms: list[np.ndarray] = []
        self.class_ids: list[np.ndarray] = []
        self.tiles: list[np.ndarray] = []
        self.prob_sum: list[np.ndarray] = []
        self.prob_min: list[np.ndarray] = []
        self.pairs: list[np.ndarray] = []
        self.bottom = {c: np.zeros(width, dtype=np.int64) for c in ids}
        self.top = {c: np.zeros(width, dtype=np.int64) for c in ids} if keep_top else None

    def add(
        self, polygons: np.ndarray, class_id: int, tile: int,
        prob_sum: np.ndarray | None = None, prob_min: np.ndarray | None = None,
    ) -> int:  # fmt: skip
        """Add one window's pieces of one class; the offset of their labels."""
        offset, n = self.n, len(polygons)
        self.geoms.append(polygons)
        self.class_ids.append(np.full(n, class_id, dtype=np.int64))
        self.tiles.append(np.full(n, tile, dtype=np.int64))
        self.prob_sum.append(prob_sum if prob_sum is not None else np.full(n, np.nan))
        self.prob_min.append(prob_min if prob_min is not None else np.full(n, np.nan))
        self.n += n
        return offset

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(
            np.concatenate(a) if a else np.array([], dtype=dt)
            for a, dt in ((self.geoms, object), (self.class_ids, np.int64),
                          (self.tiles, np.int64), (self.prob_sum, np.float64),
                          (self.prob_min, np.float64))
        )  # fmt: skip

    def _lines(self, bottom: bool) -> list[np.ndarray]:
        lines = list(self.bottom.values()) if bottom else []
        return lines + (list(self.top.values()) if self.top is not None else [])

    def close(self, keep_bottom: bool = True) -> Pieces:
        """Merge and return the buildings that touch no open line (``bottom`` unless
        ``keep_bottom`` is False, ``top`` when kept); keep the others."""
        if self.n == 0:
            return Pieces.empty()
        geoms, class_ids, tiles, psum, pmin = self._arrays()
        pairs = np.concatenate(self.pairs) if self.pairs else np.empty((0, 2), dtype=np.int64)
        root = union_find(pairs, self.n)
        lines = self._lines(keep_bottom)
        open_root = np.zeros(self.n + 1, dtype=bool)
        if lines:
            labels = np.unique(np.concatenate(lines))
            open_root[root[labels[labels > 0]]] = True
        stays = open_root[root]
        stays[0] = False
        done = ~stays[1:]
        out = merge_groups(geoms[done], class_ids[done], psum[done], pmin[done], tiles[done],
                           root[1:][done])  # fmt: skip
        keep = stays[1:]
        new = np.zeros(self.n + 1, dtype=np.int64)
        new[1:][keep] = np.arange(1, int(keep.sum()) + 1)
        self.n = int(keep.sum())
        self.geoms, self.class_ids, self.tiles = [geoms[keep]], [class_ids[keep]], [tiles[keep]]
        self.prob_sum, self.prob_min = [psum[keep]], [pmin[keep]]
        self.pairs = [new[pairs[stays[pairs[:, 0]]]]] if len(pairs) else []
        for line in (self.bottom, self.top or {}):
            for c in line:
                line[c] = new[line[c]]
        return out

    def export(self) -> tuple[Pieces, dict[int, np.ndarray], dict[int, np.ndarray] | None]:
        """The buildings left open, merged (labels 1..G in order), and the open lines
        relabelled to them: what a later join needs of this part of a mosaic."""
        if self.n == 0:
            return Pieces.empty(), self.bottom, self.top
        geoms, class_ids, tiles, psum, pmin = self._arrays()
        pairs = np.concatenate(self.pairs) if self.pairs else np.empty((0, 2), dtype=np.int64)
        root = union_find(pairs, self.n)
        pieces = merge_groups(geoms, class_ids, psum, pmin, tiles, root[1:])
        group = np.zeros(self.n + 1, dtype=np.int64)
        group[1:] = np.searchsorted(np.unique(root[1:]), root[1:]) + 1
        bottom = {c: group[v] for c, v in self.bottom.items()}
        top = {c: group[v] for c, v in self.top.items()} if self.top is not None else None
        return pieces, bottom, top
