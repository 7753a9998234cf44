"""Class rasters that touch on one pixel grid, read as one raster (a catalog is one map).

A flight comes as many adjacent tiles. :func:`plan_mosaics` opens their headers and
places each on a shared pixel grid: tiles with the same CRS and pixel size whose
origins lie a whole number of pixels apart share a grid, and tiles of one grid that
touch (by an edge or a corner) form one :class:`Mosaic`. A mosaic is vectorised as one
raster, so a building across tile seams is one polygon; tiles that touch nothing stay
mosaics of their own (one raster is a mosaic of one tile).

Rows and columns of a mosaic are cut at every tile edge: the rows between two
consecutive tile edges are a *band*, the columns a *strip*, and each (band, strip)
cell lies inside one tile or in none (a gap, read as nodata). Windows of the
vectorising pass are these cells, further cut to the window size, so a window reads
one file (plus its neighbours' halo when morphology needs one).
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.errors import AerialctError, InputError
from aerialct.geo.io import block_cache_cap

if TYPE_CHECKING:
    import rasterio
    from affine import Affine

log = logging.getLogger("aerialct")

ALIGN_TOLERANCE = 1e-3
"""Tile origins closer than this share of a pixel to the grid are on it."""
OPEN_FILES = 16
"""Class (and probability) rasters kept open at once while reading a mosaic."""


@dataclass(frozen=True)
class Tile:
    """One class raster placed on its mosaic's grid (``row``, ``col``: its top-left pixel)."""

    path: str
    row: int
    col: int
    height: int
    width: int
    nodata: float | None
    probabilities: str | None = None


@dataclass
class _Header:
    """What :func:`plan_mosaics` reads from a class raster before placing it."""

    path: str
    transform: Affine
    crs: Any
    height: int
    width: int
    nodata: float | None
    table: ClassTable
    ids: list[int]
    probabilities: str | None
    prob_scale: float | None


@dataclass
class Mosaic:
    """Touching class rasters on one pixel grid, read as one raster of ``height`` x ``width``."""

    tiles: list[Tile]
    height: int
    width: int
    transform: Affine
    crs: Any
    table: ClassTable
    ids: list[int]
    """The class ids to vectorise."""
    prob_scale: float | None = None
    """The scale of the tiles' probability rasters (None: no probabilities)."""
    tolerant: bool = False
    """Record a tile that fails to read in ``failed`` and read it as nodata from then on,
    instead of raising (a catalog goes on without it)."""
    failed: dict[str, str] = field(init=False, default_factory=dict)
    band_edges: np.ndarray = field(init=False)
    """Rows where a tile starts or ends, 0 .. height: the bands lie between them."""
    col_edges: np.ndarray = field(init=False)
    _band_tiles: list[list[int]] = field(init=False, repr=False)
    _open: OrderedDict = field(init=False, repr=False, default_factory=OrderedDict)
    _tree: Any = field(init=False, repr=False, default=None)
    _cols: dict[int, list[tuple[int, int, int]]] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        rows = [t.row for t in self.tiles] + [t.row + t.height for t in self.tiles]
        cols = [t.col for t in self.tiles] + [t.col + t.width for t in self.tiles]
        self.band_edges = np.unique(np.asarray([*rows, 0, self.height], dtype=np.int64))
        self.col_edges = np.unique(np.asarray([*cols, 0, self.width], dtype=np.int64))
        self._band_tiles = [[] for _ in range(len(self.band_edges) - 1)]
        for i, t in enumerate(self.tiles):
            b0, b1 = np.searchsorted(self.band_edges, [t.row, t.row + t.height])
            for b in range(int(b0), int(b1)):
                self._band_tiles[b].append(i)

    @property
    def bands(self) -> int:
        return len(self.band_edges) - 1

    @property
    def names(self) -> list[str]:
        return [t.path for t in self.tiles]

    def window_rows(self, size: int) -> list[tuple[int, int, int]]:
        """(first row, height, band) of each row of windows: bands cut to ``size`` rows."""
        out: list[tuple[int, int, int]] = []
        for b in range(self.bands):
            lo, hi = int(self.band_edges[b]), int(self.band_edges[b + 1])
            out.extend((r, min(size, hi - r), b) for r in range(lo, hi, size))
        return out

    def window_cols(self, size: int) -> list[tuple[int, int, int]]:
        """(first column, width, strip) of each column of windows: strips cut to ``size``."""
        if size not in self._cols:
            out: list[tuple[int, int, int]] = []
            for s in range(len(self.col_edges) - 1):
                lo, hi = int(self.col_edges[s]), int(self.col_edges[s + 1])
                out.extend((c, min(size, hi - c), s) for c in range(lo, hi, size))
            self._cols[size] = out
        return self._cols[size]

    def row_weights(self, size: int) -> np.ndarray:
        """Per row of windows of ``size``, how many of its windows lie in a tile."""
        cols = np.array([s for _, _, s in self.window_cols(size)], dtype=np.int64)
        per_band = [int((self.owners(b)[cols] >= 0).sum()) for b in range(self.bands)]
        return np.array([per_band[b] for _, _, b in self.window_rows(size)], dtype=np.int64)

    def covered_windows(self, size: int, rows: range | None = None) -> int:
        """How many windows of ``size`` lie in a tile (of the window rows ``rows``)."""
        weights = self.row_weights(size)
        return int(weights[rows.start : rows.stop].sum() if rows is not None else weights.sum())

    def owners(self, band: int) -> np.ndarray:
        """The tile holding each strip of ``band`` (-1: a gap between tiles)."""
        own = np.full(len(self.col_edges) - 1, -1, dtype=np.int64)
        for i in self._band_tiles[band]:
            t = self.tiles[i]
            s0, s1 = np.searchsorted(self.col_edges, [t.col, t.col + t.width])
            own[s0:s1] = i
        return own

    # ------------------------------------------------------------------ reading

    def dataset(self, i: int, probabilities: bool = False) -> rasterio.DatasetReader:
        """Tile ``i``'s class raster (or its probability raster), kept open for a while."""
        from aerialct.geo.io import open_raster

        key = (i, probabilities)
        ds = self._open.pop(key, None)
        if ds is None:
            path = self.tiles[i].probabilities if probabilities else self.tiles[i].path
            assert path is not None
            ds = open_raster(path)
            if len(self._open) >= OPEN_FILES:
                self._open.popitem(last=False)[1].close()
        self._open[key] = ds
        return ds

    def read(self, r0: int, c0: int, h: int, w: int, tile: int | None = None) -> np.ndarray:
        """Class ids of rows r0..r0+h, columns c0..c0+w of the mosaic (255 outside the tiles;
        ``tile``: the one tile the window lies in, when the caller knows it).

        InputError (naming the file and window) on values outside the class table.
        """
        from rasterio.windows import Window

        from aerialct.geo.classraster import check_class_values
        from aerialct.geo.io import read_window

        out = np.full((h, w), IGNORE_INDEX, dtype=np.uint8)
        for i in [tile] if tile is not None else self._tiles_in(r0, c0, h, w):
            t = self.tiles[i]
            if t.path in self.failed:
                continue
            top, left = max(r0, t.row), max(c0, t.col)
            bottom, right = min(r0 + h, t.row + t.height), min(c0 + w, t.col + t.width)
            win = Window(left - t.col, top - t.row, right - left, bottom - top)
            try:
                data = read_window(self.dataset(i), 1, window=win)
                check_class_values(t.path, data, self.table, t.nodata, win)
            except (AerialctError, OSError) as e:
                if not self.tolerant:
                    raise
                self.failed[t.path] = " ".join(str(e).split())
                log.warning("%s; read as nodata from here on", self.failed[t.path])
                continue
            if data.dtype != np.uint8:  # a nodata value beyond 255 must not wrap onto a class
                data = np.where((data < 0) | (data > IGNORE_INDEX), IGNORE_INDEX, data)
            out[top - r0 : bottom - r0, left - c0 : right - c0] = data
        return out

    def read_probability(self, i: int, band: int, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        """Band ``band`` (1-based) of tile ``i``'s probability raster over a window inside it
        (NaN, unknown, when it fails to read and the mosaic is tolerant)."""
        from rasterio.windows import Window

        from aerialct.geo.io import read_window

        t = self.tiles[i]
        try:
            ds = self.dataset(i, probabilities=True)
            return read_window(ds, band, window=Window(c0 - t.col, r0 - t.row, w, h))
        except (AerialctError, OSError) as e:
            if not self.tolerant:
                raise
            self.failed.setdefault(str(t.probabilities), " ".join(str(e).split()))
            return np.full((h, w), np.nan)

    def _tiles_in(self, r0: int, c0: int, h: int, w: int) -> list[int]:
        if len(self.tiles) == 1:
            return [0]
        if self._tree is None:
            import shapely

            self._tree = shapely.STRtree(_boxes(self.tiles))
        import shapely

        hits = self._tree.query(shapely.box(c0, r0, c0 + w, r0 + h), predicate="intersects")
        inside = [
            int(i)
            for i in sorted(hits.tolist())
            if _overlap(self.tiles[i], r0, c0, h, w)  # not just touching the window
        ]
        return inside

    def block_cache(self, size: int) -> Any:
        """GDAL's block cache capped at what a row of windows of ``size`` needs (a context
        manager), unless the user set GDAL_CACHEMAX.

        Windows are read once each, so cached blocks are only reused by the next window
        (of a tiled raster) or within a window row (of a striped one, across the mosaic's
        width); GDAL's default (5% of RAM) would keep every block of the map. The first
        tile stands for all (a catalog's tiles are one kind of file).
        """
        import rasterio

        if "GDAL_CACHEMAX" in os.environ:
            return rasterio.Env()
        need = 0
        kinds = (False, True) if self.prob_scale is not None else (False,)
        for probabilities in kinds:
            try:
                ds = self.dataset(0, probabilities)
            except (AerialctError, OSError):
                return rasterio.Env()  # reading it reports the failure
            bh, bw = ds.block_shapes[0] if ds.block_shapes else (size, ds.width)
            cols = self.width if bw >= ds.width else min(self.width, size + bw)  # strips: a row
            need += min(ds.height, size + bh) * cols * ds.count * np.dtype(ds.dtypes[0]).itemsize
        return rasterio.Env(**block_cache_cap(need, 4 << 20))

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()

    def __enter__(self) -> Mosaic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _overlap(t: Tile, r0: int, c0: int, h: int, w: int) -> bool:
    return t.row < r0 + h and r0 < t.row + t.height and t.col < c0 + w and c0 < t.col + t.width


def _boxes(tiles: Sequence[Tile]) -> np.ndarray:
    import shapely

    rows = np.array([t.row for t in tiles], dtype=np.float64)
    cols = np.array([t.col for t in tiles], dtype=np.float64)
    hs = np.array([t.height for t in tiles], dtype=np.float64)
    ws = np.array([t.width for t in tiles], dtype=np.float64)
    return shapely.box(cols, rows, cols + ws, rows + hs)


# --------------------------------------------------------------------------- planning


def prob_reader(probs: rasterio.DatasetReader, table: ClassTable) -> float:
    """The scale of the probability raster (255 for integers) after checking its band count."""
    from aerialct.geo.tags import PROB_SCALE_TAG

    scale_tag = probs.tags().get(PROB_SCALE_TAG)
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


def read_header(
    path: str | os.PathLike,
    probabilities: str | os.PathLike | None,
    classes: Sequence[str | int],
) -> _Header:
    """A class raster's grid, class table, class ids and probability raster, checked."""
    from aerialct.geo.classraster import check_class_raster, raster_class_table
    from aerialct.geo.io import grid_mismatch, open_raster

    with open_raster(path) as ds:
        check_class_raster(ds)
        table = raster_class_table(ds)
        assert table is not None  # the default is POTSDAM
        try:
            ids = sorted(set(table.ids_of(classes)))
        except ValueError as e:
            raise InputError(f"{path}: {e}") from None
        if not ids:
            raise InputError("no class to vectorise; pass --class NAME (e.g. --class building)")
        if ds.crs is None:
            log.warning("%s has no CRS; the output will have none", path)
        scale = None
        if probabilities is not None:
            with open_raster(probabilities) as probs:
                diff = grid_mismatch(ds, probs)
                if diff:
                    raise InputError(
                        f"{path} and {probabilities}: grids differ ({diff}); "
                        "give the probability raster written with this class raster"
                    )
                scale = prob_reader(probs, table)
        header = _Header(
            path=str(path), transform=ds.transform, crs=ds.crs, height=ds.height,
            width=ds.width, nodata=ds.nodata, table=table, ids=ids,
            probabilities=None if probabilities is None else str(probabilities), prob_scale=scale,
        )  # fmt: skip
    return header


def single_mosaic(h: _Header) -> Mosaic:
    """One raster as a mosaic of one tile."""
    tile = Tile(h.path, 0, 0, h.height, h.width, h.nodata, h.probabilities)
    return Mosaic([tile], h.height, h.width, h.transform, h.crs, h.table, h.ids, h.prob_scale)


def _grid_key(h: _Header) -> tuple | None:
    """What tiles of one grid share (CRS, pixel size); None for rotated or sheared rasters."""
    t = h.transform
    if t.b != 0 or t.d != 0:
        return None
    wkt = h.crs.to_wkt() if h.crs is not None else None
    return (wkt, t.a, t.e)


def _offset(h: _Header, ref: _Header) -> tuple[int, int] | None:
    """``h``'s top-left pixel on ``ref``'s grid (row, col), or None when it is off the grid."""
    t, r = h.transform, ref.transform
    if not (math.isclose(t.a, r.a, rel_tol=1e-9) and math.isclose(t.e, r.e, rel_tol=1e-9)):
        return None
    col = (t.c - r.c) / r.a
    row = (t.f - r.f) / r.e
    if abs(col - round(col)) > ALIGN_TOLERANCE or abs(row - round(row)) > ALIGN_TOLERANCE:
        return None
    return round(row), round(col)


def _same_grid_groups(headers: list[_Header]) -> list[list[tuple[int, int, int]]]:
    """Headers grouped by shared grid: per group (header index, row, col) on the group's grid."""
    from aerialct.geo.vector import same_crs

    groups: list[list[tuple[int, int, int]]] = []
    refs: list[tuple[tuple | None, int]] = []  # (grid key, reference header) per group
    for i, h in enumerate(headers):
        key = _grid_key(h)
        for g, (gkey, ref) in enumerate(refs):
            if key is None or gkey is None or key[1:] != gkey[1:]:
                continue
            if not same_crs(h.crs, headers[ref].crs):
                continue
            off = _offset(h, headers[ref])
            if off is not None:
                groups[g].append((i, *off))
                break
        else:
            refs.append((key, i))
            groups.append([(i, 0, 0)])
    return groups


def _components(tiles: list[Tile]) -> list[list[int]]:
    """Tiles that touch (edge or corner), transitively.

    A group in which two tiles overlap is no map (which tile holds the pixels there?):
    its tiles stay apart, as separate rasters, and a warning names the pair.
    """
    import shapely

    from aerialct.vectorize.merge import union_find

    if len(tiles) == 1:
        return [[0]]
    boxes = _boxes(tiles)
    a, b = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    keep = a < b
    a, b = a[keep], b[keep]
    area = shapely.area(shapely.intersection(boxes[a], boxes[b]))
    root = union_find(np.stack([a + 1, b + 1], axis=1), len(tiles))[1:]
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(root.tolist()):
        groups.setdefault(r, []).append(i)
    out = []
    overlapping = {int(root[a[k]]): k for k in np.flatnonzero(area > 0)[::-1].tolist()}
    for r, members in groups.items():
        if r not in overlapping:
            out.append(members)
            continue
        k = overlapping[r]
        log.warning(
            "%s and %s overlap by %d px: their %d touching rasters are vectorised apart, as "
            "before, so buildings are not joined across their seams; crop the overlaps to "
            "make them one map",
            tiles[int(a[k])].path, tiles[int(b[k])].path, int(area[k]), len(members),
        )  # fmt: skip
        out.extend([i] for i in members)
    return sorted(out)


def _mosaic(headers: list[_Header], members: list[tuple[int, int, int]]) -> Mosaic:
    """One mosaic of touching tiles ``members`` (header index, row, col on a shared grid)."""
    from affine import Affine

    r_min = min(r for _, r, _ in members)
    c_min = min(c for _, _, c in members)
    tiles = []
    for i, r, c in members:
        h = headers[i]
        tiles.append(Tile(h.path, r - r_min, c - c_min, h.height, h.width, h.nodata,
                          h.probabilities))  # fmt: skip
    height = max(t.row + t.height for t in tiles)
    width = max(t.col + t.width for t in tiles)
    # the transform of the tile at the top-left corner when there is one: no rounding at all
    corner = next((k for k, t in enumerate(tiles) if t.row == 0 and t.col == 0), None)
    if corner is not None:
        transform = headers[members[corner][0]].transform
    else:
        i, r, c = members[0]
        transform = headers[i].transform @ Affine.translation(c_min - c, r_min - r)
    first = headers[members[0][0]]
    return Mosaic(
        tiles, height, width, transform, first.crs, first.table, first.ids, first.prob_scale
    )


def _check_alike(headers: list[_Header], members: list[tuple[int, int, int]]) -> None:
    """Tiles of one mosaic share their class table and probability scale."""
    first = headers[members[0][0]]
    for i, _, _ in members[1:]:
        h = headers[i]
        if h.table != first.table:
            raise InputError(
                f"{h.path}: its class table differs from {first.path}'s, yet they touch on one "
                "grid; vectorise them separately (--out FOLDER)"
            )
        if (h.prob_scale is None) != (first.prob_scale is None) or (
            h.prob_scale is not None and h.prob_scale != first.prob_scale
        ):
            raise InputError(
                f"{h.probabilities}: probability scale {h.prob_scale}, {first.probabilities}: "
                f"{first.prob_scale}; give the probability rasters predict wrote with them"
            )


def _warn_off_grid(headers: list[_Header], groups: list[list[tuple[int, int, int]]]) -> None:
    """Log tiles that touch in map space without sharing a grid: their seams stay seams."""
    import shapely

    if len(groups) < 2:
        return
    group_of = np.empty(len(headers), dtype=np.int64)
    for g, members in enumerate(groups):
        for i, _, _ in members:
            group_of[i] = g
    boxes = []
    for h in headers:
        t = h.transform
        x = [t.c, t.c + t.a * h.width + t.b * h.height]
        y = [t.f, t.f + t.d * h.width + t.e * h.height]
        pad = abs(t.a) / 2
        boxes.append(shapely.box(min(x) - pad, min(y) - pad, max(x) + pad, max(y) + pad))
    arr = np.asarray(boxes, dtype=object)
    a, b = shapely.STRtree(arr).query(arr, predicate="intersects")
    cross = (a < b) & (group_of[a] != group_of[b])
    if cross.any():
        k = int(np.flatnonzero(cross)[0])
        log.warning(
            "%s and %s touch but do not share a pixel grid (CRS, pixel size or a fraction of a "
            "pixel apart): they are vectorised separately, so a building across their seam stays "
            "in pieces; resample one onto the other's grid (gdalwarp -tap) to join them",
            headers[int(a[k])].path,
            headers[int(b[k])].path,
        )


def plan_mosaics(
    rasters: Sequence[str | os.PathLike],
    classes: Sequence[str | int],
    probabilities_for: Callable[[str | os.PathLike], str | os.PathLike | None],
    failed: list[tuple[str, str]],
) -> list[Mosaic]:
    """The mosaics of ``rasters``: touching tiles on one grid.

    A raster whose header or probability raster is unusable is appended to ``failed``
    (path, message) and left out; overlapping tiles of one grid are refused (InputError).
    Mosaics come in the order of their first raster.
    """
    headers: list[_Header] = []
    for r in rasters:
        try:
            h = read_header(r, probabilities_for(r), classes)
        except Exception as e:  # one raster's failure must not stop the batch
            if isinstance(e, InputError) and str(e).startswith("no class to vectorise"):
                raise
            failed.append((str(r), " ".join(str(e).split())))
            continue
        headers.append(h)
    if not headers:
        return []
    groups = _same_grid_groups(headers)
    _warn_off_grid(headers, groups)
    mosaics: list[tuple[int, Mosaic]] = []
    for members in groups:
        placed = [Tile(headers[i].path, r, c, headers[i].height, headers[i].width, None)
                  for i, r, c in members]  # fmt: skip
        for comp in _components(placed):
            sub = [members[k] for k in comp]
            _check_alike(headers, sub)
            mosaics.append((min(i for i, _, _ in sub), _mosaic(headers, sub)))
    mosaics.sort(key=lambda m: m[0])
    return [m for _, m in mosaics]
