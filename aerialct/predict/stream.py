"""Seamless, streaming, georeferenced sliding-window inference (``aerialct predict``).

How a scene is predicted
------------------------
* Windows of the training chip size ``S`` step by ``stride = round(S * (1 - overlap))``;
  the last window of a row or column is shifted inside the scene so nothing is
  padded with invented pixels. Only a scene smaller than one window along an
  axis is padded (reflect), and the padded part of the prediction is dropped.
* Every window's softmax is multiplied by a separable raised-cosine weight with a
  floor (:func:`blend_weights`), strictly positive everywhere, and summed into an
  accumulator; the class is the argmax of the sum. The probability raster is the
  sum divided by the summed weights, which are separable too and computed once.
* Windows are spread evenly along each axis (every step <= stride, the last
  window ends at the edge), so overlaps are even.
* Streaming: windows are processed row of windows by row of windows; rows above
  the next window row are final and go straight to the output. On the CPU only
  the overlap rows (``S - step``) are kept at full width (:class:`_RowAccumulator`);
  on a GPU a full-width ``S + stride`` accumulator lives in device memory
  (:class:`_BandAccumulator`). Peak memory grows with the scene width, never
  with the scene height.
* A background thread reads and decodes the next windows (GDAL releases the GIL)
  while the model runs; weighting, accumulation and argmax run on the model's
  device, so on a GPU only uint8 windows go up and uint8 class rows come down.
* The class raster is streamed into a tiled GeoTIFF part file and finished as a
  COG with overviews (:mod:`aerialct.geo.cog`), all under a temporary name that is
  renamed when complete (:func:`aerialct.geo.io.atomic_output`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.errors import InputError
from aerialct.geo.cog import PART_OPTIONS, RowWriter, cog_options, finish_cog
from aerialct.geo.grid import stride_for, window_starts
from aerialct.geo.io import (
    atomic_output,
    check_output,
    class_tags,
    gtiff_profile,
    no_georef_warning,
    open_raster,
    read_failed,
    read_window,
    source_path,
    tag_class_raster,
    write_category_names,
)
from aerialct.progress import ProgressFn, as_progress

log = logging.getLogger("aerialct")

#: GSD ratio (either way) beyond which a scene is "far" from the training GSD
GSD_TOLERANCE = 1.25
#: --resample-to-training-gsd refuses to scale a scene by more than this factor either way
MAX_RESAMPLE = 8.0
#: a scene band whose mean lies further than this many training standard deviations from the
#: training mean, or whose spread differs by more than RANGE_RATIO, is not the imagery the
#: model was trained on (e.g. 16-bit pixels given to a model trained on 8-bit chips)
RANGE_SIGMAS = 6.0
RANGE_RATIO = 10.0
#: minimum of the blending weight relative to its centre value
WEIGHT_FLOOR = 0.05
PROB_SCALE = 255
TTA_MODES = (None, "flips")


class BundleLike(Protocol):
    """What prediction needs from :class:`aerialct.engine.checkpoint.InferenceBundle`."""

    model: Any
    classes: ClassTable
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    chip_size: int
    gsd: float | None

    def normalize(self, x: Any) -> Any: ...


@dataclass
class SceneResult:
    """What happened to one scene: ``status`` is "ok", "skipped" (a complete output was
    already there, ``--skip-existing``) or "failed" (then ``error`` says why)."""

    scene: Path
    status: str = "ok"
    output: Path | None = None
    probabilities: Path | None = None
    quicklook: Path | None = None
    width: int = 0
    height: int = 0
    windows: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0
    grid_seconds: float = 0.0
    pixels_per_second: float = 0.0
    nodata_pixels: int = 0
    class_pixels: dict[str, int] = field(default_factory=dict)
    gsd: float | None = None
    resampled: bool = False
    device: str = ""
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def overhead_share(self) -> float:
        """Share of the wall time spent outside the model forward (read, blend, write, COG)."""
        return 1.0 - self.forward_seconds / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "scene": str(self.scene),
            "status": self.status,
            "output": str(self.output) if self.output else None,
            "probabilities": str(self.probabilities) if self.probabilities else None,
            "quicklook": str(self.quicklook) if self.quicklook else None,
            "width": self.width,
            "height": self.height,
            "windows": self.windows,
            "seconds": round(self.seconds, 3),
            "forward_seconds": round(self.forward_seconds, 3),
            "grid_seconds": round(self.grid_seconds, 3),
            "overhead_share": round(self.overhead_share, 4) if self.seconds > 0 else None,
            "pixels_per_second": round(self.pixels_per_second, 1),
            "nodata_pixels": self.nodata_pixels,
            "class_pixels": self.class_pixels,
            "gsd": self.gsd,
            "resampled": self.resampled,
            "device": self.device,
            "error": self.error,
        }


@dataclass
class BatchResult:
    """The outcome of :func:`predict_scenes` on this rank."""

    scenes: list[SceneResult]
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1

    @property
    def ok(self) -> list[SceneResult]:
        return [s for s in self.scenes if s.status == "ok"]

    @property
    def failed(self) -> list[SceneResult]:
        return [s for s in self.scenes if s.status == "failed"]

    @property
    def skipped(self) -> list[SceneResult]:
        return [s for s in self.scenes if s.status == "skipped"]

    def to_dict(self) -> dict[str, Any]:
        px = sum(s.width * s.height for s in self.ok)
        return {
            "scenes": [s.to_dict() for s in self.scenes],
            "ok": len(self.ok),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "seconds": round(self.seconds, 3),
            "pixels_per_second": round(px / self.seconds, 1) if self.seconds > 0 else None,
            "rank": self.rank,
            "world_size": self.world_size,
        }


# ---------------------------------------------------------------------------
# Window layout and weights


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
# Input checks


def _data_bands(ds: Any, bands: Sequence[int] | None, in_chans: int, path: Path) -> list[int]:
    from rasterio.enums import ColorInterp

    if bands:
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise InputError(f"{path}: band(s) {bad} do not exist (it has {ds.count}); fix --bands")
        chosen = list(bands)
    else:
        chosen = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci != ColorInterp.alpha]
    if len(chosen) != in_chans:
        hint = " ".join(f"-b {i}" for i in range(1, in_chans + 1))
        raise InputError(
            f"{path}: {len(chosen)} data band(s) but the checkpoint was trained on {in_chans}; "
            f"pick the bands in training order with --bands (or gdal_translate {hint})"
        )
    return chosen


def scene_gsd(ds: Any) -> float | None:
    """Pixel size in map units for a north-up projected scene; None when not meaningful."""
    t = ds.transform
    if ds.crs is None or not ds.crs.is_projected or t.b != 0 or t.d != 0:
        return None
    return float((abs(t.a) + abs(t.e)) / 2)


def check_gsd(scene: float | None, training: float | None, path: Path) -> str | None:
    """A warning text when the scene's GSD is far from the training GSD, else None."""
    if scene is None or not training:
        return None
    ratio = scene / training
    if max(ratio, 1 / ratio) <= GSD_TOLERANCE:
        return None
    if max(ratio, 1 / ratio) > MAX_RESAMPLE:
        return (
            f"{path}: pixel size {scene:g} is {ratio:.2f}x the training pixel size {training:g}; "
            "predictions will be poor; use a model trained near this pixel size"
        )
    return (
        f"{path}: pixel size {scene:g} is {ratio:.2f}x the training pixel size {training:g}; "
        "predictions may be poor; pass --resample-to-training-gsd to predict at the training scale"
    )


def check_resample(scene: float, training: float, ds: Any, path: Path) -> None:
    """Refuse --resample-to-training-gsd beyond MAX_RESAMPLE (the size it would make, in words)."""
    ratio = scene / training
    if max(ratio, 1 / ratio) <= MAX_RESAMPLE:
        return
    w, h = math.ceil(ds.width * ratio), math.ceil(ds.height * ratio)
    raise InputError(
        f"{path}: --resample-to-training-gsd would scale the scene {ratio:.3g}x (pixel size "
        f"{scene:g} to the training {training:g}, {ds.width}x{ds.height} -> {w}x{h} px); it "
        f"refuses beyond {MAX_RESAMPLE:g}x: use a model trained near this pixel size"
    )


def check_value_range(ds: Any, bands: Sequence[int], bundle: BundleLike, path: Path) -> None:
    """Refuse a scene whose pixel values are not the kind the model was trained on.

    A thumbnail of at most 512 px (valid pixels only) is compared with the training
    statistics stored in the checkpoint: a band mean more than RANGE_SIGMAS training
    standard deviations away, or a spread RANGE_RATIO times larger or smaller, means
    the model would see values it never saw (16-bit or reflectance imagery given to
    a model trained on 8-bit chips) and answer with confident nonsense. An identity
    normalisation (mean 0, std 1) carries no training statistics and is not checked.
    """
    from rasterio.enums import Resampling

    if all(m == 0.0 for m in bundle.mean) and all(s == 1.0 for s in bundle.std):
        return

    scale = max(1.0, max(ds.width, ds.height) / 512)
    shape = (len(bands), max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
    data = read_window(ds, list(bands), out_shape=shape, resampling=Resampling.nearest, masked=True)
    for i, band in enumerate(bands):
        values = data[i].compressed().astype(np.float64)
        if values.size < 16:
            continue
        mean, std = float(values.mean()), float(values.std())
        t_mean, t_std = float(bundle.mean[i]), max(float(bundle.std[i]), 1e-6)
        far = abs(mean - t_mean) / t_std > RANGE_SIGMAS
        spread = std > 0 and not (1 / RANGE_RATIO <= std / t_std <= RANGE_RATIO)
        if far or spread:
            raise InputError(
                f"{path}: band {band} ({ds.dtypes[band - 1]}) has mean {mean:.4g} and spread "
                f"{std:.4g}, but the model was trained on mean {t_mean:.4g} and spread "
                f"{t_std:.4g}; it would predict nonsense: rescale the scene to the training "
                "range (for a model trained on 8-bit chips: gdal_translate -ot Byte -scale) or "
                "train on chips of this imagery"
            )


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


def resolve_device_name(device: str | None) -> str:
    """ "auto" -> "cuda" when available else "cpu"; under torchrun "cuda" -> "cuda:LOCAL_RANK"."""
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available here; use --device cpu")
    if name == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return name


def resolve_device(device: str | None, model: Any) -> Any:
    import torch

    if device in (None, ""):
        try:
            return next(model.parameters()).device
        except StopIteration:
            return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available here; use --device cpu")
    return dev


# ---------------------------------------------------------------------------
# The background reader


@dataclass
class _Batch:
    x: Any  # (B, C, S, S) numpy array or pinned tensor
    pos: list[tuple[int, int, int, int]]  # (y, x, h, w) in the grid; h, w = valid extent
    done_rows: list[np.ndarray]  # valid masks (n, width) of rows finished by this batch, in order
    final_to: int = 0  # one-row batches: columns < final_to of the row are final after it
    keep: list[bool] | None = None  # with an area of interest: the windows that touch it


_END = object()


class _Reader:
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

    def __enter__(self) -> _Reader:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.q.get_nowait()
        self.thread.join(timeout=60)

    def __iter__(self) -> Iterator[_Batch]:
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
            x = np.stack(xs)
            if self.pin:
                import torch

                x = torch.from_numpy(x).pin_memory()
            ok = self._put(_Batch(x, pos, done, final_to, keep if self.aoi is not None else None))
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
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(strip, ((0, 0), (0, ph), (0, pw)), mode=mode)


# ---------------------------------------------------------------------------
# The streaming core


@dataclass
class _GridStats:
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
        acc = None
        for dims in ((), (3,), (2,), (2, 3)):
            xi = torch.flip(x, dims) if dims else x
            p = torch.softmax(model(xi).float(), dim=1)
            p = torch.flip(p, dims) if dims else p
            acc = p if acc is None else acc + p
        return acc / 4.0


def _predict_grid(
    bundle: BundleLike,
    src: Any,
    bands: list[int],
    cls_ds: Any,
    prob_ds: Any | None,
    *,
    overlap: float,
    batch_size: int,
    tta: str | None,
    device: Any,
    progress: ProgressFn,
    label: str = "",
    aoi: Any = None,
) -> _GridStats:
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
    stride = stride_for(size, overlap)
    rows = window_starts(H, size, stride, even=True)
    cols = window_starts(W, size, stride, even=True)
    n_windows = len(rows) * len(cols)
    progress(0, total=n_windows, description=label or None)

    cuda = device.type == "cuda"
    rows_per_batch = _ROWS_PER_BATCH.get(device.type, 1)
    weight = torch.from_numpy(blend_weights(size)).to(device)
    wy = wx = None
    if prob_ds is not None:
        wy = torch.from_numpy(weight_sum_1d(H, size, rows)).to(device)
        wx = torch.from_numpy(weight_sum_1d(W, size, cols)).to(device)
    accumulate: _BandAccumulator | _RowAccumulator
    if rows_per_batch == 1:
        accumulate = _RowAccumulator(K, size, H, W, rows, device, wy, wx)
    else:
        accumulate = _BandAccumulator(K, size + stride, H, W, size, device, wy, wx)
    model = _TimedModel(bundle.model, cuda)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    )

    stats = _GridStats(windows=n_windows)
    with (
        torch.inference_mode(),
        _Writer(cls_ds, prob_ds, stats, _THREADED_WRITER.get(device.type, False)) as writer,
        _Reader(src, bands, size, rows, cols, batch_size, cuda, rows_per_batch, aoi=aoi) as reader,
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


class _BandAccumulator:
    """Full-width accumulator of ``rows`` scene rows (batches may span two window rows).

    Used on a GPU, where it lives in device memory: ``S + stride`` rows let a
    batch run on into the next window row, so batches stay full.
    """

    def __init__(self, K, rows, H, W, size, device, wy, wx) -> None:  # type: ignore[no-untyped-def]
        import torch

        self.acc = torch.zeros((K, min(rows, max(H, size)), W), dtype=torch.float32, device=device)
        self.wy, self.wx = wy, wx
        self.rows_done = 0

    def __call__(self, batch: _Batch, probs: Any, writer: _Writer) -> None:
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


class _RowAccumulator:
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

    def __call__(self, batch: _Batch, probs: Any, writer: _Writer) -> None:
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

    def __init__(self, cls_ds: Any, prob_ds: Any | None, stats: _GridStats, threaded: bool):
        self.cls_out = RowWriter(cls_ds, PART_OPTIONS["blockysize"])
        self.prob_out = RowWriter(prob_ds, PART_OPTIONS["blockysize"]) if prob_ds else None
        self.stats = stats
        self.error: BaseException | None = None
        self.q: queue.Queue | None = queue.Queue(maxsize=2) if threaded else None
        self.thread = threading.Thread(target=self._run, name="aerialct-writer", daemon=True)

    def __enter__(self) -> _Writer:
        if self.q is not None:
            self.thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.q is not None:
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


_ROWS_PER_BATCH = {"cuda": 2, "cpu": 1}
_THREADED_WRITER = {"cuda": True, "cpu": False}
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


# ---------------------------------------------------------------------------
# Output files


def output_paths(scene: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    stem = Path(scene).stem
    d = Path(out_dir)
    return {
        "classes": d / f"{stem}_classes.tif",
        "probabilities": d / f"{stem}_probabilities.tif",
        "quicklook": d / f"{stem}_quicklook.png",
    }


def _part_profile(src: Any, count: int, nodata: int | None) -> dict[str, Any]:
    prof = gtiff_profile(src.width, src.height, count, "uint8", src.crs, src.transform, nodata,
                         **PART_OPTIONS)  # fmt: skip
    if src.width < 16 or src.height < 16:
        prof["tiled"] = False
        del prof["blockxsize"], prof["blockysize"]
    return prof


def _tag_class_raster(ds: Any, classes: ClassTable, scene: Path) -> None:
    tag_class_raster(ds, classes, AERIALCT_SOURCE=scene.name)
    ds.set_band_description(1, "class")


def _tag_prob_raster(ds: Any, classes: ClassTable, scene: Path) -> None:
    for i, name in enumerate(classes.names):
        ds.set_band_description(i + 1, name)
    ds.update_tags(
        **class_tags(classes, AERIALCT_PROB_SCALE=str(PROB_SCALE), AERIALCT_SOURCE=scene.name)
    )


def _part_name(tmp: Path, tag: str) -> Path:
    # named "<tmp>.<tag>.tif" so atomic_output's clean-up of "<tmp>.*" removes it on error
    return tmp.with_name(f"{tmp.name}.{tag}.tif")


def _gdal_env(ds: Any, size: int, gpu: bool) -> Any:
    """GDAL settings for one scene, unless the user set them in the environment.

    The block cache is capped at a few window rows (GDAL's default, 5% of RAM,
    would let cached input and output blocks grow with the scene area). With a
    GPU, decoding and compression use all CPU cores (GDAL_NUM_THREADS) so that
    the reader keeps up with the model; on the CPU the cores belong to the model.
    """
    import rasterio

    opts: dict[str, Any] = {}
    if "GDAL_CACHEMAX" not in os.environ:
        # one window row of input (the next one overlaps it) and a block row of output
        rows = max(size, (ds.block_shapes[0][0] if ds.block_shapes else size))
        need = rows * ds.width * ds.count * np.dtype(ds.dtypes[0]).itemsize
        need += PART_OPTIONS["blockysize"] * ds.width * 2
        opts["GDAL_CACHEMAX"] = int(max(16 << 20, 1.25 * need))
    if gpu and "GDAL_NUM_THREADS" not in os.environ:
        opts["GDAL_NUM_THREADS"] = "ALL_CPUS"
    return rasterio.Env(**opts)


def _training_grid_vrt(ds: Any, gsd: float) -> Any:
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    t = ds.transform
    fx, fy = gsd / abs(t.a), gsd / abs(t.e)
    width, height = max(1, math.ceil(ds.width / fx)), max(1, math.ceil(ds.height / fy))
    transform = t @ Affine.scale(fx, fy)
    return WarpedVRT(
        ds,
        crs=ds.crs,
        transform=transform,
        width=width,
        height=height,
        resampling=Resampling.bilinear,
    )


def _warp_back(part: Path, like: Any, dest: Path, nodata: int | None, categorical: bool) -> None:
    """Stream ``part`` (on the training grid) onto the grid of ``like`` into a new part ``dest``."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    with rasterio.open(part) as p:
        vrt_kw: dict[str, Any] = {
            "crs": like.crs,
            "transform": like.transform,
            "width": like.width,
            "height": like.height,
            "resampling": Resampling.nearest if categorical else Resampling.bilinear,
        }
        if nodata is not None:
            vrt_kw["nodata"] = nodata
        prof = _part_profile(like, p.count, nodata)
        with WarpedVRT(p, **vrt_kw) as v, rasterio.open(dest, "w", **prof) as out:
            step = PART_OPTIONS["blockysize"]
            for y in range(0, like.height, step):
                win = Window(0, y, like.width, min(step, like.height - y))
                out.write(v.read(window=win), window=win)
            if categorical:
                out.write_colormap(1, p.colormap(1))
            out.update_tags(**p.tags())
            for i, d in enumerate(p.descriptions):
                if d:
                    out.set_band_description(i + 1, d)
    part.unlink(missing_ok=True)


def _class_histogram(path: Path) -> tuple[np.ndarray, int]:
    import rasterio

    hist = np.zeros(256, dtype=np.int64)
    with rasterio.open(path) as ds:
        for _, win in ds.block_windows(1):
            hist += np.bincount(ds.read(1, window=win).ravel(), minlength=256)
    return hist, int(hist[IGNORE_INDEX])


# ---------------------------------------------------------------------------
# Public API


def predict_scene(
    bundle: BundleLike,
    scene: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    overlap: float = 0.25,
    batch_size: int = 8,
    probabilities: bool = False,
    tta: str | None = None,
    device: str | None = None,
    creation_options: dict[str, str] | None = None,
    overwrite: bool = False,
    allow_no_crs: bool = False,
    resample_to_training_gsd: bool = False,
    bands: Sequence[int] | None = None,
    quicklook: bool = False,
    overview_resampling: str = "MODE",
    aoi: Any = None,
    progress: ProgressFn | None = None,
) -> SceneResult:
    """Predict one scene into the class raster ``out_path`` (uint8 COG, see the module docstring).

    With ``probabilities`` a K-band uint8 raster (255 = 1.0) is written beside it
    as ``<stem>_probabilities.tif`` (``<stem>`` from ``out_path`` minus a
    ``_classes`` suffix); with ``quicklook`` a PNG thumbnail ``<stem>_quicklook.png``.
    ``tta="flips"`` averages the four horizontal/vertical flips (4x the compute).
    ``aoi`` (a polygon file or the frame of :func:`aerialct.geo.vector.read_aoi`, any
    CRS) limits the work to windows that touch it; pixels outside it are nodata.
    Raises :class:`InputError` / :class:`RasterError` / :class:`OutputExistsError`.
    """
    import rasterio

    t_start = time.perf_counter()
    source = source_path(scene)  # a URL or /vsi path is opened as given
    scene = Path(scene)
    out_path = Path(out_path)
    if tta not in TTA_MODES:
        raise InputError(f"--tta {tta}: unknown; use 'flips' or leave it out")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    stride_for(int(bundle.chip_size), overlap)  # validates overlap
    stem = out_path.stem.removesuffix("_classes")
    prob_path = out_path.with_name(f"{stem}_probabilities.tif") if probabilities else None
    ql_path = out_path.with_name(f"{stem}_quicklook.png") if quicklook else None
    for p in (out_path, prob_path, ql_path):
        if p is not None:
            check_output(p, overwrite, inputs=[scene])
    co = cog_options(creation_options, overview_resampling)
    co_prob = cog_options(creation_options, "AVERAGE")

    dev = resolve_device(device, bundle.model)
    if dev.type == "cuda":  # the CPU cores are free to compress while the GPU works
        for opts in (co, co_prob):
            opts.setdefault("NUM_THREADS", "ALL_CPUS")
    bundle.model.to(dev)
    bundle.model.eval()
    result = SceneResult(scene=scene, device=str(dev))

    with contextlib.ExitStack() as stack:
        ds = stack.enter_context(open_raster(source, require_crs=not allow_no_crs))
        stack.enter_context(no_georef_warning(ds.crs is None))
        stack.enter_context(_gdal_env(ds, int(bundle.chip_size), dev.type == "cuda"))
        chosen = _data_bands(ds, bands, int(bundle.in_chans), scene)
        check_value_range(ds, chosen, bundle, scene)
        result.width, result.height = ds.width, ds.height
        result.gsd = scene_gsd(ds)
        src = ds
        if resample_to_training_gsd and bundle.gsd:
            if result.gsd is None:
                raise InputError(
                    f"{scene}: cannot resample to the training pixel size without a projected, "
                    "north-up CRS; warp it first (gdalwarp -t_srs EPSG:XXXX -tr ...)"
                )
            if check_gsd(result.gsd, bundle.gsd, scene) is not None:
                check_resample(result.gsd, float(bundle.gsd), ds, scene)
                src = stack.enter_context(_training_grid_vrt(ds, float(bundle.gsd)))
                result.resampled = True
                log.info("%s: predicting at the training pixel size %g", scene.name, bundle.gsd)
        else:
            msg = check_gsd(result.gsd, bundle.gsd, scene)
            if msg:
                log.warning(msg)

        aoi_geom = _aoi_for(aoi, src, scene)
        tmp_cls = stack.enter_context(atomic_output(out_path, overwrite))
        tmp_prob = stack.enter_context(atomic_output(prob_path, overwrite)) if prob_path else None
        part_cls = _part_name(tmp_cls, "part")
        part_prob = _part_name(tmp_prob, "part") if tmp_prob else None
        with contextlib.ExitStack() as files:
            cls_ds = files.enter_context(
                rasterio.open(part_cls, "w", **_part_profile(src, 1, IGNORE_INDEX))
            )
            _tag_class_raster(cls_ds, bundle.classes, scene)
            prob_ds = None
            if part_prob is not None:
                prob_ds = files.enter_context(
                    rasterio.open(part_prob, "w", **_part_profile(src, len(bundle.classes), None))
                )
                _tag_prob_raster(prob_ds, bundle.classes, scene)
            t_grid = time.perf_counter()
            stats = _predict_grid(
                bundle,
                src,
                chosen,
                cls_ds,
                prob_ds,
                overlap=overlap,
                batch_size=batch_size,
                tta=tta,
                device=dev,
                progress=as_progress(progress),
                label=scene.name,
                aoi=aoi_geom,
            )
        result.grid_seconds = time.perf_counter() - t_grid
        hist, nodata = stats.hist, stats.nodata
        if result.resampled:
            back = _part_name(tmp_cls, "grid")
            _warp_back(part_cls, ds, back, IGNORE_INDEX, categorical=True)
            part_cls = back
            if part_prob is not None:
                back_p = _part_name(tmp_prob, "grid")
                _warp_back(part_prob, ds, back_p, None, categorical=False)
                part_prob = back_p
            hist, nodata = _class_histogram(part_cls)
        finish_cog(part_cls, tmp_cls, co)
        if part_prob is not None:
            finish_cog(part_prob, tmp_prob, co_prob)
        if ql_path is not None:
            with atomic_output(ql_path, overwrite) as tmp_ql:
                ckpt = getattr(bundle, "path", None)
                title = scene.name + (f" · {Path(ckpt).name}" if ckpt else "")
                write_quicklook(ds, chosen, tmp_cls, tmp_ql, bundle.classes, title=title)
            result.quicklook = ql_path

    write_category_names(out_path, bundle.classes)  # gdalinfo / QGIS show the class names
    result.output = out_path
    result.probabilities = prob_path
    result.windows = stats.windows
    result.forward_seconds = stats.forward_seconds
    result.nodata_pixels = nodata
    result.class_pixels = {name: int(hist[i]) for i, name in enumerate(bundle.classes.names)}
    result.seconds = time.perf_counter() - t_start
    result.pixels_per_second = result.width * result.height / max(result.seconds, 1e-9)
    return result


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (shards numbered 1..N) -> (K, N); InputError otherwise."""
    k_text, sep, n_text = text.partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or n < 1 or not 1 <= k <= n:
        raise InputError(
            f"--shard {text}: give K/N with shards numbered 1..N, e.g. --shard 2/8 "
            "(SLURM: --shard $((SLURM_ARRAY_TASK_ID + 1))/$SLURM_ARRAY_TASK_COUNT)"
        )
    return k, n


def shard_scenes(paths: Sequence[Path], shard: tuple[int, int] | None) -> list[Path]:
    """The scenes of shard ``(K, N)``: every N-th of the paths sorted by name, starting at K.

    Sorting makes the split independent of the order a shell or a file system lists
    the scenes in, so N machines given the same set cover each scene exactly once.
    The chosen scenes keep the caller's order.
    """
    if shard is None:
        return list(paths)
    k, n = shard
    order = sorted(range(len(paths)), key=lambda i: str(paths[i]))
    mine = set(order[k - 1 :: n])
    return [p for i, p in enumerate(paths) if i in mine]


def complete_output(scene: Path, out: Path, *, probabilities: bool, quicklook: bool) -> bool:
    """Whether ``out`` (and the side outputs asked for) is a finished prediction of ``scene``.

    A file is taken as complete only when it opens, carries aerialct's class tag and
    names this scene as its source, and has the scene's size; a partial or foreign
    file is not (and ``predict`` then refuses to replace it without ``--overwrite``).
    """
    import rasterio

    from aerialct.geo.io import CLASSES_TAG, no_georef_warning

    paths = output_paths(scene, out.parent)
    wanted = [out] + ([paths["probabilities"]] if probabilities else [])
    try:
        with no_georef_warning(), rasterio.open(scene) as src:
            size = (src.width, src.height)
        for p in wanted:
            with no_georef_warning(), rasterio.open(p) as ds:
                tags = ds.tags()
                if CLASSES_TAG not in tags or tags.get("AERIALCT_SOURCE") != scene.name:
                    return False
                if (ds.width, ds.height) != size:
                    return False
    except Exception:
        return False
    return not quicklook or paths["quicklook"].is_file()


def _aoi_frame(aoi: Any) -> Any:
    if aoi is None or hasattr(aoi, "geometry"):
        return aoi
    from aerialct.geo.vector import read_aoi

    return read_aoi(aoi)


def _aoi_for(aoi: Any, src: Any, scene: Path) -> Any:
    """The area of interest in ``src``'s CRS, or None."""
    frame = _aoi_frame(aoi)
    if frame is None:
        return None
    if src.crs is None:
        raise InputError(f"{scene}: has no CRS, so --aoi cannot be placed on it; assign one")
    from aerialct.geo.vector import aoi_in_crs

    return aoi_in_crs(frame, src.crs)


def touches_aoi(scene: Path, aoi: Any) -> bool:
    """Whether the scene's footprint touches the area of interest (True without one)."""
    frame = _aoi_frame(aoi)
    if frame is None:
        return True
    import shapely

    from aerialct.geo.io import no_georef_warning

    with no_georef_warning(), open_raster(scene) as ds:
        geom = _aoi_for(frame, ds, scene)
        return bool(shapely.intersects(shapely.box(*ds.bounds), geom))


def predict_scenes(
    bundle: BundleLike,
    scenes: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    shard: tuple[int, int] | None = None,
    skip_existing: bool = False,
    progress: ProgressFn | None = None,
    **kwargs: Any,
) -> BatchResult:
    """Predict many scenes into ``out_dir`` as ``<stem>_classes.tif``; failures are recorded.

    ``shard=(K, N)`` keeps the K-th of N shares of the scenes (:func:`shard_scenes`),
    for array jobs. Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank then takes every
    ``world_size``-th scene starting at its ``RANK``; the result lists this rank's
    scenes only. With ``skip_existing`` a scene whose complete output exists
    (:func:`complete_output`) is skipped and reported as such. Keyword arguments go
    to :func:`predict_scene`.
    """
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    paths = [source_path(s) for s in scenes]
    stems = [Path(p).stem for p in paths]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise InputError(
            f"scenes {', '.join(dup)} share a file name and would write the same output; "
            "predict them into different --out folders"
        )
    mine = shard_scenes(paths, shard)[rank::world_size]
    aoi = _aoi_frame(kwargs.pop("aoi", None))
    if aoi is not None:
        kwargs["aoi"] = aoi
    t0 = time.perf_counter()
    results: list[SceneResult] = []
    for p in mine:
        out = output_paths(p, out_dir)["classes"]
        if skip_existing and complete_output(
            p,
            out,
            probabilities=bool(kwargs.get("probabilities")),
            quicklook=bool(kwargs.get("quicklook")),
        ):
            log.info("%s: complete output %s exists; skipped", p.name, out)
            side = output_paths(p, out_dir)
            results.append(
                SceneResult(
                    scene=p,
                    status="skipped",
                    output=out,
                    probabilities=side["probabilities"] if kwargs.get("probabilities") else None,
                    quicklook=side["quicklook"] if kwargs.get("quicklook") else None,
                )
            )
            continue
        try:
            if not touches_aoi(p, aoi):
                log.info("%s: outside the area of interest; skipped", p.name)
                results.append(SceneResult(scene=p, status="skipped", error="outside --aoi"))
                continue
            results.append(predict_scene(bundle, p, out, progress=progress, **kwargs))
        except Exception as e:  # one scene's failure must not stop the batch
            # recorded in the result, which the caller renders; visible with --verbose
            log.debug("%s: failed: %s", p, e)
            results.append(
                SceneResult(
                    scene=Path(p), status="failed", error=" ".join(str(e).split()), exception=e
                )
            )
    return BatchResult(results, time.perf_counter() - t0, rank, world_size)


# ---------------------------------------------------------------------------
# Quick-look


def write_quicklook(
    ds: Any,
    bands: Sequence[int],
    classes_path: Path,
    out_png: Path,
    classes: ClassTable,
    max_size: int = 1024,
    alpha: float = 0.45,
    title: str = "",
) -> None:
    """A PNG thumbnail of the scene (first three bands, 2-98% stretch) with the class colours over it.

    The map is framed with ``title`` above it and a legend of the class names and
    colours beside it (:mod:`aerialct.predict.quicklook`); the title is also the PNG's Title.
    """
    import rasterio
    from PIL.PngImagePlugin import PngInfo
    from rasterio.enums import Resampling

    from aerialct.predict.quicklook import frame_with_legend

    scale = max(ds.width, ds.height) / max_size
    w = max(1, round(ds.width / max(scale, 1)))
    h = max(1, round(ds.height / max(scale, 1)))
    rgb_bands = list(bands[:3]) if len(bands) >= 3 else [bands[0]] * 3
    img = ds.read(rgb_bands, out_shape=(3, h, w), resampling=Resampling.average).astype(np.float32)
    for i in range(3):
        lo, hi = np.percentile(img[i], (2, 98))
        img[i] = np.clip((img[i] - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    with rasterio.open(classes_path) as c:
        ids = c.read(1, out_shape=(h, w), resampling=Resampling.nearest)
    lut = np.zeros((256, 3), dtype=np.float32)
    for ci in classes:
        lut[ci.id] = ci.color
    over = np.moveaxis(lut[ids], -1, 0)
    a = np.where(ids == IGNORE_INDEX, 0.0, alpha)[None]
    out = (img * (1 - a) + over * a).round().clip(0, 255).astype(np.uint8)
    meta = PngInfo()
    meta.add_text("Title", title)
    framed = frame_with_legend(np.moveaxis(out, 0, -1), classes, title)
    framed.save(out_png, format="PNG", pnginfo=meta)
