"""One class raster -> one attributed layer of polygons (:func:`polygonise`)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.classes import POTSDAM, ClassTable
from aerialct.errors import InputError
from aerialct.geo.inputs import source_name
from aerialct.progress import ProgressFn, as_progress
from aerialct.vectorize.geometry import canonical, fill_small_holes, polygonal
from aerialct.vectorize.merge import FIELDS, Pieces
from aerialct.vectorize.regularise import regularize_polygons
from aerialct.vectorize.windows import DEFAULT_WINDOW, Tracer

log = logging.getLogger("aerialct")

if TYPE_CHECKING:
    from aerialct.geo.vector import Layer
    from aerialct.vectorize.mosaic import Mosaic


@dataclass
class Polygonised:
    """One raster's polygons before writing (see :func:`polygonise`)."""

    source: str
    layer_name: str
    layer: Layer
    names: list[str]
    crs: Any
    dropped: int
    windows: int
    seam_groups: int
    table: ClassTable = POTSDAM
    """The raster's class table (the colours of the layer's QGIS style)."""


def check_options(
    min_area: float, fill_holes: float, simplify: float, connectivity: int, window_size: int
) -> None:
    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity}")
    if window_size < 16:
        raise InputError(f"window size {window_size} is too small; use at least 16 pixels")
    for name, value in (("min-area", min_area), ("fill-holes", fill_holes), ("simplify", simplify)):
        if not math.isfinite(value) or value < 0:
            raise InputError(f"--{name} must be a number >= 0, got {value}")


def polygonise(
    raster: str | os.PathLike,
    *,
    classes: Sequence[str | int] = ("building",),
    min_area: float = 0.0,
    fill_holes: float = 0.0,
    simplify: float = 0.0,
    regularize: bool = False,
    morph: Sequence[tuple[str, int]] = (),
    probabilities: str | os.PathLike | None = None,
    layer: str | None = None,
    connectivity: int = 8,
    window_size: int = DEFAULT_WINDOW,
    progress: ProgressFn | None = None,
) -> Polygonised:
    """The polygons of ``classes`` of one class raster, cleaned up, with their attributes."""
    from aerialct.vectorize.mosaic import read_header, single_mosaic

    prog = as_progress(progress)
    header = read_header(raster, probabilities, classes)
    with single_mosaic(header) as mosaic, mosaic.block_cache(window_size):
        tracer = Tracer(mosaic, mosaic.ids, morph, connectivity, window_size,
                         header.probabilities is not None, prog)  # fmt: skip
        prog(0, total=mosaic.covered_windows(window_size), description="vectorising")
        pieces = Pieces.concat(list(tracer.run()))
    done = finish_pieces(pieces, mosaic, min_area=min_area, fill_holes=fill_holes, simplify=simplify,
                   regularize=regularize)  # fmt: skip
    names = [mosaic.table.names[i] for i in mosaic.ids]
    return Polygonised(
        source=source_name(raster),
        layer_name=layer or layer_name(names),
        layer=done.layer,
        names=names,
        crs=mosaic.crs,
        dropped=len(done.dropped),
        windows=tracer.windows,
        seam_groups=pieces.seam_groups,
        table=mosaic.table,
    )


def layer_name(names: Sequence[str]) -> str:
    """The default layer name: the class name, or ``classes`` for several."""
    return names[0] if len(names) == 1 else "classes"


@dataclass
class Finished:
    """A batch of buildings in map coordinates, in output order.

    ``keys`` (N, 7) is the order, in pixels of the mosaic: band of the building's
    bottom edge, top, left, -pixels, class, right, bottom; ``tiles`` each building's
    tile; ``merged`` and ``spans`` as in :class:`Pieces`; ``dropped`` the tiles of the
    buildings dropped as too small.
    """

    layer: Layer
    keys: np.ndarray
    tiles: np.ndarray
    merged: np.ndarray
    spans: np.ndarray
    dropped: np.ndarray


def _order(pieces: Pieces, pixels: np.ndarray, band_edges: np.ndarray) -> np.ndarray:
    """The order keys (N, 7) of buildings in pixel coordinates (see :class:`Finished`).

    A building is handed out at the end of the band that holds its bottom row (or the
    next band when it ends on that band's last row), so sorting by that band first
    gives the same order whether a map is written band by band or joined from parts.
    """
    import shapely

    b = np.rint(shapely.bounds(pieces.geoms)).astype(np.int64)
    band = np.searchsorted(band_edges, b[:, 3], side="right") - 1
    band = np.clip(band, 0, len(band_edges) - 2)
    return np.column_stack([band, b[:, 1], b[:, 0], -pixels, pieces.class_ids, b[:, 2], b[:, 3]])


def finish_pieces(
    pieces: Pieces,
    mosaic: Mosaic,
    *,
    min_area: float,
    fill_holes: float,
    simplify: float,
    regularize: bool,
) -> Finished:
    """Canonical, ordered, in map coordinates, cleaned up, with attributes."""
    import shapely

    from aerialct.geo.vector import Layer

    transform = mosaic.transform
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    pixel_size = math.sqrt(pixel_area)
    table = mosaic.table
    keys = np.zeros((0, 7), dtype=np.int64)
    p = pieces
    dropped = np.array([], dtype=np.int64)
    pixels = np.array([], dtype=np.int64)
    geoms = p.geoms
    if len(geoms):
        geoms = canonical(geoms)
        # a pixel polygon's area in pixel units is its pixel count
        pixels = np.rint(shapely.area(geoms)).astype(np.int64)
        if fill_holes > 0:
            geoms = fill_small_holes(geoms, fill_holes / pixel_area)
        p = replace(p, geoms=geoms)
        # deterministic order whatever the window size or the parts
        keys = _order(p, pixels, mosaic.band_edges)
        order = np.lexsort(keys.T[::-1])
        p, pixels, keys = _take(p, order), pixels[order], keys[order]
        a, bb, c, d, e, f = transform[:6]
        geoms = shapely.transform(
            p.geoms,
            lambda xy: np.column_stack(
                [a * xy[:, 0] + bb * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]
            ),
        )
        keep = _clean_up(geoms, min_area, simplify, regularize, pixel_size)
        dropped = p.tiles[~keep]
        geoms, pixels, keys, p = geoms[keep], pixels[keep], keys[keep], _take(p, keep)
    fields: dict[str, np.ndarray] = {
        "id": np.arange(1, len(geoms) + 1, dtype=np.int64),
        "class": np.array([table.names[int(i)] for i in p.class_ids], dtype=object),
        "area": shapely.area(geoms).astype(np.float64),
        "perimeter": shapely.length(geoms).astype(np.float64),
        "pixels": pixels.astype(np.int64),
    }
    if mosaic.prob_scale is not None:
        fields["mean_confidence"] = p.prob_sum / np.maximum(pixels, 1) / mosaic.prob_scale
        fields["min_confidence"] = p.prob_min / mosaic.prob_scale
    names = np.array([*(source_name(n) for n in mosaic.names), ""], dtype=object)
    fields["source"] = names[p.tiles] if len(geoms) else np.array([], dtype=object)
    layer = Layer(np.asarray(geoms, dtype=object), fields, mosaic.crs)
    return Finished(layer, keys, p.tiles, p.merged, p.spans, dropped)


def _take(p: Pieces, index: np.ndarray) -> Pieces:
    return Pieces(*(getattr(p, k)[index] for k in FIELDS))


def _clean_up(
    geoms: np.ndarray, min_area: float, simplify: float, regularize: bool, pixel_size: float
) -> np.ndarray:
    """Drop small polygons, simplify or regularise the others (in place); the kept mask."""
    import shapely

    keep = np.ones(len(geoms), dtype=bool)
    if min_area > 0:
        keep = shapely.area(geoms) >= min_area
    if regularize:
        geoms[~keep] = None
        geoms[keep] = regularize_polygons(geoms[keep], max(simplify, math.sqrt(2) * pixel_size))
    elif simplify > 0:
        geoms[keep] = shapely.simplify(geoms[keep], simplify, preserve_topology=True)
    if simplify > 0 or regularize:
        invalid = keep & ~shapely.is_valid(geoms)
        if invalid.any():
            geoms[invalid] = polygonal(shapely.make_valid(geoms[invalid]))
        keep &= ~shapely.is_empty(geoms)
    return keep
