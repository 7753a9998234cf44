"""The streaming core: window weights, the model loop and the accumulators.

Windows run row of windows by row of windows over a :class:`~aerialct.predict.plan.Frame`
(a whole scene, or the part of a mosaic that a block needs; the whole picture is in
:mod:`aerialct.predict`); rows above the next window row are final and go straight to
a :class:`RowSink`. On the CPU only the overlap rows are kept at full width
(:class:`RowAccumulator`); on a GPU a full-width accumulator of one window's height
lives in device memory (:class:`BandAccumulator`). Both are an :class:`Accumulator`
(one typed interface: built from an :class:`AccumulatorSpec`, fed batches, handing rows
to a :class:`RowWriter`). Peak memory grows with the frame's width, never with its
height.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from aerialct.classes import IGNORE_INDEX
from aerialct.errors import InputError
from aerialct.predict.plan import Frame
from aerialct.predict.reader import Batch, FrameInput, Reader
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


# ---------------------------------------------------------------------------
# The model loop and the accumulators


@dataclass
class GridStats:
    """What streaming a frame counted: windows run, model seconds, nodata and class pixels."""

    windows: int = 0
    forward_seconds: float = 0.0
    nodata: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))


class RowSink(Protocol):
    """Where finished rows of a frame go, top to bottom, each the frame's full width."""

    def write(self, cls: np.ndarray, p8: np.ndarray | None) -> None:
        """Rows ``cls`` (n, width) uint8, 255 where the input is nodata, and their
        probabilities ``p8`` (K, n, width) uint8 (0 at nodata) when asked for."""
        ...


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


def predict_frame(
    bundle: BundleLike,
    source: FrameInput,
    frame: Frame,
    sink: RowSink,
    *,
    probabilities: bool,
    tta: str | None,
    device: Any,
    progress: ProgressFn,
    label: str = "",
) -> GridStats:
    """Run every window of ``frame`` over ``source`` and hand its finished rows to ``sink``.

    The frame starts from empty sums; its rows are final where all the windows that
    cover them are in the frame (:mod:`aerialct.predict.plan`). With an area of interest,
    only windows that touch it run through the model; the others add nothing.
    """
    import torch

    grid = frame.grid
    size, K = grid.size, len(bundle.classes)
    progress(0, total=frame.windows, description=label or None)
    cuda = device.type == "cuda"
    weight = torch.from_numpy(blend_weights(size)).to(device)
    spec = _spec(frame, K, device, probabilities)
    accumulate: Accumulator = ACCUMULATORS.get(device.type, RowAccumulator)(spec)
    model = _TimedModel(bundle.model, cuda)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    )
    stats = GridStats(windows=frame.windows)
    with (
        torch.inference_mode(),
        _Writer(sink, stats, THREADED_WRITER.get(device.type, False)) as writer,
        Reader(source, frame, cuda) as reader,
    ):
        for batch in reader:
            xb = batch.x if torch.is_tensor(batch.x) else torch.from_numpy(batch.x)
            xb = bundle.normalize(xb.to(device, non_blocking=True).float())
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
    if accumulate.rows_done != frame.height:
        raise RuntimeError(f"internal error: wrote {accumulate.rows_done} of {frame.height} rows")
    return stats


def _spec(frame: Frame, K: int, device: Any, probabilities: bool) -> AccumulatorSpec:
    """The accumulator's view of ``frame``: local window rows, size, and the summed weights
    of the WHOLE grid over the frame (what the probabilities divide by)."""
    import torch

    grid = frame.grid
    wy = wx = None
    if probabilities:
        wy_all = weight_sum_1d(grid.height, grid.size, grid.rows)
        wx_all = weight_sum_1d(grid.width, grid.size, grid.cols)
        wy = torch.from_numpy(wy_all[frame.top : frame.bottom].copy()).to(device)
        wx = torch.from_numpy(wx_all[frame.left : frame.right].copy()).to(device)
    return AccumulatorSpec(
        classes=K,
        size=grid.size,
        rows=tuple(y - frame.top for y in frame.window_rows),
        height=frame.height,
        width=frame.width,
        device=device,
        wy=wy,
        wx=wx,
    )


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


@dataclass(frozen=True)
class AccumulatorSpec:
    """What an accumulator sums: ``classes`` (K) probabilities of windows of ``size`` over a
    ``height`` x ``width`` frame whose window rows start at ``rows`` (frame pixel rows).

    ``wy``/``wx`` are the summed blending weights along the frame's rows and columns (a
    tensor each, on ``device``); with them, finished rows also come out as probabilities.
    """

    classes: int
    size: int
    rows: tuple[int, ...]
    height: int
    width: int
    device: Any
    wy: Any = None
    wx: Any = None


class RowWriter(Protocol):
    """Where an accumulator hands its finished rows: class ids ``cls`` (n, W) uint8, the
    ``valid`` mask (n, W) and, when probabilities are asked for, ``p8`` (K, n, W) uint8."""

    def put(self, cls: np.ndarray, valid: np.ndarray, p8: np.ndarray | None) -> None: ...


class Accumulator(ABC):
    """The one interface of the accumulators (CPU: :class:`RowAccumulator`, GPU:
    :class:`BandAccumulator`): built from an :class:`AccumulatorSpec`, called with each
    batch's weighted window probabilities in batch order, they hand every finished row to a
    :class:`RowWriter` exactly once, top to bottom; ``rows_done`` counts them.
    """

    def __init__(self, spec: AccumulatorSpec) -> None:
        self.spec = spec
        self.wy, self.wx = spec.wy, spec.wx
        self.rows_done = 0

    @abstractmethod
    def __call__(self, batch: Batch, probs: Any, writer: RowWriter) -> None:
        """Add the weighted ``probs`` (B, K, S, S) of ``batch``; hand the rows it completes
        to ``writer``."""


class BandAccumulator(Accumulator):
    """A frame-wide accumulator of one window's height, in device memory (used on a GPU).

    Every pixel sums its windows in batch order (window row by window row, left to right).
    """

    def __init__(self, spec: AccumulatorSpec) -> None:
        import torch

        super().__init__(spec)
        # one-row batches: a window row starts where the rows done end
        self.acc = torch.zeros(
            (spec.classes, spec.size, spec.width), dtype=torch.float32, device=spec.device
        )

    def __call__(self, batch: Batch, probs: Any, writer: RowWriter) -> None:
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


class RowAccumulator(Accumulator):
    """One-row batches with only the overlap rows kept at full width (used on the CPU).

    For a window row at ``y`` (``h`` valid rows, the next row at ``y + d``), the
    windows of one batch are summed into a local buffer that spans only their
    columns. Columns left of the next batch's first window are then final for
    this row: their top ``d`` rows (plus what the previous row left in the carry)
    become class ids, their bottom ``h - d`` rows go into the carry for the next
    row; the columns still to be touched move on as the overhang. Full-width
    float memory is thus ``K x (S - step) x W`` (about ``S - stride`` rows) instead
    of ``K x S x W``. Every pixel sums the windows of each window row left to right,
    then adds what the earlier rows summed.
    """

    def __init__(self, spec: AccumulatorSpec) -> None:
        import torch

        super().__init__(spec)
        K, size, H, rows = spec.classes, spec.size, spec.height, spec.rows
        self.K, self.size, self.H, self.W, self.device = K, size, H, spec.width, spec.device
        self.next_top = {y: rows[i + 1] if i + 1 < len(rows) else H for i, y in enumerate(rows)}
        carry_rows = max([min(size, H - y) - (self.next_top[y] - y) for y in rows[:-1]], default=0)
        self.carry = torch.zeros(
            (K, max(carry_rows, 0), spec.width), dtype=torch.float32, device=spec.device
        )
        self.c = 0  # rows of the carry that belong to the current window row
        self.y: int | None = None
        self.h = self.d = 0
        self.overhang: Any = None
        self.cls_row: np.ndarray | None = None
        self.p_row: np.ndarray | None = None

    def __call__(self, batch: Batch, probs: Any, writer: RowWriter) -> None:
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
    """Masks and counts finished rows and hands them to the sink, on a background thread when
    ``threaded``.

    On a GPU the main thread goes straight back to launching the next batch while the
    sink compresses the rows just finished; on the CPU rows are written inline, which
    keeps no extra rows in memory.
    """

    def __init__(self, sink: RowSink, stats: GridStats, threaded: bool):
        self.sink = sink
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
        if exc_type is None and self.error is not None:
            raise self.error

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
        if p8 is not None:
            p8[:, invalid] = 0
        self.sink.write(cls, p8)


ACCUMULATORS: dict[str, type[Accumulator]] = {
    "cuda": BandAccumulator,
    "cpu": RowAccumulator,
}
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
