"""Orthogonal regularisation: right-angled outlines along each polygon's dominant direction."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aerialct.vectorize.geometry import polygonal


def regularize_polygons(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Right-angled outlines along each polygon's dominant direction.

    The dominant direction is the long side of the minimum rotated rectangle.
    Outlines are first simplified by ``tolerance`` (at least one pixel diagonal,
    which removes the pixel staircase); then, in the rotated frame, each edge is
    snapped to horizontal or vertical, runs of edges with the same orientation
    become one line at their length-weighted mean offset, and consecutive lines
    are intersected. A ring that would collapse, or a result whose area differs
    from the input by more than half, falls back to the simplified outline.
    """
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    if not len(geoms):
        return geoms
    simplified = shapely.simplify(geoms, tolerance, preserve_topology=True)
    env = shapely.oriented_envelope(geoms)
    out = simplified.copy()
    for i, (g, e) in enumerate(zip(simplified, env, strict=True)):
        angle = _dominant_angle(e)
        parts = _orthogonal_parts(g, angle)
        if not parts:
            continue
        cand = shapely.make_valid(parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts))
        cand = polygonal(np.array([cand], dtype=object))[0]
        a0, a1 = shapely.area(geoms[i]), shapely.area(cand)
        if a1 > 0 and 0.5 <= a1 / a0 <= 1.5:
            out[i] = cand
    return out


def _orthogonal_parts(geom: Any, angle: float) -> list[Any] | None:
    """The orthogonal polygons of each part of ``geom`` (None when a shell collapses;
    collapsed holes are dropped)."""
    import shapely

    parts = []
    for part in shapely.get_parts(geom):
        shell = _orthogonal_ring(np.asarray(part.exterior.coords), angle)
        if shell is None:
            return None
        holes = [
            h
            for h in (_orthogonal_ring(np.asarray(r.coords), angle) for r in part.interiors)
            if h is not None
        ]
        parts.append(shapely.Polygon(shell, holes))
    return parts


def _dominant_angle(envelope) -> float:
    import shapely

    xy = np.asarray(shapely.get_coordinates(envelope))
    if len(xy) < 3:
        return 0.0
    d1, d2 = xy[1] - xy[0], xy[2] - xy[1]
    d = d1 if np.hypot(*d1) >= np.hypot(*d2) else d2
    # the two snapped directions repeat every 90 degrees; 0 keeps axis-aligned input exact
    angle = math.atan2(d[1], d[0]) % (math.pi / 2)
    return (
        0.0
        if math.isclose(angle, 0.0, abs_tol=1e-12)
        or math.isclose(angle, math.pi / 2, abs_tol=1e-12)
        else float(angle)
    )


def _orthogonal_ring(coords: np.ndarray, angle: float) -> np.ndarray | None:
    """Snap a closed ring's edges to two perpendicular directions (None if it collapses)."""
    cos, sin = math.cos(-angle), math.sin(-angle)
    pts = coords[:-1] if np.allclose(coords[0], coords[-1]) else coords
    if len(pts) < 3:
        return None
    rot = np.column_stack([cos * pts[:, 0] - sin * pts[:, 1], sin * pts[:, 0] + cos * pts[:, 1]])
    nxt = np.roll(rot, -1, axis=0)
    d = nxt - rot
    length = np.hypot(d[:, 0], d[:, 1])
    horizontal = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    mid = (rot + nxt) / 2
    # rotate the edge list so that it starts at an orientation change
    change = np.flatnonzero(horizontal != np.roll(horizontal, 1))
    if len(change) < 4:
        return None
    start = change[0]
    idx = np.roll(np.arange(len(pts)), -start)
    horizontal, length, mid = horizontal[idx], length[idx], mid[idx]
    run_id = np.cumsum(np.concatenate([[0], horizontal[1:] != horizontal[:-1]]))
    n_runs = int(run_id[-1]) + 1
    if n_runs < 4 or n_runs % 2:
        return None
    weight = np.bincount(run_id, weights=length, minlength=n_runs)
    if np.any(weight <= 0):
        return None
    off_y = np.bincount(run_id, weights=length * mid[:, 1], minlength=n_runs) / weight
    off_x = np.bincount(run_id, weights=length * mid[:, 0], minlength=n_runs) / weight
    run_h = np.zeros(n_runs, dtype=bool)
    run_h[run_id] = horizontal
    verts = []
    for k in range(n_runs):
        j = (k + 1) % n_runs
        if run_h[k]:
            verts.append((off_x[j], off_y[k]))
        else:
            verts.append((off_x[k], off_y[j]))
    v = np.asarray(verts)
    cos, sin = math.cos(angle), math.sin(angle)
    back = np.column_stack([cos * v[:, 0] - sin * v[:, 1], sin * v[:, 0] + cos * v[:, 1]])
    return np.vstack([back, back[:1]])
