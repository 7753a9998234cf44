"""Outputs cut from finished blocks: each tile's rasters (or the mosaic's), written whole.

An output is written once every block it needs is in the state folder
(:mod:`aerialct.predict.state`), by whichever process sees that first. A VRT over
those blocks gives the output's pixels: one pass over it takes their checksum and
class counts, and GDAL's COG driver then copies it, tags and colours included, under
a temporary name that is read back and renamed
(:func:`aerialct.geo.outputs.atomic_output`). When the prediction ran at the training
pixel size, the blocks are warped back onto the input's grid into a part file first. Two
processes that both finish a tile's last blocks at once both go to write it: the output's
lock lets one write it, and the other waits for its file (:mod:`aerialct.predict.job`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.geo.classraster import band_class_names, class_tags, write_class_sidecars
from aerialct.geo.cog import PART_BLOCK, PART_OPTIONS, copy_as_cog, finish_cog, gtiff_profile
from aerialct.geo.inputs import source_label
from aerialct.geo.outputs import atomic_output
from aerialct.geo.tags import CHECKSUM_TAG, PREDICTION_TAG
from aerialct.predict.catalog import Tile
from aerialct.predict.identity import Checksum, Provenance
from aerialct.predict.plan import Block, BlockIndex
from aerialct.predict.quicklook import write_quicklook
from aerialct.predict.results import SceneResult
from aerialct.predict.state import State
from aerialct.predict.stream import PROB_SCALE


@dataclass(frozen=True)
class Output:
    """The rasters predict writes for one tile (on its grid, named after it) or for a
    whole catalog (``--mosaic``): ``tile`` is where it sits in the job's grid."""

    tile: Tile
    classes: Path
    probabilities: Path | None
    quicklook: Path | None
    provenance: Provenance
    source: str = ""
    """What the output was predicted from, as the records name it (default: the tile's path;
    a mosaic of files: their folder)."""

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.classes, self.probabilities, self.quicklook) if p is not None]


@dataclass(frozen=True)
class GridRef:
    """A raster grid: CRS, transform and size."""

    crs: Any
    transform: Any
    width: int
    height: int


@dataclass
class JoinContext:
    """What writing a job's outputs needs: its state and blocks, the grid the blocks are on
    (``pred``) and the job's own grid (``grid``, the same unless resampled)."""

    state: State
    blocks: Sequence[Block]
    pred: GridRef
    grid: GridRef
    resampled: bool
    classes: ClassTable
    probabilities: bool
    creation: dict[str, str]
    creation_prob: dict[str, str]
    overwrite: bool
    source: Any = None  # the job's open source raster, for quick looks
    bands: Sequence[int] = ()
    title: str = ""
    index: BlockIndex | None = None
    model_tags: dict[str, str] = field(default_factory=dict)
    """The tag naming the model (:func:`aerialct.stac.model_tags`), on every raster."""


def needed_blocks(ctx: JoinContext, out: Output) -> list[Block]:
    """The blocks whose pixels ``out`` is cut from (all of them when resampled: the warp
    back reads the whole prediction grid)."""
    if ctx.resampled:
        return list(ctx.blocks)
    if ctx.index is not None:
        return ctx.index.within(*out.tile.rect)
    return [b for b in ctx.blocks if b.intersects(*out.tile.rect)]


def write_output(ctx: JoinContext, out: Output, *, replace: bool = False) -> SceneResult:
    """Write ``out``'s rasters (and quick look) from the finished blocks; its result record.

    ``replace`` lets complete side outputs of this very output (left by a writer that
    stopped before its class raster) be written again.
    """
    t0 = time.perf_counter()
    tile = out.tile
    sides = ctx.overwrite or replace
    # the class raster is renamed into place last: when it is there, its side outputs are
    with atomic_output(out.classes, ctx.overwrite, inputs=[tile.path]) as tmp_cls:
        hist = _write_raster(ctx, out, tmp_cls, probabilities=False)
        if out.probabilities is not None:
            with atomic_output(out.probabilities, sides, inputs=[tile.path]) as tmp:
                _write_raster(ctx, out, tmp, probabilities=True)
        if out.quicklook is not None:
            _write_quicklook(ctx, out, tmp_cls, sides)
    write_class_sidecars(out.classes, ctx.classes)  # gdalinfo / QGIS: names, RAT, style
    return SceneResult(
        scene=Path(str(tile.path)),
        source=out.source or os.fspath(tile.path),
        output=out.classes,
        probabilities=out.probabilities,
        quicklook=out.quicklook,
        width=tile.width,
        height=tile.height,
        nodata_pixels=int(hist[IGNORE_INDEX]),
        class_pixels={
            name: int(hist[c.id]) for c, name in zip(ctx.classes, ctx.classes.names, strict=True)
        },
        seconds=time.perf_counter() - t0,
    )


def _write_raster(ctx: JoinContext, out: Output, tmp: Path, *, probabilities: bool) -> np.ndarray:
    """Write the output's pixels from the blocks as a COG at ``tmp`` (an atomic output's
    temporary); the class counts.

    One pass over a VRT of the blocks takes the checksum and the counts; the COG is then
    copied from the same VRT, which carries the tags. Resampled outputs go through a part
    file on the output's grid instead (the warp back).
    """
    if ctx.resampled:
        return _write_warped(ctx, out, tmp, probabilities=probabilities)
    import rasterio
    from rasterio.windows import Window

    from aerialct.geo.io import no_georef_warning

    tile = out.tile
    count = len(ctx.classes) if probabilities else 1
    nodata = None if probabilities else IGNORE_INDEX
    blocks = needed_blocks(ctx, out)
    hist = np.zeros(256, dtype=np.int64)
    ck = Checksum()
    xml = blocks_vrt(ctx, blocks, tile, count, probabilities, nodata)
    with no_georef_warning(), rasterio.open(xml) as vrt:
        for y in range(0, tile.height, PART_BLOCK):
            n = min(PART_BLOCK, tile.height - y)
            data = vrt.read(window=Window(0, y, tile.width, n))  # (count, n, w)
            ck.update(data)
            if not probabilities:
                hist += np.bincount(data.ravel(), minlength=256)
    meta = _metadata(ctx, out, probabilities, ck.text())
    xml = blocks_vrt(ctx, blocks, tile, count, probabilities, nodata, meta)
    with no_georef_warning():
        copy_as_cog(xml, tmp, ctx.creation_prob if probabilities else ctx.creation)
    return hist


def _write_warped(ctx: JoinContext, out: Output, tmp: Path, *, probabilities: bool) -> np.ndarray:
    """Stream the output's pixels, warped back from the blocks, into a COG at ``tmp``."""
    import rasterio
    from rasterio.windows import Window

    tile = out.tile
    w, h = tile.width, tile.height
    count = len(ctx.classes) if probabilities else 1
    options = dict(PART_OPTIONS) if min(w, h) >= 16 else {"compress": "zstd", "zstd_level": 1}
    nodata = None if probabilities else IGNORE_INDEX
    prof = gtiff_profile(w, h, count, "uint8", tile.crs, tile.transform, nodata, **options)
    hist = np.zeros(256, dtype=np.int64)
    ck = Checksum()
    with _warped(ctx, probabilities) as view:
        top, _, left, _ = tile.rect
        part = tmp.with_name(f"{tmp.name}.part.tif")
        with rasterio.open(part, "w", **prof) as ds:
            for y in range(0, h, PART_BLOCK):
                n = min(PART_BLOCK, h - y)
                data = view.read(window=Window(left, top + y, w, n))  # (count, n, w)
                ck.update(data)
                if not probabilities:
                    hist += np.bincount(data.ravel(), minlength=256)
                ds.write(data, window=Window(0, y, w, n))
            meta = _metadata(ctx, out, probabilities, ck.text())
            ds.update_tags(**meta.tags)
            if meta.band_tags:
                ds.update_tags(1, **meta.band_tags)
            for i, d in enumerate(meta.descriptions):
                ds.set_band_description(i + 1, d)
            if meta.colormap:
                ds.write_colormap(1, meta.colormap)
        finish_cog(part, tmp, ctx.creation_prob if probabilities else ctx.creation)
    return hist


@dataclass(frozen=True)
class _Meta:
    """What an output raster carries besides its pixels."""

    tags: dict[str, str]
    descriptions: list[str]
    colormap: dict[int, tuple[int, int, int, int]] | None
    band_tags: dict[str, str] = field(default_factory=dict)
    """Metadata of band 1 (a class raster's class names)."""


def _metadata(ctx: JoinContext, out: Output, probabilities: bool, checksum: str) -> _Meta:
    """Class table, source, model, provenance and checksum tags; colours and class names,
    or band names."""
    classes = ctx.classes
    source = out.provenance.source.get("path")
    tags = class_tags(classes, source=source, prob_scale=PROB_SCALE if probabilities else None)
    tags[PREDICTION_TAG] = out.provenance.to_json()
    tags[CHECKSUM_TAG] = checksum
    tags.update(ctx.model_tags)
    if probabilities:
        return _Meta(tags, list(classes.names), None)
    return _Meta(tags, ["class"], classes.colormap(), band_class_names(classes))


@contextlib.contextmanager
def _warped(ctx: JoinContext, probabilities: bool) -> Iterator[Any]:
    """The blocks warped back onto the job's own grid (a WarpedVRT, read by windows)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from aerialct.geo.io import no_georef_warning

    count = len(ctx.classes) if probabilities else 1
    nodata = None if probabilities else IGNORE_INDEX
    whole = Tile("", 0, 0, ctx.pred.height, ctx.pred.width, ctx.pred.transform, ctx.pred.crs)
    xml = blocks_vrt(ctx, list(ctx.blocks), whole, count, probabilities, nodata)
    kw: dict[str, Any] = {
        "crs": ctx.grid.crs,
        "transform": ctx.grid.transform,
        "width": ctx.grid.width,
        "height": ctx.grid.height,
        "resampling": Resampling.bilinear if probabilities else Resampling.nearest,
    }
    if nodata is not None:
        kw["nodata"] = nodata
    with no_georef_warning(), rasterio.open(xml) as vrt, WarpedVRT(vrt, **kw) as warped:
        yield warped


def blocks_vrt(
    ctx: JoinContext,
    blocks: Sequence[Block],
    tile: Tile,
    count: int,
    probabilities: bool,
    nodata: int | None,
    meta: _Meta | None = None,
) -> str:
    """A VRT (XML) of ``tile``'s rectangle of the prediction grid, from ``blocks``' files,
    with the tags, band descriptions and colour table of ``meta``."""
    top, bottom, left, right = tile.rect
    t = tile.transform
    gt = ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    srs = f"<SRS>{escape(tile.crs.to_wkt())}</SRS>" if tile.crs is not None else ""
    bands = []
    for band in range(1, count + 1):
        sources = []
        for b in blocks:
            y0, y1, x0, x1 = (
                max(top, b.top),
                min(bottom, b.bottom),
                max(left, b.left),
                min(right, b.right),
            )
            if y0 >= y1 or x0 >= x1:
                continue
            path = ctx.state.prob_path(b) if probabilities else ctx.state.classes_path(b)
            sources.append(
                f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(path))}'
                f"</SourceFilename><SourceBand>{band}</SourceBand>"
                f'<SrcRect xOff="{x0 - b.left}" yOff="{y0 - b.top}" xSize="{x1 - x0}" '
                f'ySize="{y1 - y0}"/><DstRect xOff="{x0 - left}" yOff="{y0 - top}" '
                f'xSize="{x1 - x0}" ySize="{y1 - y0}"/></SimpleSource>'
            )
        nd = f"<NoDataValue>{nodata}</NoDataValue>" if nodata is not None else ""
        bands.append(
            f'<VRTRasterBand dataType="Byte" band="{band}">{_band_meta(meta, band)}{nd}'
            f"{''.join(sources)}</VRTRasterBand>"
        )
    mdi = ""
    if meta is not None:
        items = "".join(f'<MDI key="{escape(k)}">{escape(v)}</MDI>' for k, v in meta.tags.items())
        mdi = f"<Metadata>{items}</Metadata>"
    return (
        f'<VRTDataset rasterXSize="{right - left}" rasterYSize="{bottom - top}">{srs}'
        f"<GeoTransform>{gt}</GeoTransform>{mdi}{''.join(bands)}</VRTDataset>"
    )


def _band_meta(meta: _Meta | None, band: int) -> str:
    """A VRT band's description, colour table and metadata."""
    if meta is None:
        return ""
    out = f"<Description>{escape(meta.descriptions[band - 1])}</Description>"
    if meta.colormap and band == 1:
        top = max(meta.colormap)
        entries = "".join(
            '<Entry c1="{}" c2="{}" c3="{}" c4="{}"/>'.format(*meta.colormap.get(i, (0, 0, 0, 0)))
            for i in range(top + 1)
        )
        out += f"<ColorInterp>Palette</ColorInterp><ColorTable>{entries}</ColorTable>"
    if meta.band_tags and band == 1:
        items = "".join(
            f'<MDI key="{escape(k)}">{escape(v)}</MDI>' for k, v in meta.band_tags.items()
        )
        out += f"<Metadata>{items}</Metadata>"
    return out


def _write_quicklook(ctx: JoinContext, out: Output, classes: Path, overwrite: bool) -> None:
    """The quick look of the output's part of the job's source, with its provenance, from
    the class raster ``classes``."""
    assert out.quicklook is not None
    top, bottom, left, right = out.tile.rect
    with atomic_output(out.quicklook, overwrite, inputs=[out.tile.path]) as tmp:
        write_quicklook(
            ctx.source,
            list(ctx.bands),
            classes,
            tmp,
            ctx.classes,
            title=source_label(out.tile.path) + ctx.title,
            texts={PREDICTION_TAG: out.provenance.to_json()},
            window=(top, bottom, left, right),
        )
