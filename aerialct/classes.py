"""Class tables: ids, names and colours of the semantic classes.

A class table travels with chips (``dataset.json``), checkpoints and class
rasters (colour table + band description), so every stage agrees on what an
id means. ``IGNORE_INDEX`` (255) marks pixels that carry no label; it doubles
as nodata in class rasters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ClassTable:
    """An ordered table of classes with ids 0..n-1."""

    classes: tuple[ClassInfo, ...]

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"class ids must be 0..{len(ids) - 1} in order, got {ids}")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def id_of(self, name_or_id: str | int) -> int:
        """Resolve a class given by name (case-insensitive) or id."""
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            i = int(name_or_id)
            if 0 <= i < len(self.classes):
                return i
            raise ValueError(f"class id {i} is out of range 0..{len(self.classes) - 1}")
        wanted = str(name_or_id).strip().lower().replace(" ", "_")
        for c in self.classes:
            if c.name.lower() == wanted:
                return c.id
        raise ValueError(f"unknown class {name_or_id!r}; known classes: {', '.join(self.names)}")

    def ids_of(self, names: Iterable[str | int]) -> list[int]:
        return [self.id_of(n) for n in names]

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table (id -> RGBA), with ignore/nodata drawn black and transparent."""
        cmap = {c.id: (*c.color, 255) for c in self.classes}
        cmap[IGNORE_INDEX] = (0, 0, 0, 0)
        return cmap

    def to_list(self) -> list[dict]:
        return [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes]

    @classmethod
    def from_list(cls, items: Sequence[dict]) -> ClassTable:
        return cls(
            tuple(ClassInfo(int(d["id"]), str(d["name"]), tuple(d["color"])) for d in items)  # type: ignore[arg-type]
        )

    def rgb_to_ids(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[tuple[int, int, int], int]]:
        """Convert an RGB-colour label (3, H, W) to class ids (H, W) through the legend.

        Colours outside the legend become ``IGNORE_INDEX``; they are returned as
        ``{colour: pixel count}`` so the caller can report them. Black (0, 0, 0),
        the eroded boundary of Potsdam labels, is ignore and is not counted as unknown.
        """
        if rgb.ndim != 3 or rgb.shape[0] < 3:
            raise ValueError(f"an RGB label needs 3 bands, got shape {rgb.shape}")
        r, g, b = (rgb[i].astype(np.uint32) for i in range(3))
        code = (r << 16) | (g << 8) | b
        lut_codes = np.array(
            [(c.color[0] << 16) | (c.color[1] << 8) | c.color[2] for c in self.classes],
            dtype=np.uint32,
        )
        order = np.argsort(lut_codes)
        sorted_codes = lut_codes[order]
        pos = np.searchsorted(sorted_codes, code)
        pos = np.clip(pos, 0, len(sorted_codes) - 1)
        hit = sorted_codes[pos] == code
        out = np.full(code.shape, IGNORE_INDEX, dtype=np.uint8)
        out[hit] = order[pos[hit]].astype(np.uint8)
        unknown: dict[tuple[int, int, int], int] = {}
        miss = ~hit & (code != 0)
        if miss.any():
            vals, counts = np.unique(code[miss], return_counts=True)
            for v, n in zip(vals.tolist(), counts.tolist(), strict=True):
                unknown[((v >> 16) & 255, (v >> 8) & 255, v & 255)] = int(n)
        return out, unknown

    def ids_to_rgb(self, ids: np.ndarray) -> np.ndarray:
        """Class ids (H, W) to an RGB-colour label (3, H, W); ignore is black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        for c in self.classes:
            lut[c.id] = c.color
        return np.moveaxis(lut[ids], -1, 0)


POTSDAM = ClassTable(
    (
        ClassInfo(0, "impervious_surfaces", (255, 255, 255)),
        ClassInfo(1, "building", (0, 0, 255)),
        ClassInfo(2, "low_vegetation", (0, 255, 255)),
        ClassInfo(3, "tree", (0, 255, 0)),
        ClassInfo(4, "car", (255, 255, 0)),
        ClassInfo(5, "clutter", (255, 0, 0)),
    )
)
"""The ISPRS Potsdam legend (DESIGN section 2). Black (0, 0, 0) is ignore."""
