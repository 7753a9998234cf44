"""Chip files written fast: GDAL writes the first chip of a kind, the others reuse its file.

The chips of one task share everything but their pixels and their origin (same
size, bands, dtype, CRS, creation options, colour table and tags). An uncompressed
GeoTIFF that GDAL writes is its directory and tags, the pixels in one contiguous
run (pixel- or band-interleaved strips), and the origin is two doubles of the
``ModelTiepoint`` tag. :class:`ChipWriter` lets GDAL write the first chip of each
kind, checks that the file is exactly that (its strips, read from the directory,
are one run holding the chip's pixels in one of the two orders), and then writes
every later chip of the kind as the same bytes with the chip's origin and pixels:
byte for byte the file GDAL would have written, at the cost of a plain file write
instead of a GDAL dataset's creation, block cache and close.

Anything else (compression, several tiles, overviews, a sidecar, a rotated grid, a
big-endian or BigTIFF file) is written by GDAL chip by chip, as before.

Every chip is read back before the task reports it: a chip written here is read
whole and compared with the bytes meant (cheaper than a decode); a chip GDAL
wrote is re-opened and its last block decoded (:func:`aerialct.geo.io.verify_raster`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.errors import RasterError

_TIFF_LE = b"II*\x00"
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_COMPRESSION, _PLANAR = 259, 284
_STRIP_OFFSETS, _STRIP_COUNTS, _TILE_OFFSETS, _TILE_COUNTS = 273, 279, 324, 325
_TIEPOINT, _TRANSFORMATION = 33922, 34264


@dataclass
class _Template:
    """A chip file of one kind, as a buffer that every chip of the kind is written through: its
    pixels at ``start`` (in file order), its origin at each offset of ``origin_at`` (every copy:
    GDAL leaves the first directory it wrote behind when tags come after the pixels)."""

    data: bytearray
    start: int
    origin_at: tuple[int, ...]  # offsets of (X, Y) as two little-endian doubles
    planar: bool  # band-interleaved pixels (C, H, W); else pixel-interleaved (H, W, C)
    back: bytearray = field(default_factory=bytearray)  # the read-back buffer

    def fill(self, img: np.ndarray, origin: tuple[float, float]) -> bytearray:
        """The file of a chip of ``img`` at ``origin``: the template with its pixels and origin."""
        c, h, w = img.shape
        dtype = img.dtype.newbyteorder("<")
        shape = (c, h, w) if self.planar else (h, w, c)
        view = np.frombuffer(self.data, dtype, c * h * w, self.start).reshape(shape)
        np.copyto(view, img if self.planar else np.moveaxis(img, 0, -1))  # rows: memcpy
        for at in self.origin_at:
            struct.pack_into("<2d", self.data, at, *origin)
        return self.data


def _find_all(data: bytes, pattern: bytes) -> tuple[int, ...]:
    found, at = [], data.find(pattern)
    while at >= 0:
        found.append(at)
        at = data.find(pattern, at + 1)
    return tuple(found)


def _pixels(img: np.ndarray, planar: bool) -> np.ndarray:
    """The chip's pixels (C, H, W) in file order, little-endian, contiguous."""
    arr = img if planar else np.moveaxis(img, 0, -1)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


def _ifd(data: bytes) -> dict[int, tuple[int, int, int]] | None:
    """Tags of a classic little-endian TIFF with one image: tag -> (type, count, value field
    offset or value offset); None for any other file."""
    if len(data) < 8 or data[:4] != _TIFF_LE:
        return None
    (at,) = struct.unpack_from("<I", data, 4)
    if at + 2 > len(data):
        return None
    (n,) = struct.unpack_from("<H", data, at)
    if at + 2 + 12 * n + 4 > len(data):
        return None
    tags = {}
    for i in range(n):
        entry = at + 2 + 12 * i
        tag, typ, count = struct.unpack_from("<HHI", data, entry)
        if typ not in _TYPE_SIZES:
            return None
        inline = _TYPE_SIZES[typ] * count <= 4
        where = entry + 8 if inline else struct.unpack_from("<I", data, entry + 8)[0]
        tags[tag] = (typ, count, where)
    (next_ifd,) = struct.unpack_from("<I", data, at + 2 + 12 * n)
    return tags if next_ifd == 0 else None  # one image: no overviews or internal masks


def _values(data: bytes, entry: tuple[int, int, int] | None) -> list[int]:
    """The values of a SHORT or LONG tag."""
    if entry is None:
        return []
    typ, count, where = entry
    if typ not in (3, 4):
        return []
    return list(struct.unpack_from(f"<{count}{'H' if typ == 3 else 'I'}", data, where))


def _pixel_run(data: bytes, tags: dict[int, tuple[int, int, int]]) -> tuple[int, int] | None:
    """(start, length) of the image data when its strips (or tiles) are one contiguous run."""
    offsets = _values(data, tags.get(_STRIP_OFFSETS) or tags.get(_TILE_OFFSETS))
    counts = _values(data, tags.get(_STRIP_COUNTS) or tags.get(_TILE_COUNTS))
    if not offsets or len(offsets) != len(counts):
        return None
    for i in range(1, len(offsets)):
        if offsets[i] != offsets[i - 1] + counts[i - 1]:
            return None
    return offsets[0], sum(counts)


def find_template(path: Path, img: np.ndarray, origin: tuple[float, float]) -> _Template | None:
    """``path`` (a chip GDAL just wrote from ``img`` at ``origin``) as a template, when it is an
    uncompressed GeoTIFF whose data are one run holding exactly the chip's pixels; else None."""
    if Path(f"{path}.aux.xml").exists():  # something went to a sidecar
        return None
    data = path.read_bytes()
    tags = _ifd(data)
    if tags is None or _TRANSFORMATION in tags or _TIEPOINT not in tags:
        return None
    if _values(data, tags.get(_COMPRESSION)) not in ([], [1]):
        return None
    typ, count, where = tags[_TIEPOINT]
    if typ != 12 or count != 6:
        return None
    tie = struct.unpack_from("<6d", data, where)
    if tie[:3] != (0.0, 0.0, 0.0) or tie[3:5] != origin:
        return None
    planar = _values(data, tags.get(_PLANAR)) == [2]
    pixels = _pixels(img, planar).tobytes()
    run = _pixel_run(data, tags)
    if run is None or run[1] != len(pixels):
        return None
    start, end = run[0], run[0] + run[1]
    at = where + 24
    if data[start:end] != pixels or (at < end and at + 16 > start):
        return None
    xy = struct.pack("<2d", *origin)
    origins = tuple(a for a in _find_all(data, xy) if a + 16 <= start or a >= end)
    if where + 24 not in origins:
        return None
    return _Template(bytearray(data), start, origins, planar, bytearray(len(data)))


def _same(profile: dict[str, Any], rest: dict[str, Any], img: np.ndarray) -> bool:
    """``rest`` (a profile less its transform) and ``img`` are what the template was made of."""
    if img.shape != (profile["count"], profile["height"], profile["width"]):
        return False
    if img.dtype != np.dtype(profile["dtype"]) or profile.keys() != rest.keys():
        return False
    # the CRS object is shared by the chips of a task: identity first (CRS == is slow)
    return all(v is rest[k] or v == rest[k] or (v != v and rest[k] != rest[k])  # NaN nodata
               for k, v in profile.items())  # fmt: skip


class ChipWriter:
    """Writes chips of a few kinds; see the module docstring.

    ``write(path, img, profile, kind, finish)``: ``img`` is (C, H, W); ``profile`` the GTiff
    profile of the chip (its ``transform`` is the only thing that may differ between
    chips of one ``kind``); ``finish(dataset)`` runs on the open GDAL dataset (colour
    table, tags) and must do the same for every chip of the kind.
    """

    def __init__(self) -> None:
        self._templates: dict[str, tuple[dict[str, Any], _Template | None]] = {}
        self.fast = 0  # chips written from a template (for tests and benchmarks)

    def write(
        self,
        path: Path,
        img: np.ndarray,
        profile: dict[str, Any],
        kind: str,
        finish: Callable[[Any], None] | None = None,
    ) -> None:
        t = profile["transform"]
        origin = (float(t.c), float(t.f))
        rest = {k: v for k, v in profile.items() if k != "transform"}
        known = self._templates.get(kind)
        if known is not None and known[1] is not None and _same(known[0], rest, img):
            self._write_from(known[1], path, img, origin)
            self.fast += 1
            return
        self._write_gdal(path, img, profile, finish)
        if known is None or known[1] is None or not _same(known[0], rest, img):
            self._templates[kind] = (rest, find_template(path, img, origin))

    @staticmethod
    def _write_gdal(
        path: Path, img: np.ndarray, profile: dict[str, Any], finish: Callable[[Any], None] | None
    ) -> None:
        import rasterio

        from aerialct.geo.io import verify_raster

        # a band cut again after a kill: GDAL would first open what a killed run left
        # half-written (a chip from a template is written whole, truncating the file)
        path.unlink(missing_ok=True)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(img)
            if finish is not None:
                finish(dst)
        # a chip is new and alone: no sidecar to look for in a folder of thousands of chips
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
            verify_raster(path, whole=False)

    @staticmethod
    def _write_from(template: _Template, path: Path, img: np.ndarray, origin: tuple[float, float]):
        data = template.fill(img, origin)
        with open(path, "wb") as f:
            f.write(data)
        _read_back(path, data, template.back)


def _read_back(path: Path, data: bytearray, back: bytearray) -> None:
    """Read a chip written here back whole (into ``back``) and compare every byte with ``data``."""
    with open(path, "rb") as f:
        n = f.readinto(back)
        extra = f.read(1)
    if n != len(data) or extra or back != data:
        raise RasterError(f"{path}: the chip read back differs from what was written")


_run_writer: tuple[str, ChipWriter] | None = None


def writer_for(run: str) -> ChipWriter:
    """The chip writer of one tiling run in this process: the tasks of a run that a worker
    process executes share its templates (a run's chips of one kind differ only by scene).
    ``run`` names the run (its output folder); a new run gets a new writer."""
    global _run_writer
    if _run_writer is None or _run_writer[0] != run:
        _run_writer = (run, ChipWriter())
    return _run_writer[1]
