"""The background reader: rows of windows of a frame read and decoded on a thread, in batches."""

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
from aerialct.predict.plan import Frame
from aerialct.workers import signals_held


@dataclass
class Batch:
    """Windows for one forward pass, where they go, and the rows they complete.

    Positions are in the frame's pixels. A batch holds windows of one window row: the
    canonical batches of :mod:`aerialct.predict.plan`.
    """

    x: Any  # (B, C, S, S) numpy array or pinned tensor
    pos: list[tuple[int, int, int, int]]  # (y, x, h, w) in the frame; h, w = valid extent
    done_rows: list[np.ndarray]  # valid masks (n, width) of the rows this batch finishes
    final_to: int = 0  # columns < final_to of the row are final after this batch
    keep: list[bool] | None = None  # with an area of interest: the windows that touch it


@dataclass(frozen=True)
class FrameInput:
    """What a frame is read from: the raster, its bands, and what limits the valid pixels.

    ``aoi`` is a geometry in ``src``'s CRS (only windows that touch it run; pixels
    outside are nodata); ``cover`` the pixel rectangles ``(top, bottom, left, right)`` of
    ``src`` that hold data, an (n, 4) integer array (a catalog's tiles: its gaps are
    nodata), None for all.
    """

    src: Any
    bands: list[int]
    aoi: Any = None
    cover: np.ndarray | None = None


_END = object()


class Reader:
    """Reads the window rows of a frame on a background thread and hands out batches in order.

    Each window row is read once as a strip of the frame's width; its windows go out
    in groups of the grid's batch size counted from the frame's first window column
    (the frame starts on a batch boundary, so these are the canonical batches).
    """

    def __init__(self, source: FrameInput, frame: Frame, pin: bool, depth: int = 3) -> None:
        self.source, self.frame, self.pin = source, frame, pin
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="aerialct-reader", daemon=True)
        self.mask_mode, self.nodata = _mask_mode(source.src, source.bands)

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
        frame = self.frame
        grid, top, left = frame.grid, frame.top, frame.left
        rows, cols = frame.window_rows, frame.window_cols
        B = max(1, grid.batch_size)
        for j, y in enumerate(rows):
            strip, valid, inside = self._strip(y)
            nxt = rows[j + 1] if j + 1 < len(rows) else frame.bottom
            h = min(grid.size, grid.height - y)
            for g in range(0, len(cols), B):
                group = cols[g : g + B]
                last = g + B >= len(cols)
                xs = [strip[:, :, x - left : x - left + grid.size] for x in group]
                x: Any = np.stack(xs)  # (B, C, S, S); a pinned tensor on a GPU
                if self.pin:
                    import torch

                    x = torch.from_numpy(x).pin_memory()
                pos = [(y - top, x0 - left, h, min(grid.size, grid.width - x0)) for x0 in group]
                keep = None
                if inside is not None:
                    keep = [
                        bool(inside[:, x0 - left : x0 - left + grid.size].any()) for x0 in group
                    ]
                final_to = frame.width if last else cols[g + B] - left
                done = [valid[: nxt - y]] if last else []
                if not self._put(Batch(x, pos, done, final_to, keep)):
                    return
            if self.stop.is_set():
                return

    def _strip(self, y: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Window row ``y`` of the frame: pixels (C, >=S, >=width), valid mask (h, width) and,
        with an area of interest, the pixels that touch it."""
        from rasterio.windows import Window

        frame, source = self.frame, self.source
        grid = frame.grid
        h = min(grid.size, grid.height - y)
        win = Window(frame.left, y, frame.width, h)
        src = source.src
        strip = read_window(src, source.bands, window=win)  # (C, h, width)
        valid = _valid(src, strip, win, self.mask_mode, self.nodata)  # (h, width) bool
        if source.cover is not None:
            valid &= _covered(source.cover, y, h, frame.left, frame.width)
        inside = None
        if source.aoi is not None:
            inside = _inside(source.aoi, src, win)  # (h, width) bool
            valid &= inside
        strip = _as_tensor_dtype(strip)
        if h < grid.size or grid.size > grid.width:
            strip = _pad_reflect(strip, grid.size)
        return strip, valid, inside


def _covered(cover: np.ndarray, y: int, h: int, left: int, width: int) -> np.ndarray:
    """Pixels of rows ``[y, y + h)``, columns ``[left, left + width)`` inside a rectangle of ``cover``."""
    out = np.zeros((h, width), dtype=bool)
    near = (cover[:, 0] < y + h) & (cover[:, 1] > y) & (cover[:, 2] < left + width)
    near &= cover[:, 3] > left
    for top, bottom, x0, x1 in cover[near].tolist():
        t0, b0, l0, r0 = max(top, y), min(bottom, y + h), max(x0, left), min(x1, left + width)
        if t0 < b0 and l0 < r0:
            out[t0 - y : b0 - y, l0 - left : r0 - left] = True
    return out


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
