"""The class raster: its tags and colour table, its class table, category names and checks.

A class raster (chip masks, ``predict``'s ``<scene>_classes.tif``, ``synth`` labels, a
rasterised ``evaluate`` reference) is one band of uint8 class ids that carries its class
table (CONTRACTS.md, "Class table and class rasters").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.classes import IGNORE_INDEX as IGNORE_VALUE
from aerialct.classes import POTSDAM, ClassTable
from aerialct.errors import InputError, RasterError
from aerialct.geo.io import window_text
from aerialct.geo.outputs import TMP_MARK, remove_path
from aerialct.geo.tags import BAND_CLASS_PREFIX, CLASSES_TAG, PROB_SCALE_TAG, SOURCE_TAG

if TYPE_CHECKING:
    import rasterio


def class_tags(
    table: ClassTable, *, source: str | None = None, prob_scale: int | None = None
) -> dict[str, str]:
    """The dataset tags that make a raster self-describing: its class table, and the
    ``source`` scene and probability scale where they apply."""
    tags = {CLASSES_TAG: json.dumps(table.to_list())}
    if source is not None:
        from aerialct.geo.inputs import redact

        tags[SOURCE_TAG] = redact(source)  # a signed URL's token never reaches a delivery
    if prob_scale is not None:
        tags[PROB_SCALE_TAG] = str(prob_scale)
    return tags


def tag_class_raster(
    ds: Any, table: ClassTable, *, band: int = 1, source: str | None = None
) -> None:
    """Give an open class raster (ids in ``band``) its colour table, class-table tag and,
    as band metadata inside the TIFF, each class's name (``CLASS_<id>=<name>``)."""
    ds.write_colormap(band, table.colormap())
    ds.update_tags(**class_tags(table, source=source))
    ds.update_tags(band, **band_class_names(table))


def band_class_names(table: ClassTable) -> dict[str, str]:
    """Band metadata naming each class: ``{"CLASS_0": "impervious_surfaces", ...}``.

    GDAL keeps band metadata inside a GeoTIFF (its ``GDAL_METADATA`` TIFF tag), so the
    names survive when the ``.tif`` is copied without its ``.aux.xml``; ``gdalinfo`` lists
    them under the band.
    """
    return {f"{BAND_CLASS_PREFIX}{c.id}": c.name for c in table}


def raster_class_table(
    ds: rasterio.DatasetReader, default: ClassTable | None = POTSDAM
) -> ClassTable | None:
    """The class table stored in a class raster's tag, else ``default``."""
    raw = ds.tags().get(CLASSES_TAG)
    if not raw:
        return default
    try:
        return ClassTable.from_list(json.loads(raw))
    except (ValueError, KeyError, TypeError) as e:
        raise RasterError(
            f"{ds.name}: tag {CLASSES_TAG} is not a class table ({e}); "
            "rewrite it or remove the tag to use the Potsdam classes"
        ) from e


def write_class_sidecars(path: str | os.PathLike, table: ClassTable) -> list[Path]:
    """Give a finished class raster the sidecars that GDAL and QGIS read; return them.

    - ``<raster>.aux.xml`` (GDAL's PAM): category names (``gdalinfo`` lists them) and a
      thematic raster attribute table (value, class, colour) of exactly the table's classes.
      GeoTIFF keeps both only in PAM (GDAL writes neither into the TIFF); the names also
      travel inside the TIFF as band metadata (:func:`tag_class_raster`).
    - ``<stem>.qml``: the QGIS style it loads on open, a paletted renderer of exactly the
      table's classes plus nodata 255 (:func:`aerialct.styles.class_raster_qml`).

    Each is written under a temporary name and renamed into place, replacing the sidecar
    of an earlier run (they belong to the raster aerialct wrote).
    """
    from aerialct.styles import class_raster_qml, qml_path

    written = []
    for final, text in (
        (Path(str(path) + ".aux.xml"), pam_xml(table)),
        (qml_path(path), class_raster_qml(table)),
    ):
        tmp = final.with_name(f"{final.name}{TMP_MARK}-{os.getpid()}")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, final)
        except BaseException:
            remove_path(tmp)
            raise
        written.append(final)
    return written


def pam_xml(table: ClassTable) -> str:
    """GDAL PAM XML of band 1: category names and a thematic raster attribute table."""
    from xml.sax.saxutils import escape

    cats = "".join(f"<Category>{escape(n)}</Category>" for n in table.category_names())
    fields = [
        ("Value", 0, 5),
        ("Class", 2, 2),
        ("Red", 0, 6),
        ("Green", 0, 7),
        ("Blue", 0, 8),
        ("Alpha", 0, 9),
    ]  # fmt: skip  (GDAL type, usage codes)
    defs = "".join(
        f'<FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>'
        for i, (n, t, u) in enumerate(fields)
    )
    rows = "".join(
        f'<Row index="{i}"><F>{c.id}</F><F>{escape(c.name)}</F>'
        + "".join(f"<F>{v}</F>" for v in (*c.color, 255))
        + "</Row>"
        for i, c in enumerate(table)
    )
    return (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n'
        f"    <CategoryNames>{cats}</CategoryNames>\n"
        f'    <GDALRasterAttributeTable tableType="thematic">{defs}{rows}'
        "</GDALRasterAttributeTable>\n"
        "  </PAMRasterBand>\n</PAMDataset>\n"
    )


CLASS_RASTER = (
    "a class raster has one band of integer class ids of its class table (as `aerialct "
    "predict` writes, <scene>_classes.tif)"
)


def check_class_raster(ds: rasterio.DatasetReader, role: str = "class raster") -> None:
    """Refuse a raster that cannot be a class raster: several bands or non-integer values.

    Values are checked as they are read (:func:`check_class_values`).
    """
    if ds.count != 1:
        raise InputError(
            f"{ds.name}: has {ds.count} bands ({ds.dtypes[0]}), so it is not a {role} "
            f"(an orthophoto?); {CLASS_RASTER}"
        )
    if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
        raise InputError(
            f"{ds.name}: holds {ds.dtypes[0]} values, so it is not a {role}; {CLASS_RASTER} "
            "(convert one with gdal_translate -ot Byte)"
        )


def check_class_values(
    name: str, data: np.ndarray, table: ClassTable, nodata: float | None = None, window: Any = None
) -> None:
    """Refuse class ids outside ``table`` (ignore 255 and the raster's nodata are allowed)."""
    allowed = np.zeros(max(256, int(data.max(initial=0)) + 1), dtype=bool)
    allowed[[c.id for c in table]] = True
    allowed[IGNORE_VALUE] = True
    if nodata is not None and float(nodata).is_integer() and 0 <= nodata < len(allowed):
        allowed[int(nodata)] = True
    if data.size and (data.min() < 0 or not allowed[data].all()):
        bad = np.unique(data[(data < 0) | ~allowed[np.clip(data, 0, None)]])[:5].tolist()
        where = f" in window {window_text(window)}" if window is not None else ""
        raise InputError(
            f"{name}: values {bad}{where} are not classes of its table "
            f"({', '.join(f'{c.id}={c.name}' for c in table)}); {CLASS_RASTER}"
        )


def is_class_raster(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a class raster aerialct wrote: one band, the class-table tag, and
    not a probability raster (which carries the class table too)."""
    import rasterio

    from aerialct.geo.io import no_georef_warning

    try:
        with no_georef_warning(), rasterio.open(path) as ds:
            tags = ds.tags()
            return ds.count == 1 and CLASSES_TAG in tags and PROB_SCALE_TAG not in tags
    except Exception:
        return False


def expand_class_rasters(paths: list[str]) -> list[str | Path]:
    """Class-raster inputs as users give them (:func:`aerialct.geo.inputs.expand_inputs`),
    where a folder gives only its class rasters, found by tag (:func:`is_class_raster`),
    not by name: ``vectorize pred/`` skips the probability rasters and quick looks."""
    from aerialct.geo.inputs import RASTER_SUFFIXES, expand_inputs, is_gdal_path

    out: list[str | Path] = []
    for item in paths:
        p = Path(item)
        if is_gdal_path(item) or not p.is_dir():
            out.extend(expand_inputs([item]))
            continue
        rasters = sorted(q for q in p.iterdir() if q.suffix.lower() in RASTER_SUFFIXES)
        found = [q for q in rasters if is_class_raster(q)]
        if not found:
            raise InputError(
                f"{p}: folder holds no class raster (a one-band raster tagged {CLASSES_TAG}, as "
                "`aerialct predict` writes); give the files by name or pattern"
            )
        out.extend(found)
    return out
