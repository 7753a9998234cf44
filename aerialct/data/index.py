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
>>> idx.header.chip_size, idx.header.gsd   # dataset.json, typed (ChipsHeader)

Every key, column and path of the format is spelled here: :class:`ChipsHeader`
(``dataset.json``), :class:`ChipRow` and :func:`count_columns` (``index.gpkg``),
:func:`chip_id` and :func:`chip_paths` (the folder layout). ``aerialct tile`` fills
them (:func:`chips_columns`, :func:`write_chips`); the readers
(:mod:`aerialct.data.dataset`, :mod:`aerialct.data.packed`, ``evaluate``) read them.
Format-tagged JSON headers (this ``dataset.json`` and the packed form's ``packed.json``)
are written by :func:`write_format_json` and read by :func:`read_format_json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.errors import InputError
from aerialct.geo.outputs import verify_output

FORMAT = "aerialct-chips"
VERSION = 1
META = "dataset.json"
INDEX = "index.gpkg"
LAYER = "chips"
SPLITS = ("train", "val", "test")
"""The splits every chips dataset counts (others may appear after them)."""
_FIX = "make one with `aerialct tile ... --out DIR`"
IGNORE_COLUMN = "px_ignore"
INT_COLUMNS = ("row_off", "col_off", "width", "height")


@dataclass
class ChipsHeader:
    """``dataset.json``: what a chips folder holds (CONTRACTS.md, "Chips dataset").

    ``aerialct tile`` fills every field; a reader takes what it needs (a hand-made
    header may hold the class table alone: the other fields are then None or empty).
    """

    classes: ClassTable
    ignore_index: int = IGNORE_INDEX
    chip_size: int | None = None
    bands: int | None = None
    dtype: str | None = None
    gsd: float | None = None
    crs: str | None = None
    """``EPSG:nnnn`` when the CRS has a code, else its WKT."""
    source: str | None = None
    """``geotiff`` or ``potsdam``."""
    splits: dict[str, int] = field(default_factory=dict)
    label_mode: str | None = None
    window: int | None = None
    stride: int | None = None
    nodata_threshold: float | None = None
    band_stats: dict[str, Any] = field(default_factory=dict)
    class_shares: dict[str, Any] = field(default_factory=dict)
    creation_options: dict[str, str] = field(default_factory=dict)
    scenes: list[dict[str, Any]] = field(default_factory=list)
    """Per scene: ``name``, ``image``, ``labels``, ``split``."""
    aerialct_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The body of ``dataset.json`` (:func:`write_chips` adds format and version)."""
        body = {k: getattr(self, k) for k in self.__dataclass_fields__}
        body["classes"] = self.classes.to_list()
        return body

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> ChipsHeader:
        """The header of a parsed ``dataset.json``; KeyError/ValueError/TypeError when the
        class table is missing or invalid."""
        known = {k: meta[k] for k in cls.__dataclass_fields__ if meta.get(k) is not None}
        known["classes"] = ClassTable.from_list(meta["classes"])
        return cls(**known)


@dataclass
class ChipRow:
    """One chip of ``index.gpkg``: its columns, label pixel counts and footprint.

    ``counts`` (K+1: per class, then ignore) become the :func:`count_columns`;
    ``bounds`` (left, bottom, right, top in the scene CRS) the footprint polygon.
    """

    chip_id: str
    image: str
    mask: str | None
    scene: str
    split: str
    row_off: int
    col_off: int
    width: int
    height: int
    counts: np.ndarray
    bounds: tuple[float, float, float, float]


def chip_id(scene: str, row_off: int, col_off: int) -> str:
    """The name of the chip whose window starts at (``row_off``, ``col_off``) of ``scene``."""
    return f"{scene}_r{row_off}_c{col_off}"


def chip_paths(split: str, chip_id: str) -> tuple[str, str]:
    """The image and mask chip of ``chip_id`` in ``split``, relative to the chips folder."""
    return f"{split}/images/{chip_id}.tif", f"{split}/masks/{chip_id}.tif"


def count_columns(classes: ClassTable) -> list[str]:
    """The index's label pixel count columns: ``px_<class>`` per class, then ``px_ignore``."""
    return [*(f"px_{name}" for name in classes.names), IGNORE_COLUMN]


@dataclass
class ChipColumns:
    """The chips index as columns, one row per chip in scene/row/col order."""

    fields: dict[str, np.ndarray]
    """``index.gpkg``'s columns in order: the text ones, the offsets, then the
    :func:`count_columns`."""
    counts: np.ndarray
    """Label pixel counts (N, K+1: per class, then ignore)."""
    bounds: np.ndarray
    """Footprints (N, 4: left, bottom, right, top in the scene CRS)."""

    @property
    def split(self) -> np.ndarray:
        """Each chip's split (str array)."""
        return self.fields["split"].astype(str)


_TEXT_COLUMNS = ("chip_id", "image", "mask", "scene", "split")


def chips_columns(rows: list[ChipRow], classes: ClassTable) -> ChipColumns:
    """The chips index of ``rows`` (in scene/row/col order) as columns, without pandas."""
    rows = sorted(rows, key=lambda r: (r.scene, r.row_off, r.col_off))
    counts = np.stack([r.counts for r in rows]).astype(np.int64)
    bounds = np.array([r.bounds for r in rows], dtype=np.float64)
    fields: dict[str, np.ndarray] = {}
    for col in _TEXT_COLUMNS:
        fields[col] = np.empty(len(rows), dtype=object)
        fields[col][:] = [getattr(r, col) for r in rows]
    for col in INT_COLUMNS:
        fields[col] = np.array([getattr(r, col) for r in rows], dtype=np.int64)
    for i, col in enumerate(count_columns(classes)):
        fields[col] = counts[:, i]
    return ChipColumns(fields, counts, bounds)


@dataclass
class ChipIndex:
    """A chips dataset: its folder, ``dataset.json`` (raw and typed), class table and rows."""

    root: Path
    meta: dict
    classes: ClassTable
    frame: Any  # geopandas.GeoDataFrame (layer "chips" of index.gpkg)
    header: ChipsHeader

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
        if m is None or m == "" or (isinstance(m, float) and m != m):  # null in the GeoPackage
            return None
        return self.root / str(m)

    def labelled(self, name: str):
        """The rows of one split that have a mask, in index order."""
        frame = self.split(name)
        return frame[[self.mask_path(row) is not None for _, row in frame.iterrows()]]

    def label_counts(self, name: str) -> np.ndarray:
        """Per labelled chip of split ``name`` (in index order), its pixels per class (N, K);
        zeros when the index has no count columns."""
        frame = self.labelled(name)
        cols = count_columns(self.classes)[:-1]
        if not all(c in frame.columns for c in cols):
            return np.zeros((len(frame), len(cols)), dtype=np.int64)
        return frame[cols].to_numpy(dtype=np.int64)


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


def write_chips(folder: Path, columns: ChipColumns, crs_wkt: str, header: ChipsHeader) -> None:
    """Write a chips folder's ``index.gpkg`` (``columns``, one row per chip, footprints in
    ``crs_wkt``) and ``dataset.json`` (``header``, tagged with FORMAT/VERSION), each verified
    once written. Needs neither pyogrio nor pandas (a new GeoPackage is written by SQLite)."""
    from aerialct.geo.gpkg import GpkgLayer, write_gpkg

    fields, bounds = columns.fields, columns.bounds
    layer = GpkgLayer(box_wkb(bounds), bounds, fields, crs_wkt, "POLYGON")
    write_gpkg(folder / INDEX, {LAYER: layer})
    verify_output(folder / INDEX, "gpkg")
    write_format_json(folder / META, FORMAT, VERSION, header.to_json())
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
        header = ChipsHeader.from_json(meta)
        frame = pyogrio.read_dataframe(index_path, layer=LAYER)
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(f"{root}: corrupt chips dataset ({e}); {_FIX}") from e
    except Exception as e:  # pyogrio's DataSourceError / DataLayerError
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{index_path}: unreadable index ({first}); {_FIX}") from e
    if len(frame) == 0:
        raise InputError(f"{index_path}: the index has no chips; {_FIX}")
    return ChipIndex(root=root, meta=meta, classes=header.classes, frame=frame, header=header)
