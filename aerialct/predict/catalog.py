"""Which inputs are one map: scenes, and catalogs of adjacent tiles.

``predict`` turns its inputs into jobs (:func:`find_jobs`). A job is predicted as one
raster with one window grid:

* **A catalog** is a set of tiles that are one map:
  - a VRT whose sources are two or more whole files placed pixel for pixel (what
    ``gdalbuildvrt`` makes); the VRT decides where tiles overlap and leaves its gaps
    empty;
  - or files that share a CRS and touch one another, edge to edge or corner to corner:
    every file connected to another by such contacts is a tile of the same catalog (a
    folder or glob of a delivery's tiles). A file that overlaps another input is no
    tile: two dates of one area are two maps.
  The tiles of a catalog must be on one grid: the same pixel size, origins a whole
  number of pixels apart, the same bands, data types and nodata. Touching files that
  are not (another pixel size, a grid offset by a fraction of a pixel) are refused in
  one line that names them and the value: they would seam.
* **A scene** is every other input: a single file, files that touch nothing, files
  that overlap another, rasters without a CRS or north-up transform, and every input
  under ``catalog=False``.

A catalog is read through a VRT mosaic of its tiles: the user's VRT, or one built in
memory (never written to disk, as tile paths may be signed URLs). Its gaps (grid
cells no tile covers) are nodata.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from aerialct.errors import InputError
from aerialct.geo.inputs import is_gdal_path, source_label, source_path

log = logging.getLogger("aerialct")

#: tolerance of grid alignment and of overlaps, in pixels
PIXEL_TOLERANCE = 0.01
#: rasters closer than this (in pixels) touch: a gap under half a pixel is a misaligned grid
CONTACT = 0.5


@dataclass(frozen=True)
class Tile:
    """An input raster of a job and where its pixels sit in the job's grid."""

    path: str | Path
    row_off: int
    col_off: int
    height: int
    width: int
    transform: Any = None
    crs: Any = None

    @property
    def rect(self) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` in the job's grid."""
        return (self.row_off, self.row_off + self.height, self.col_off, self.col_off + self.width)


@dataclass
class Job:
    """What is predicted as one raster: a scene, or a catalog of tiles (module doc).

    ``source`` is what the stream reads (the scene, or the user's VRT); a catalog of
    files has ``vrt_xml`` instead. ``error`` is set for a catalog that was refused.
    """

    name: str
    tiles: list[Tile]
    source: str | Path | None = None
    vrt_xml: str | None = None
    catalog: bool = False
    error: Exception | None = None
    vrt: str | Path | None = None  # the user's VRT a catalog came from
    crs: Any = None
    transform: Any = None
    width: int = 0
    height: int = 0
    cover: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Header:
    path: str | Path
    crs: Any
    transform: Any
    width: int
    height: int
    layout: tuple[Any, ...]  # count, dtypes, nodata, colour interpretation, mask kind
    block: tuple[int, int]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + self.height * t.e, t.c + self.width * t.a, t.f)

    @property
    def north_up(self) -> bool:
        t = self.transform
        return t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0


def find_jobs(paths: Sequence[str | os.PathLike], *, catalog: bool = True) -> list[Job]:
    """The jobs of ``paths`` (module doc), sorted by name; a refused catalog is a job with
    ``error`` set, so the other jobs go on."""
    jobs: list[Job] = []
    candidates: list[_Header] = []
    for item in paths:
        p = source_path(item)
        vrt_job = _vrt_catalog(p) if catalog else None
        if vrt_job is not None:
            jobs.append(vrt_job)
            continue
        head = _header(p)
        if catalog and head is not None and head.crs is not None and head.north_up:
            candidates.append(head)
        else:
            jobs.append(_scene_job(p, head))
    jobs += _group(candidates)
    _name_catalogs(jobs)
    return sorted(jobs, key=lambda j: (j.name, str(j.tiles[0].path)))


def _header(p: str | Path) -> _Header | None:
    """What grouping needs of a raster, or None when it does not open (its job fails later,
    with the reader's message)."""
    from rasterio.enums import ColorInterp, MaskFlags

    from aerialct.geo.io import no_georef_warning, open_raster

    try:  # open_raster: a remote scene without listing its folder or probing for sidecars
        with no_georef_warning(), open_raster(p) as ds:
            flags = ds.mask_flag_enums[0] if ds.count else []
            mask = (
                "alpha"
                if MaskFlags.alpha in flags
                else "nodata"
                if MaskFlags.nodata in flags
                else "dataset"
                if MaskFlags.per_dataset in flags
                else "none"
            )
            interp = tuple(ci == ColorInterp.alpha for ci in ds.colorinterp)
            layout = (ds.count, tuple(ds.dtypes), tuple(map(repr, ds.nodatavals)), interp, mask)
            bs = ds.block_shapes[0] if ds.block_shapes else (256, 256)
            block = (int(bs[0]), int(bs[1]))
            return _Header(p, ds.crs, ds.transform, ds.width, ds.height, layout, block)
    except Exception:
        return None


def scene_job(p: str | Path) -> Job:
    """The job of one scene, predicted on its own."""
    return _scene_job(p, _header(p))


def _scene_job(p: str | Path, head: _Header | None) -> Job:
    if head is None:
        return Job(Path(source_label(p)).stem, [Tile(p, 0, 0, 0, 0)], source=p)
    tile = Tile(p, 0, 0, head.height, head.width, head.transform, head.crs)
    return Job(
        Path(source_label(p)).stem,
        [tile],
        source=p,
        crs=head.crs,
        transform=head.transform,
        width=head.width,
        height=head.height,
    )


# ---------------------------------------------------------------------------
# Files that touch


def _group(heads: list[_Header]) -> list[Job]:
    """Scenes and catalogs of rasters that share a CRS, by contacts (module doc)."""
    by_crs: dict[str, list[_Header]] = {}
    for h in heads:
        by_crs.setdefault(h.crs.to_wkt(), []).append(h)
    jobs: list[Job] = []
    n_overlapping = 0
    for group in by_crs.values():
        touching, overlapping = _contacts(group)
        n_overlapping += len(overlapping)
        for i in sorted(overlapping):
            jobs.append(_scene_job(group[i].path, group[i]))
        for comp in _components(len(group), touching, skip=overlapping):
            members = [group[i] for i in comp]
            if len(members) == 1:
                jobs.append(_scene_job(members[0].path, members[0]))
            else:
                jobs.append(_catalog_of_files(members))
    if n_overlapping:
        log.info(
            "%d inputs overlap another input and are predicted each on its own (a catalog's "
            "tiles touch without overlapping; give a VRT to mosaic overlapping tiles)",
            n_overlapping,
        )
    return jobs


def _contacts(group: list[_Header]) -> tuple[list[tuple[int, int]], set[int]]:
    """The pairs of ``group`` that touch (edge or corner, no common area), and the members
    that overlap another."""
    import shapely

    px = min(min(abs(h.transform.a), abs(h.transform.e)) for h in group)
    eps = PIXEL_TOLERANCE * px
    boxes = [shapely.box(*h.bounds) for h in group]
    tree = shapely.STRtree([b.buffer(CONTACT * px, join_style="mitre") for b in boxes])
    left, right = tree.query(boxes, predicate="intersects")
    touching: list[tuple[int, int]] = []
    overlapping: set[int] = set()
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        if a >= b:
            continue
        ax0, ay0, ax1, ay1 = group[a].bounds
        bx0, by0, bx1, by1 = group[b].bounds
        if min(ax1, bx1) - max(ax0, bx0) > eps and min(ay1, by1) - max(ay0, by0) > eps:
            overlapping.update((a, b))
        else:
            touching.append((a, b))
    return touching, overlapping


def _components(n: int, pairs: list[tuple[int, int]], skip: set[int]) -> list[list[int]]:
    """Connected components of ``range(n)`` minus ``skip`` joined by ``pairs``."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        if a not in skip and b not in skip:
            parent[find(a)] = find(b)
    comps: dict[int, list[int]] = {}
    for i in range(n):
        if i not in skip:
            comps.setdefault(find(i), []).append(i)
    return list(comps.values())


def _grid_problem(a: _Header, b: _Header) -> str | None:
    """Why touching rasters ``a`` and ``b`` cannot be one mosaic, in words, or None."""
    names = ("band count", "data types", "nodata", "alpha bands", "masks")
    for name, va, vb in zip(names, a.layout, b.layout, strict=True):
        if va != vb:
            return f"{name} {va} vs {vb}"
    ta, tb = a.transform, b.transform
    for va, vb in ((ta.a, tb.a), (ta.e, tb.e)):
        if abs(va - vb) > 1e-6 * abs(va):
            return f"pixel size {abs(ta.a):g} x {abs(ta.e):g} vs {abs(tb.a):g} x {abs(tb.e):g}"
    dx, dy = (tb.c - ta.c) / ta.a, (tb.f - ta.f) / ta.e
    off = max(abs(dx - round(dx)), abs(dy - round(dy)))
    if off > PIXEL_TOLERANCE:
        return f"grids offset by {off:.3g} px"
    return None


def _catalog_of_files(members: list[_Header]) -> Job:
    """The catalog of touching files ``members``, or a job refusing them in one line."""
    members = sorted(members, key=lambda h: str(h.path))
    fix = (
        "warp them onto one grid (gdalwarp -tr/-tap), or pass --no-catalog to predict "
        "each file on its own"
    )
    error: Exception | None = None
    for h in members[1:]:
        problem = error is None and _grid_problem(members[0], h)
        if problem:
            error = InputError(
                f"{members[0].path} and {h.path} are tiles of one catalog but not on one "
                f"grid ({problem}); {fix}"
            )
    ref = members[0].transform
    x0 = min(h.bounds[0] for h in members)
    y0 = max(h.bounds[3] for h in members)
    tiles = []
    for h in members:
        col = round((h.transform.c - x0) / ref.a)
        row = round((h.transform.f - y0) / ref.e)
        tiles.append(Tile(h.path, row, col, h.height, h.width, h.transform, h.crs))
    return _mosaic_job(tiles, members[0], error)


def _mosaic_job(tiles: list[Tile], ref: _Header, error: Exception | None) -> Job:
    from affine import Affine

    width = max(t.col_off + t.width for t in tiles)
    height = max(t.row_off + t.height for t in tiles)
    t0 = ref.transform  # tiles[0] is ref's tile
    x0 = t0.c - tiles[0].col_off * t0.a
    y0 = t0.f - tiles[0].row_off * t0.e
    transform = Affine(t0.a, 0.0, x0, 0.0, t0.e, y0)
    job = Job(
        name="",
        tiles=tiles,
        catalog=True,
        error=error,
        crs=ref.crs,
        transform=transform,
        width=width,
        height=height,
        cover=np.array([t.rect for t in tiles], dtype=np.int64),
    )
    if error is None:
        job.vrt_xml = mosaic_vrt(job, ref)
    return job


def _name_catalogs(jobs: list[Job]) -> None:
    """Catalogs of files take their folder's name (a VRT's catalog its stem), made unique
    with the CRS's EPSG code, then a number."""
    named = [j for j in jobs if j.catalog and not j.name]
    for j in named:
        first = Path(os.fspath(j.tiles[0].path))
        j.name = first.parent.name or first.stem
    cats = [j for j in jobs if j.catalog]
    shared = {j.name for j in cats if sum(o.name == j.name for o in cats) > 1}
    for j in named:
        if j.name in shared and j.crs is not None and j.crs.to_epsg():
            j.name = f"{j.name}_epsg{j.crs.to_epsg()}"
    seen: dict[str, int] = {}
    for j in cats:
        seen[j.name] = seen.get(j.name, 0) + 1
        if seen[j.name] > 1:
            j.name = f"{j.name}_{seen[j.name]}"


# ---------------------------------------------------------------------------
# VRT mosaics


def _vsi(path: str | Path) -> str:
    """A GDAL name for ``path``: local files absolute, URLs as /vsicurl/, /vsis3/, ..."""
    s = os.fspath(path)
    if not is_gdal_path(s):
        return str(Path(s).resolve())
    for scheme, prefix in (("s3://", "/vsis3/"), ("gs://", "/vsigs/"), ("az://", "/vsiaz/")):
        if s.startswith(scheme):
            return prefix + s[len(scheme) :]
    if s.startswith(("http://", "https://", "ftp://")):
        return "/vsicurl/" + s
    return s


def mosaic_vrt(job: Job, ref: _Header) -> str:
    """A VRT mosaic of the job's tiles (later tiles win where they overlap), as XML."""
    count, dtypes, nodata, alpha, mask = ref.layout
    t = job.transform
    srs = f"<SRS>{escape(job.crs.to_wkt())}</SRS>" if job.crs is not None else ""
    bands = []
    for b in range(count):
        nd = "" if nodata[b] == "None" else _gdal_number(nodata[b])
        interp = "<ColorInterp>Alpha</ColorInterp>" if alpha[b] else ""
        sources = "".join(_vrt_source(tile, str(b + 1), ref, nd) for tile in job.tiles)
        nd_xml = f"<NoDataValue>{nd}</NoDataValue>" if nd else ""
        bands.append(
            f'<VRTRasterBand dataType="{_gdal_type(dtypes[b])}" band="{b + 1}">'
            f"{nd_xml}{interp}{sources}</VRTRasterBand>"
        )
    if mask == "dataset":
        sources = "".join(_vrt_source(tile, "mask,1", ref, "") for tile in job.tiles)
        bands.append(
            f'<MaskBand><VRTRasterBand dataType="Byte">{sources}</VRTRasterBand></MaskBand>'
        )
    gt = ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    return (
        f'<VRTDataset rasterXSize="{job.width}" rasterYSize="{job.height}">{srs}'
        f"<GeoTransform>{gt}</GeoTransform>{''.join(bands)}</VRTDataset>"
    )


def _vrt_source(tile: Tile, band: str, ref: _Header, nodata: str) -> str:
    kind = "ComplexSource" if nodata else "SimpleSource"
    nd = f"<NODATA>{nodata}</NODATA>" if nodata else ""
    bx, by = ref.block[1], ref.block[0]
    return (
        f'<{kind}><SourceFilename relativeToVRT="0">{escape(_vsi(tile.path))}</SourceFilename>'
        f"<SourceBand>{band}</SourceBand>"
        f'<SourceProperties RasterXSize="{tile.width}" RasterYSize="{tile.height}" '
        f'BlockXSize="{bx}" BlockYSize="{by}"/>'
        f'<SrcRect xOff="0" yOff="0" xSize="{tile.width}" ySize="{tile.height}"/>'
        f'<DstRect xOff="{tile.col_off}" yOff="{tile.row_off}" xSize="{tile.width}" '
        f'ySize="{tile.height}"/>{nd}</{kind}>'
    )


def _gdal_number(text: str) -> str:
    v = float(text)
    return "nan" if v != v else repr(v)


_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


def _gdal_type(dtype: str) -> str:
    if dtype not in _GDAL_TYPES:
        raise InputError(f"data type {dtype}: tiles of this type cannot be mosaicked; convert them")
    return _GDAL_TYPES[dtype]


def _vrt_catalog(p: str | Path) -> Job | None:
    """The catalog a mosaic VRT describes (module doc), or None for any other input."""
    if is_gdal_path(p) or Path(p).suffix.lower() != ".vrt" or not Path(p).is_file():
        return None
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError):
        return None
    band = root.find("VRTRasterBand")
    if root.get("subClass") or band is None:
        return None
    tiles = _vrt_tiles(Path(p), band)
    if tiles is None or len({str(t.path) for t in tiles}) < 2:
        return None
    head = _header(p)
    if head is None or head.crs is None or not head.north_up:
        return None
    from affine import Affine

    placed = [
        Tile(
            t.path,
            t.row_off,
            t.col_off,
            t.height,
            t.width,
            head.transform @ Affine.translation(t.col_off, t.row_off),
            head.crs,
        )
        for t in tiles
    ]
    return Job(
        name=Path(source_label(p)).stem,
        tiles=placed,
        source=p,
        catalog=True,
        vrt=p,
        crs=head.crs,
        transform=head.transform,
        width=head.width,
        height=head.height,
        cover=np.array([t.rect for t in placed], dtype=np.int64),
    )


def _vrt_tiles(vrt: Path, band: ET.Element) -> list[Tile] | None:
    """The sources of a VRT band as tiles, when each is a whole file placed pixel for pixel."""
    tiles = []
    for src in band:
        if src.tag not in ("SimpleSource", "ComplexSource"):
            continue
        name, srect, drect = src.find("SourceFilename"), src.find("SrcRect"), src.find("DstRect")
        if name is None or srect is None or drect is None or not name.text:
            return None
        path: str | Path = name.text
        if name.get("relativeToVRT") == "1":
            path = vrt.parent / name.text
        try:
            sx, sy, sw, sh = (
                float(srect.get(k, "nan")) for k in ("xOff", "yOff", "xSize", "ySize")
            )
            dx, dy, dw, dh = (
                float(drect.get(k, "nan")) for k in ("xOff", "yOff", "xSize", "ySize")
            )
        except ValueError:
            return None
        head = _header(source_path(path))
        whole = head is not None and (sx, sy, sw, sh) == (0, 0, head.width, head.height)
        if not whole or (dw, dh) != (sw, sh) or dx != int(dx) or dy != int(dy):
            return None
        tiles.append(Tile(source_path(path), int(dy), int(dx), int(sh), int(sw)))
    return tiles
