"""The per-band chip writer: one task reads one row band of a scene and writes its chips.

A task (:class:`Job`) reads the band's rows once (all columns), labels included
(a label raster's window, or the scene's polygons rasterised on the band's grid),
then cuts, pads (scenes smaller than a window), resizes and writes each chip with
its mask, and returns the chips' index rows and pixel samples. Tasks run in worker
processes, so everything here is picklable and imports stay inside the functions.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.data.index import ChipRow, chip_id, chip_paths
from aerialct.geo.classraster import tag_class_raster
from aerialct.geo.cog import gtiff_profile
from aerialct.geo.io import block_cache_cap, no_georef_warning, open_raster, read_failed
from aerialct.tile.scenes import Scene, bbox
from aerialct.tile.stats import sample_pixels
from aerialct.tile.writer import ChipWriter, writer_for


@dataclass
class Job:
    """One row band of windows of a scene: where they start and which split each goes to."""

    scene: Scene
    row: int
    cols: list[int]
    splits: list[str]
    out: str
    window: int
    chip: int
    nodata_threshold: float
    creation_options: dict[str, str]
    classes: ClassTable
    read_threads: int = 1
    """GDAL threads that decode the band (GDAL_NUM_THREADS of the read alone)."""


class BandResult(NamedTuple):
    """What a band task made: index rows, windows skipped for nodata, label values outside
    the class table (counted), and per split the pixel samples (C, n) of its chips."""

    rows: list[ChipRow]
    skipped: int
    unknown: dict[str, int]
    samples: dict[str, list[np.ndarray]]


# --------------------------------------------------------------------------- resizing


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of (C, H, W) with pixel-centre alignment (align_corners=False).

    Integer dtypes are rounded and clipped to their range. Same sampling as
    ``scipy.ndimage.zoom(order=1, grid_mode=True, mode="nearest")``, within 1 DN.
    """
    # kept over scipy.ndimage.zoom: 2-7x faster on 3x500x500 -> 512 (bench_tile.py --resize-only)
    h, w = img.shape[-2:]
    if (h, w) == (out_h, out_w):
        return img.copy()

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        x = np.clip(x, 0, n_in - 1)
        x0 = np.floor(x).astype(np.intp)
        x1 = np.minimum(x0 + 1, n_in - 1)
        return x0, x1, (x - x0).astype(np.float32)

    y0, y1, wy = axis(h, out_h)
    x0, x1, wx = axis(w, out_w)
    a = img.astype(np.float32, copy=False)
    rows = a[:, y0, :] * (1 - wy)[None, :, None] + a[:, y1, :] * wy[None, :, None]
    out = rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        np.rint(out, out=out)
        np.clip(out, info.min, info.max, out=out)
    return out.astype(img.dtype)


def resize_nearest(arr: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Nearest-neighbour resize of (..., H, W): labels are never interpolated."""
    h, w = arr.shape[-2:]
    ys = np.minimum(((np.arange(out_h) + 0.5) * (h / out_h)).astype(np.intp), h - 1)
    xs = np.minimum(((np.arange(out_w) + 0.5) * (w / out_w)).astype(np.intp), w - 1)
    return arr[..., ys[:, None], xs[None, :]]


# --------------------------------------------------------------------------- reading a band


class _Kept:
    """What a process keeps from one band task to the next: the memory it decodes bands
    into and the scene it reads (:func:`release_kept` lets both go).

    A band is tens of MB, and fresh memory for each costs the kernel a page fault per
    4 KB page; nothing of a band outlives its task (chips are copied out when written,
    samples are copies), so the next task reuses it. Re-opening the scene for each task
    would also cost GDAL's per-dataset decoding buffers again, the same kind of cost.
    """

    def __init__(self) -> None:
        self.raw: np.ndarray | None = None
        self.src: Any = None
        self.key: tuple[str, int] | None = None

    def band(self, h: int, w: int, count: int, dtype: str) -> np.ndarray:
        """A (count, h, w) array of ``dtype``, pixel-interleaved in memory (C fastest)."""
        dt = np.dtype(dtype)
        need = h * w * count * dt.itemsize
        if self.raw is None or self.raw.nbytes < need:
            self.raw = None  # the old one first: peak memory is one band, not two
            self.raw = np.empty(need, dtype=np.uint8)
        return self.raw[:need].view(dt).reshape(h, w, count).transpose(2, 0, 1)

    def scene(self, image: str, threads: int) -> Any:
        """The scene's dataset, opened to decode on ``threads`` GDAL threads (a dataset takes
        GDAL_NUM_THREADS when it opens: only its reads use them, chips are written as
        before)."""
        import rasterio

        if self.key != (image, threads):
            self.close()
            with rasterio.Env(GDAL_NUM_THREADS=str(threads)):
                self.src = open_raster(image)  # remote scenes: no folder listing
            self.key = (image, threads)
        return self.src

    def close(self) -> None:
        if self.src is not None:
            self.src.close()
        self.src, self.key = None, None


_kept = _Kept()


def release_kept() -> None:
    """Close the scene this process keeps open and free its band memory (a run's end)."""
    _kept.close()
    _kept.raw = None


def block_cache(ds: Any, rows: int) -> Any:
    """GDAL's block cache capped at what reading ``rows`` rows of ``ds`` needs (a context
    manager), unless the user set GDAL_CACHEMAX.

    A band's blocks are decoded once, and only the rows the next band shares with this
    one (a stride below the window, a block row across two bands) are read again: the
    last block rows. GDAL's default cap (5% of RAM) keeps every block of the scene, and
    the memory for each new one costs page faults: a 6000² RGB scene decoded band by band
    took 0.51 CPU s with the cap against 0.59 without (medians of 9 passes).
    """
    import rasterio

    bh = ds.block_shapes[0][0] if ds.block_shapes else rows
    need = (rows + bh) * ds.width * ds.count * np.dtype(ds.dtypes[0]).itemsize
    return rasterio.Env(**block_cache_cap(need, 4 << 20))


def chip_profile(
    scene: Scene | None, count: int, dtype: str, size: int, transform, crs, nodata, co
) -> dict[str, Any]:
    """GTiff creation profile of a chip; ``co`` (creation options) win over the defaults."""
    rgb = scene is not None and scene.rgb_photometric and "PHOTOMETRIC" not in co
    return gtiff_profile(size, size, count, dtype, crs, transform, nodata,
                         **({"photometric": "RGB"} if rgb else {}), **co)  # fmt: skip


def _rasterize_band(scene: Scene, band_transform, h: int, w: int) -> np.ndarray:
    """The scene's polygons burnt onto the band's grid (h, w); ``background`` elsewhere."""
    import shapely
    from rasterio import features
    from rasterio.transform import array_bounds

    band_box = shapely.box(*bbox(array_bounds(h, w, band_transform)))
    geoms = shapely.from_wkb([g for g, _ in scene.shapes or []])
    ids = [i for _, i in scene.shapes or []]
    hit = shapely.intersects(geoms, band_box) if len(geoms) else np.zeros(0, bool)
    shapes = [(g, i) for g, i, keep in zip(geoms, ids, hit, strict=True) if keep]
    if not shapes:
        return np.full((h, w), scene.background, dtype=np.uint8)
    return features.rasterize(
        shapes, out_shape=(h, w), transform=band_transform, fill=scene.background, dtype="uint8"
    )


def _read_label_raster(job: Job, window) -> tuple[np.ndarray, Counter[str]]:
    """The band's class ids from the label raster and a Counter of values outside the table."""
    sc, k = job.scene, len(job.classes)
    assert sc.labels is not None  # called only for scenes with a label raster
    unknown: Counter[str] = Counter()
    with no_georef_warning(), open_raster(sc.labels) as lab, block_cache(lab, window.height):
        if sc.label_kind == "rgb":
            ids, colours = job.classes.rgb_to_ids(lab.read([1, 2, 3], window=window))
            for colour, n in colours.items():
                unknown["rgb({}, {}, {})".format(*colour)] += n
            return ids, unknown
        raw = lab.read(1, window=window)
    nod = raw == sc.label_nodata if sc.label_nodata is not None else np.zeros(raw.shape, bool)
    if job.classes.ignore != IGNORE_INDEX:  # the table's own "no label" value
        nod |= raw == job.classes.ignore
    legal = ((raw >= 0) & (raw < k)) | (raw == IGNORE_INDEX) | nod
    ids = np.where(legal & ~nod, raw, IGNORE_INDEX).astype(np.uint8)
    if not legal.all():
        vals, counts = np.unique(raw[~legal], return_counts=True)
        for v, n in zip(vals.tolist(), counts.tolist(), strict=True):
            unknown[f"id {v}"] += n
    return ids, unknown


def _read_band(job: Job) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, Counter[str]]:
    """The band's image (C, h, W), valid mask, class ids (or None) and unknown label values.

    Read errors become RasterError naming the file and window.
    """
    from affine import Affine
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    sc = job.scene
    h = min(job.window, sc.height)
    win = Window(0, job.row, sc.width, h)
    band_t = Affine(*sc.transform) @ Affine.translation(0, job.row)
    try:
        src = _kept.scene(sc.image, job.read_threads)
        with block_cache(src, h):
            # decoded pixel-interleaved (GDAL fills the strided view): a chip's pixels are then
            # rows of the band, written as they are (tile.writer), without a transpose
            band = _kept.band(h, sc.width, sc.count, sc.dtype)
            data = src.read(window=win, out=band)
            valid = src.dataset_mask(window=win) > 0 if sc.has_mask else None
    except RasterioError as e:
        raise read_failed(sc.image, e, win) from None
    labels, unknown = None, Counter[str]()
    if sc.label_kind is not None:
        try:
            if sc.label_kind == "vector":
                labels = _rasterize_band(sc, band_t, h, sc.width)
            else:
                labels, unknown = _read_label_raster(job, win)
        except RasterioError as e:
            raise read_failed(sc.labels, e, win) from None
        if valid is not None:
            labels[~valid] = IGNORE_INDEX
    return data, valid, labels, unknown


# --------------------------------------------------------------------------- writing chips


def _fit(job: Job, img: np.ndarray, lab: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A window's image and labels padded to the window (scenes smaller than one) and resized
    to the chip size (image bilinear, labels nearest)."""
    sc, size, chip = job.scene, job.window, job.chip
    h, w = img.shape[-2:]
    if h < size or w < size:  # a scene smaller than a window: pad, image with nodata/0
        pad = np.full((sc.count, size, size), sc.nodata if sc.nodata is not None else 0, sc.dtype)
        pad[:, :h, :w] = img
        img = pad
        if lab is not None:
            lp = np.full((size, size), IGNORE_INDEX, np.uint8)
            lp[:h, :w] = lab
            lab = lp
    if chip != size:
        img = resize_bilinear(img, chip, chip)
        if lab is not None:
            lab = resize_nearest(lab, chip, chip)
    return img, lab


def _write_chip(
    job: Job,
    crs,
    split: str,
    col: int,
    img: np.ndarray,
    lab: np.ndarray | None,
    made: set[str],
    writer: ChipWriter,
) -> ChipRow:
    """Write one chip (and its mask) of the band at column ``col``; its index row."""
    from affine import Affine
    from rasterio.transform import array_bounds

    sc, chip, out = job.scene, job.chip, Path(job.out)
    h, w = min(job.window, sc.height), min(job.window, sc.width)
    # affine's @, not rasterio.windows.transform: the same values, but that helper warns
    # (PendingDeprecationWarning, `*` on an Affine) on every call under affine 3
    t = Affine(*sc.transform) @ Affine.translation(col, job.row) @ Affine.scale(job.window / chip)
    name = chip_id(sc.name, job.row, col)
    image_rel, mask_path = chip_paths(split, name)
    if split not in made:
        (out / image_rel).parent.mkdir(parents=True, exist_ok=True)
        (out / mask_path).parent.mkdir(parents=True, exist_ok=True)
        made.add(split)
    prof = chip_profile(sc, sc.count, sc.dtype, chip, t, crs, sc.nodata, job.creation_options)
    writer.write(out / image_rel, img, prof, "image")
    k = len(job.classes)
    counts = np.zeros(k + 1, dtype=np.int64)
    mask_rel = None
    if lab is not None:
        mask_rel = mask_path
        mprof = chip_profile(None, 1, "uint8", chip, t, crs, IGNORE_INDEX, job.creation_options)
        writer.write(out / mask_rel, lab[None], mprof, "mask",
                     lambda dst: tag_class_raster(dst, job.classes))  # fmt: skip
        bc = np.bincount(lab.ravel(), minlength=256)
        counts[:k] = bc[:k]
        counts[k] = int(bc[k:].sum())  # 255 (and nothing else)
    return ChipRow(
        chip_id=name,
        image=image_rel,
        mask=mask_rel,
        scene=sc.name,
        split=split,
        row_off=job.row,
        col_off=col,
        width=w,
        height=h,
        counts=counts,
        bounds=bbox(array_bounds(chip, chip, t)),
    )


def tile_band(job: Job) -> BandResult:
    """Read one row band of a scene, cut and write its chips; return index rows and stats.

    Windows whose nodata share is above the job's threshold are skipped (counted).
    Read errors become RasterError naming the file; write errors (disk full) pass through.
    """
    import rasterio

    with rasterio.Env():  # one GDAL environment for the task's opens, not one per open
        return _tile_band(job, _crs(job.scene.crs_wkt))


@functools.lru_cache(maxsize=8)
def _crs(wkt: str) -> Any:
    """One CRS object per scene CRS in a process (chip writers compare profiles by identity)."""
    from rasterio.crs import CRS

    return CRS.from_wkt(wkt)


def _tile_band(job: Job, crs: Any) -> BandResult:
    sc = job.scene
    data, valid, labels, unknown = _read_band(job)
    w = min(job.window, sc.width)
    rows: list[ChipRow] = []
    skipped = 0
    samples: dict[str, list[np.ndarray]] = {}
    made: set[str] = set()
    writer = writer_for(job.out)
    for col, split in zip(job.cols, job.splits, strict=True):
        vwin = valid[:, col : col + w] if valid is not None else None
        if vwin is not None and 1.0 - float(vwin.mean()) > job.nodata_threshold:
            skipped += 1
            continue
        img = data[:, :, col : col + w]
        lab = labels[:, col : col + w] if labels is not None else None
        samples.setdefault(split, []).append(sample_pixels(img, vwin, sc.nodata))
        img, lab = _fit(job, img, lab)
        rows.append(_write_chip(job, crs, split, col, img, lab, made, writer))
    return BandResult(rows, skipped, dict(unknown), samples)
