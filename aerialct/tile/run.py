"""Cut georeferenced scenes into training chips (the chips dataset, CONTRACTS.md).

Two entry points share one engine:

* :func:`tile_scenes`: any GeoTIFFs, with label rasters (class ids or RGB colours)
  or polygons rasterised onto each image grid, or no labels at all;
* :func:`tile_potsdam`: the ISPRS Potsdam release (official names, legend, standard
  split, eroded test labels, the CT protocol of 500 px crops resized to 512).

The chip grid of a scene starts at (0, 0) and steps by ``stride``; the last window
along each axis is shifted back inside the scene so it ends on the edge (no fake
padding). Only a scene smaller than a window is padded (image with nodata or 0,
mask with 255). Every chip is a GeoTIFF whose CRS and transform are exactly its
place in the scene (scaled when resized).

Work is split into tasks of one row band of windows per scene; each task reads
the band's rows once (all columns), cuts its chips and writes them. Tasks run in
a process pool. Everything is written into a temporary sibling folder that is
renamed to the output only when the index is complete, so a failed or interrupted
run leaves nothing behind under the output name.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aerialct import __version__
from aerialct.classes import IGNORE_INDEX, ClassTable, resolve_class_table
from aerialct.errors import InputError, RasterError, VectorError
from aerialct.geo.grid import window_starts
from aerialct.geo.io import (
    FOLDER,
    atomic_output,
    check_output,
    gtiff_profile,
    no_georef_warning,
    open_raster,
    read_failed,
    require_same_grid,
    tag_class_raster,
    verify_output,
    verify_raster,
)
from aerialct.progress import ProgressFn, as_progress
from aerialct.workers import run_in_workers

log = logging.getLogger("aerialct")

DEFAULT_CREATION_OPTIONS = {"COMPRESS": "DEFLATE"}
"""Chips are DEFLATE-compressed GeoTIFFs unless ``creation_options`` say otherwise."""

SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- results


@dataclass
class SceneReport:
    """What happened to one scene."""

    name: str
    image: str
    labels: str | None
    split: str | None
    chips: int = 0
    skipped_nodata: int = 0
    unknown_pixels: int = 0
    unknown_values: dict[str, int] = field(default_factory=dict)
    georef_copied: bool = False


@dataclass
class TileResult:
    """The outcome of a tiling run (rendered by the CLI, also returned to library callers)."""

    out: Path
    source: str
    label_mode: str | None
    chip_size: int
    window: int
    stride: int
    gsd: float
    crs: str
    chips: int
    splits: dict[str, int]
    skipped_nodata: int
    class_pixels: dict[str, int]
    unknown_pixels: int
    unknown_values: dict[str, int]
    scenes: list[SceneReport]
    warnings: list[str]
    seconds: float
    split_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per split: each class's (and ignore's) share of the label pixels."""
    band_stats: dict = field(default_factory=dict)
    """Robust per-band statistics of the training pixels (see :func:`band_statistics`)."""
    classes: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- chip grid


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of (C, H, W) with pixel-centre alignment (align_corners=False).

    Integer dtypes are rounded and clipped to their range. Same sampling as
    ``scipy.ndimage.zoom(order=1, grid_mode=True, mode="nearest")``.
    """
    h, w = img.shape[-2:]
    if (h, w) == (out_h, out_w):
        return img.copy()

    def axis(n_in: int, n_out: int):
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


# --------------------------------------------------------------------------- scene specs


@dataclass
class _Scene:
    name: str
    image: str
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    has_mask: bool
    transform: tuple[float, ...]
    crs_wkt: str
    rgb_photometric: bool
    labels: str | None = None
    label_kind: str | None = None  # "ids" | "rgb" | "vector"
    label_nodata: float | None = None
    shapes: list | None = None  # vector labels: [(wkb, class id)] in the image CRS
    background: int = IGNORE_INDEX
    split: str | None = None
    georef_copied: bool = False


@dataclass
class _Job:
    scene: _Scene
    row: int
    cols: list[int]
    splits: list[str]
    out: str
    window: int
    chip: int
    nodata_threshold: float
    creation_options: dict[str, str]
    classes: ClassTable


def _inspect_image(path: str | Path) -> _Scene:
    from rasterio.enums import ColorInterp, MaskFlags

    with no_georef_warning(), open_raster(path) as ds:
        if ds.crs is None:
            raise RasterError(
                f"{path}: has no CRS; assign one with gdal_edit.py -a_srs EPSG:XXXX {path}"
            )
        if ds.transform.b != 0 or ds.transform.d != 0:
            raise RasterError(
                f"{path}: rotated geotransform; warp it north-up first (gdalwarp {path} out.tif)"
            )
        flags = ds.mask_flag_enums
        has_mask = ds.nodata is not None or any(
            MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags
        )
        ci = ds.colorinterp
        rgb = (
            ds.count >= 3
            and ds.dtypes[0] == "uint8"
            and tuple(ci[:3])
            == (
                ColorInterp.red,
                ColorInterp.green,
                ColorInterp.blue,
            )
        )
        return _Scene(
            name=Path(path).stem,
            image=os.fspath(path),  # a URL or /vsi path stays as given
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=ds.dtypes[0],
            nodata=ds.nodata,
            has_mask=has_mask,
            transform=tuple(ds.transform)[:6],
            crs_wkt=ds.crs.to_wkt(),
            rgb_photometric=rgb,
        )


def _attach_label_raster(scene: _Scene, path: Path, warnings: list[str]) -> None:
    """Check a label raster against its image and record how to read it."""
    from affine import Affine

    with no_georef_warning(), open_raster(path) as lab, open_raster(scene.image) as img:
        if lab.count == 1:
            kind = "ids"
        elif lab.count >= 3:
            kind = "rgb"
        else:
            raise InputError(
                f"{path}: {lab.count} bands; a label is 1 band of class ids or 3 bands of RGB colours"
            )
        no_georef = lab.crs is None and (
            lab.transform == Affine.identity() or lab.transform.almost_equals(img.transform)
        )
        if no_georef:
            if (lab.width, lab.height) != (img.width, img.height):
                raise InputError(
                    f"{path}: has no georeferencing and its size {lab.width}x{lab.height} differs "
                    f"from {scene.image} ({img.width}x{img.height}); give the label matching this image"
                )
            scene.georef_copied = True
            log.info("%s: no georeferencing; copied it from %s", path, Path(scene.image).name)
        else:
            require_same_grid(lab, img, what="the label")
        scene.labels = str(path)
        scene.label_kind = kind
        scene.label_nodata = lab.nodata


def _load_vector(
    path: Path,
    class_field: str | None,
    classes: ClassTable,
    layer: str | None,
    burn: str | None = None,
    class_map: dict[str, str] | None = None,
) -> tuple[object, list[int]]:
    """Polygons and their class ids: every polygon ``burn``, or ``class_field`` values that are
    class names/ids or keys of ``class_map`` (value -> class name)."""
    from aerialct.geo.vector import read_polygons

    frame = read_polygons(path, layer)
    if not len(frame) or bool((frame.geometry.isna() | frame.geometry.is_empty).all()):
        raise VectorError(f"{path}: has no features; give a file with label polygons")
    if frame.crs is None:
        raise VectorError(
            f"{path}: has no CRS; assign one (ogr2ogr -a_srs EPSG:XXXX out.gpkg {path})"
        )
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if burn is not None:
        return frame, [classes.id_of(burn)] * len(frame)
    if class_field not in frame.columns:
        fields = ", ".join(c for c in frame.columns if c != "geometry")
        raise InputError(
            f"{path}: no field {class_field!r}; --class-field is one of: {fields} "
            "(or burn every polygon as one class with --burn CLASS)"
        )
    mapping = {str(k): v for k, v in (class_map or {}).items()}
    ids = []
    lookup: dict[object, int] = {}
    for v in frame[class_field].tolist():
        if v not in lookup:
            try:
                if str(v) in mapping:
                    lookup[v] = classes.id_of(mapping[str(v)])
                else:
                    lookup[v] = classes.id_of(v if isinstance(v, str) else int(v))
            except (ValueError, TypeError) as e:
                raise InputError(
                    f"{path}: field {class_field!r} value {v!r} is not a class ({e}); "
                    f"use one of {', '.join(classes.names)}, ids 0..{len(classes) - 1}, or map "
                    f"it with --class-map {v}=CLASS"
                ) from e
        ids.append(lookup[v])
    return frame, ids


def _attach_vector(scene: _Scene, frame, ids: list[int], background: int) -> None:
    import shapely
    from pyproj import CRS

    crs = CRS.from_wkt(scene.crs_wkt)
    geoms = frame.geometry
    if frame.crs is not None and not CRS.from_user_input(frame.crs).equals(crs):
        geoms = geoms.to_crs(crs)
    t = scene.transform
    minx, maxy = t[2], t[5]
    maxx, miny = minx + t[0] * scene.width, maxy + t[4] * scene.height
    bbox = shapely.box(min(minx, maxx), min(miny, maxy), max(minx, maxx), max(miny, maxy))
    arr = np.asarray(geoms.values, dtype=object)
    hit = shapely.intersects(arr, bbox)
    if not hit.any():
        lx0, ly0, lx1, ly1 = (float(v) for v in shapely.total_bounds(arr))
        bx0, by0, bx1, by1 = bbox.bounds
        raise InputError(
            f"{scene.labels or 'the vector labels'}: no polygon touches {scene.image} "
            f"(labels span {lx0:.1f}, {ly0:.1f} .. {lx1:.1f}, {ly1:.1f}; the image spans "
            f"{bx0:.1f}, {by0:.1f} .. {bx1:.1f}, {by1:.1f} in {crs.to_string()}); check the "
            "labels' CRS and that they cover this image"
        )
    scene.shapes = [(shapely.to_wkb(g), int(i)) for g, i, h in zip(arr, ids, hit, strict=True) if h]
    scene.label_kind = "vector"
    scene.background = background


# --------------------------------------------------------------------------- worker


def _profile(scene: _Scene | None, count: int, dtype: str, size: int, transform, crs, nodata, co):
    """GTiff creation profile of a chip; ``co`` (creation options) win over the defaults."""
    rgb = scene is not None and scene.rgb_photometric and "PHOTOMETRIC" not in co
    return gtiff_profile(size, size, count, dtype, crs, transform, nodata,
                         **({"photometric": "RGB"} if rgb else {}), **co)  # fmt: skip


def _read_labels(job: _Job, window, band_transform, h: int, w: int) -> tuple[np.ndarray, Counter]:
    """The band's class ids (h, w) and a Counter of label values outside the class table."""
    sc = job.scene
    k = len(job.classes)
    unknown: Counter = Counter()
    if sc.label_kind == "vector":
        import shapely
        from rasterio import features

        x0, y0 = band_transform.c, band_transform.f
        x1, y1 = x0 + band_transform.a * w, y0 + band_transform.e * h
        band_box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        geoms = shapely.from_wkb([g for g, _ in sc.shapes or []])
        ids = [i for _, i in sc.shapes or []]
        hit = shapely.intersects(geoms, band_box) if len(geoms) else []
        shapes = [(g, i) for g, i, keep in zip(geoms, ids, hit, strict=True) if keep]
        if not shapes:
            return np.full((h, w), sc.background, dtype=np.uint8), unknown
        out = features.rasterize(
            shapes, out_shape=(h, w), transform=band_transform, fill=sc.background, dtype="uint8"
        )
        return out, unknown
    import rasterio

    with no_georef_warning(), rasterio.open(sc.labels) as lab:
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


SAMPLE_PER_CHIP = 2048
"""Valid pixels per chip kept (evenly strided) for the band statistics."""
PERCENTILES = (0.5, 99.5)
"""The robust range of each band: values outside are clipped before normalising."""


def _sample(img: np.ndarray, valid: np.ndarray | None, nodata: float | None) -> np.ndarray:
    """Up to SAMPLE_PER_CHIP valid pixels (C, n) of a chip, evenly strided, as float64."""
    flat = img.reshape(img.shape[0], -1)
    ok = np.ones(flat.shape[1], bool) if valid is None else valid.reshape(-1).copy()
    if nodata is not None:
        ok &= ~(flat == nodata).all(axis=0) if not np.isnan(nodata) else ~np.isnan(flat).all(0)
    if np.issubdtype(flat.dtype, np.floating):
        ok &= np.isfinite(flat).all(axis=0)
    idx = np.flatnonzero(ok)
    idx = idx[:: max(1, len(idx) // SAMPLE_PER_CHIP)]
    return flat[:, idx].astype(np.float64)


def band_statistics(samples: np.ndarray, dtype: str) -> dict:
    """Robust per-band statistics of valid training pixels (C, n), stored in dataset.json.

    ``low``/``high`` are the PERCENTILES of each band (not min/max, so a few hot or
    dead pixels do not stretch the range); ``mean``/``std`` are those of the pixels
    clipped to that range. Training and prediction both compute
    ``(clip(x, low, high) - mean) / std``.
    """
    low = np.percentile(samples, PERCENTILES[0], axis=1)
    high = np.percentile(samples, PERCENTILES[1], axis=1)
    clipped = np.clip(samples, low[:, None], high[:, None])
    mean, std = clipped.mean(axis=1), clipped.std(axis=1)
    std = np.where(std < 1e-6, 1.0, std)  # a constant band: centred, unscaled
    return {
        "dtype": dtype,
        "pixels": int(samples.shape[1]),
        "percentiles": list(PERCENTILES),
        "low": [float(v) for v in low],
        "high": [float(v) for v in high],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }


def _tile_band(job: _Job) -> tuple[list[dict], int, dict[str, int], dict[str, list]]:
    """Read one row band of a scene, cut and write its chips; return index rows and stats.

    The last item holds per split a list of pixel samples (C, n) for the band statistics.

    Read errors become RasterError naming the file; write errors (disk full) pass through.
    """
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    sc = job.scene
    size, chip = job.window, job.chip
    row = job.row
    h = min(size, sc.height)
    win = Window(0, row, sc.width, h)
    src_t = Affine(*sc.transform)
    band_t = src_t @ Affine.translation(0, row)
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(sc.image) as src:
            data = src.read(window=win)
            valid = src.dataset_mask(window=win) > 0 if sc.has_mask else None
    except RasterioError as e:
        raise read_failed(sc.image, e, win) from None
    labels, unknown = (None, Counter())
    if sc.label_kind is not None:
        try:
            labels, unknown = _read_labels(job, win, band_t, h, sc.width)
        except RasterioError as e:
            raise read_failed(sc.labels, e, win) from None
        if valid is not None:
            labels[~valid] = IGNORE_INDEX
    crs = rasterio.crs.CRS.from_wkt(sc.crs_wkt)
    nodata = sc.nodata
    scale = size / chip
    rows: list[dict] = []
    skipped = 0
    samples: dict[str, list] = {}
    made: set[str] = set()
    for col, split in zip(job.cols, job.splits, strict=True):
        w = min(size, sc.width)
        if valid is not None:
            share = 1.0 - float(valid[:, col : col + w].mean())
            if share > job.nodata_threshold:
                skipped += 1
                continue
        img = data[:, :, col : col + w]
        lab = labels[:, col : col + w] if labels is not None else None
        vwin = valid[:, col : col + w] if valid is not None else None
        samples.setdefault(split, []).append(_sample(img, vwin, nodata))
        if h < size or w < size:  # a scene smaller than a window: pad, image with nodata/0
            pad = np.full((sc.count, size, size), nodata if nodata is not None else 0, sc.dtype)
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
        t = src_t @ Affine.translation(col, row) @ Affine.scale(scale)
        chip_id = f"{sc.name}_r{row}_c{col}"
        sub = Path(job.out) / split
        if split not in made:
            (sub / "images").mkdir(parents=True, exist_ok=True)
            (sub / "masks").mkdir(parents=True, exist_ok=True)
            made.add(split)
        image_rel = f"{split}/images/{chip_id}.tif"
        prof = _profile(sc, sc.count, sc.dtype, chip, t, crs, nodata, job.creation_options)
        with rasterio.open(Path(job.out) / image_rel, "w", **prof) as dst:
            dst.write(img)
        verify_raster(Path(job.out) / image_rel, whole=False)
        counts = np.zeros(len(job.classes) + 1, dtype=np.int64)
        mask_rel = None
        if lab is not None:
            mask_rel = f"{split}/masks/{chip_id}.tif"
            mprof = _profile(None, 1, "uint8", chip, t, crs, IGNORE_INDEX, job.creation_options)
            with rasterio.open(Path(job.out) / mask_rel, "w", **mprof) as dst:
                dst.write(lab, 1)
                tag_class_raster(dst, job.classes)
            verify_raster(Path(job.out) / mask_rel, whole=False)
            bc = np.bincount(lab.ravel(), minlength=256)
            counts[: len(job.classes)] = bc[: len(job.classes)]
            counts[len(job.classes)] = int(bc[len(job.classes) :].sum())  # 255 (and nothing else)
        x0, y0 = t.c, t.f
        x1, y1 = x0 + t.a * chip, y0 + t.e * chip
        rows.append(
            {
                "chip_id": chip_id,
                "image": image_rel,
                "mask": mask_rel,
                "scene": sc.name,
                "split": split,
                "row_off": row,
                "col_off": col,
                "width": w,
                "height": h,
                "counts": counts,
                "bounds": (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
            }
        )
    return rows, skipped, dict(unknown), samples


# --------------------------------------------------------------------------- engine


def _assign_splits(
    scenes: list[_Scene],
    grids: list[tuple[list[int], list[int]]],
    window: int,
    val_fraction: float,
    val_block: int,
    seed: int,
    warnings: list[str],
) -> list[dict[tuple[int, int], str]]:
    """Split per chip: the scene's split, and with ``val_fraction`` whole spatial blocks to val."""
    out = []
    for sc, (rows, cols) in zip(scenes, grids, strict=True):
        out.append({(r, c): sc.split or "train" for r in rows for c in cols})
    if val_fraction <= 0:
        return out
    blocks: dict[tuple[int, int, int], list[tuple[int, int, int]]] = {}
    for k, (sc, (rows, cols)) in enumerate(zip(scenes, grids, strict=True)):
        if (sc.split or "train") != "train":
            continue
        for r in rows:
            for c in cols:
                hr, wc = min(window, sc.height), min(window, sc.width)
                key = (k, (r + hr // 2) // val_block, (c + wc // 2) // val_block)
                blocks.setdefault(key, []).append((k, r, c))
    keys = sorted(blocks)
    if len(keys) < 2:
        warnings.append(
            f"--val-fraction {val_fraction}: only {len(keys)} spatial block of {val_block} px; "
            "no validation chips (use a smaller --val-block)"
        )
        return out
    n_val = min(len(keys) - 1, max(1, round(val_fraction * len(keys))))
    order = np.random.default_rng(seed).permutation(len(keys))
    for idx in order[:n_val]:
        for k, r, c in blocks[keys[idx]]:
            out[k][(r, c)] = "val"
    return out


def _run(
    scenes: list[_Scene],
    out: Path,
    *,
    source: str,
    classes: ClassTable,
    size: int,
    stride: int | None,
    resize: int | None,
    nodata_threshold: float,
    val_fraction: float,
    val_block: int | None,
    seed: int,
    workers: int,
    overwrite: bool,
    creation_options: dict[str, str] | None,
    warnings: list[str],
    progress: ProgressFn | None,
    started: float,
    aoi: str | os.PathLike | None = None,
) -> TileResult:
    import geopandas as gpd
    import shapely

    # windows of `size` scene pixels every `stride` (default: size), written as `resize` px chips
    window = _positive(size, "--size")
    stride = _positive(size if stride is None else stride, "--stride")
    chip = _positive(size if resize is None else resize, "--resize")
    prog = as_progress(progress)
    if not scenes:
        raise InputError("no scenes to tile; give at least one image")
    if not 0.0 <= nodata_threshold <= 1.0:
        raise InputError(f"--nodata-threshold {nodata_threshold}: must be between 0 and 1")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    if workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    names = Counter(s.name for s in scenes)
    dup = [n for n, k in names.items() if k > 1]
    if dup:
        raise InputError(
            f"scene name {dup[0]!r} appears twice; give images with distinct file names"
        )
    first = scenes[0]
    for sc in scenes[1:]:
        if (sc.count, sc.dtype) != (first.count, first.dtype):
            raise InputError(
                f"{sc.image}: {sc.count} bands of {sc.dtype}, but {first.image} has {first.count} "
                f"of {first.dtype}; tile them into separate chip folders"
            )
        if sc.crs_wkt != first.crs_wkt:
            from pyproj import CRS

            if not CRS.from_wkt(sc.crs_wkt).equals(CRS.from_wkt(first.crs_wkt)):
                raise InputError(
                    f"{sc.image}: CRS differs from {first.image}; reproject it (gdalwarp -t_srs) "
                    "or tile them into separate chip folders"
                )
    gsds = [abs(s.transform[0]) for s in scenes]
    if max(gsds) > 1.01 * min(gsds):
        warnings.append(f"scenes have different pixel sizes ({min(gsds)}..{max(gsds)})")
    co = dict(DEFAULT_CREATION_OPTIONS if creation_options is None else creation_options)
    co = {k.upper(): str(v) for k, v in co.items()}
    if creation_options:
        from aerialct.geo.cog import check_creation_options

        check_creation_options("GTiff", co)

    grids = [
        (window_starts(s.height, window, stride), window_starts(s.width, window, stride))
        for s in scenes
    ]
    splits = _assign_splits(
        scenes, grids, window, val_fraction, val_block or 2 * window, seed, warnings
    )
    inputs = [s.image for s in scenes] + [s.labels for s in scenes if s.labels]
    check_output(out, overwrite, kind=FOLDER, inputs=inputs)
    kept = _windows_in_aoi(scenes, grids, window, aoi) if aoi is not None else None
    total = sum(len(r) * len(c) for r, c in grids) if kept is None else sum(len(k) for k in kept)
    prog(0, total=total, description="tiling")
    reports = [
        SceneReport(s.name, s.image, s.labels, s.split, georef_copied=s.georef_copied)
        for s in scenes
    ]
    rows: list[dict] = []
    samples: dict[str, list] = {}
    with atomic_output(out, overwrite, kind=FOLDER, inputs=inputs, made_by="tile") as tmp:
        jobs = []
        for k, (sc, (rr, cc)) in enumerate(zip(scenes, grids, strict=True)):
            for r in rr:
                cols = cc if kept is None else [c for c in cc if (r, c) in kept[k]]
                if not cols:
                    continue
                jobs.append(
                    (
                        k,
                        _Job(
                            scene=sc,
                            row=r,
                            cols=cols,
                            splits=[splits[k][(r, c)] for c in cols],
                            out=str(tmp),
                            window=window,
                            chip=chip,
                            nodata_threshold=nodata_threshold,
                            creation_options=co,
                            classes=classes,
                        ),
                    )
                )

        def collect(k: int, job: _Job, res: tuple) -> None:
            band_rows, skipped, unknown, band_samples = res
            rows.extend(band_rows)
            for s, arrs in band_samples.items():
                samples.setdefault(s, []).extend(arrs)
            rep = reports[k]
            rep.chips += len(band_rows)
            rep.skipped_nodata += skipped
            for key, n in unknown.items():
                rep.unknown_values[key] = rep.unknown_values.get(key, 0) + n
                rep.unknown_pixels += n
            prog(len(job.cols))

        if workers == 1 or len(jobs) == 1:
            for k, job in jobs:
                collect(k, job, _tile_band(job))
        else:
            for k, job, res in run_in_workers(_tile_band, jobs, workers):
                collect(k, job, res)

        if not rows:
            raise InputError(
                f"no chips written: all {total} windows of {', '.join(s.image for s in scenes)} "
                f"have more than {nodata_threshold:.0%} nodata; raise --nodata-threshold"
            )
        rows.sort(key=lambda d: (d["scene"], d["row_off"], d["col_off"]))
        counts = np.stack([d.pop("counts") for d in rows])
        bounds = np.array([d.pop("bounds") for d in rows], dtype=np.float64)
        frame = gpd.GeoDataFrame(
            rows,
            geometry=shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3]),
            crs=first.crs_wkt,
        )
        _warn_one_sided(frame["split"].to_numpy(), counts, [*classes.names, "ignore"], warnings)
        split_shares = _split_shares(frame["split"].to_numpy(), counts, [*classes.names, "ignore"])
        pool = samples.get("train") or [a for arrs in samples.values() for a in arrs]
        stats = band_statistics(np.concatenate(pool, axis=1), first.dtype)
        stats["split"] = "train" if samples.get("train") else "all"
        for i, name in enumerate(classes.names):
            frame[f"px_{name}"] = counts[:, i].astype(np.int64)
        frame["px_ignore"] = counts[:, len(classes)].astype(np.int64)
        for col in ("row_off", "col_off", "width", "height"):
            frame[col] = frame[col].astype(np.int64)
        import pyogrio

        pyogrio.write_dataframe(frame, tmp / "index.gpkg", layer="chips", driver="GPKG")
        verify_output(tmp / "index.gpkg", "gpkg")

        split_counts = {s: int((frame["split"] == s).sum()) for s in SPLITS}
        for s in sorted(set(frame["split"]) - set(SPLITS)):
            split_counts[s] = int((frame["split"] == s).sum())
        gsd = abs(first.transform[0]) * window / chip
        label_kinds = {s.label_kind for s in scenes if s.label_kind}
        label_mode = (
            {"ids": "raster", "rgb": "rgb", "vector": "vector"}[label_kinds.pop()]
            if len(label_kinds) == 1
            else ("mixed" if label_kinds else None)
        )
        from pyproj import CRS

        crs = CRS.from_wkt(first.crs_wkt)
        epsg = crs.to_epsg()
        crs_text = f"EPSG:{epsg}" if epsg else crs.to_wkt()
        meta = {
            "format": "aerialct-chips",
            "version": 1,
            "classes": classes.to_list(),
            "ignore_index": IGNORE_INDEX,
            "chip_size": chip,
            "bands": first.count,
            "dtype": first.dtype,
            "gsd": gsd,
            "crs": crs_text,
            "source": source,
            "splits": split_counts,
            "label_mode": label_mode,
            "window": window,
            "stride": stride,
            "nodata_threshold": nodata_threshold,
            "band_stats": stats,
            "class_shares": split_shares,
            "creation_options": co,
            "scenes": [
                {"name": r.name, "image": r.image, "labels": r.labels, "split": r.split}
                for r in reports
            ],
            "aerialct_version": __version__,
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        verify_output(tmp / "dataset.json", "json")

    for rep in reports:
        if rep.unknown_pixels:
            warnings.append(
                f"{rep.labels}: {rep.unknown_pixels} px with values outside the legend set to "
                f"ignore ({_top(rep.unknown_values)})"
            )
    unknown_all: Counter = Counter()
    for rep in reports:
        unknown_all.update(rep.unknown_values)
    for w_ in warnings:
        log.warning(w_)
    return TileResult(
        out=out,
        source=source,
        label_mode=label_mode,
        chip_size=chip,
        window=window,
        stride=stride,
        gsd=gsd,
        crs=crs_text,
        chips=len(frame),
        splits=split_counts,
        skipped_nodata=sum(r.skipped_nodata for r in reports),
        class_pixels={
            **{n: int(counts[:, i].sum()) for i, n in enumerate(classes.names)},
            "ignore": int(counts[:, len(classes)].sum()),
        },
        unknown_pixels=sum(r.unknown_pixels for r in reports),
        unknown_values=dict(unknown_all),
        scenes=reports,
        warnings=warnings,
        seconds=round(time.perf_counter() - started, 3),
        split_shares=split_shares,
        band_stats=stats,
        classes=classes.to_list(),
    )


def _windows_in_aoi(
    scenes: list[_Scene], grids: list, window: int, aoi: str | os.PathLike
) -> list[set[tuple[int, int]]]:
    """Per scene, the (row, col) offsets of windows that touch the area of interest."""
    import shapely
    from affine import Affine
    from pyproj import CRS

    from aerialct.geo.vector import aoi_in_crs, read_aoi

    frame = read_aoi(aoi)
    out: list[set[tuple[int, int]]] = []
    for sc, (rr, cc) in zip(scenes, grids, strict=True):
        geom = aoi_in_crs(frame, CRS.from_wkt(sc.crs_wkt))
        t = Affine(*sc.transform)
        r = np.repeat(np.asarray(rr, dtype=np.float64), len(cc))
        c = np.tile(np.asarray(cc, dtype=np.float64), len(rr))
        x0, y0 = t * (c, r)
        x1, y1 = t * (c + window, r + window)
        boxes = shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1),
                            np.maximum(y0, y1))  # fmt: skip
        hit = shapely.intersects(boxes, geom)
        out.append({(int(a), int(b)) for a, b, h in zip(r, c, hit, strict=True) if h})
    if not any(out):
        raise InputError(
            f"--aoi {aoi}: touches no window of {', '.join(s.image for s in scenes)}; check "
            "its CRS and that it covers the scenes"
        )
    return out


ONE_SIDED_SHARE = 0.95
"""A split whose label pixels are more than this share one class (or ignore) is warned about."""


def _warn_one_sided(
    splits: np.ndarray, counts: np.ndarray, names: list[str], warnings: list[str]
) -> None:
    for split in sorted(set(splits.tolist())):
        per_class = counts[splits == split].sum(axis=0)
        total = int(per_class.sum())
        if not total:
            continue
        top = int(per_class.argmax())
        share = per_class[top] / total
        if share > ONE_SIDED_SHARE:
            warnings.append(
                f"split {split}: {share:.1%} of the label pixels are {names[top]}; a model "
                "cannot learn from that: check the labels (their CRS, --class-field, --background)"
            )


def _split_shares(
    splits: np.ndarray, counts: np.ndarray, names: list[str]
) -> dict[str, dict[str, float]]:
    """Per split, each class's share (and ignore's) of the label pixels."""
    out: dict[str, dict[str, float]] = {}
    for split in sorted(set(splits.tolist())):
        per_class = counts[splits == split].sum(axis=0)
        total = int(per_class.sum())
        if total:
            out[split] = {
                n: round(float(c) / total, 4) for n, c in zip(names, per_class, strict=True)
            }
    return out


def _top(d: dict[str, int], n: int = 3) -> str:
    items = sorted(d.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k}: {v}" for k, v in items[:n])
    return text + (f", ... {len(items) - n} more" if len(items) > n else "")


# --------------------------------------------------------------------------- public API


def _expand(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Paths as given; a pattern with * ? [ that names no file is expanded as a glob."""
    import glob

    out: list[Path] = []
    for p in paths:
        s = str(p)
        if not Path(s).exists() and any(ch in s for ch in "*?["):
            hits = sorted(glob.glob(s, recursive=True))
            if not hits:
                raise InputError(f"{s}: the pattern matches no file; check the path")
            out.extend(Path(h) for h in hits)
        else:
            out.append(Path(s))
    return out


def tile_scenes(
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    labels: Sequence[str | os.PathLike] | None = None,
    labels_vector: str | os.PathLike | None = None,
    class_field: str | None = None,
    vector_layer: str | None = None,
    background: str | int | None = None,
    classes: str | os.PathLike | ClassTable = "potsdam",
    burn: str | None = None,
    class_map: dict[str, str] | None = None,
    size: int = 512,
    stride: int | None = None,
    resize: int | None = None,
    nodata_threshold: float = 0.5,
    split: str | None = None,
    val_fraction: float = 0.0,
    val_block: int | None = None,
    seed: int = 0,
    workers: int = 2,
    creation_options: dict[str, str] | None = None,
    overwrite: bool = False,
    aoi: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
) -> TileResult:
    """Cut GeoTIFFs into chips (general mode).

    ``classes`` is a class table, a built-in name (``potsdam``, ``buildings``) or a
    YAML file (:func:`aerialct.classes.resolve_class_table`); it travels with the chips.
    ``labels`` are rasters in the order of ``images`` (1 band of class ids, or 3
    bands of RGB colours converted through ``classes``); or ``labels_vector`` is a
    polygon file rasterised on each image grid (reprojected when its CRS differs;
    later features win): every polygon is class ``burn``, or ``class_field`` holds
    class names or ids, or values that ``class_map`` maps to class names. Pixels no
    polygon covers get ``background``; by default the table's ``background`` class
    when it has one, else ignore. ``size`` is the window in
    scene pixels, ``stride`` its step (default ``size``), ``resize`` the chip size
    written (image bilinear, mask nearest). Windows with a nodata share above
    ``nodata_threshold`` are skipped. Chips go to ``split`` (default train), or with
    ``val_fraction`` whole blocks of ``val_block`` px (default 2 x size) go to val.
    With ``aoi`` (a polygon file, any CRS) only windows that touch it are cut.
    """
    started = time.perf_counter()
    warnings: list[str] = []
    from aerialct.geo.io import expand_inputs

    imgs = expand_inputs(images)  # files, folders, globs, GDAL paths and URLs
    if split is not None and split not in SPLITS:
        raise InputError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if val_fraction and split not in (None, "train"):
        raise InputError(f"--val-fraction with --split {split}: val is taken from train only")
    if labels and labels_vector:
        raise InputError("give either --labels or --labels-vector, not both")
    try:
        classes = resolve_class_table(classes)
    except ValueError as e:
        raise InputError(f"--classes: {e}") from e
    if labels_vector is not None and not (class_field or burn):
        raise InputError(
            f"{labels_vector}: say which class each polygon is: --burn CLASS (every polygon, "
            "e.g. --burn building) or --class-field FIELD (with --class-map VALUE=CLASS)"
        )
    if burn is not None and class_field:
        raise InputError("give --burn or --class-field, not both")
    if labels_vector is None and (burn or class_field or class_map):
        raise InputError("--burn, --class-field and --class-map need --labels-vector")
    if burn is not None:
        try:
            classes.id_of(burn)
        except ValueError as e:
            raise InputError(f"--burn {burn!r}: {e}") from e
    for value, name in (class_map or {}).items():
        try:
            classes.id_of(name)
        except ValueError as e:
            raise InputError(f"--class-map {value}={name}: {e}") from e
    scenes = [_inspect_image(p) for p in imgs]
    for sc in scenes:
        sc.split = split or "train"
    if labels:
        labs = _expand(labels)
        if len(labs) != len(imgs):
            raise InputError(
                f"{len(labs)} label rasters for {len(imgs)} images; give one --labels per image, "
                "in the same order"
            )
        for sc, lp in zip(scenes, labs, strict=True):
            _attach_label_raster(sc, lp, warnings)
    elif labels_vector is not None:
        bg = IGNORE_INDEX if classes.background is None else classes.background
        if background is not None and str(background).lower() in ("ignore", "255"):
            bg = IGNORE_INDEX
        elif background is not None:
            try:
                bg = classes.id_of(background)
            except ValueError as e:
                raise InputError(f"--background {background!r}: {e}") from e
        frame, ids = _load_vector(
            Path(labels_vector), class_field, classes, vector_layer, burn, class_map
        )
        for sc in scenes:
            sc.labels = str(labels_vector)
            _attach_vector(sc, frame, ids, bg)
    return _run(
        scenes,
        Path(out),
        source="geotiff",
        classes=classes,
        size=size,
        stride=stride,
        resize=resize,
        nodata_threshold=nodata_threshold,
        val_fraction=val_fraction,
        val_block=val_block,
        seed=seed,
        workers=workers,
        overwrite=overwrite,
        creation_options=creation_options,
        warnings=warnings,
        progress=progress,
        started=started,
        aoi=aoi,
    )


def _positive(v: int, name: str) -> int:
    if int(v) <= 0:
        raise InputError(f"{name} {v}: must be a positive number of pixels")
    return int(v)


def read_split_file(path: str | os.PathLike) -> dict[str, str]:
    """Tile id -> split from JSON ``{"train": [...], "val": [...], "test": [...]}``
    or text lines ``<tile> <split>`` (``#`` comments allowed)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such split file; check --split-file")
    text = p.read_text()
    out: dict[str, str] = {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        for split, tiles in data.items():
            if split not in SPLITS or not isinstance(tiles, list):
                raise InputError(
                    f"{p}: key {split!r} must be one of {', '.join(SPLITS)} with a list of tile ids"
                )
            for t in tiles:
                out[_norm_tile(str(t), p)] = split
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.replace(",", " ").split()
            if len(parts) != 2 or parts[1] not in SPLITS:
                raise InputError(
                    f"{p}:{n}: expected '<tile> <train|val|test>', got {line!r}; fix the line"
                )
            out[_norm_tile(parts[0], p)] = parts[1]
    if not out:
        raise InputError(f"{p}: no tiles listed; add lines like '2_10 train'")
    return out


def _norm_tile(t: str, p: Path) -> str:
    m = re.fullmatch(r"(?:top_potsdam_)?(\d+)_(\d+)", t.strip())
    if not m:
        raise InputError(f"{p}: {t!r} is not a Potsdam tile id; use ids like 2_10")
    return f"{int(m.group(1))}_{int(m.group(2))}"


def tile_potsdam(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int = 500,
    stride: int | None = None,
    resize: int | None = 512,
    split_file: str | os.PathLike | None = None,
    eroded_for_test: bool = True,
    bands: str = "RGB",
    nodata_threshold: float = 0.5,
    val_fraction: float = 0.0,
    val_block: int | None = None,
    seed: int = 0,
    workers: int = 2,
    creation_options: dict[str, str] | None = None,
    overwrite: bool = False,
    aoi: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
) -> TileResult:
    """Cut the ISPRS Potsdam release (or a folder laid out like it) into chips.

    Finds ``top_potsdam_{a}_{b}_{bands}.tif`` anywhere under ``root`` and the
    matching ``_label.tif`` / ``_label_noBoundary.tif``; converts RGB-colour labels
    through the legend (other colours become ignore, counted and reported); copies
    georeferencing from the image when a label has none and the sizes agree,
    refuses otherwise; splits by the standard 24/14 split or ``split_file``; uses
    the eroded labels for test tiles when present. Defaults follow the CT protocol:
    500 px windows resized to 512 (image bilinear, mask nearest).
    """
    from aerialct.data import potsdam as pots

    started = time.perf_counter()
    warnings: list[str] = []
    rootp = Path(root)
    if not rootp.is_dir():
        raise InputError(f"{rootp}: not a folder; give the folder of the unpacked Potsdam release")
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    eroded: dict[str, Path] = {}
    lab_re = re.compile(r"^top_potsdam_(\d+)_(\d+)_label(_noBoundary)?\.tif$", re.IGNORECASE)
    for p in sorted(rootp.rglob("*")):
        if not p.is_file():
            continue
        parsed = pots.parse_image_name(p.name)
        if parsed and parsed[1] == bands.upper():
            images.setdefault(parsed[0], p)
            continue
        m = lab_re.match(p.name)
        if m:
            t = f"{int(m.group(1))}_{int(m.group(2))}"
            (eroded if m.group(3) else labels).setdefault(t, p)
    if not images:
        raise InputError(
            f"{rootp}: no ISPRS Potsdam images (top_potsdam_<a>_<b>_{bands}.tif) found; point "
            "--dataset potsdam at the unpacked release (folders 2_Ortho_RGB, 5_Labels_all)"
        )
    split_of = read_split_file(split_file) if split_file else None
    scenes: list[_Scene] = []
    for t in sorted(images, key=lambda s: tuple(int(x) for x in s.split("_"))):
        split = split_of.get(t) if split_of is not None else pots.standard_split(t)
        if split is None:
            warnings.append(f"{images[t].name}: tile {t} is in no split; skipped")
            continue
        sc = _inspect_image(images[t])
        sc.name = f"top_potsdam_{t}"
        sc.split = split
        lab = labels.get(t)
        if split == "test" and eroded_for_test and t in eroded:
            lab = eroded[t]
        if lab is None:
            warnings.append(f"{images[t].name}: no label file found; chips without masks")
        else:
            _attach_label_raster(sc, lab, warnings)
        scenes.append(sc)
    if not scenes:
        raise InputError(
            f"{rootp}: none of the {len(images)} tiles is in the split; check --split-file"
        )
    return _run(
        scenes,
        Path(out),
        source="potsdam",
        classes=pots.CLASSES,
        size=size,
        stride=stride,
        resize=resize,
        nodata_threshold=nodata_threshold,
        val_fraction=val_fraction,
        val_block=val_block,
        seed=seed,
        workers=workers,
        overwrite=overwrite,
        creation_options=creation_options,
        warnings=warnings,
        progress=progress,
        started=started,
        aoi=aoi,
    )


__all__ = [
    "DEFAULT_CREATION_OPTIONS",
    "SceneReport",
    "TileResult",
    "read_split_file",
    "resize_bilinear",
    "resize_nearest",
    "tile_potsdam",
    "tile_scenes",
]
