"""Class raster -> polygons of chosen classes (``aerialct vectorize``).

How it works (one pass over the raster in windows; memory is bounded by the
window size plus the output polygons):

1. Each window is read (with a halo when morphological clean-up is asked, so
   opening/closing give the same pixels as on the whole raster) and the class
   mask is polygonised by :func:`trace_polygons`, a vectorised tracer of pixel
   boundaries that visits edges only (it gives the same polygons as GDAL's
   polygoniser, which the tests check). Coordinates are pixel coordinates, so
   every vertex is an exact integer.
2. The tracer also says which polygon each pixel of the window's border rows
   and columns belongs to. Polygons that continue across a window border are
   found by comparing these labels on both sides of each seam (the full-width
   last row of the previous window row, the last column of the previous window),
   diagonal neighbours included with 8-connectivity, and joined with an
   array-parallel union-find. Their pieces are unioned on the integer grid, which
   is exact: one building is one feature whatever the window size.
3. Geometries are made valid and canonical (collinear vertices removed,
   normalised ring order), holes smaller than ``fill_holes`` are filled, then the
   pixel coordinates go through the raster's affine transform to map
   coordinates, small polygons are dropped (``min_area``), and the optional
   simplification and orthogonal regularisation run in map units.

Connectivity is 8 by default (pixels touching at a corner belong to one
building, as a photo-interpreter would draw them); ``connectivity=4`` is
available. An 8-connected building whose pixels only touch at a corner is a
valid MultiPolygon (OGC polygons may not pinch), still one feature.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.errors import InputError
from aerialct.progress import ProgressFn, as_progress

if TYPE_CHECKING:
    import rasterio

    from aerialct.geo.vector import Layer

log = logging.getLogger("aerialct")

MORPH_OPS = ("open", "close", "erode", "dilate")


@dataclass
class VectorizeResult:
    """What ``vectorize`` wrote."""

    source: str
    output: str
    layer: str
    driver: str
    classes: list[str]
    count: int
    count_by_class: dict[str, int]
    total_area: float
    dropped_small: int
    crs: str | None
    window_size: int
    windows: int
    seam_merges: int
    seconds: float
    appended: bool = False
    options: dict = field(default_factory=dict)


def parse_morph(items: Sequence[str] | None) -> list[tuple[str, int]]:
    """``["open:1", "close:2"]`` -> ``[("open", 1), ("close", 2)]`` (radius in pixels)."""
    ops: list[tuple[str, int]] = []
    for item in items or []:
        name, _, radius = str(item).partition(":")
        name = name.strip().lower()
        if name not in MORPH_OPS or not radius.strip().isdigit() or int(radius) < 1:
            raise InputError(
                f"morphology {item!r} is not OP:RADIUS with OP in {', '.join(MORPH_OPS)} "
                "and RADIUS >= 1 pixel, e.g. open:1"
            )
        ops.append((name, int(radius)))
    return ops


def _morph_halo(ops: Sequence[tuple[str, int]]) -> int:
    return sum(2 * r if name in ("open", "close") else r for name, r in ops)


def _apply_morph(mask: np.ndarray, ops: Sequence[tuple[str, int]]) -> np.ndarray:
    from scipy import ndimage

    square = np.ones((3, 3), dtype=bool)
    for name, r in ops:
        fn = {
            "open": ndimage.binary_opening,
            "close": ndimage.binary_closing,
            "erode": ndimage.binary_erosion,
            "dilate": ndimage.binary_dilation,
        }[name]
        mask = fn(mask, structure=square, iterations=r)
    return mask


def _structure(connectivity: int) -> np.ndarray:
    if connectivity == 8:
        return np.ones((3, 3), dtype=bool)
    return np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def _seam_pairs(a: np.ndarray, b: np.ndarray, diagonal: bool) -> np.ndarray:
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


def _prob_reader(probs: rasterio.DatasetReader, table: ClassTable):
    scale_tag = probs.tags().get("AERIALCT_PROB_SCALE")
    if scale_tag:
        scale = float(scale_tag)
    else:
        scale = 255.0 if np.dtype(probs.dtypes[0]).kind in "ui" else 1.0
    if probs.count < len(table):
        raise InputError(
            f"{probs.name}: {probs.count} bands for {len(table)} classes; "
            "give the probability raster written by predict for this class raster"
        )
    return scale


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


def _check_options(
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
    window_size: int = 2048,
    progress: ProgressFn | None = None,
) -> Polygonised:
    """The polygons of ``classes`` of one class raster, cleaned up, with their attributes."""
    from aerialct.geo.io import check_class_raster, grid_mismatch, open_raster, raster_class_table

    prog = as_progress(progress)
    with open_raster(raster) as ds:
        check_class_raster(ds)
        table = raster_class_table(ds)
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
            scale = _prob_reader(probs, table)
        try:
            pieces = _polygonise_windows(
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
        source=str(raster),
    )
    return Polygonised(
        source=str(raster),
        layer_name=layer or (names[0] if len(names) == 1 else "classes"),
        layer=out_layer,
        names=names,
        crs=crs,
        dropped=dropped,
        windows=pieces.windows,
        seam_groups=pieces.seam_groups,
    )


def vectorize(
    raster: str | os.PathLike,
    out: str | os.PathLike,
    *,
    classes: Sequence[str | int] = ("building",),
    min_area: float = 0.0,
    fill_holes: float = 0.0,
    simplify: float = 0.0,
    regularize: bool = False,
    morph: Sequence[tuple[str, int]] | Sequence[str] = (),
    probabilities: str | os.PathLike | None = None,
    layer: str | None = None,
    connectivity: int = 8,
    window_size: int = 2048,
    overwrite: bool = False,
    append: bool = False,
    progress: ProgressFn | None = None,
) -> VectorizeResult:
    """Polygonise ``classes`` of a class raster into ``out`` (GeoPackage/GeoJSON/FlatGeobuf).

    Areas are in map units squared, ``simplify`` in map units, ``morph`` radii in
    pixels. The output CRS is the raster's. See the module docstring for the
    order of operations.
    """
    from aerialct.geo.io import check_output
    from aerialct.geo.vector import driver_for, write_layers

    t0 = time.perf_counter()
    out = Path(out)
    driver = driver_for(out)
    if overwrite and append:
        raise InputError(f"{out}: --overwrite and --append exclude each other; pick one")
    if not append:
        check_output(out, overwrite, inputs=[raster, probabilities])
    _check_options(min_area, fill_holes, simplify, connectivity, window_size)
    ops = parse_morph(morph) if morph and isinstance(morph[0], str) else list(morph)  # type: ignore[arg-type]
    poly = polygonise(
        raster,
        classes=classes,
        min_area=min_area,
        fill_holes=fill_holes,
        simplify=simplify,
        regularize=regularize,
        morph=ops,
        probabilities=probabilities,
        layer=layer,
        connectivity=connectivity,
        window_size=window_size,
        progress=progress,
    )
    out_layer = poly.layer
    appended = append and out.exists()
    if appended:
        out_layer = _continue_ids(out, poly.layer_name, out_layer, str(raster))
    write_layers(out, {poly.layer_name: out_layer}, overwrite=overwrite, append=append)
    return _result(poly, out_layer, out, driver, window_size, t0, appended, {
        "min_area": min_area,
        "fill_holes": fill_holes,
        "simplify": simplify,
        "regularize": regularize,
        "morph": [f"{n}:{r}" for n, r in ops],
        "connectivity": connectivity,
        "probabilities": str(probabilities) if probabilities else None,
    })  # fmt: skip


def _result(
    poly: Polygonised,
    out_layer: Layer,
    out: Path,
    driver: str,
    window_size: int,
    t0: float,
    appended: bool,
    options: dict,
) -> VectorizeResult:
    counts = {n: int((out_layer.fields["class"] == n).sum()) for n in poly.names}
    return VectorizeResult(
        source=poly.source,
        output=str(out),
        layer=poly.layer_name,
        driver=driver,
        classes=poly.names,
        count=len(out_layer.geometry),
        count_by_class=counts,
        total_area=float(out_layer.fields["area"].sum()),
        dropped_small=poly.dropped,
        crs=poly.crs.to_string() if poly.crs is not None else None,
        window_size=window_size,
        windows=poly.windows,
        seam_merges=poly.seam_groups,
        seconds=time.perf_counter() - t0,
        appended=appended,
        options=options,
    )


@dataclass
class VectorizeBatch:
    """What :func:`vectorize_many` did: one result per raster, failures with their error."""

    results: list[VectorizeResult]
    failed: list[tuple[str, str]]
    output: str
    seconds: float

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {
            "output": self.output,
            "rasters": [asdict(r) for r in self.results],
            "failed": [{"raster": r, "error": e} for r, e in self.failed],
            "count": sum(r.count for r in self.results),
            "seconds": round(self.seconds, 3),
        }


VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".fgb")


def _probabilities_for(raster: Path, probabilities: str | os.PathLike | None) -> Path | None:
    """The probability raster of ``raster``: a file as given, or ``<stem>_probabilities.tif``
    in a folder (``<stem>`` without ``_classes``, as predict names them)."""
    if probabilities is None:
        return None
    p = Path(probabilities)
    if not p.is_dir():
        return p
    return p / f"{raster.stem.removesuffix('_classes')}_probabilities.tif"


def vectorize_many(
    rasters: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    probabilities: str | os.PathLike | None = None,
    file_format: str = "gpkg",
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    **options: Any,
) -> VectorizeBatch:
    """Vectorise many class rasters in one process (a shell loop pays start-up per file).

    ``out`` with a vector suffix (.gpkg, .geojson, .fgb) gets every raster's polygons in
    one layer, ids numbered through, written once at the end (all rasters must share
    a CRS); any other ``out`` is a folder that gets ``<stem>.<file_format>`` per raster.
    ``probabilities`` is a raster (one input) or the folder predict wrote them to. A
    raster that fails is recorded and the others go on. ``options`` go to
    :func:`polygonise`.
    """
    from aerialct.geo.io import check_output
    from aerialct.geo.vector import driver_for, write_layers

    t0 = time.perf_counter()
    paths = [Path(r) for r in rasters]
    if not paths:
        raise InputError("no raster to vectorise; give class rasters, a folder or a pattern")
    _check_options(
        options.get("min_area", 0.0), options.get("fill_holes", 0.0),
        options.get("simplify", 0.0), options.get("connectivity", 8),
        options.get("window_size", 2048),
    )  # fmt: skip
    if "morph" in options and options["morph"] and isinstance(options["morph"][0], str):
        options["morph"] = parse_morph(options["morph"])
    out = Path(out)
    one_file = out.suffix.lower() in VECTOR_SUFFIXES
    results: list[VectorizeResult] = []
    failed: list[tuple[str, str]] = []
    if not one_file:
        if file_format not in ("gpkg", "geojson", "fgb"):
            raise InputError(f"--format {file_format}: use gpkg, geojson or fgb")
        for r in paths:
            target = out / f"{r.stem}.{file_format}"
            try:
                results.append(vectorize(r, target, probabilities=_probabilities_for(r, probabilities),
                                         overwrite=overwrite, progress=progress, **options))  # fmt: skip
            except Exception as e:  # one raster's failure must not stop the batch
                failed.append((str(r), " ".join(str(e).split())))
        return VectorizeBatch(results, failed, str(out), time.perf_counter() - t0)

    driver = driver_for(out)
    check_output(out, overwrite, inputs=paths)
    polys: list[Polygonised] = []
    for r in paths:
        try:
            polys.append(polygonise(r, probabilities=_probabilities_for(r, probabilities),
                                    progress=progress, **options))  # fmt: skip
        except Exception as e:
            failed.append((str(r), " ".join(str(e).split())))
    if not polys:
        raise InputError(f"all {len(paths)} rasters failed; first: {failed[0][0]}: {failed[0][1]}")
    crs_of = {p.source: p.crs for p in polys}
    first = polys[0]
    from aerialct.geo.vector import same_crs

    other = next((p for p in polys if not same_crs(p.crs, first.crs)), None)
    if other is not None:
        raise InputError(
            f"{other.source} is in {crs_of[other.source]}, {first.source} in {first.crs}: one "
            "layer holds one CRS; write one file per raster (--out FOLDER) or reproject"
        )
    layers: dict[str, list[Polygonised]] = {}
    for p in polys:
        layers.setdefault(p.layer_name, []).append(p)
    merged = {name: _concat([p.layer for p in group]) for name, group in layers.items()}
    write_layers(out, merged, overwrite=overwrite)
    window_size = options.get("window_size", 2048)
    for name, group in layers.items():
        start = 0
        for p in group:  # each raster's rows of the merged layer, with their final ids
            n = len(p.layer.geometry)
            fields = {k: v[start : start + n] for k, v in merged[name].fields.items()}
            part = type(p.layer)(p.layer.geometry, fields, p.crs)
            results.append(_result(p, part, out, driver, window_size, t0, False, {}))
            start += n
    return VectorizeBatch(results, failed, str(out), time.perf_counter() - t0)


def _concat(parts: list[Layer]) -> Layer:
    """One layer of several rasters' polygons, ids numbered 1..N through."""
    keys = list(parts[0].fields)
    fields = {}
    for k in keys:
        arrays = [p.fields.get(k) for p in parts]
        if any(a is None for a in arrays):
            raise InputError(
                "the rasters give different attributes (some with --probabilities, some "
                "without); vectorise them alike"
            )
        fields[k] = np.concatenate(arrays)  # type: ignore[arg-type]
    geometry = np.concatenate([p.geometry for p in parts])
    if "id" in fields:
        fields["id"] = np.arange(1, len(geometry) + 1, dtype=np.int64)
    return type(parts[0])(geometry, fields, parts[0].crs)


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
class _Traced:
    """Polygons of one mask in pixel coordinates and the polygon of each border pixel."""

    polygons: np.ndarray  # shapely Polygons (8-connected pinches may be self-touching)
    top: np.ndarray  # polygon index + 1 of each pixel of the first row, 0 = background
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    sample: np.ndarray  # (n, 2) row, col of one pixel of each polygon


def trace_polygons(
    mask: np.ndarray, connectivity: int = 8, offset: tuple[int, int] = (0, 0)
) -> _Traced:
    """Polygonise the connected regions of a boolean mask (see the comment above).

    ``offset`` (col, row) is added to the coordinates: the mask's place in the raster.
    """
    import shapely

    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), dtype=np.int8)
    padded[1:-1, 1:-1] = mask
    y, a, b, sign = _row_runs(padded)
    east = sign < 0
    x, c, e, vsign = _column_runs(padded)
    south = vsign > 0
    sx = np.concatenate([np.where(east, a, b), x]).astype(np.int64)
    sy = np.concatenate([y, np.where(south, c, e)]).astype(np.int64)
    ex = np.concatenate([np.where(east, b, a), x]).astype(np.int64)
    ey = np.concatenate([y, np.where(south, e, c)]).astype(np.int64)
    d = np.concatenate([np.where(east, 0, 2), np.where(south, 1, 3)]).astype(np.int64)
    k = len(d)
    zeros = (np.zeros(w, np.int64), np.zeros(w, np.int64), np.zeros(h, np.int64))
    if k == 0:
        return _Traced(
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
        # a hole belongs to the smallest shell containing a background pixel beside it
        first = walk[starts[holes]]
        dd = d[first]
        px = sx[first] + 0.5 * _DX[dd] - 0.5 * _DY[dd] + offset[0]
        py = sy[first] + 0.5 * _DY[dd] + 0.5 * _DX[dd] + offset[1]
        shell_polys = shapely.polygons(rings[shells])
        hi, si = shapely.STRtree(shell_polys).query(shapely.points(px, py), predicate="within")
        o = np.lexsort((shapely.area(shell_polys)[si], hi))
        hi, si = hi[o], si[o]
        firsts = np.r_[True, hi[1:] != hi[:-1]]
        owner[holes[hi[firsts]]] = si[firsts]
        if (owner < 0).any():  # cannot happen for a raster mask; keep the shells honest
            raise RuntimeError("boundary tracing left a hole without its outline")
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

    def border(sel: np.ndarray, lo: np.ndarray, n: int, pixels: np.ndarray) -> np.ndarray:
        out = np.zeros(n, dtype=np.int64)
        if len(pixels):
            o = np.argsort(lo[sel])
            i = np.searchsorted(lo[sel][o], pixels, side="right") - 1
            out[pixels] = poly_of_seg[sel][o][i]
        return out

    top = border((d == 2) & (sy == 0), ex, w, np.flatnonzero(mask[0]))
    bottom = border((d == 0) & (sy == h), sx, w, np.flatnonzero(mask[-1]))
    left = border((d == 1) & (sx == 0), sy, h, np.flatnonzero(mask[:, 0]))
    right = border((d == 3) & (sx == w), ey, h, np.flatnonzero(mask[:, -1]))
    return _Traced(polys, top, bottom, left, right, sample)


@dataclass
class _Pieces:
    """Polygons in pixel coordinates, one per building, merged across seams."""

    geoms: np.ndarray
    class_ids: np.ndarray
    prob_sum: np.ndarray
    prob_min: np.ndarray
    windows: int
    seam_groups: int


def _polygonise_windows(
    ds: rasterio.DatasetReader,
    table: ClassTable,
    ids: list[int],
    ops: Sequence[tuple[str, int]],
    connectivity: int,
    size: int,
    probs: rasterio.DatasetReader | None,
    progress: ProgressFn,
) -> _Pieces:
    import shapely
    from rasterio.windows import Window

    from aerialct.geo.io import check_class_values, read_window

    height, width = ds.height, ds.width
    halo = _morph_halo(ops)
    diagonal = connectivity == 8
    n_rows = math.ceil(height / size)
    n_cols = math.ceil(width / size)
    progress(0, total=n_rows * n_cols, description="vectorising")

    pieces: list[np.ndarray] = []
    label_class: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]  # index = global label
    stat_psum: list[np.ndarray] = [np.zeros(1)]
    stat_pmin: list[np.ndarray] = [np.zeros(1)]
    pairs: list[np.ndarray] = []
    next_label = 1
    # the previous window row's last line of labels, full width, per class
    prev_bottom = {c: np.zeros(width, dtype=np.int64) for c in ids}

    def shifted(a: np.ndarray, offset: int) -> np.ndarray:
        return np.where(a > 0, a + offset, 0)

    for wr in range(n_rows):
        r0 = wr * size
        h = min(size, height - r0)
        cur_bottom = {c: np.zeros(width, dtype=np.int64) for c in ids}
        prev_right: dict[int, np.ndarray] = {}
        for wc in range(n_cols):
            c0 = wc * size
            w = min(size, width - c0)
            hr0, hc0 = max(r0 - halo, 0), max(c0 - halo, 0)
            hr1, hc1 = min(r0 + h + halo, height), min(c0 + w + halo, width)
            win = Window(hc0, hr0, hc1 - hc0, hr1 - hr0)
            data = read_window(ds, 1, window=win)
            check_class_values(ds.name, data, table, ds.nodata, win)
            inner = (slice(r0 - hr0, r0 - hr0 + h), slice(c0 - hc0, c0 - hc0 + w))
            for c in ids:
                mask = data == c
                if ops:
                    mask = _apply_morph(mask, ops)
                mask = mask[inner]
                if not mask.any():
                    prev_right[c] = np.zeros(h, dtype=np.int64)
                    continue
                traced = trace_polygons(mask, connectivity, offset=(c0, r0))
                n = len(traced.polygons)
                offset = next_label - 1
                next_label += n
                pieces.append(traced.polygons)
                label_class.append(np.full(n, c, dtype=np.int64))
                if wr > 0:
                    lo, hi = max(c0 - 1, 0), min(c0 + w + 1, width)
                    row0 = np.zeros(hi - lo, dtype=np.int64)
                    row0[c0 - lo : c0 - lo + w] = shifted(traced.top, offset)
                    pairs.append(_seam_pairs(prev_bottom[c][lo:hi], row0, diagonal))
                if wc > 0 and c in prev_right:
                    pairs.append(_seam_pairs(prev_right[c], shifted(traced.left, offset), diagonal))
                prev_right[c] = shifted(traced.right, offset)
                cur_bottom[c][c0 : c0 + w] = shifted(traced.bottom, offset)
                if probs is not None:
                    psum, pmin = _confidence(
                        mask, traced, probs, c, Window(c0, r0, w, h), connectivity
                    )
                    stat_psum.append(psum)
                    stat_pmin.append(pmin)
            progress(1)
        prev_bottom = cur_bottom

    n_labels = next_label - 1
    windows = n_rows * n_cols
    if n_labels == 0:
        empty = np.array([], dtype=np.float64)
        return _Pieces(np.array([], dtype=object), np.array([], np.int64), empty, empty, windows, 0)
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

    if probs is not None:
        psum = np.bincount(inverse, weights=np.concatenate(stat_psum)[1:], minlength=len(uniq))
        pmin = np.full(len(uniq), np.inf)
        np.minimum.at(pmin, inverse, np.concatenate(stat_pmin)[1:])
    else:
        psum = np.full(len(uniq), np.nan)
        pmin = np.full(len(uniq), np.nan)
    return _Pieces(merged, label_class_arr[uniq], psum, pmin, windows, len(multi))


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


def _confidence(
    mask: np.ndarray, traced: _Traced, probs, class_id: int, window, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum and minimum of the class probability over each traced polygon's pixels."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=_structure(connectivity))
    from aerialct.geo.io import read_window

    band = read_window(probs, class_id + 1, window=window).astype(np.float64)
    # label of each polygon through one of its pixels
    lab = labels[traced.sample[:, 0], traced.sample[:, 1]]
    return (
        np.asarray(ndimage.sum_labels(band, labels, lab), dtype=np.float64),
        np.asarray(ndimage.minimum(band, labels, lab), dtype=np.float64),
    )


def _fill_small_holes(geoms: np.ndarray, max_area: float) -> np.ndarray:
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


def _canonical(geoms: np.ndarray) -> np.ndarray:
    """Valid, noded on the integer grid, no collinear vertices, normalised ring order."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms = geoms.copy()
        geoms[invalid] = shapely.set_precision(shapely.make_valid(geoms[invalid]), 1.0)
        geoms[invalid] = _polygonal(geoms[invalid])
    return shapely.normalize(shapely.simplify(geoms, 0.0, preserve_topology=True))


def _polygonal(geoms: np.ndarray) -> np.ndarray:
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


def _finish(
    pieces: _Pieces,
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
        geoms = _canonical(geoms)
        # a pixel polygon's area in pixel units is its pixel count
        pixels = np.rint(shapely.area(geoms)).astype(np.int64)
        if fill_holes > 0:
            geoms = _fill_small_holes(geoms, fill_holes / pixel_area)
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
            geoms = np.where(keep, geoms, None)
            geoms[keep] = regularize_polygons(geoms[keep], max(simplify, math.sqrt(2) * pixel_size))
        elif simplify > 0:
            geoms[keep] = shapely.simplify(geoms[keep], simplify, preserve_topology=True)
        if simplify > 0 or regularize:
            invalid = keep & ~shapely.is_valid(geoms)
            if invalid.any():
                geoms[invalid] = _polygonal(shapely.make_valid(geoms[invalid]))
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


def _continue_ids(path: Path, layer: str, out_layer: Layer, source: str) -> Layer:
    """When appending to an existing layer, continue its ``id`` sequence and check the CRS.

    A raster whose polygons the layer already holds (same ``source``) is refused:
    appending it again would duplicate every polygon.
    """
    import pyogrio

    from aerialct.geo.vector import Layer, list_layers, same_crs

    if layer not in list_layers(path):
        return out_layer
    info = pyogrio.read_info(path, layer=layer)
    existing_crs = info.get("crs")
    if not same_crs(existing_crs, out_layer.crs):
        raise InputError(
            f"{path}: layer {layer!r} is in {existing_crs}, the raster in {out_layer.crs}; "
            "append to a layer in the same CRS or write a new layer with --layer"
        )
    if "source" in list(info.get("fields", [])):
        _, _, _, (sources,) = pyogrio.raw.read(
            path, layer=layer, columns=["source"], read_geometry=False
        )
        if source in set(sources.tolist()):
            raise InputError(
                f"{path}: layer {layer!r} already holds the polygons of {source}; appending it "
                "again would duplicate them: skip this raster, or rewrite the file with --overwrite"
            )
    if "id" in list(info.get("fields", [])):
        _, _, _, table = pyogrio.raw.read(path, layer=layer, columns=["id"], read_geometry=False)
        start = int(table[0].max()) if len(table[0]) else 0
        fields = dict(out_layer.fields)
        fields["id"] = np.arange(start + 1, start + 1 + len(out_layer.geometry), dtype=np.int64)
        return Layer(out_layer.geometry, fields, out_layer.crs)
    return out_layer


# --- orthogonal regularisation -------------------------------------------------


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
        parts = []
        for part in shapely.get_parts(g):
            shell = _orthogonal_ring(np.asarray(part.exterior.coords), angle)
            if shell is None:
                parts = None
                break
            holes = [
                h
                for h in (_orthogonal_ring(np.asarray(r.coords), angle) for r in part.interiors)
                if h is not None
            ]
            parts.append(shapely.Polygon(shell, holes))
        if not parts:
            continue
        cand = shapely.make_valid(parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts))
        cand = _polygonal(np.array([cand], dtype=object))[0]
        a0, a1 = shapely.area(geoms[i]), shapely.area(cand)
        if a1 > 0 and 0.5 <= a1 / a0 <= 1.5:
            out[i] = cand
    return out


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


__all__ = [
    "IGNORE_INDEX",
    "VectorizeResult",
    "parse_morph",
    "regularize_polygons",
    "vectorize",
]
