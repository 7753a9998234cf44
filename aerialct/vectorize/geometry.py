"""Geometry hygiene on pixel or map polygons: valid, canonical, polygonal, holes filled."""

from __future__ import annotations

import numpy as np


def fill_small_holes(geoms: np.ndarray, max_area: float) -> np.ndarray:
    """Drop interior rings with area below ``max_area`` (same units as the coordinates)."""
    import shapely

    out = geoms.copy()
    has_holes = np.flatnonzero(shapely.get_num_interior_rings(shapely.get_geometry(geoms, 0)) > 0)
    # get_num_interior_rings on part 0 misses holes in later parts of a MultiPolygon
    multi = np.flatnonzero(shapely.get_num_geometries(geoms) > 1)
    for i in np.union1d(has_holes, multi):
        parts = shapely.get_parts(geoms[i])
        kept = []
        for part in parts:
            holes = [
                ring for ring in part.interiors if shapely.area(shapely.polygons(ring)) >= max_area
            ]
            kept.append(shapely.Polygon(part.exterior, holes))
        out[i] = kept[0] if len(kept) == 1 else shapely.MultiPolygon(kept)
    return out


def canonical(geoms: np.ndarray) -> np.ndarray:
    """Valid, noded on the integer grid, no collinear vertices, normalised ring order."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms = geoms.copy()
        geoms[invalid] = shapely.set_precision(shapely.make_valid(geoms[invalid]), 1.0)
        geoms[invalid] = polygonal(geoms[invalid])
    return shapely.normalize(shapely.simplify(geoms, 0.0, preserve_topology=True))


def polygonal(geoms: np.ndarray) -> np.ndarray:
    """Keep only the polygonal parts (make_valid may return collections with lines)."""
    import shapely

    out = np.asarray(geoms, dtype=object).copy()
    for i in np.flatnonzero(shapely.get_type_id(out) == 7):
        parts = [p for p in shapely.get_parts(out[i]) if shapely.get_type_id(p) in (3, 6)]
        polys = [q for p in parts for q in shapely.get_parts(p)]
        out[i] = (
            shapely.MultiPolygon(polys)
            if len(polys) > 1
            else polys[0]
            if polys
            else shapely.Polygon()
        )
    return out
