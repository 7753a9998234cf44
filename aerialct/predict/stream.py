"""The streaming core: window weights, the model loop and the accumulators.

Windows run row of windows by row of windows (the whole picture is in
:mod:`aerialct.predict`); rows above the next window row are final and go
straight to the writer. On the CPU only the overlap rows are kept at full width
(:class:`RowAccumulator`); on a GPU a full-width ``S + stride`` accumulator
lives in device memory (:class:`BandAccumulator`). Peak memory grows with the
scene width, never with the scene height.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aerialct.classes import IGNORE_INDEX
from aerialct.errors import InputError
from aerialct.geo.cog import PART_BLOCK, RowWriter
from aerialct.geo.grid import window_starts
from aerialct.predict.reader import Batch, Reader
from aerialct.predict.results import BundleLike
from aerialct.progress import ProgressFn
from aerialct.workers import signals_held

#: minimum of the blending weight relative to its centre value
WEIGHT_FLOOR = 0.05
PROB_SCALE = 255


# ---------------------------------------------------------------------------
# Window weights


def weight_1d(size: int, floor: float = WEIGHT_FLOOR) -> np.ndarray:
    """Raised cosine over pixel centres, ``floor`` at the very edge, 1 in the middle."""
    t = (np.arange(size, dtype=np.float64) + 0.5) / size
    return (floor + (1.0 - floor) * np.sin(np.pi * t) ** 2).astype(np.float32)


def blend_weights(size: int, floor: float = WEIGHT_FLOOR) -> np.ndarray:
    """The 2-D blending window (size, size): outer product of :func:`weight_1d`; min > 0."""
    w = weight_1d(size, floor)
    return np.outer(w, w)


def weight_sum_1d(length: int, size: int, starts: Sequence[int], floor: float = WEIGHT_FLOOR):
    """Summed 1-D weights along an axis; the 2-D sum is the outer product (weights are separable)."""
    w = weight_1d(size, floor)
    total = np.zeros(max(length, size), dtype=np.float64)
    for s in starts:
        total[s : s + size] += w
    return total[:length].astype(np.float32)


def reduce_heap_fragmentation(threshold: int = 1 << 20) -> bool:
    """Ask glibc to serve allocations of ``threshold`` bytes and more with mmap.

    glibc raises its mmap threshold after large blocks are freed, so the window
    rows and strips that streaming allocates again and again (tens of MB on wide
    scenes) end up in heap arenas that are never returned: peak RSS then drifts
    up by about twice the width-dependent memory. A fixed threshold stops the
    drift. Process-wide, so the CLI calls it, not :func:`predict_scene`; returns
    False where there is no glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_MMAP_THRESHOLD = -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


# ---------------------------------------------------------------------------
# The model loop and the accumulators


@dataclass
class GridStats:
    """What streaming a grid counted: windows run, model seconds, nodata and class pixels."""

    windows: int = 0
    forward_seconds: float = 0.0
    nodata: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))


class _TimedModel:
    """Calls the model and adds up the time spent in it (CUDA events on a GPU, no sync)."""

    def __init__(self, model: Any, cuda: bool) -> None:
        self.model, self.cuda = model, cuda
        self.seconds = 0.0
        self._events: list[tuple[Any, Any]] = []

    def __call__(self, x: Any) -> Any:
        import torch

        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            y = self.model(x)
            end.record()
            self._events.append((start, end))
            return y
        t0 = time.perf_counter()
        y = self.model(x)
        self.seconds += time.perf_counter() - t0
        return y

    def total(self) -> float:
        if self.cuda and self._events:
            self._events[-1][1].synchronize()
            self.seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1000.0
            self._events.clear()
        return self.seconds


def _forward(model: Any, x: Any, tta: str | None, autocast: Any) -> Any:
    """Softmax probabilities (B, K, S, S) float32, averaged over the flips when ``tta``."""
    import torch

    with autocast():
        if tta is None:
            return torch.softmax(model(x).float(), dim=1)
        acc = torch.softmax(model(x).float(), dim=1)
        for dims in ((3,), (2,), (2, 3)):
            p = torch.softmax(model(torch.flip(x, dims)).float(), dim=1)
            acc = acc + torch.flip(p, dims)
        return acc / 4.0


def predict_grid(
    bundle: BundleLike,
    src: Any,
    bands: list[int],
    cls_ds: Any,
    prob_ds: Any | None,
    *,
    stride: int,
    batch_size: int,
    tta: str | None,
    device: Any,
    progress: ProgressFn,
    label: str = "",
    aoi: Any = None,
) -> GridStats:
    """Predict the whole grid of ``src`` into the open datasets ``cls_ds`` (and ``prob_ds``).

    With an area of interest ``aoi`` (a geometry in ``src``'s CRS), only windows that
    touch it run through the model; the others add nothing, and every pixel outside
    the area is written as nodata. Pixels inside get exactly the full run's values,
    since a window that adds to them touches the area.
    """
    import torch

    size = int(bundle.chip_size)
    K = len(bundle.classes)
    H, W = src.height, src.width
    rows = window_starts(H, size, stride, even=True)
    cols = window_starts(W, size, stride, even=True)
    n_windows = len(rows) * len(cols)
    progress(0, total=n_windows, description=label or None)

    cuda = device.type == "cuda"
    rows_per_batch = ROWS_PER_BATCH.get(device.type, 1)
    weight = torch.from_numpy(blend_weights(size)).to(device)
    wy = wx = None
    if prob_ds is not None:
        wy = torch.from_numpy(weight_sum_1d(H, size, rows)).to(device)
        wx = torch.from_numpy(weight_sum_1d(W, size, cols)).to(device)
    accumulate: BandAccumulator | RowAccumulator
    if rows_per_batch == 1:
        accumulate = RowAccumulator(K, size, H, W, rows, device, wy, wx)
    else:
        accumulate = BandAccumulator(K, size + stride, H, W, size, device, wy, wx)
    model = _TimedModel(bundle.model, cuda)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    )

    stats = GridStats(windows=n_windows)
    with (
        torch.inference_mode(),
        _Writer(cls_ds, prob_ds, stats, THREADED_WRITER.get(device.type, False)) as writer,
        Reader(src, bands, size, rows, cols, batch_size, cuda, rows_per_batch, aoi=aoi) as reader,
    ):
        for batch in reader:
            xb = batch.x if torch.is_tensor(batch.x) else torch.from_numpy(batch.x)
            xb = xb.to(device, non_blocking=True)
            xb = bundle.normalize(xb.float())
            if batch.keep is not None and not all(batch.keep):
                probs = _forward_kept(model, xb, batch.keep, K, tta, autocast)
                stats.windows -= batch.keep.count(False)
            else:
                probs = _forward(model, xb, tta, autocast)
            if probs.shape[1] != K or probs.shape[-2:] != (size, size):
                raise InputError(
                    f"the model returned {tuple(probs.shape)} for windows of {size}x{size} "
                    f"and {K} classes; the checkpoint's model and class table disagree"
                )
            probs.mul_(weight)  # (B, K, S, S)
            accumulate(batch, probs, writer)
            progress(len(batch.pos))
    stats.forward_seconds = model.total()
    if accumulate.rows_done != H:
        raise RuntimeError(f"internal error: wrote {accumulate.rows_done} of {H} rows")
    return stats


def _forward_kept(
    model: Any, xb: Any, keep: list[bool], K: int, tta: str | None, autocast: Any
) -> Any:
    """Probabilities of the kept windows; zeros (adding nothing) for the others."""
    import torch

    idx = torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long, device=xb.device)
    probs = torch.zeros((xb.shape[0], K, xb.shape[2], xb.shape[3]), device=xb.device)
    if len(idx):
        probs[idx] = _forward(model, xb[idx], tta, autocast).float()
    return probs


class BandAccumulator:
    """Full-width accumulator of ``rows`` scene rows (batches may span two window rows).

    Used on a GPU, where it lives in device memory: ``S + stride`` rows let a
    batch run on into the next window row, so batches stay full.
    """

    def __init__(self, K, rows, H, W, size, device, wy, wx) -> None:  # type: ignore[no-untyped-def]
        import torch

        self.acc = torch.zeros((K, min(rows, max(H, size)), W), dtype=torch.float32, device=device)
        self.wy, self.wx = wy, wx
        self.rows_done = 0

    def __call__(self, batch: Batch, probs: Any, writer: _Writer) -> None:
        """Add the weighted ``probs`` of ``batch``; hand the rows it completes to ``writer``."""
        acc, base = self.acc, self.rows_done
        for b, (y, x0, h, w) in enumerate(batch.pos):
            acc[:, y - base : y - base + h, x0 : x0 + w] += probs[b, :, :h, :w]
        for valid in batch.done_rows:
            n = valid.shape[0]
            cls = _argmax_rows(acc, n)
            p8 = None
            if self.wy is not None:
                p8 = _prob8(acc[:, :n], self.wy[self.rows_done : self.rows_done + n], self.wx)
            writer.put(cls, valid, p8)
            _shift_up(acc, n)
            self.rows_done += n


class RowAccumulator:
    """One-row batches with only the overlap rows kept at full width.

    For a window row at ``y`` (``h`` valid rows, the next row at ``y + d``), the
    windows of one batch are summed into a local buffer that spans only their
    columns. Columns left of the next batch's first window are then final for
    this row: their top ``d`` rows (plus what the previous row left in the carry)
    become class ids, their bottom ``h - d`` rows go into the carry for the next
    row; the columns still to be touched move on as the overhang. Full-width
    float memory is thus ``K x (S - step) x W`` (about ``S - stride`` rows) instead
    of ``K x S x W``.
    """

    def __init__(self, K, size, H, W, rows, device, wy, wx) -> None:  # type: ignore[no-untyped-def]
        import torch

        self.K, self.size, self.H, self.W, self.device = K, size, H, W, device
        self.wy, self.wx = wy, wx
        self.next_top = {y: rows[i + 1] if i + 1 < len(rows) else H for i, y in enumerate(rows)}
        carry_rows = max([min(size, H - y) - (self.next_top[y] - y) for y in rows[:-1]], default=0)
        self.carry = torch.zeros((K, max(carry_rows, 0), W), dtype=torch.float32, device=device)
        self.c = 0  # rows of the carry that belong to the current window row
        self.y: int | None = None
        self.h = self.d = 0
        self.overhang: Any = None
        self.cls_row: np.ndarray | None = None
        self.p_row: np.ndarray | None = None
        self.rows_done = 0

    def __call__(self, batch: Batch, probs: Any, writer: _Writer) -> None:
        """Add the weighted ``probs`` of ``batch``; hand a finished window row to ``writer``."""
        import torch

        K, W = self.K, self.W
        y = batch.pos[0][0]
        if y != self.y:  # a new window row
            self.y, self.h, self.d = y, min(self.size, self.H - y), self.next_top[y] - y
            self.overhang = None
            self.cls_row = np.empty((self.d, W), dtype=np.uint8)
            self.p_row = None if self.wy is None else np.empty((K, self.d, W), dtype=np.uint8)
        h, d = self.h, self.d
        x_first = batch.pos[0][1]
        x_end = max(x + w for _, x, _, w in batch.pos)
        local = torch.zeros((K, h, x_end - x_first), dtype=torch.float32, device=self.device)
        if self.overhang is not None:
            local[:, :, : self.overhang.shape[2]] += self.overhang
        for b, (_, x, hh, w) in enumerate(batch.pos):
            local[:, :, x - x_first : x - x_first + w] += probs[b, :, :hh, :w]
        f0, f1 = x_first, batch.final_to  # columns final for this row after this batch
        total = local[:, :, : f1 - f0]
        if self.c:
            total[:, : self.c] += self.carry[:, : self.c, f0:f1]
        assert self.cls_row is not None
        self.cls_row[:, f0:f1] = _argmax_rows(total, d)
        if self.p_row is not None:
            self.p_row[:, :, f0:f1] = _prob8(total[:, :d], self.wy[y : y + d], self.wx[f0:f1])
        if h > d:
            self.carry[:, : h - d, f0:f1] = total[:, d:]
        self.overhang = local[:, :, f1 - f0 :].clone() if f1 - f0 < local.shape[2] else None
        if batch.done_rows:  # this batch ends the window row
            (valid,) = batch.done_rows
            writer.put(self.cls_row, valid, self.p_row)
            self.c = h - d
            self.rows_done += d
            self.y = None


class _Writer:
    """Masks, counts and writes finished rows, on a background thread when ``threaded``.

    On a GPU the main thread goes straight back to launching the next batch while
    GDAL compresses the rows just finished; on the CPU rows are written inline,
    which keeps no extra rows in memory.
    """

    def __init__(self, cls_ds: Any, prob_ds: Any | None, stats: GridStats, threaded: bool):
        self.cls_out = RowWriter(cls_ds, PART_BLOCK)
        self.prob_out = RowWriter(prob_ds, PART_BLOCK) if prob_ds else None
        self.stats = stats
        self.error: BaseException | None = None
        self.q: queue.Queue | None = queue.Queue(maxsize=2) if threaded else None
        self.thread = threading.Thread(target=self._run, name="aerialct-writer", daemon=True)

    def __enter__(self) -> _Writer:
        if self.q is not None:
            try:
                with signals_held():  # see Reader.__enter__
                    self.thread.start()
            except BaseException:
                self.__exit__(BaseException)
                raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.q is not None and self.thread.ident is not None:
            with signals_held():  # the thread writes into datasets closed right after
                self.q.put(None)
                self.thread.join()
        if exc_type is None:
            if self.error is not None:
                raise self.error
            self.cls_out.close()
            if self.prob_out is not None:
                self.prob_out.close()

    def put(self, cls: np.ndarray, valid: np.ndarray, p8: np.ndarray | None) -> None:
        if self.error is not None:
            raise self.error
        if self.q is None:
            self._write(cls, valid, p8)
        else:
            self.q.put((cls, valid, p8))

    def _run(self) -> None:
        assert self.q is not None
        while (item := self.q.get()) is not None:
            if self.error is None:  # after an error, only drain
                try:
                    self._write(*item)
                except BaseException as e:
                    self.error = e

    def _write(self, cls: np.ndarray, valid: np.ndarray, p8: np.ndarray | None) -> None:
        invalid = ~valid
        cls[invalid] = IGNORE_INDEX
        self.stats.nodata += int(invalid.sum())
        self.stats.hist += np.bincount(cls.ravel(), minlength=256)
        self.cls_out.write(cls[None])
        if p8 is not None and self.prob_out is not None:
            p8[:, invalid] = 0
            self.prob_out.write(p8)


ROWS_PER_BATCH = {"cuda": 2, "cpu": 1}
THREADED_WRITER = {"cuda": True, "cpu": False}
_COL_CHUNK = 2048  # columns per argmax / probability step: bounds the temporaries


def _argmax_rows(acc: Any, n: int) -> np.ndarray:
    """Class ids (n, W) uint8 of the first ``n`` accumulator rows."""
    import torch

    K, _, W = acc.shape
    out = torch.empty((n, W), dtype=torch.uint8, device=acc.device)
    if acc.device.type != "cpu":
        for c in range(0, W, _COL_CHUNK):
            out[:, c : c + _COL_CHUNK] = acc[:, :n, c : c + _COL_CHUNK].argmax(dim=0)
        return out.cpu().numpy()
    # torch's CPU argmax over a strided leading axis is slow; K running-max passes
    # are ~50x faster and pick the first maximum, like argmax
    for c in range(0, W, _COL_CHUNK):
        block = acc[:, :n, c : c + _COL_CHUNK]
        best = block[0].clone()
        idx = out[:, c : c + _COL_CHUNK]
        idx.zero_()
        for k in range(1, K):
            gt = block[k] > best
            idx.masked_fill_(gt, k)
            torch.maximum(best, block[k], out=best)
    return out.numpy()


def _prob8(block: Any, wy: Any, wx: Any) -> np.ndarray:
    """Probabilities (K, n, w) uint8 (255 = 1.0): weighted sums ``block`` over the summed weights."""
    import torch

    K, n, W = block.shape
    out = torch.empty((K, n, W), dtype=torch.uint8, device=block.device)
    for c in range(0, W, _COL_CHUNK):
        p = block[:, :, c : c + _COL_CHUNK] / (wy[:, None] * wx[None, c : c + _COL_CHUNK])
        out[:, :, c : c + _COL_CHUNK] = p.mul_(PROB_SCALE).round_().clamp_(0, PROB_SCALE)
    return out.cpu().numpy()


def _shift_up(acc: Any, n: int) -> None:
    """Move accumulator rows [n, end) to [0, end - n) in place and zero the rest.

    Copies go top-down in slices of at most ``n`` rows, so source and destination
    of one copy never overlap and no full-size temporary is made.
    """
    rows = acc.shape[1]
    keep = rows - n
    for i in range(0, keep, n):
        m = min(n, keep - i)
        acc[:, i : i + m] = acc[:, i + n : i + n + m]
    acc[:, keep:] = 0
