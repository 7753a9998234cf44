"""Class tables: ids, names and colours of the semantic classes (the one owner).

A class table travels with chips (``dataset.json``), checkpoints and class
rasters (colour table + category names + the ``AERIALCT_CLASSES`` tag), so every
stage agrees on what an id means. ``IGNORE_INDEX`` (255) marks pixels that carry
no label; it doubles as nodata in class rasters.

Tables are chosen by name (:data:`BUILTIN_TABLES`: ``potsdam``, ``buildings``) or
read from a YAML file (:func:`load_class_table`); :func:`resolve_class_table`
takes either.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255


def check_class_name(name: object) -> None:
    """Refuse a class name that options cannot name: empty, not text, or with spaces."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"class name {name!r} is not a name; give a word such as building")
    if any(ch.isspace() for ch in name):
        fixed = "_".join(name.split())
        raise ValueError(
            f"class name {name!r} holds a space, so options such as --burn and --class cannot "
            f"name it; write {fixed!r}"
        )


@dataclass(frozen=True)
class ClassInfo:
    """One class: its id (0..n-1), name, RGB display colour and whether mean scores skip it."""

    id: int
    name: str
    color: tuple[int, int, int]
    exclude_from_mean: bool = False
    """Left out of mean IoU / F1 (as Potsdam's clutter is by the training config)."""


@dataclass(frozen=True)
class ClassTable:
    """An ordered table of classes with ids 0..n-1."""

    classes: tuple[ClassInfo, ...]
    ignore: int = field(default=IGNORE_INDEX, compare=False)
    """The value that marks unlabelled pixels in the user's label rasters; chips, masks
    and class rasters always use ``IGNORE_INDEX`` (255)."""

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("a class table needs at least one class; it has none")
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"class ids must be 0..{len(ids) - 1} in order, got {ids}")
        for c in self.classes:
            check_class_name(c.name)
        names = [c.name for c in self.classes]
        folded = [n.lower() for n in names]
        twins = sorted({n for n in names if folded.count(n.lower()) > 1})
        if twins:
            raise ValueError(
                f"class names must differ in more than case (--class and --burn take any case), "
                f"got {', '.join(twins)}"
            )
        if len(ids) > IGNORE_INDEX:
            raise ValueError(f"at most {IGNORE_INDEX} classes (ids 0..254), got {len(ids)}")
        if not 0 <= self.ignore <= 255 or self.ignore in ids:
            raise ValueError(f"ignore value {self.ignore} must be 0..255 and not a class id")

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    @property
    def names(self) -> list[str]:
        """The class names in id order."""
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

    def has(self, name: str) -> bool:
        """True when the table has a class of that name (case-insensitive)."""
        return name.strip().lower() in (n.lower() for n in self.names)

    @property
    def background(self) -> int | None:
        """The id of the class named ``background``, else None (uncovered pixels are ignore)."""
        return self.id_of("background") if self.has("background") else None

    @property
    def excluded_from_mean(self) -> list[str]:
        """Names of the classes left out of mean IoU / F1."""
        return [c.name for c in self.classes if c.exclude_from_mean]

    def ids_of(self, names: Iterable[str | int]) -> list[int]:
        """:meth:`id_of` for each of ``names``."""
        return [self.id_of(n) for n in names]

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table (id -> RGBA), with ignore/nodata drawn black and transparent."""
        cmap = {c.id: (*c.color, 255) for c in self.classes}
        cmap[IGNORE_INDEX] = (0, 0, 0, 0)
        return cmap

    def to_list(self) -> list[dict]:
        """JSON form: ``[{"id", "name", "color"[, "exclude_from_mean": true]}, ...]``."""
        out = []
        for c in self.classes:
            d: dict = {"id": c.id, "name": c.name, "color": list(c.color)}
            if c.exclude_from_mean:
                d["exclude_from_mean"] = True
            out.append(d)
        return out

    @classmethod
    def from_list(cls, items: Sequence[dict], ignore: int = IGNORE_INDEX) -> ClassTable:
        """The table of a :meth:`to_list` JSON form (``exclude_from_mean`` optional)."""
        return cls(
            tuple(
                ClassInfo(
                    int(d["id"]),
                    d["name"],
                    tuple(int(v) for v in d["color"]),  # type: ignore[arg-type]
                    _flag(d.get("exclude_from_mean", False)),
                )
                for d in items
            ),
            ignore=ignore,
        )

    def category_names(self) -> list[str]:
        """GDAL category names, index = class id: exactly the classes (255, nodata, has none)."""
        return [c.name for c in self.classes]

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
"""The ISPRS Potsdam legend (README, "The data: `synth` and `tile`"); black (0, 0, 0) is
ignore."""


BUILDINGS = ClassTable(
    (
        ClassInfo(0, "background", (0, 0, 0)),
        ClassInfo(1, "building", (230, 25, 75)),
    )
)
"""Buildings against everything else (SpaceNet, Inria, WHU, OSM, a cadastre); 255 = ignore."""

BUILTIN_TABLES = {"potsdam": POTSDAM, "buildings": BUILDINGS}
"""Class tables known by name (``aerialct tile --classes NAME``)."""


def load_class_table(path: str | os.PathLike) -> ClassTable:
    """Read a class table from YAML; ValueError (naming the file and the fix) when invalid.

    Format::

        ignore: 255                # optional: the label value meaning "no label"
        classes:
          - {id: 0, name: background, color: [0, 0, 0]}
          - {id: 1, name: building, color: [255, 0, 0]}
          - {id: 2, name: shed, color: "#ffaa00", exclude_from_mean: true}

    Ids run 0..n-1 in order; a colour is ``[r, g, b]`` or ``"#rrggbb"``.
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
        data = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{p}: cannot read the class table ({e})") from e
    example = "write 'classes: [{id: 0, name: background, color: [0, 0, 0]}, ...]'"
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise ValueError(f"{p}: not a class table; {example}")
    unknown = set(data) - {"classes", "ignore"}
    if unknown:
        raise ValueError(f"{p}: unknown keys {sorted(unknown)}; a table has 'classes' and 'ignore'")
    if not data["classes"]:
        raise ValueError(f"{p}, line {lines.get(('classes',), 1)}: 'classes' is empty; {example}")
    items = []
    for n, d in enumerate(data["classes"]):
        where = f"{p}, line {lines.get(('classes', n), '?')}"
        if not isinstance(d, dict) or not {"id", "name", "color"} <= set(d):
            raise ValueError(f"{where}: class #{n} needs id, name and color; {example}")
        extra = set(d) - {"id", "name", "color", "colour", "exclude_from_mean"}
        if extra:
            raise ValueError(f"{where}: class {d.get('name')!r}: unknown keys {sorted(extra)}")
        items.append(_class_item(d, n, p, lines))
    ignore = data.get("ignore", IGNORE_INDEX)
    if not isinstance(ignore, int) or isinstance(ignore, bool):
        raise ValueError(f"{p}, line {lines.get(('ignore',), '?')}: ignore: {ignore!r} is not a "
                         "number 0..255")  # fmt: skip
    try:
        return ClassTable.from_list(items, ignore=ignore)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{p}: {e}") from e


def _class_item(d: dict, n: int, p: Path, lines: dict) -> dict:
    """One class of a YAML table, each value checked (never coerced); ValueError naming the
    line and the key."""

    def where(key: str) -> str:
        return f"{p}, line {lines.get(('classes', n, key), lines.get(('classes', n), '?'))}"

    if not isinstance(d["id"], int) or isinstance(d["id"], bool):
        raise ValueError(f"{where('id')}: class #{n}: id: {d['id']!r} is not a whole number")
    try:
        check_class_name(d["name"])
    except ValueError as e:
        raise ValueError(f"{where('name')}: class #{n}: name: {e}") from None
    flag = d.get("exclude_from_mean", False)
    if not isinstance(flag, bool):
        raise ValueError(
            f"{where('exclude_from_mean')}: class {d['name']!r}: exclude_from_mean: {flag!r} is "
            "not true or false (write it without quotes)"
        )
    return {**d, "color": _colour(d["color"], p, d["name"])}


def _key_lines(node: object, path: tuple = ()) -> dict[tuple, int]:
    """The 1-based line of every key and list item of a composed YAML document."""
    import yaml

    out: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = (*path, key.value)
            out[k] = key.start_mark.line + 1
            out.update(_key_lines(value, k))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            out.update(_key_lines(item, (*path, i)))
    return out


def _flag(value: object) -> bool:
    """``exclude_from_mean`` of a stored table: a JSON boolean, never a coerced string."""
    if not isinstance(value, bool):
        raise ValueError(f"exclude_from_mean {value!r} is not true or false")
    return value


def _colour(v: object, p: Path, name: object) -> list[int]:
    if isinstance(v, str) and len(v) == 7 and v.startswith("#"):
        try:
            return [int(v[i : i + 2], 16) for i in (1, 3, 5)]
        except ValueError:
            pass
    if (
        isinstance(v, list | tuple)
        and len(v) == 3
        and all(isinstance(x, int) and 0 <= x <= 255 for x in v)
    ):
        return [int(x) for x in v]
    raise ValueError(f"{p}: class {name!r}: color {v!r} is not [r, g, b] (0..255) or '#rrggbb'")


def resolve_class_table(name_or_path: str | os.PathLike | ClassTable) -> ClassTable:
    """A built-in table by name (``potsdam``, ``buildings``) or a YAML file's table."""
    if isinstance(name_or_path, ClassTable):
        return name_or_path
    key = str(name_or_path).strip().lower()
    if key in BUILTIN_TABLES:
        return BUILTIN_TABLES[key]
    p = Path(name_or_path)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ValueError(f"{p}: no such class table file; check the path")
        return load_class_table(p)
    raise ValueError(
        f"unknown class table {str(name_or_path)!r}; use {' or '.join(BUILTIN_TABLES)}, "
        "or a YAML file (see README, 'Your own classes')"
    )
