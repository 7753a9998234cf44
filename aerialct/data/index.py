"""The chips format: its one writer (``aerialct tile``) and its one reader.

A chips folder holds::

    dataset.json              format "aerialct-chips", version, class table, ignore index,
                              chip size, bands, dtype, GSD, CRS, source, splits, label mode,
                              window, stride, nodata threshold, band statistics, class
                              shares, creation options, scenes, aerialct version
    index.gpkg (layer chips)  one row per chip: footprint, chip_id, image, mask (relative
                              paths, mask null when unlabelled), scene, split, row_off,
                              col_off, width, height, px_<class> ... px_ignore
    <split>/images/*.tif      image chips (georeferenced GeoTIFFs)
    <split>/masks/*.tif       uint8 class-id chips, 255 = ignore, tagged with the class table

>>> idx = read_index("chips")
>>> train = idx.split("train")            # GeoDataFrame, one row per chip
>>> idx.image_path(train.iloc[0]), idx.mask_path(train.iloc[0])

Format-tagged JSON headers (this ``dataset.json`` and the packed form's ``packed.json``)
are written by :func:`write_format_json` and read by :func:`read_format_json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.classes import ClassTable
from aerialct.errors import InputError

FORMAT = "aerialct-chips"
VERSION = 1
META = "dataset.json"
INDEX = "index.gpkg"
LAYER = "chips"
SPLITS = ("train", "val", "test")
"""The splits every chips dataset counts (others may appear after them)."""
_FIX = "make one with `aerialct tile ... --out DIR`"


@dataclass
class ChipIndex:
    """A chips dataset: its folder, ``dataset.json``, class table and chip rows."""

    root: Path
    meta: dict
    classes: ClassTable
    frame: Any  # geopandas.GeoDataFrame (layer "chips" of index.gpkg)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def splits(self) -> dict[str, int]:
        """Number of chips per split present in the index."""
        return {str(k): int(v) for k, v in self.frame["split"].value_counts().sort_index().items()}

    def split(self, name: str):
        """The rows of one split (an empty frame when the split has no chips)."""
        return self.frame[self.frame["split"] == name]

    def image_path(self, row) -> Path:
        """The image chip of an index row."""
        return self.root / str(row["image"])

    def mask_path(self, row) -> Path | None:
        """The mask chip of an index row; None when the chip is unlabelled."""
        m = row["mask"]
        if m is None or (isinstance(m, float) and m != m):  # null in the GeoPackage
            return None
        return self.root / str(m)


def write_format_json(path: Path, fmt: str, version: int, body: dict) -> None:
    """Write a format-tagged JSON header: ``format`` and ``version`` first, then ``body``."""
    path.write_text(json.dumps({"format": fmt, "version": version, **body}, indent=2) + "\n")


def box_wkb(bounds: np.ndarray) -> np.ndarray:
    """WKB polygons (object array of bytes) of boxes (N, 4: xmin, ymin, xmax, ymax), each ring
    as ``shapely.box`` makes it (counter-clockwise from the lower right corner)."""
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = b.T
    rec = np.zeros(len(b), dtype=_WKB_BOX)
    rec["order"], rec["type"], rec["rings"], rec["points"] = 1, 3, 1, 5
    rec["xy"] = np.stack([x1, y0, x1, y1, x0, y1, x0, y0, x1, y0], axis=1)
    raw, size = rec.tobytes(), _WKB_BOX.itemsize
    out = np.empty(len(b), dtype=object)
    out[:] = [raw[i : i + size] for i in range(0, len(raw), size)]
    return out


_WKB_BOX = np.dtype(
    [("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("points", "<u4"), ("xy", "<f8", (10,))]
)
"""One polygon of one ring of five points, little-endian WKB (93 bytes, no padding)."""


def write_chips(
    folder: Path, fields: dict[str, np.ndarray], bounds: np.ndarray, crs_wkt: str, meta: dict
) -> None:
    """Write a chips folder's ``index.gpkg`` (one row per chip: ``fields`` in order, footprints
    ``bounds`` (N, 4) in ``crs_wkt``) and ``dataset.json`` (``meta``, tagged with
    FORMAT/VERSION), each verified once written. Needs neither pyogrio nor pandas."""
    from aerialct.geo.gpkg import GpkgLayer, write_gpkg
    from aerialct.geo.outputs import verify_output

    layer = GpkgLayer(box_wkb(bounds), bounds, fields, crs_wkt, "POLYGON")
    write_gpkg(folder / INDEX, {LAYER: layer})
    verify_output(folder / INDEX, "gpkg")
    write_format_json(folder / META, FORMAT, VERSION, meta)
    verify_output(folder / META, "json")


def read_format_json(meta_path: Path, fmt: str, version: int, fix: str, redo: str) -> dict:
    """A format-tagged JSON header (chips ``dataset.json``, packed ``packed.json``), checked.

    InputError naming the file when it is unreadable, of another format, or of another
    version (``redo`` says how to make it again).
    """
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{meta_path}: unreadable ({e}); {fix}") from e
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise InputError(f"{meta_path}: format is {got!r}, not {fmt!r}; {fix}")
    if meta.get("version") != version:
        raise InputError(
            f"{meta_path}: {fmt} format version {meta.get('version')} is not {version}; {redo}"
        )
    return meta


def read_index(chips_dir: str | os.PathLike) -> ChipIndex:
    """Open a chips folder; InputError (naming the folder and the fix) when it is not one."""
    import pyogrio

    root = Path(chips_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no such chips folder; {_FIX}")
    meta_path, index_path = root / META, root / INDEX
    if not meta_path.is_file() or not index_path.is_file():
        raise InputError(f"{root}: not a chips folder (no {META} / {INDEX}); {_FIX}")
    meta = read_format_json(meta_path, FORMAT, VERSION, _FIX, "re-tile with this aerialct version")
    try:
        classes = ClassTable.from_list(meta["classes"])
        frame = pyogrio.read_dataframe(index_path, layer=LAYER)
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(f"{root}: corrupt chips dataset ({e}); {_FIX}") from e
    except Exception as e:  # pyogrio's DataSourceError / DataLayerError
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{index_path}: unreadable index ({first}); {_FIX}") from e
    if len(frame) == 0:
        raise InputError(f"{index_path}: the index has no chips; {_FIX}")
    return ChipIndex(root=root, meta=meta, classes=classes, frame=frame)
