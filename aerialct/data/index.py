"""Read a chips dataset written by ``aerialct tile`` (layout in CONTRACTS.md).

>>> idx = read_index("chips")
>>> train = idx.split("train")            # GeoDataFrame, one row per chip
>>> idx.image_path(train.iloc[0]), idx.mask_path(train.iloc[0])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aerialct.classes import ClassTable
from aerialct.errors import InputError

FORMAT = "aerialct-chips"
VERSION = 1
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
        return self.root / str(row["image"])

    def mask_path(self, row) -> Path | None:
        m = row["mask"]
        if m is None or (isinstance(m, float) and m != m):  # null in the GeoPackage
            return None
        return self.root / str(m)


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
    meta_path, index_path = root / "dataset.json", root / "index.gpkg"
    if not meta_path.is_file() or not index_path.is_file():
        raise InputError(f"{root}: not a chips folder (no dataset.json / index.gpkg); {_FIX}")
    meta = read_format_json(meta_path, FORMAT, VERSION, _FIX, "re-tile with this aerialct version")
    try:
        classes = ClassTable.from_list(meta["classes"])
        frame = pyogrio.read_dataframe(index_path, layer="chips")
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(f"{root}: corrupt chips dataset ({e}); {_FIX}") from e
    except Exception as e:  # pyogrio's DataSourceError / DataLayerError
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{index_path}: unreadable index ({first}); {_FIX}") from e
    if len(frame) == 0:
        raise InputError(f"{index_path}: the index has no chips; {_FIX}")
    return ChipIndex(root=root, meta=meta, classes=classes, frame=frame)
