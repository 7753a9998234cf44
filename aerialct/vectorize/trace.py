"""The boundary tracer: a boolean mask -> its polygons, in pixel coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- the boundary tracer ------------------------------------------------------------
#
# Pixel (row r, col c) is the unit square [c, c+1] x [r, r+1] in pixel coordinates
# (x right, y down). Boundary edges lie between a foreground and a background pixel
# and are directed with the foreground on their left: E (+x, foreground above),
# S (+y, foreground right of the line), W (-x, foreground below), N (-y, foreground
# left). Maximal straight runs of edges ("segments") start and end at corners. At a
# corner the next segment turns left or right (never straight, never back); only
# at a diagonal 2 x 2 pattern are both turns possible, and there the connectivity
# decides: with 8-connectivity the outline turns right (the two diagonal pixels are
# joined), with 4-connectivity left. Following the turns gives closed rings; outer
# rings have negative signed area in these coordinates, holes positive. Everything
# is array work: run detection with flat diffs, next-segment lookup with a sorted
# key, ring order with pointer doubling. The result equals GDAL's polygoniser
# (tests compare them) at a fraction of the cost, because only edges are visited.

_DX = np.array([1, 0, -1, 0], dtype=np.int64)  # E, S, W, N
_DY = np.array([0, 1, 0, -1], dtype=np.int64)


def _row_runs(padded: np.ndarray) -> tuple[np.ndarray, ...]:
    """Segments on horizontal lines: (y, x0, x1, sign); sign +1 = foreground below."""
    diff = padded[1:, :] - padded[:-1, :]  # (h+1, w+2), zero in the pad columns
    flat = diff.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = change[flat[change] != 0]
    ends = change[flat[change - 1] != 0]
    width = padded.shape[1]
    y, c0 = np.divmod(starts, width)
    return y, c0 - 1, ends % width - 1, flat[starts].astype(np.int64)


def _column_runs(padded: np.ndarray) -> tuple[np.ndarray, ...]:
    """Segments on vertical lines: (x, y0, y1, sign); sign +1 = foreground right."""
    diff = padded[:, 1:] - padded[:, :-1]  # (h+2, w+1), zero in the pad rows
    ncol = diff.shape[1]
    flat = diff.ravel()
    change = np.flatnonzero((diff[1:] != diff[:-1]).ravel()) + ncol
    starts = change[flat[change] != 0]
    ends = change[flat[change - ncol] != 0]
    rs, cs = np.divmod(starts, ncol)
    re, ce = np.divmod(ends, ncol)
    o1 = np.lexsort((rs, cs))
    o2 = np.lexsort((re, ce))
    return cs[o1], rs[o1] - 1, re[o2] - 1, flat[starts[o1]].astype(np.int64)


def _cycles(nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a permutation made of cycles: each element's cycle head (smallest index) and its
    distance to the head's predecessor (so sorting by -distance walks the cycle from the head)."""
    n = len(nxt)
    idx = np.arange(n)
    low = idx.copy()
    jump = nxt.copy()
    while True:
        low = np.minimum(low, low[jump])
        jump = jump[jump]
        if np.array_equal(low, low[nxt]):
            break
    succ = nxt.copy()
    tail = low[succ] == succ  # the element before the head
    succ[tail] = idx[tail]
    dist = (~tail).astype(np.int64)
    while True:
        after = succ[succ]
        if np.array_equal(after, succ):
            break
        dist = dist + dist[succ]
        succ = after
    return low, dist


@dataclass
class Traced:
    """Polygons of one mask in pixel coordinates and the polygon of each border pixel."""

    polygons: np.ndarray  # shapely Polygons (8-connected pinches may be self-touching)
    top: np.ndarray  # polygon index + 1 of each pixel of the first row, 0 = background
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    sample: np.ndarray  # (n, 2) row, col of one pixel of each polygon


def trace_polygons(
    mask: np.ndarray, connectivity: int = 8, offset: tuple[int, int] = (0, 0)
) -> Traced:
    """Polygonise the connected regions of a boolean mask (see the comment above).

    ``offset`` (col, row) is added to the coordinates: the mask's place in the raster.
    """
    import shapely

    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), dtype=np.int8)
    padded[1:-1, 1:-1] = mask
    sx, sy, ex, ey, d = _segments(padded)
    k = len(d)
    zeros = (np.zeros(w, np.int64), np.zeros(w, np.int64), np.zeros(h, np.int64))
    if k == 0:
        return Traced(
            np.array([], dtype=object),
            zeros[0],
            zeros[1],
            zeros[2],
            zeros[2].copy(),
            np.empty((0, 2), dtype=np.int64),
        )
    # next segment: the one leaving the end corner, preferring the connectivity's turn
    stride = w + 1
    key = (sy * stride + sx) * 4 + d
    order = np.argsort(key)
    skey = key[order]
    end = (ey * stride + ex) * 4
    turn1, turn2 = ((d + 1) % 4, (d + 3) % 4) if connectivity == 8 else ((d + 3) % 4, (d + 1) % 4)
    pos1 = np.minimum(np.searchsorted(skey, end + turn1), k - 1)
    pos2 = np.minimum(np.searchsorted(skey, end + turn2), k - 1)
    nxt = np.where(skey[pos1] == end + turn1, order[pos1], order[pos2])
    head, dist = _cycles(nxt)
    walk = np.lexsort((-dist, head))  # segments ring by ring, in walking order
    ring_head = head[walk]
    starts = np.flatnonzero(np.r_[True, ring_head[1:] != ring_head[:-1]])
    n_rings = len(starts)
    ring_len = np.diff(np.r_[starts, k])
    ring_of_seg = np.empty(k, dtype=np.int64)
    ring_of_seg[walk] = np.repeat(np.arange(n_rings), ring_len)
    vx = sx[walk].astype(np.float64)
    vy = sy[walk].astype(np.float64)
    last = starts + ring_len - 1
    nx_, ny_ = np.roll(vx, -1), np.roll(vy, -1)
    nx_[last], ny_[last] = vx[starts], vy[starts]
    area2 = np.add.reduceat(vx * ny_ - nx_ * vy, starts)
    is_shell = area2 < 0
    shells = np.flatnonzero(is_shell)
    holes = np.flatnonzero(~is_shell)
    closed_x = np.insert(vx, last + 1, vx[starts]) + offset[0]
    closed_y = np.insert(vy, last + 1, vy[starts]) + offset[1]
    rings = shapely.linearrings(
        np.column_stack([closed_x, closed_y]), indices=np.repeat(np.arange(n_rings), ring_len + 1)
    )
    owner = np.full(n_rings, -1, dtype=np.int64)
    owner[shells] = np.arange(len(shells))
    if len(holes):
        first = walk[starts[holes]]
        _own_holes(owner, holes, rings[shells], sx[first], sy[first], d[first], offset)
    ring_order = np.lexsort((~is_shell, owner))
    polys = shapely.polygons(rings[ring_order], indices=owner[ring_order])
    # one foreground pixel per polygon: the pixel left of its shell's first segment
    first = walk[starts[shells]]
    dd = d[first]
    sample = np.column_stack(
        [
            (sy[first] + (_DY[dd] - _DX[dd] - 1) // 2).astype(np.int64),  # row
            (sx[first] + (_DX[dd] + _DY[dd] - 1) // 2).astype(np.int64),  # col
        ]
    )
    poly_of_seg = owner[ring_of_seg] + 1
    top = _border(poly_of_seg, (d == 2) & (sy == 0), ex, w, np.flatnonzero(mask[0]))
    bottom = _border(poly_of_seg, (d == 0) & (sy == h), sx, w, np.flatnonzero(mask[-1]))
    left = _border(poly_of_seg, (d == 1) & (sx == 0), sy, h, np.flatnonzero(mask[:, 0]))
    right = _border(poly_of_seg, (d == 3) & (sx == w), ey, h, np.flatnonzero(mask[:, -1]))
    return Traced(polys, top, bottom, left, right, sample)


def _segments(padded: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every boundary segment of a zero-padded mask: start x, y, end x, y and direction."""
    y, a, b, sign = _row_runs(padded)
    east = sign < 0
    x, c, e, vsign = _column_runs(padded)
    south = vsign > 0
    sx = np.concatenate([np.where(east, a, b), x]).astype(np.int64)
    sy = np.concatenate([y, np.where(south, c, e)]).astype(np.int64)
    ex = np.concatenate([np.where(east, b, a), x]).astype(np.int64)
    ey = np.concatenate([y, np.where(south, e, c)]).astype(np.int64)
    d = np.concatenate([np.where(east, 0, 2), np.where(south, 1, 3)]).astype(np.int64)
    return sx, sy, ex, ey, d


def _own_holes(
    owner: np.ndarray,
    holes: np.ndarray,
    shell_rings: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    dd: np.ndarray,
    offset: tuple[int, int],
) -> None:
    """Set ``owner`` of each hole ring: the smallest shell holding a background pixel beside
    the hole's first segment (start ``sx``, ``sy``, direction ``dd``)."""
    import shapely

    px = sx + 0.5 * _DX[dd] - 0.5 * _DY[dd] + offset[0]
    py = sy + 0.5 * _DY[dd] + 0.5 * _DX[dd] + offset[1]
    shell_polys = shapely.polygons(shell_rings)
    hi, si = shapely.STRtree(shell_polys).query(shapely.points(px, py), predicate="within")
    o = np.lexsort((shapely.area(shell_polys)[si], hi))
    hi, si = hi[o], si[o]
    firsts = np.r_[True, hi[1:] != hi[:-1]]
    owner[holes[hi[firsts]]] = si[firsts]
    if (owner < 0).any():  # cannot happen for a raster mask; keep the shells honest
        raise RuntimeError("boundary tracing left a hole without its outline")


def _border(
    poly_of_seg: np.ndarray, sel: np.ndarray, lo: np.ndarray, n: int, pixels: np.ndarray
) -> np.ndarray:
    """Polygon number (+1, 0 = background) of each of ``n`` pixels along one border line,
    from the segments ``sel`` lying on it (``lo``: each segment's low coordinate)."""
    out = np.zeros(n, dtype=np.int64)
    if len(pixels):
        o = np.argsort(lo[sel])
        i = np.searchsorted(lo[sel][o], pixels, side="right") - 1
        out[pixels] = poly_of_seg[sel][o][i]
    return out
