"""The windowed driver: read a class raster window by window, clean each class mask
up, trace it, and collect the pieces and the labels that meet at window seams."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from aerialct.errors import InputError
from aerialct.progress import ProgressFn
from aerialct.vectorize.merge import Frontier, Pieces, seam_pairs
from aerialct.vectorize.trace import Traced, trace_polygons

if TYPE_CHECKING:
    from aerialct.vectorize.mosaic import Mosaic

MORPH_OPS = ("open", "close", "erode", "dilate")
DEFAULT_WINDOW = 1536
"""Window side in pixels: the tracer's arrays of one window bound the memory (about 7 bytes a
pixel at their peak), seams between windows cost a little time."""


def parse_morph(items: Sequence[str] | None) -> list[tuple[str, int]]:
    """``["open:1", "close:2"]`` -> ``[("open", 1), ("close", 2)]`` (radius in pixels)."""
    ops: list[tuple[str, int]] = []
    for item in items or []:
        name, _, radius = str(item).partition(":")
        name = name.strip().lower()
        if name not in MORPH_OPS or not radius.strip().isdigit() or int(radius) < 1:
            raise InputError(
                f"morphology {item!r} is not OP:RADIUS with OP in {', '.join(MORPH_OPS)} "
                "and RADIUS >= 1 pixel, e.g. open:1"
            )
        ops.append((name, int(radius)))
    return ops


def _morph_halo(ops: Sequence[tuple[str, int]]) -> int:
    return sum(2 * r if name in ("open", "close") else r for name, r in ops)


def _apply_morph(mask: np.ndarray, ops: Sequence[tuple[str, int]]) -> np.ndarray:
    from scipy import ndimage

    square = np.ones((3, 3), dtype=bool)
    for name, r in ops:
        fn = {
            "open": ndimage.binary_opening,
            "close": ndimage.binary_closing,
            "erode": ndimage.binary_erosion,
            "dilate": ndimage.binary_dilation,
        }[name]
        mask = fn(mask, structure=square, iterations=r)
    return mask


def _structure(connectivity: int) -> np.ndarray:
    if connectivity == 8:
        return np.ones((3, 3), dtype=bool)
    return np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


class Tracer:
    """The windowed pass over a mosaic: read, clean up, trace, and pair labels at seams.

    Windows go row by row; at the end of each band (:class:`Mosaic`) the buildings that
    cannot go on are merged and handed out (:meth:`Frontier.close`), so memory holds a
    band of pieces, not the map. ``rows`` (a range of window rows) runs part of the
    mosaic; with ``keep_top``/``keep_bottom`` the buildings on the part's first or last
    row stay open for a later join (:meth:`Frontier.export`).
    """

    def __init__(
        self, mosaic: Mosaic, ids: list[int], ops: Sequence[tuple[str, int]], connectivity: int,
        size: int, with_probs: bool, progress: ProgressFn,
    ) -> None:  # fmt: skip
        self.mosaic, self.ids, self.ops = mosaic, ids, ops
        self.connectivity, self.size, self.with_probs = connectivity, size, with_probs
        self.progress = progress
        self.windows = 0
        self.tile_windows = np.zeros(len(mosaic.tiles), dtype=np.int64)
        self.frontier = Frontier(mosaic.width, ids)

    def run(
        self, rows: range | None = None, keep_top: bool = False, keep_bottom: bool = False
    ) -> Iterator[Pieces]:
        """Closed buildings, a batch per band (then the rest at the end)."""
        all_rows = self.mosaic.window_rows(self.size)
        rows = rows if rows is not None else range(len(all_rows))
        self.frontier = Frontier(self.mosaic.width, self.ids, keep_top=keep_top)
        band = -1
        owners = np.empty(0, dtype=np.int64)
        for k, i in enumerate(rows):
            r0, h, b = all_rows[i]
            if b != band:
                if band >= 0:
                    yield self.frontier.close()
                band, owners = b, self.mosaic.owners(b)
            self._row(r0, h, owners, first=k == 0)
        yield self.frontier.close(keep_bottom=keep_bottom)

    def _row(self, r0: int, h: int, owners: np.ndarray, first: bool) -> None:
        """Trace one row of windows; pair its labels with the previous row's and neighbours'."""
        fr, width = self.frontier, self.mosaic.width
        diagonal = self.connectivity == 8
        cur_bottom = {c: np.zeros(width, dtype=np.int64) for c in self.ids}
        prev_right: dict[int, np.ndarray] = {}

        def shifted(a: np.ndarray, offset: int) -> np.ndarray:
            return np.where(a > 0, a + offset, 0)

        for c0, w, strip in self.mosaic.window_cols(self.size):
            tile = int(owners[strip])
            if tile < 0:  # a gap between tiles: nothing to trace, nothing to pair
                prev_right = {}
                continue
            for c, traced, stats in self._trace_window(tile, r0, c0, h, w):
                if traced is None:
                    prev_right[c] = np.zeros(h, dtype=np.int64)
                    continue
                offset = fr.add(traced.polygons, c, tile, *stats)
                lo, hi = max(c0 - 1, 0), min(c0 + w + 1, width)
                row0 = np.zeros(hi - lo, dtype=np.int64)
                row0[c0 - lo : c0 - lo + w] = shifted(traced.top, offset)
                fr.pairs.append(seam_pairs(fr.bottom[c][lo:hi], row0, diagonal))
                if c in prev_right:
                    fr.pairs.append(
                        seam_pairs(prev_right[c], shifted(traced.left, offset), diagonal)
                    )
                prev_right[c] = shifted(traced.right, offset)
                cur_bottom[c][c0 : c0 + w] = shifted(traced.bottom, offset)
                if first and fr.top is not None:
                    fr.top[c][c0 : c0 + w] = shifted(traced.top, offset)
            self.windows += 1
            self.tile_windows[tile] += 1
            self.progress(1)
        fr.bottom = cur_bottom

    def _trace_window(
        self, tile: int, r0: int, c0: int, h: int, w: int
    ) -> Iterator[tuple[int, Traced | None, tuple]]:
        """Per class: the window's traced pieces (None when it has none) and their
        probability sums and minimums (empty when no probabilities are read)."""
        mosaic = self.mosaic
        halo = _morph_halo(self.ops)
        hr0, hc0 = max(r0 - halo, 0), max(c0 - halo, 0)
        hr1, hc1 = min(r0 + h + halo, mosaic.height), min(c0 + w + halo, mosaic.width)
        data = mosaic.read(hr0, hc0, hr1 - hr0, hc1 - hc0, tile=None if halo else tile)
        inner = (slice(r0 - hr0, r0 - hr0 + h), slice(c0 - hc0, c0 - hc0 + w))
        for c in self.ids:
            mask = data == c
            if c == self.ids[-1]:
                del data  # not needed for tracing the last class: one window array less
            if self.ops:
                mask = _apply_morph(mask, self.ops)
            mask = mask[inner]
            if not mask.any():
                yield c, None, ()
                continue
            traced = trace_polygons(mask, self.connectivity, offset=(c0, r0))
            stats: tuple = ()
            if self.with_probs:
                band = mosaic.read_probability(tile, c + 1, r0, c0, h, w)
                stats = _confidence(mask, traced, band, self.connectivity)
            yield c, traced, stats


def _confidence(
    mask: np.ndarray, traced: Traced, band: np.ndarray, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum and minimum of the class probability ``band`` over each traced polygon's pixels."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=_structure(connectivity))
    values = band.astype(np.float64)
    # label of each polygon through one of its pixels
    lab = labels[traced.sample[:, 0], traced.sample[:, 1]]
    return (
        np.asarray(ndimage.sum_labels(values, labels, lab), dtype=np.float64),
        np.asarray(ndimage.minimum(values, labels, lab), dtype=np.float64),
    )
