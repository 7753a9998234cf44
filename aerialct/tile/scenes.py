"""Scene specs: the images to tile, checked, with their labels attached.

A :class:`Scene` records what a band task needs to read an image and its labels
without re-checking them: its grid, bands, mask, and the labels as a raster of
class ids, a raster of RGB colours, or polygons (WKB) in the image's CRS. The
general mode builds scenes from GeoTIFFs (:func:`attach_label_rasters`,
:func:`attach_vector_labels`), the Potsdam mode from the release's layout
(:func:`potsdam_scenes`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.classes import IGNORE_INDEX, ClassTable, resolve_class_table
from aerialct.data import potsdam as pots
from aerialct.data.index import SPLITS
from aerialct.errors import InputError, RasterError, VectorError
from aerialct.geo.inputs import glob_paths, is_gdal_path, is_pattern, source_label, source_path
from aerialct.geo.io import no_georef_warning, open_raster, require_same_grid

log = logging.getLogger("aerialct")


@dataclass
class Scene:
    """One image to tile, its grid and how to read its labels."""

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


def bbox(bounds: Sequence[float]) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of bounds given as two corners in any order (a south-up
    grid has its ``bottom`` above its ``top``)."""
    x0, y0, x1, y1 = bounds
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def inspect_image(path: str | Path) -> Scene:
    """A scene spec from an image's header; RasterError when it has no CRS or is rotated."""
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
        rgb = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        return Scene(
            name=Path(source_label(path)).stem,  # a signed URL: no query in chip names
            image=os.fspath(path),  # a URL or /vsi path stays as given
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=ds.dtypes[0],
            nodata=ds.nodata,
            has_mask=has_mask,
            transform=tuple(ds.transform)[:6],
            crs_wkt=ds.crs.to_wkt(),
            rgb_photometric=ds.count >= 3
            and ds.dtypes[0] == "uint8"
            and tuple(ds.colorinterp[:3]) == rgb,
        )


# --------------------------------------------------------------------------- raster labels


def attach_label_raster(scene: Scene, path: str | Path) -> ClassTable | None:
    """Check a label raster against its image and record how to read it; the class table
    the raster carries (its ``AERIALCT_CLASSES`` tag), or None."""
    from affine import Affine

    from aerialct.geo.classraster import raster_class_table

    with no_georef_warning(), open_raster(path) as lab, open_raster(scene.image) as img:
        own = raster_class_table(lab, default=None)
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
            log.info("%s: no georeferencing; copied it from %s", path, source_label(scene.image))
        else:
            require_same_grid(lab, img, what="the label")
        scene.labels = str(path)
        scene.label_kind = kind
        scene.label_nodata = lab.nodata
    return own


def expand_paths(paths: Sequence[str | os.PathLike]) -> list[str | Path]:
    """Paths as given (GDAL paths and URLs untouched); a pattern with * ? [ that names no
    file is expanded as a glob."""
    out: list[str | Path] = []
    for p in paths:
        s = os.fspath(p)
        if is_gdal_path(s):
            out.append(s)
        elif not Path(s).exists() and is_pattern(s):
            out.extend(glob_paths(s))
        else:
            out.append(Path(s))
    return out


def attach_label_rasters(
    scenes: list[Scene],
    labels: Sequence[str | os.PathLike],
    table: ClassTable,
    given: bool = True,
) -> ClassTable:
    """Attach one label raster per scene, in order; the class table to tile with.

    Label rasters that carry a class table (``AERIALCT_CLASSES``) must carry ``table``
    when it was ``given`` (``--classes``): ids of another table would be remapped without
    a word. When it was not, their own table is taken (and must be one for all).
    InputError when the counts or the tables differ.
    """
    labs = expand_paths(labels)
    if len(labs) != len(scenes):
        raise InputError(
            f"{len(labs)} label rasters for {len(scenes)} images; give one --labels per image, "
            "in the same order"
        )
    chosen: tuple[ClassTable, str] | None = None
    untagged: str | Path | None = None
    for sc, lp in zip(scenes, labs, strict=True):
        own = attach_label_raster(sc, lp)
        if own is None:
            untagged = untagged or lp
            continue
        want, origin = (table, "--classes") if given else chosen or (own, str(lp))
        if own.names != want.names:
            raise InputError(
                f"{lp}: its class table ({', '.join(own.names)}) differs from {origin}'s "
                f"({', '.join(want.names)}); its ids would mean other classes: tile it with "
                "--classes of its own table (a YAML file), or relabel it"
            )
        chosen = chosen or (own, str(lp))
    if given or chosen is None:
        return table
    if untagged is not None and chosen[0].names != table.names:
        raise InputError(
            f"{untagged}: carries no class table while {chosen[1]} carries "
            f"{', '.join(chosen[0].names)}; say which table the labels use with --classes"
        )
    return chosen[0]


# --------------------------------------------------------------------------- vector labels


def check_label_options(
    classes: str | os.PathLike | ClassTable,
    labels: Sequence[str | os.PathLike] | None,
    labels_vector: str | os.PathLike | None,
    class_field: str | None,
    burn: str | None,
    class_map: dict[str, str] | None,
) -> ClassTable:
    """The class table, once the label options agree with each other and with it."""
    if labels and labels_vector:
        raise InputError("give either --labels or --labels-vector, not both")
    try:
        table = resolve_class_table(classes)
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
    if class_map and not class_field:
        raise InputError(
            "--class-map maps values of --class-field, and there is none: give --class-field "
            "FIELD, or drop --class-map (--burn makes every polygon one class)"
        )
    named = [(f"--burn {burn!r}", burn)] if burn is not None else []
    named += [(f"--class-map {v}={n}", n) for v, n in (class_map or {}).items()]
    for option, name in named:
        try:
            table.id_of(name)
        except ValueError as e:
            raise InputError(f"{option}: {e}") from e
    return table


def _background_id(classes: ClassTable, background: str | int | None) -> int:
    """Class id of pixels no polygon covers: ``background``, else the table's background
    class, else ignore."""
    if background is None:
        return IGNORE_INDEX if classes.background is None else classes.background
    if str(background).lower() in ("ignore", "255"):
        return IGNORE_INDEX
    try:
        return classes.id_of(background)
    except ValueError as e:
        raise InputError(f"--background {background!r}: {e}") from e


def _load_vector(
    path: str | Path,
    class_field: str | None,
    classes: ClassTable,
    layer: str | None,
    burn: str | None = None,
    class_map: dict[str, str] | None = None,
) -> tuple[Any, list[int]]:
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
    if class_field is None or class_field not in frame.columns:
        fields = ", ".join(c for c in frame.columns if c != "geometry")
        raise InputError(
            f"{path}: no field {class_field!r}; --class-field is one of: {fields} "
            "(or burn every polygon as one class with --burn CLASS)"
        )
    mapping = {str(k): v for k, v in (class_map or {}).items()}
    lookup: dict[object, int] = {}
    for v in frame[class_field].tolist():
        if v not in lookup:
            lookup[v] = _class_of_value(v, path, class_field, classes, mapping)
    return frame, [lookup[v] for v in frame[class_field].tolist()]


def _class_of_value(
    v: Any, path: str | Path, class_field: str, classes: ClassTable, mapping: dict[str, str]
) -> int:
    """The class id of a ``class_field`` value; InputError naming the value and the fix."""
    try:
        if str(v) in mapping:
            return classes.id_of(mapping[str(v)])
        return classes.id_of(v if isinstance(v, str) else int(v))
    except (ValueError, TypeError) as e:
        raise InputError(
            f"{path}: field {class_field!r} value {v!r} is not a class ({e}); "
            f"use one of {', '.join(classes.names)}, ids 0..{len(classes) - 1}, or map "
            f"it with --class-map {v}=CLASS"
        ) from e


def _attach_vector(scene: Scene, frame: Any, ids: list[int], background: int) -> None:
    """Keep the polygons (in the scene's CRS) that touch the scene; InputError when none does."""
    import shapely
    from affine import Affine
    from pyproj import CRS
    from rasterio.transform import array_bounds

    crs = CRS.from_wkt(scene.crs_wkt)
    geoms = frame.geometry
    if frame.crs is not None and not CRS.from_user_input(frame.crs).equals(crs):
        geoms = geoms.to_crs(crs)
    box = shapely.box(*bbox(array_bounds(scene.height, scene.width, Affine(*scene.transform))))
    arr = np.asarray(geoms.values, dtype=object)
    hit = shapely.intersects(arr, box)
    if not hit.any():
        lx0, ly0, lx1, ly1 = (float(v) for v in shapely.total_bounds(arr))
        bx0, by0, bx1, by1 = box.bounds
        raise InputError(
            f"{scene.labels or 'the vector labels'}: no polygon touches {scene.image} "
            f"(labels span {lx0:.1f}, {ly0:.1f} .. {lx1:.1f}, {ly1:.1f}; the image spans "
            f"{bx0:.1f}, {by0:.1f} .. {bx1:.1f}, {by1:.1f} in {crs.to_string()}); check the "
            "labels' CRS and that they cover this image"
        )
    scene.shapes = [(shapely.to_wkb(g), int(i)) for g, i, h in zip(arr, ids, hit, strict=True) if h]
    scene.label_kind = "vector"
    scene.background = background


def attach_vector_labels(
    scenes: list[Scene],
    path: str | os.PathLike,
    classes: ClassTable,
    *,
    class_field: str | None,
    layer: str | None,
    burn: str | None,
    class_map: dict[str, str] | None,
    background: str | int | None,
) -> None:
    """Rasterise the polygons of ``path`` onto every scene (reprojected when their CRS differs)."""
    bg = _background_id(classes, background)
    frame, ids = _load_vector(source_path(path), class_field, classes, layer, burn, class_map)
    for sc in scenes:
        sc.labels = str(path)
        _attach_vector(sc, frame, ids, bg)


# --------------------------------------------------------------------------- Potsdam


def read_split_file(path: str | os.PathLike) -> dict[str, str]:
    """Tile id -> split from JSON ``{"train": [...], "val": [...], "test": [...]}``
    or text lines ``<tile> <split>`` (``#`` comments allowed)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such split file; check --split-file")
    text = p.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    pairs = _json_split(data, p) if isinstance(data, dict) else _text_split(text, p)
    out = dict(pairs)
    if not out:
        raise InputError(f"{p}: no tiles listed; add lines like '2_10 train'")
    return out


def _json_split(data: dict, p: Path) -> list[tuple[str, str]]:
    """(tile id, split) pairs of a JSON split file, checked in file order."""
    pairs = []
    for split, tiles in data.items():
        if split not in SPLITS or not isinstance(tiles, list):
            raise InputError(
                f"{p}: key {split!r} must be one of {', '.join(SPLITS)} with a list of tile ids"
            )
        pairs += [(_tile_id(str(t), p), split) for t in tiles]
    return pairs


def _text_split(text: str, p: Path) -> list[tuple[str, str]]:
    """(tile id, split) pairs of ``<tile> <split>`` lines, checked line by line."""
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2 or parts[1] not in SPLITS:
            raise InputError(
                f"{p}:{n}: expected '<tile> <train|val|test>', got {line!r}; fix the line"
            )
        pairs.append((_tile_id(parts[0], p), parts[1]))
    return pairs


def _tile_id(t: str, p: Path) -> str:
    tile = pots.tile_id(t)
    if tile is None:
        raise InputError(f"{p}: {t!r} is not a Potsdam tile id; use ids like 2_10")
    return tile


def _find_potsdam(
    root: Path, bands: str
) -> tuple[dict[str, Path], dict[str, Path], dict[str, Path]]:
    """Images, labels and eroded labels of the release under ``root``, by tile id."""
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    eroded: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        parsed = pots.parse_image_name(p.name)
        if parsed and parsed[1] == bands.upper():
            images.setdefault(parsed[0], p)
            continue
        label = pots.parse_label_name(p.name)
        if label:
            (eroded if label[1] else labels).setdefault(label[0], p)
    if not images:
        raise InputError(
            f"{root}: no ISPRS Potsdam images (top_potsdam_<a>_<b>_{bands}.tif) found; point "
            "--dataset potsdam at the unpacked release (folders 2_Ortho_RGB, 5_Labels_all)"
        )
    return images, labels, eroded


def potsdam_scenes(
    root: str | os.PathLike,
    *,
    bands: str,
    split_file: str | os.PathLike | None,
    eroded_for_test: bool,
    warnings: list[str],
) -> list[Scene]:
    """The scenes of the release under ``root`` with their splits and labels (see tile_potsdam)."""
    rootp = Path(root)
    if not rootp.is_dir():
        raise InputError(f"{rootp}: not a folder; give the folder of the unpacked Potsdam release")
    images, labels, eroded = _find_potsdam(rootp, bands)
    split_of = read_split_file(split_file) if split_file else None
    scenes: list[Scene] = []
    for t in sorted(images, key=lambda s: tuple(int(x) for x in s.split("_"))):
        split = split_of.get(t) if split_of is not None else pots.standard_split(t)
        if split is None:
            warnings.append(f"{images[t].name}: tile {t} is in no split; skipped")
            continue
        sc = inspect_image(images[t])
        sc.name = f"top_potsdam_{t}"
        sc.split = split
        lab = labels.get(t)
        if split == "test" and eroded_for_test and t in eroded:
            lab = eroded[t]
        if lab is None:
            warnings.append(f"{images[t].name}: no label file found; chips without masks")
        else:
            attach_label_raster(sc, lab)
        scenes.append(sc)
    if not scenes:
        raise InputError(
            f"{rootp}: none of the {len(images)} tiles is in the split; check --split-file"
        )
    return scenes
