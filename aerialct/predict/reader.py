"""The background reader: rows of windows read and decoded on a thread, handed out in batches."""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from aerialct.geo.io import read_failed, read_window
from aerialct.workers import signals_held


@dataclass
class Batch:
    """Windows for one forward pass, where they go, and the rows they complete."""

    x: Any  # (B, C, S, S) numpy array or pinned tensor
    pos: list[tuple[int, int, int, int]]  # (y, x, h, w) in the grid; h, w = valid extent
    done_rows: list[np.ndarray]  # valid masks (n, width) of rows finished by this batch, in order
    final_to: int = 0  # one-row batches: columns < final_to of the row are final after it
    keep: list[bool] | None = None  # with an area of interest: the windows that touch it


_END = object()


class Reader:
    """Reads rows of windows on a background thread and hands out batches in order.

    A batch holds windows of at most ``rows_per_batch`` consecutive window rows
    (1 or 2), so the accumulator needs ``S`` or ``S + stride`` rows. Each batch
    carries the validity masks of the window rows it completes.
    """

    def __init__(
        self,
        src: Any,
        bands: list[int],
        size: int,
        rows: list[int],
        cols: list[int],
        batch_size: int,
        pin: bool,
        rows_per_batch: int = 1,
        depth: int = 3,
        aoi: Any = None,
    ) -> None:
        self.rows_per_batch = rows_per_batch
        self.aoi = aoi  # a shapely geometry in the grid's CRS, or None
        self.src, self.bands, self.size = src, bands, size
        self.rows, self.cols, self.batch_size, self.pin = rows, cols, batch_size, pin
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="aerialct-reader", daemon=True)
        self.mask_mode, self.nodata = _mask_mode(src, bands)

    def __enter__(self) -> Reader:
        try:
            with signals_held():  # a signal now would leave the thread running unseen
                self.thread.start()
        except BaseException:  # the signal held back, raised as the hold ends
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the thread and wait for it, whatever arrives meanwhile: the dataset it
        reads is closed right after (a read of a closed dataset crashes the process)."""
        with signals_held():
            self.stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    self.q.get_nowait()
            if self.thread.ident is not None:
                self.thread.join(timeout=60)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            item = self.q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as e:
            self._put(e)
        else:
            self._put(_END)

    def _produce(self) -> None:
        from rasterio.windows import Window

        src, size = self.src, self.size
        H, W = src.height, src.width
        xs: list[np.ndarray] = []
        pos: list[tuple[int, int, int, int]] = []
        done: list[np.ndarray] = []
        keep: list[bool] = []
        first_row = 0

        def emit(final_to: int) -> bool:
            nonlocal xs, pos, done, keep
            x: Any = np.stack(xs)  # (B, C, S, S); a pinned tensor on a GPU
            if self.pin:
                import torch

                x = torch.from_numpy(x).pin_memory()
            ok = self._put(Batch(x, pos, done, final_to, keep if self.aoi is not None else None))
            xs, pos, done, keep = [], [], [], []
            return ok

        for j, y in enumerate(self.rows):
            h = min(size, H - y)
            win = Window(0, y, W, h)
            strip = read_window(src, self.bands, window=win)  # (C, h, W)
            valid = _valid(src, strip, win, self.mask_mode, self.nodata)  # (h, W) bool
            inside = None
            if self.aoi is not None:
                inside = _inside(self.aoi, src, win)  # (h, W) bool
                valid &= inside
            strip = _as_tensor_dtype(strip)
            if h < size or size > W:
                strip = _pad_reflect(strip, size)
            nxt = self.rows[j + 1] if j + 1 < len(self.rows) else H
            for x0 in self.cols:
                new_row = j >= first_row + self.rows_per_batch
                full = xs and (len(xs) >= self.batch_size or new_row)
                if full and not emit(W if new_row else x0):
                    return
                if not xs:
                    first_row = j
                xs.append(strip[:, :, x0 : x0 + size])
                pos.append((y, x0, h, min(size, W - x0)))
                keep.append(inside is None or bool(inside[:, x0 : x0 + size].any()))
            done.append(valid[: nxt - y])
            if self.stop.is_set():
                return
        if xs:
            emit(W)


def _inside(aoi: Any, src: Any, win: Any) -> np.ndarray:
    """Pixels of window ``win`` of ``src`` that touch the area of interest ``aoi``."""
    from rasterio.features import rasterize
    from rasterio.windows import transform as window_transform

    out = rasterize(
        [(aoi, 1)],
        out_shape=(int(win.height), int(win.width)),
        transform=window_transform(win, src.transform),
        fill=0,
        all_touched=True,
        dtype="uint8",
    )
    return out.astype(bool)


def _mask_mode(src: Any, bands: list[int]) -> tuple[str, Any]:
    """How to find invalid input pixels: "none", "nodata" (from the pixels read) or "dataset"."""
    from rasterio.enums import MaskFlags

    flags = [src.mask_flag_enums[b - 1] for b in bands]
    if all(MaskFlags.all_valid in f for f in flags):
        return "none", None
    nodatavals = [src.nodatavals[b - 1] for b in bands]
    if all(MaskFlags.nodata in f for f in flags) and len(set(map(repr, nodatavals))) == 1:
        return "nodata", nodatavals[0]
    return "dataset", None


def _valid(src: Any, strip: np.ndarray, win: Any, mode: str, nd: Any) -> np.ndarray:
    """True where the input holds data: a pixel is nodata only when all its bands are."""
    if mode == "none":
        return np.ones(strip.shape[1:], dtype=bool)
    if mode == "nodata":
        if isinstance(nd, float) and math.isnan(nd):
            return ~np.isnan(strip).all(axis=0)
        return (strip != np.asarray(nd, dtype=strip.dtype)).any(axis=0)
    from rasterio.errors import RasterioError

    try:
        return src.dataset_mask(window=win) != 0
    except RasterioError as e:
        raise read_failed(src.name, e, win) from None


def _as_tensor_dtype(a: np.ndarray) -> np.ndarray:
    """Keep uint8/int16/int32/float32 as is (torch handles them); widen the rest."""
    if a.dtype in (np.uint8, np.int16, np.int32, np.float32):
        return a
    if a.dtype in (np.uint16, np.int8):
        return a.astype(np.int32)
    return a.astype(np.float32)


def _pad_reflect(strip: np.ndarray, size: int) -> np.ndarray:
    _c, h, w = strip.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return strip
    mode: Literal["reflect", "edge"] = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(strip, ((0, 0), (0, ph), (0, pw)), mode=mode)
