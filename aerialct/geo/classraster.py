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
from aerialct.geo.tags import CLASSES_TAG, PROB_SCALE_TAG, SOURCE_TAG

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
    """Give an open class raster (ids in ``band``) its colour table and class-table tag."""
    ds.write_colormap(band, table.colormap())
    ds.update_tags(**class_tags(table, source=source))


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


def write_category_names(path: str | os.PathLike, table: ClassTable) -> Path:
    """Give a class raster GDAL category names, so ``gdalinfo`` and QGIS show class names.

    GeoTIFF (and COG) keep category names in GDAL's PAM sidecar ``<path>.aux.xml``
    (rasterio has no setter); it is written next to the finished raster, under a
    temporary name renamed into place, replacing a sidecar of an earlier run.
    """
    from xml.sax.saxutils import escape

    final = Path(str(path) + ".aux.xml")
    cats = "".join(f"<Category>{escape(n)}</Category>" for n in table.category_names())
    xml = (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n'
        f"    <CategoryNames>{cats}</CategoryNames>\n"
        "  </PAMRasterBand>\n</PAMDataset>\n"
    )
    tmp = final.with_name(f"{final.name}{TMP_MARK}-{os.getpid()}")
    try:
        tmp.write_text(xml)
        os.replace(tmp, final)
    except BaseException:
        remove_path(tmp)
        raise
    return final


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
