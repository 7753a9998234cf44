"""Writing synthetic scenes: GeoTIFF image and labels, footprints, a Potsdam-like folder.

:func:`synth_scene` generates one scene and writes it (image, class ids or RGB-colour
labels, building footprints); :func:`synth_potsdam` writes a folder with the official
ISPRS Potsdam names, RGB-colour labels and eroded-boundary references. Every output
is written to a temporary sibling and renamed (:func:`aerialct.geo.outputs.atomic_output`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from aerialct.classes import IGNORE_INDEX, POTSDAM, ClassTable
from aerialct.data import potsdam as pots
from aerialct.data.synth.layout import BUILDING, DEFAULT_CRS, DEFAULT_ORIGIN
from aerialct.data.synth.render import SYNTH_DTYPES, SceneArrays, convert_image, generate_scene
from aerialct.errors import InputError
from aerialct.geo.classraster import tag_class_raster, write_class_sidecars
from aerialct.geo.cog import gtiff_profile
from aerialct.geo.io import no_georef_warning, verify_raster
from aerialct.geo.outputs import FOLDER, atomic_output, check_output
from aerialct.geo.tags import WRITER_TAG
from aerialct.progress import ProgressFn, as_progress


@dataclass
class SynthResult:
    """What :func:`synth_scene` wrote."""

    image: Path
    labels: Path | None
    buildings: Path | None
    width: int
    height: int
    seed: int
    gsd: float
    crs: str
    label_mode: str
    n_buildings: int
    class_fractions: dict[str, float] = field(default_factory=dict)


@dataclass
class SynthPotsdamResult:
    """What :func:`synth_potsdam` wrote: one entry per tile."""

    root: Path
    tiles: list[str]
    images: list[Path]
    labels: list[Path]
    eroded_labels: list[Path]
    buildings: list[Path]
    size: int
    label_crs: bool


def eroded_boundaries(labels: np.ndarray, radius: int = 3) -> np.ndarray:
    """Labels with every pixel within ``radius`` px of a class boundary set to IGNORE_INDEX.

    This is how the ISPRS ``_noBoundary`` references are made (black boundaries).
    """
    size = 2 * radius + 1
    lo = ndimage.minimum_filter(labels, size=size, mode="nearest")
    hi = ndimage.maximum_filter(labels, size=size, mode="nearest")
    out = labels.copy()
    out[lo != hi] = IGNORE_INDEX
    return out


def _profile(
    h: int, w: int, count: int, crs, transform, compress: str | None, dtype: str = "uint8"
) -> dict:
    prof = gtiff_profile(w, h, count, dtype, crs, transform)
    if count == 3 and dtype == "uint8":
        prof["photometric"] = "RGB"
    if h >= 256 and w >= 256:
        prof.update(tiled=True, blockxsize=256, blockysize=256)
    if compress and compress.lower() != "none":
        prof.update(compress=compress, num_threads=str(min(2, os.cpu_count() or 1)))
        if compress.lower() in ("deflate", "lzw", "zstd"):
            prof["predictor"] = 3 if dtype == "float32" else 2
    return prof


def write_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    *,
    crs,
    transform,
    rgb: bool = False,
    overwrite: bool = False,
    compress: str | None = "deflate",
    classes: ClassTable = POTSDAM,
) -> Path:
    """Write class ids (1 band, colour table, nodata 255) or an RGB-colour label (3 bands).

    ``labels`` hold ids of ``classes``. ``crs=None`` writes a label without
    georeferencing (as some Potsdam labels are).
    """
    import rasterio
    from affine import Affine

    h, w = labels.shape
    if crs is None:
        transform = Affine.identity()
    with atomic_output(path, overwrite) as tmp, no_georef_warning():
        if rgb:
            data = classes.ids_to_rgb(labels)
            prof = _profile(h, w, 3, crs, transform, compress)
            with rasterio.open(tmp, "w", **prof) as dst:
                dst.write(data)
                dst.update_tags(**{WRITER_TAG: "aerialct synth"})
        else:
            prof = _profile(h, w, 1, crs, transform, compress)
            prof["nodata"] = IGNORE_INDEX
            with rasterio.open(tmp, "w", **prof) as dst:
                dst.write(labels, 1)
                tag_class_raster(dst, classes)
                dst.update_tags(**{WRITER_TAG: "aerialct synth"})
    if not rgb:
        write_class_sidecars(path, classes)
    return Path(path)


def synth_scene(
    out_image: str | os.PathLike,
    out_labels: str | os.PathLike | None = None,
    *,
    size: int | tuple[int, int] = 2048,
    seed: int = 0,
    gsd: float = 0.05,
    crs: str = DEFAULT_CRS,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    rgb_labels: bool = False,
    buildings: str | os.PathLike | None = None,
    label_crs: bool = True,
    compress: str | None = "deflate",
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    dtype: str = "uint8",
    bands: int = 3,
    classes: str | ClassTable = "potsdam",
    built_up: float = 1.0,
) -> SynthResult:
    """Generate a scene and write it: GeoTIFF, optional labels and building footprints.

    ``dtype`` (uint8, uint16, int16, float32) and ``bands`` (1 panchromatic, 3 RGB,
    4 RGB + near infrared) choose the imagery (:func:`convert_image`). ``classes``
    is ``potsdam`` (six classes) or ``buildings`` (0 background, 1 building).
    ``built_up`` below 1 makes a sparser town (0.1: about 5% building pixels).
    ``buildings`` gets the footprints in the format of its extension (.gpkg, .geojson).

    ``out_labels`` gets class ids (uint8, colour table, nodata 255) or, with
    ``rgb_labels``, a Potsdam RGB-colour label. ``label_crs=False`` writes the
    labels without georeferencing. ``buildings`` gets the exact footprints
    (layer ``buildings``, one polygon per building, columns id, height, roof, shape).
    ``compress`` is a GDAL compression (``deflate`` by default, ``none`` for raw).
    """
    import rasterio

    from aerialct.classes import resolve_class_table

    table = _synth_table(classes, resolve_class_table)
    if dtype not in SYNTH_DTYPES:
        raise InputError(f"--dtype {dtype}: use one of {', '.join(SYNTH_DTYPES)}")
    if bands not in (1, 3, 4):
        raise InputError(f"--bands {bands}: use 1 (panchromatic), 3 (RGB) or 4 (RGB + NIR)")
    outs = [p for p in (out_image, out_labels, buildings) if p is not None]
    for p in outs:
        check_output(p, overwrite)
    prog = as_progress(progress)
    prog(0, total=3, description="synthesising")
    scene = generate_scene(size, seed, gsd=gsd, crs=crs, origin=origin, built_up=built_up)
    prog(1)
    h, w = scene.labels.shape
    image = convert_image(scene.image, scene.labels, dtype, bands)
    prof = _profile(h, w, bands, crs, scene.transform, compress, dtype)
    with atomic_output(out_image, overwrite) as tmp, rasterio.open(tmp, "w", **prof) as dst:
        dst.write(image)
        dst.update_tags(**{WRITER_TAG: "aerialct synth"})
    labels = scene.labels if table is POTSDAM else (scene.labels == BUILDING).astype(np.uint8)
    if out_labels is not None:
        write_labels(
            out_labels,
            labels,
            classes=table,
            crs=crs if label_crs else None,
            transform=scene.transform,
            rgb=rgb_labels,
            overwrite=overwrite,
            compress=compress,
        )
    prog(1)
    if buildings is not None:
        write_buildings(buildings, scene, overwrite=overwrite)
    prog(1)
    counts = np.bincount(labels.ravel(), minlength=len(table))[: len(table)]
    fractions = {n: round(float(c) / (h * w), 4) for n, c in zip(table.names, counts, strict=True)}
    return SynthResult(
        image=Path(out_image),
        labels=Path(out_labels) if out_labels is not None else None,
        buildings=Path(buildings) if buildings is not None else None,
        width=w,
        height=h,
        seed=seed,
        gsd=gsd,
        crs=crs,
        label_mode="none" if out_labels is None else ("rgb" if rgb_labels else "ids"),
        n_buildings=len(scene.buildings),
        class_fractions=fractions,
    )


def write_buildings(
    path: str | os.PathLike, scene: SceneArrays, *, overwrite: bool = False
) -> Path:
    """Write the scene's building footprints to a GeoPackage (layer ``buildings``)."""
    import pyogrio

    from aerialct.geo.vector import driver_for

    frame = scene.building_frame()
    with atomic_output(path, overwrite) as tmp:
        pyogrio.write_dataframe(frame, tmp, layer="buildings", driver=driver_for(path))
    return Path(path)


def _synth_table(classes, resolve) -> ClassTable:
    from aerialct.classes import BUILDINGS

    try:
        table = resolve(classes)
    except ValueError as e:
        raise InputError(f"--classes {classes}: {e}") from e
    if table not in (POTSDAM, BUILDINGS):
        raise InputError(f"--classes {classes}: synth draws 'potsdam' or 'buildings' labels")
    return table


DEFAULT_POTSDAM_TILES = ("2_10", "2_11", "3_10", "2_13", "2_14")
"""Three training and two test tiles of the standard split."""


def synth_potsdam(
    root: str | os.PathLike,
    tiles: Sequence[str] = DEFAULT_POTSDAM_TILES,
    *,
    size: int = 1024,
    seed: int = 0,
    gsd: float = 0.05,
    crs: str = DEFAULT_CRS,
    label_crs: bool = True,
    eroded: bool = True,
    buildings: bool = False,
    erosion_radius: int = 3,
    compress: str | None = "deflate",
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> SynthPotsdamResult:
    """Write a folder laid out like the ISPRS Potsdam release, with synthetic tiles.

    ``root/2_Ortho_RGB/top_potsdam_{a}_{b}_RGB.tif``, ``root/5_Labels_all/..._label.tif``
    (RGB-colour labels) and, with ``eroded``, ``root/5_Labels_all_noBoundary/
    ..._label_noBoundary.tif`` (black eroded boundaries). Tile ``a_b`` lies at
    column ``a``, row ``b`` of a grid of adjacent tiles and gets seed ``seed + i``.
    ``label_crs=False`` writes labels without georeferencing, as in parts of the release.
    With ``buildings``, ``root/buildings/top_potsdam_{a}_{b}_buildings.gpkg`` holds the footprints.
    """
    import rasterio

    root = Path(root)
    check_output(root, overwrite, kind=FOLDER)
    for t in tiles:
        parts = t.split("_")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise InputError(f"tile {t!r}: not a Potsdam tile id; give ids like 2_10")
    prog = as_progress(progress)
    prog(0, total=len(tiles), description="synthesising Potsdam tiles")
    res = SynthPotsdamResult(root, list(tiles), [], [], [], [], size, label_crs)
    with atomic_output(root, overwrite, kind=FOLDER, made_by="synth") as tmp:
        (tmp / "2_Ortho_RGB").mkdir(parents=True)
        (tmp / "5_Labels_all").mkdir()
        if eroded:
            (tmp / "5_Labels_all_noBoundary").mkdir()
        if buildings:
            (tmp / "buildings").mkdir()
        for i, t in enumerate(tiles):
            a, b = (int(p) for p in t.split("_"))
            origin = (DEFAULT_ORIGIN[0] + a * size * gsd, DEFAULT_ORIGIN[1] - b * size * gsd)
            scene = generate_scene(size, seed + i, gsd=gsd, crs=crs, origin=origin)
            img = tmp / "2_Ortho_RGB" / pots.image_name(t)
            prof = _profile(size, size, 3, crs, scene.transform, compress)
            with rasterio.open(img, "w", **prof) as dst:
                dst.write(scene.image)
                dst.update_tags(**{WRITER_TAG: "aerialct synth"})
            verify_raster(img)
            lab_crs = crs if label_crs else None
            lab = tmp / "5_Labels_all" / pots.label_name(t)
            write_labels(lab, scene.labels, crs=lab_crs, transform=scene.transform, rgb=True,
                         compress=compress)  # fmt: skip
            res.images.append(root / img.relative_to(tmp))
            res.labels.append(root / lab.relative_to(tmp))
            if eroded:
                ero = tmp / "5_Labels_all_noBoundary" / pots.eroded_label_name(t)
                write_labels(ero, eroded_boundaries(scene.labels, erosion_radius), crs=lab_crs,
                             transform=scene.transform, rgb=True, compress=compress)  # fmt: skip
                res.eroded_labels.append(root / ero.relative_to(tmp))
            if buildings:
                gp = tmp / "buildings" / f"top_potsdam_{t}_buildings.gpkg"
                write_buildings(gp, scene)
                res.buildings.append(root / gp.relative_to(tmp))
            prog(1)
    return res
