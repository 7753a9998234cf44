"""One class raster -> one attributed layer of polygons (:func:`polygonise`)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.classes import POTSDAM, ClassTable
from aerialct.errors import InputError
from aerialct.geo.inputs import source_name
from aerialct.progress import ProgressFn, as_progress
from aerialct.vectorize.geometry import canonical, fill_small_holes, polygonal
from aerialct.vectorize.merge import Pieces
from aerialct.vectorize.regularise import regularize_polygons
from aerialct.vectorize.windows import DEFAULT_WINDOW, polygonise_windows, prob_reader

log = logging.getLogger("aerialct")

if TYPE_CHECKING:
    from aerialct.geo.vector import Layer


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


def _block_cache(size: int, *datasets: Any) -> Any:
    """GDAL's block cache capped at what one window needs, unless the user set GDAL_CACHEMAX.

    Windows are read once each, so cached blocks are only reused within a window row of a
    striped raster; GDAL's default (5% of RAM) would keep every block of the raster.
    """
    import rasterio

    if "GDAL_CACHEMAX" in os.environ:
        return rasterio.Env()
    need = 0
    for ds in datasets:
        if ds is None:
            continue
        bh, bw = ds.block_shapes[0] if ds.block_shapes else (size, ds.width)
        cols = ds.width if bw >= ds.width else min(ds.width, size + bw)  # strips: a window row
        need += min(ds.height, size + bh) * cols * ds.count * np.dtype(ds.dtypes[0]).itemsize
    return rasterio.Env(GDAL_CACHEMAX=int(max(4 << 20, 1.25 * need)))


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
    from aerialct.geo.classraster import check_class_raster, raster_class_table
    from aerialct.geo.io import grid_mismatch, open_raster

    prog = as_progress(progress)
    with open_raster(raster) as ds:
        check_class_raster(ds)
        table = raster_class_table(ds)
        assert table is not None  # the default is POTSDAM
        try:
            ids = sorted(set(table.ids_of(classes)))
        except ValueError as e:
            raise InputError(f"{raster}: {e}") from None
        if not ids:
            raise InputError("no class to vectorise; pass --class NAME (e.g. --class building)")
        names = [table.names[i] for i in ids]
        if ds.crs is None:
            log.warning("%s has no CRS; the output will have none", raster)
        probs = None
        scale = 1.0
        if probabilities is not None:
            probs = open_raster(probabilities)
            diff = grid_mismatch(ds, probs)
            if diff:
                probs.close()
                raise InputError(
                    f"{raster} and {probabilities}: grids differ ({diff}); "
                    "give the probability raster written with this class raster"
                )
            scale = prob_reader(probs, table)
        try:
            with _block_cache(window_size, ds, probs):
                pieces = polygonise_windows(
                    ds, table, ids, morph, connectivity, window_size, probs, prog
                )
        finally:
            if probs is not None:
                probs.close()
        transform = ds.transform
        crs = ds.crs
        pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
        pixel_size = math.sqrt(pixel_area)

    out_layer, dropped = _finish(
        pieces,
        table=table,
        transform=transform,
        crs=crs,
        pixel_area=pixel_area,
        pixel_size=pixel_size,
        min_area=min_area,
        fill_holes=fill_holes,
        simplify=simplify,
        regularize=regularize,
        with_probs=probs is not None,
        prob_scale=scale,
        source=source_name(raster),
    )
    return Polygonised(
        source=source_name(raster),
        layer_name=layer or (names[0] if len(names) == 1 else "classes"),
        layer=out_layer,
        names=names,
        crs=crs,
        dropped=dropped,
        windows=pieces.windows,
        seam_groups=pieces.seam_groups,
        table=table,
    )


def _finish(
    pieces: Pieces,
    *,
    table: ClassTable,
    transform,
    crs,
    pixel_area: float,
    pixel_size: float,
    min_area: float,
    fill_holes: float,
    simplify: float,
    regularize: bool,
    with_probs: bool,
    prob_scale: float,
    source: str,
) -> tuple[Layer, int]:
    import shapely

    from aerialct.geo.vector import Layer

    geoms = pieces.geoms
    class_ids = pieces.class_ids
    psum, pmin = pieces.prob_sum, pieces.prob_min
    dropped = 0
    if len(geoms):
        geoms = canonical(geoms)
        # a pixel polygon's area in pixel units is its pixel count
        pixels = np.rint(shapely.area(geoms)).astype(np.int64)
        if fill_holes > 0:
            geoms = fill_small_holes(geoms, fill_holes / pixel_area)
        # deterministic order whatever the window size: top-left corner, then size
        b = shapely.bounds(geoms)
        order = np.lexsort((class_ids, -pixels, b[:, 0], b[:, 1]))
        geoms, class_ids, pixels = geoms[order], class_ids[order], pixels[order]
        psum, pmin = psum[order], pmin[order]
        a, bb, c, d, e, f = transform[:6]
        geoms = shapely.transform(
            geoms,
            lambda xy: np.column_stack(
                [a * xy[:, 0] + bb * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]
            ),
        )
        keep = np.ones(len(geoms), dtype=bool)
        if min_area > 0:
            keep = shapely.area(geoms) >= min_area
        if regularize:
            geoms = geoms.copy()
            geoms[~keep] = None
            geoms[keep] = regularize_polygons(geoms[keep], max(simplify, math.sqrt(2) * pixel_size))
        elif simplify > 0:
            geoms[keep] = shapely.simplify(geoms[keep], simplify, preserve_topology=True)
        if simplify > 0 or regularize:
            invalid = keep & ~shapely.is_valid(geoms)
            if invalid.any():
                geoms[invalid] = polygonal(shapely.make_valid(geoms[invalid]))
            keep &= ~shapely.is_empty(geoms)
        dropped = int((~keep).sum())
        geoms, class_ids, pixels = geoms[keep], class_ids[keep], pixels[keep]
        psum, pmin = psum[keep], pmin[keep]
    else:
        pixels = np.array([], dtype=np.int64)
    fields: dict[str, np.ndarray] = {
        "id": np.arange(1, len(geoms) + 1, dtype=np.int64),
        "class": np.array([table.names[int(i)] for i in class_ids], dtype=object),
        "area": shapely.area(geoms).astype(np.float64),
        "perimeter": shapely.length(geoms).astype(np.float64),
        "pixels": pixels.astype(np.int64),
    }
    if with_probs:
        fields["mean_confidence"] = psum / np.maximum(pixels, 1) / prob_scale
        fields["min_confidence"] = pmin / prob_scale
    fields["source"] = np.array([source] * len(geoms), dtype=object)
    return Layer(np.asarray(geoms, dtype=object), fields, crs), dropped
