"""The windowed driver: read a class raster window by window, clean each class mask
up, trace it, and collect the pieces and the labels that meet at window seams."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from aerialct.classes import ClassTable
from aerialct.errors import InputError
from aerialct.geo.tags import PROB_SCALE_TAG
from aerialct.progress import ProgressFn
from aerialct.vectorize.merge import Pieces, merge_pieces, seam_pairs
from aerialct.vectorize.trace import Traced, trace_polygons

if TYPE_CHECKING:
    import rasterio

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


def prob_reader(probs: rasterio.DatasetReader, table: ClassTable) -> float:
    """The scale of the probability raster (255 for integers) after checking its band count."""
    scale_tag = probs.tags().get(PROB_SCALE_TAG)
    if scale_tag:
        scale = float(scale_tag)
    else:
        scale = 255.0 if np.dtype(probs.dtypes[0]).kind in "ui" else 1.0
    if probs.count < len(table):
        raise InputError(
            f"{probs.name}: {probs.count} bands for {len(table)} classes; "
            "give the probability raster written by predict for this class raster"
        )
    return scale


def polygonise_windows(
    ds: rasterio.DatasetReader,
    table: ClassTable,
    ids: list[int],
    ops: Sequence[tuple[str, int]],
    connectivity: int,
    size: int,
    probs: rasterio.DatasetReader | None,
    progress: ProgressFn,
) -> Pieces:
    from rasterio.windows import Window

    from aerialct.geo.classraster import check_class_values
    from aerialct.geo.io import read_window

    height, width = ds.height, ds.width
    halo = _morph_halo(ops)
    diagonal = connectivity == 8
    n_rows = math.ceil(height / size)
    n_cols = math.ceil(width / size)
    progress(0, total=n_rows * n_cols, description="vectorising")

    pieces: list[np.ndarray] = []
    label_class: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]  # index = global label
    stat_psum: list[np.ndarray] = [np.zeros(1)]
    stat_pmin: list[np.ndarray] = [np.zeros(1)]
    pairs: list[np.ndarray] = []
    next_label = 1
    # the previous window row's last line of labels, full width, per class
    prev_bottom = {c: np.zeros(width, dtype=np.int64) for c in ids}

    def shifted(a: np.ndarray, offset: int) -> np.ndarray:
        return np.where(a > 0, a + offset, 0)

    for wr in range(n_rows):
        r0 = wr * size
        h = min(size, height - r0)
        cur_bottom = {c: np.zeros(width, dtype=np.int64) for c in ids}
        prev_right: dict[int, np.ndarray] = {}
        for wc in range(n_cols):
            c0 = wc * size
            w = min(size, width - c0)
            hr0, hc0 = max(r0 - halo, 0), max(c0 - halo, 0)
            hr1, hc1 = min(r0 + h + halo, height), min(c0 + w + halo, width)
            win = Window(hc0, hr0, hc1 - hc0, hr1 - hr0)
            data = read_window(ds, 1, window=win)
            check_class_values(ds.name, data, table, ds.nodata, win)
            inner = (slice(r0 - hr0, r0 - hr0 + h), slice(c0 - hc0, c0 - hc0 + w))
            for c in ids:
                mask = data == c
                if c == ids[-1]:
                    del data  # not needed for tracing the last class: one window array less
                if ops:
                    mask = _apply_morph(mask, ops)
                mask = mask[inner]
                if not mask.any():
                    prev_right[c] = np.zeros(h, dtype=np.int64)
                    continue
                traced = trace_polygons(mask, connectivity, offset=(c0, r0))
                n = len(traced.polygons)
                offset = next_label - 1
                next_label += n
                pieces.append(traced.polygons)
                label_class.append(np.full(n, c, dtype=np.int64))
                if wr > 0:
                    lo, hi = max(c0 - 1, 0), min(c0 + w + 1, width)
                    row0 = np.zeros(hi - lo, dtype=np.int64)
                    row0[c0 - lo : c0 - lo + w] = shifted(traced.top, offset)
                    pairs.append(seam_pairs(prev_bottom[c][lo:hi], row0, diagonal))
                if wc > 0 and c in prev_right:
                    pairs.append(seam_pairs(prev_right[c], shifted(traced.left, offset), diagonal))
                prev_right[c] = shifted(traced.right, offset)
                cur_bottom[c][c0 : c0 + w] = shifted(traced.bottom, offset)
                if probs is not None:
                    psum, pmin = _confidence(
                        mask, traced, probs, c, Window(c0, r0, w, h), connectivity
                    )
                    stat_psum.append(psum)
                    stat_pmin.append(pmin)
            progress(1)
        prev_bottom = cur_bottom

    return merge_pieces(
        pieces, label_class, pairs, stat_psum if probs is not None else None, stat_pmin,
        n_rows * n_cols,
    )  # fmt: skip


def _confidence(
    mask: np.ndarray, traced: Traced, probs, class_id: int, window, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum and minimum of the class probability over each traced polygon's pixels."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=_structure(connectivity))
    from aerialct.geo.io import read_window

    band = read_window(probs, class_id + 1, window=window).astype(np.float64)
    # label of each polygon through one of its pixels
    lab = labels[traced.sample[:, 0], traced.sample[:, 1]]
    return (
        np.asarray(ndimage.sum_labels(band, labels, lab), dtype=np.float64),
        np.asarray(ndimage.minimum(band, labels, lab), dtype=np.float64),
    )
