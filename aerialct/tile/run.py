"""Cut georeferenced scenes into training chips (the chips format: :mod:`aerialct.data.index`).

Two entry points share one engine (:func:`run`):

* :func:`tile_scenes`: any GeoTIFFs, with label rasters (class ids or RGB colours)
  or polygons rasterised onto each image grid, or no labels at all;
* :func:`tile_potsdam`: the ISPRS Potsdam release (official names, legend, standard
  split, eroded test labels, the CT protocol of 500 px crops resized to 512).

The chip grid of a scene starts at (0, 0) and steps by ``stride``; the last window
along each axis is shifted back inside the scene so it ends on the edge (no fake
padding; :func:`aerialct.geo.grid.window_starts`). Only a scene smaller than a
window is padded (image with nodata or 0, mask with 255). Every chip is a GeoTIFF
whose CRS and transform are exactly its place in the scene (scaled when resized).

Work is split into tasks of one row band of windows per scene
(:mod:`aerialct.tile.worker`); each task reads the band's rows once (all columns),
cuts its chips and writes them. Tasks run in one process or a pool of them, each
decoding its bands on GDAL's threads (:func:`plan`). Everything is written
into a temporary sibling folder that is renamed to the output only when the index
is complete, so a failed or interrupted run leaves nothing behind under the output
name.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from aerialct import __version__, resume
from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.data import potsdam as pots
from aerialct.data.index import SPLITS, ChipRow, ChipsHeader, chips_columns, write_chips
from aerialct.errors import DiskFullError, InputError
from aerialct.geo.grid import window_starts
from aerialct.geo.inputs import redact
from aerialct.geo.outputs import (
    FOLDER,
    check_output,
    disk_full,
    move_into_place,
    remove_stale_temps,
)
from aerialct.progress import ProgressFn, as_progress
from aerialct.resume import parts_dir
from aerialct.shards import Shard, shard_items
from aerialct.tile.advice import check_trainable, recipe_advice
from aerialct.tile.result import SceneReport, TileResult
from aerialct.tile.scenes import (
    Scene,
    attach_label_rasters,
    attach_vector_labels,
    check_label_options,
    inspect_image,
    potsdam_scenes,
)
from aerialct.tile.stats import band_statistics, split_shares, top_counts, warn_one_sided
from aerialct.tile.work import Record, Work, fingerprint, task_id
from aerialct.tile.worker import BandResult, Job, release_kept, tile_band
from aerialct.workers import run_in_workers, usable_cpus

log = logging.getLogger("aerialct")

DEFAULT_CREATION_OPTIONS = {"COMPRESS": "DEFLATE"}
"""Chips are DEFLATE-compressed GeoTIFFs unless ``creation_options`` say otherwise."""
DEFAULT_SIZE = 512
"""The window (and chip) size of the general mode, in scene pixels."""
LABEL_MODES = {"ids": "raster", "rgb": "rgb", "vector": "vector"}
"""dataset.json's ``label_mode`` for each kind of scene labels."""


@dataclass
class Options:
    """How to cut: the window grid, chip size, skipping, val blocks, workers and GTiff options."""

    size: int = DEFAULT_SIZE
    stride: int | None = None
    resize: int | None = None
    nodata_threshold: float = 0.5
    val_fraction: float = 0.0
    val_block: int | None = None
    seed: int = 0
    workers: int | None = None
    creation_options: dict[str, str] | None = None
    aoi: str | os.PathLike | None = None


CPUS_PER_WORKER = 4
"""Without ``workers`` and with uncompressed chips: one worker process per this many CPUs, at
least one (see :func:`plan`)."""
MAX_DEFAULT_WORKERS = 8
"""Without ``workers``, at most this many processes: each holds a band of rows and its block
cache (hundreds of MB for a wide 16-bit scene), so a many-core machine is not filled with
them unasked; ``-j`` sets more."""


@dataclass
class _Grid:
    """Windows of ``window`` scene pixels every ``stride``, written as ``chip`` px chips."""

    window: int
    stride: int
    chip: int


# --------------------------------------------------------------------------- checks


def _positive(v: int, name: str) -> int:
    if int(v) <= 0:
        raise InputError(f"{name} {v}: must be a positive number of pixels")
    return int(v)


def _check_options(opts: Options) -> _Grid:
    """The window grid of ``opts``, once its numbers are in range (InputError naming the option)."""
    grid = _Grid(
        window=_positive(opts.size, "--size"),
        stride=_positive(opts.size if opts.stride is None else opts.stride, "--stride"),
        chip=_positive(opts.size if opts.resize is None else opts.resize, "--resize"),
    )
    if not 0.0 <= opts.nodata_threshold <= 1.0:
        raise InputError(f"--nodata-threshold {opts.nodata_threshold}: must be between 0 and 1")
    if not 0.0 <= opts.val_fraction < 1.0:
        raise InputError(f"--val-fraction {opts.val_fraction}: must be in [0, 1)")
    if opts.workers is not None and opts.workers < 1:
        raise InputError(f"--workers {opts.workers}: must be at least 1")
    return grid


def _check_scenes(scenes: list[Scene], warnings: list[str]) -> None:
    """Scenes tiled together have distinct names, one band count, dtype and CRS."""
    names = Counter(s.name for s in scenes)
    dup = [n for n, k in names.items() if k > 1]
    if dup:
        raise InputError(
            f"scene name {dup[0]!r} appears twice; give images with distinct file names"
        )
    first = scenes[0]
    for sc in scenes[1:]:
        if (sc.count, sc.dtype) != (first.count, first.dtype):
            raise InputError(
                f"{sc.image}: {sc.count} bands of {sc.dtype}, but {first.image} has {first.count} "
                f"of {first.dtype}; tile them into separate chip folders"
            )
        if sc.crs_wkt != first.crs_wkt and not _same_crs(sc.crs_wkt, first.crs_wkt):
            raise InputError(
                f"{sc.image}: CRS differs from {first.image}; reproject it (gdalwarp -t_srs) "
                "or tile them into separate chip folders"
            )
    gsds = [abs(s.transform[0]) for s in scenes]
    if max(gsds) > 1.01 * min(gsds):
        warnings.append(f"scenes have different pixel sizes ({min(gsds)}..{max(gsds)})")


def _same_crs(a: str, b: str) -> bool:
    from pyproj import CRS

    return CRS.from_wkt(a).equals(CRS.from_wkt(b))


def _creation_options(creation_options: dict[str, str] | None) -> dict[str, str]:
    """GTiff creation options of the chips (upper-case keys), checked when given."""
    co = dict(DEFAULT_CREATION_OPTIONS if creation_options is None else creation_options)
    co = {k.upper(): str(v) for k, v in co.items()}
    if creation_options:
        from aerialct.geo.cog import check_creation_options

        check_creation_options("GTiff", co)
    return co


# --------------------------------------------------------------------------- windows


def _assign_splits(
    scenes: list[Scene],
    grids: list[tuple[list[int], list[int]]],
    window: int,
    val_fraction: float,
    val_block: int,
    seed: int,
    warnings: list[str],
) -> list[dict[tuple[int, int], str]]:
    """Split per chip: the scene's split, and with ``val_fraction`` whole spatial blocks to val."""
    out = []
    for sc, (rows, cols) in zip(scenes, grids, strict=True):
        out.append({(r, c): sc.split or "train" for r in rows for c in cols})
    if val_fraction <= 0:
        return out
    blocks: dict[tuple[int, int, int], list[tuple[int, int, int]]] = {}
    for k, (sc, (rows, cols)) in enumerate(zip(scenes, grids, strict=True)):
        if (sc.split or "train") != "train":
            continue
        hr, wc = min(window, sc.height), min(window, sc.width)
        for r in rows:
            for c in cols:
                key = (k, (r + hr // 2) // val_block, (c + wc // 2) // val_block)
                blocks.setdefault(key, []).append((k, r, c))
    keys = sorted(blocks)
    if len(keys) < 2:
        warnings.append(
            f"--val-fraction {val_fraction}: only {len(keys)} spatial block of {val_block} px; "
            "no validation chips (use a smaller --val-block)"
        )
        return out
    n_val = min(len(keys) - 1, max(1, round(val_fraction * len(keys))))
    order = np.random.default_rng(seed).permutation(len(keys))
    for idx in order[:n_val]:
        for k, r, c in blocks[keys[idx]]:
            out[k][(r, c)] = "val"
    return out


def _windows_in_aoi(
    scenes: list[Scene], grids: list, window: int, aoi: str | os.PathLike
) -> list[set[tuple[int, int]]]:
    """Per scene, the (row, col) offsets of windows that touch the area of interest."""
    import shapely
    from affine import Affine
    from pyproj import CRS

    from aerialct.geo.vector import aoi_in_crs, read_aoi

    frame = read_aoi(aoi)
    out: list[set[tuple[int, int]]] = []
    for sc, (rr, cc) in zip(scenes, grids, strict=True):
        geom = aoi_in_crs(frame, CRS.from_wkt(sc.crs_wkt))
        t = Affine(*sc.transform)
        r = np.repeat(np.asarray(rr, dtype=np.float64), len(cc))
        c = np.tile(np.asarray(cc, dtype=np.float64), len(rr))
        # affine maps arrays of points too; its stubs say floats only
        x0, y0 = t @ (c, r)  # type: ignore[operator]
        x1, y1 = t @ (c + window, r + window)  # type: ignore[operator]
        boxes = shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1),
                            np.maximum(y0, y1))  # fmt: skip
        hit = shapely.intersects(boxes, geom)
        out.append({(int(a), int(b)) for a, b, h in zip(r, c, hit, strict=True) if h})
    if not any(out):
        raise InputError(
            f"--aoi {aoi}: touches no window of {', '.join(s.image for s in scenes)}; check "
            "its CRS and that it covers the scenes"
        )
    return out


def _jobs(
    scenes: list[Scene],
    grids: list[tuple[list[int], list[int]]],
    splits: list[dict[tuple[int, int], str]],
    kept: list[set[tuple[int, int]]] | None,
    common: dict[str, Any],
) -> list[tuple[int, Job]]:
    """One (scene number, task) per row band holding windows to cut."""
    jobs = []
    for k, (sc, (rr, cc)) in enumerate(zip(scenes, grids, strict=True)):
        for r in rr:
            cols = cc if kept is None else [c for c in cc if (r, c) in kept[k]]
            if cols:
                split = [splits[k][(r, c)] for c in cols]
                jobs.append((k, Job(scene=sc, row=r, cols=cols, splits=split, **common)))
    return jobs


# --------------------------------------------------------------------------- running


def plan(workers: int | None, tasks: int, compressed: bool) -> tuple[int, int]:
    """``(processes, decoding threads per process)`` for ``tasks`` band tasks.

    Measured on 2 CPUs with a 6000² DEFLATE scene (benchmarks/RESULTS.md):

    - uncompressed chips: decoding is most of a task, and GDAL decodes a band's blocks
      on several threads for no more CPU time, while a second process costs its fork,
      its own GDAL and caches competing for the cores. One process decoding on 2
      threads cut the scene in the wall time of 2 processes, with 0.1-0.17 CPU s less.
      So one process per CPUS_PER_WORKER CPUs, the CPUs shared out as decoding threads.
    - compressed chips (the default, DEFLATE): compressing them is most of a task and
      runs in the task's thread; 2 processes took 2.5 s against 4.0 s for one. So one
      process per CPU.

    ``workers`` sets the processes (by default at most MAX_DEFAULT_WORKERS); never more
    processes than tasks.
    """
    cpus = usable_cpus()
    if workers is None:
        workers = cpus if compressed else max(1, cpus // CPUS_PER_WORKER)
        workers = min(workers, MAX_DEFAULT_WORKERS)
    procs = max(1, min(workers, tasks))
    return procs, max(1, cpus // procs)


def _cut(jobs: list[tuple[int, Job]], workers: int | None, prog: Any, work: Work) -> None:
    """Run the band tasks (in the processes :func:`plan` gives), recording each as it finishes."""
    co = jobs[0][1].creation_options if jobs else {}
    procs, threads = plan(workers, len(jobs), co.get("COMPRESS", "NONE").upper() != "NONE")
    jobs = [(k, replace(job, read_threads=threads)) for k, job in jobs]

    def collect(job: Job, res: BandResult) -> None:
        work.save(task_id(job), res)
        prog(len(job.cols))

    if procs == 1:
        try:
            for _, job in jobs:
                collect(job, tile_band(job))
        finally:
            release_kept()
    else:
        for _, job, res in run_in_workers(tile_band, jobs, procs):
            collect(job, res)


def _gather(
    jobs: list[tuple[int, Job]], records: list[Record], reports: list[SceneReport]
) -> tuple[list[ChipRow], dict[str, list[np.ndarray]]]:
    """The index rows and pixel samples of every task, in task order (scene, then row: the
    band statistics do not depend on which tasks finished first); reports filled in."""
    rows: list[ChipRow] = []
    samples: dict[str, list[np.ndarray]] = {}
    for (k, _), rec in zip(jobs, records, strict=True):
        rows.extend(rec.rows)
        for s, arr in rec.samples.items():
            samples.setdefault(s, []).append(arr)
        rep = reports[k]
        rep.chips += len(rec.rows)
        rep.skipped_nodata += rec.skipped
        for key, n in rec.unknown.items():
            rep.unknown_values[key] = rep.unknown_values.get(key, 0) + n
            rep.unknown_pixels += n
    return rows, samples


def _split_counts(split: np.ndarray) -> dict[str, int]:
    """Chips per split: train, val, test (even when empty), then any other split."""
    split_counts = {s: int((split == s).sum()) for s in SPLITS}
    for s in sorted(set(split.tolist()) - set(SPLITS)):
        split_counts[s] = int((split == s).sum())
    return split_counts


def _label_mode(scenes: list[Scene]) -> str | None:
    kinds = {s.label_kind for s in scenes if s.label_kind}
    if len(kinds) == 1:
        return LABEL_MODES[kinds.pop()]
    return "mixed" if kinds else None


def _crs_text(crs_wkt: str) -> str:
    """``EPSG:nnnn`` when the CRS has a code, else its WKT (pyproj's WKT2, loaded only then)."""
    from rasterio.crs import CRS

    epsg = CRS.from_wkt(crs_wkt).to_epsg()  # rasterio is loaded already; pyproj costs 0.2 s
    if epsg:
        return f"EPSG:{epsg}"
    from pyproj import CRS as ProjCRS

    return ProjCRS.from_wkt(crs_wkt).to_wkt()


def _band_stats(samples: dict[str, list[np.ndarray]], dtype: str) -> dict:
    """Band statistics of the training chips' pixels (of all chips when none is train)."""
    pool = samples.get("train") or [a for arrs in samples.values() for a in arrs]
    stats = band_statistics(np.concatenate(pool, axis=1), dtype)
    stats["split"] = "train" if samples.get("train") else "all"
    return stats


def _unknown_warnings(reports: list[SceneReport], warnings: list[str]) -> dict[str, int]:
    """Warn per scene about label values outside the legend; all of them counted."""
    unknown_all: Counter = Counter()
    for rep in reports:
        if rep.unknown_pixels:
            warnings.append(
                f"{rep.labels}: {rep.unknown_pixels} px with values outside the legend set to "
                f"ignore ({top_counts(rep.unknown_values)})"
            )
        unknown_all.update(rep.unknown_values)
    return dict(unknown_all)


def _header(
    result: TileResult, classes: ClassTable, first: Scene, nodata_threshold: float, co: dict
) -> ChipsHeader:
    """What ``dataset.json`` says about the chips just cut."""
    return ChipsHeader(
        classes=classes,
        ignore_index=IGNORE_INDEX,
        chip_size=result.chip_size,
        bands=first.count,
        dtype=first.dtype,
        gsd=result.gsd,
        crs=result.crs,
        source=result.source,
        splits=result.splits,
        label_mode=result.label_mode,
        window=result.window,
        stride=result.stride,
        nodata_threshold=nodata_threshold,
        band_stats=result.band_stats,
        class_shares=result.split_shares,
        creation_options=co,
        scenes=[
            {  # signed URLs without their secrets
                "name": r.name,
                "image": redact(r.image),
                "labels": r.labels and redact(r.labels),
                "split": r.split,
            }
            for r in result.scenes
        ],
        aerialct_version=__version__,
    )


def _fingerprint(
    jobs: list[tuple[int, Job]], scenes: list[Scene], opts: Options, source: str,
    classes: ClassTable, co: dict[str, str],
) -> str:  # fmt: skip
    inputs = [s.image for s in scenes] + [s.labels for s in scenes if s.labels]
    settings = {
        "source": source, "classes": classes.to_list(), "creation_options": co,
        "nodata_threshold": opts.nodata_threshold, "size": opts.size, "stride": opts.stride,
        "resize": opts.resize,
    }  # fmt: skip
    return fingerprint([job for _, job in jobs], inputs, settings)


def run(scenes: list[Scene], out: Path, opts: Options, **kw: Any) -> TileResult:
    """Cut ``scenes`` into a chips folder at ``out`` (the engine of both entry points).

    The work goes to ``<out>.parts`` (:mod:`aerialct.tile.work`): a run with the same
    arguments after a kill keeps the finished band tasks; ``shard`` (K/N) cuts every
    N-th task, and the process that finds every task done writes the index and renames
    the chips to ``out``. A run without a shard holds the output's lock
    (:func:`aerialct.geo.locks.output_lock`) throughout: a second copy of it fails at once,
    naming this one. Shards share ``<out>.parts`` by design; the one that joins takes
    the lock for the join.
    """
    import contextlib

    from aerialct.geo.locks import output_lock

    with output_lock(out) if kw.get("shard") is None else contextlib.nullcontext():
        return _run(scenes, out, opts, **kw)


def _run(
    scenes: list[Scene],
    out: Path,
    opts: Options,
    *,
    source: str,
    classes: ClassTable,
    overwrite: bool,
    warnings: list[str],
    progress: ProgressFn | None,
    started: float,
    shard: Shard | None = None,
) -> TileResult:
    """:func:`run` under the output's lock (a run without a shard)."""
    from aerialct.geo.locks import output_lock

    grid = _check_options(opts)
    if not scenes:
        raise InputError("no scenes to tile; give at least one image")
    _check_scenes(scenes, warnings)
    co = _creation_options(opts.creation_options)
    grids = [
        (window_starts(s.height, grid.window, grid.stride),
         window_starts(s.width, grid.window, grid.stride))
        for s in scenes
    ]  # fmt: skip
    val_block = opts.val_block or 2 * grid.window
    splits = _assign_splits(
        scenes, grids, grid.window, opts.val_fraction, val_block, opts.seed, warnings
    )
    inputs = [s.image for s in scenes] + [s.labels for s in scenes if s.labels]
    check_output(out, overwrite, kind=FOLDER, inputs=inputs)
    remove_stale_temps(out)
    kept = _windows_in_aoi(scenes, grids, grid.window, opts.aoi) if opts.aoi is not None else None
    total = sum(len(r) * len(c) for r, c in grids) if kept is None else sum(len(k) for k in kept)
    work_out = str(parts_dir(out) / "chips")
    common = dict(out=work_out, window=grid.window, chip=grid.chip,
                  nodata_threshold=opts.nodata_threshold, creation_options=co, classes=classes)  # fmt: skip
    jobs = _jobs(scenes, grids, splits, kept, common)
    work = Work(out, _fingerprint(jobs, scenes, opts, source, classes, co))
    work.open(shard)
    ids = [task_id(job) for _, job in jobs]
    mine = set(shard_items(ids, shard))
    done = work.finished(ids, check=mine)
    prog = as_progress(progress)
    prog(0, total=sum(len(j.cols) for (_, j), t in zip(jobs, ids, strict=True) if t in mine),
         description="tiling")  # fmt: skip
    prog(sum(len(j.cols) for (_, j), t in zip(jobs, ids, strict=True) if t in mine & done))
    todo = [(k, j) for (k, j), t in zip(jobs, ids, strict=True) if t in mine and t not in done]
    try:
        _cut(todo, opts.workers, prog, work)
    except Exception as e:
        # a failure (a corrupt scene, a full disk) leaves nothing behind; a kill, SIGTERM or
        # Ctrl-C leaves the finished work to resume; a shard never removes the others' work
        if shard is None:
            resume.remove_path(work.dir)
        if disk_full(e, work.dir.parent):
            raise DiskFullError(work.out) from e
        raise
    except BaseException:
        log.warning(
            "%s: the finished row bands are kept there; run the same command again to continue",
            work.dir,
        )
        raise
    reports = [
        SceneReport(s.name, s.image, s.labels, s.split, georef_copied=s.georef_copied)
        for s in scenes
    ]
    state = _State(shard, len(ids), work.kept)
    if len(work.finished(ids, check=set())) < len(ids) or not resume.claim(work.dir):
        return _partial(ids, work, reports, grid, source, scenes, warnings, started, state)
    try:
        with output_lock(out, wait=True):  # re-entrant: a run without a shard holds it already
            result = _finish(jobs, ids, work, reports, grid, total, opts, source, scenes,
                             classes, co, warnings, overwrite, state)  # fmt: skip
    except BaseException:
        resume.release(work.dir)
        raise
    result.seconds = round(time.perf_counter() - started, 3)
    return result


@dataclass
class _State:
    """Where a run stands: its shard, how many band tasks there are, how many were kept."""

    shard: Shard | None
    tasks: int
    kept: int


def _finish(
    jobs: list[tuple[int, Job]], ids: list[str], work: Work, reports: list[SceneReport],
    grid: _Grid, total: int, opts: Options, source: str, scenes: list[Scene],
    classes: ClassTable, co: dict[str, str], warnings: list[str], overwrite: bool,
    state: _State,
) -> TileResult:  # fmt: skip
    """Write the index and header from every task's record; rename the chips to ``out``."""
    rows, samples = _gather(jobs, work.records(ids), reports)
    first = scenes[0]
    if not rows:
        resume.remove_path(work.dir)
        raise InputError(
            f"no chips written: all {total} windows of {', '.join(s.image for s in scenes)} "
            f"have more than {opts.nodata_threshold:.0%} nodata; raise --nodata-threshold"
        )
    cols = chips_columns(rows, classes)
    split, counts = cols.split, cols.counts
    names = [*classes.names, "ignore"]
    warn_one_sided(split, counts, names, warnings)
    result = _result(work.out, split, counts, names, reports, grid, source, scenes, warnings,
                     samples, classes, state)  # fmt: skip
    try:
        header = _header(result, classes, first, opts.nodata_threshold, co)
        write_chips(work.chips, cols, first.crs_wkt, header)
        inputs = [s.image for s in scenes] + [s.labels for s in scenes if s.labels]
        check_output(work.out, overwrite, kind=FOLDER, inputs=inputs)
        move_into_place(work.chips, work.out)
    except Exception as e:
        if disk_full(e, work.dir):
            raise DiskFullError(work.out) from e
        raise
    resume.remove_path(work.dir)
    result.unknown_values = _unknown_warnings(reports, warnings)
    for w_ in warnings:
        log.warning(w_)
    return result


def _result(
    out: Path, split: np.ndarray, counts: np.ndarray, names: list[str], reports: list[SceneReport],
    grid: _Grid, source: str, scenes: list[Scene], warnings: list[str],
    samples: dict[str, list[np.ndarray]], classes: ClassTable, state: _State,
) -> TileResult:  # fmt: skip
    first = scenes[0]
    return TileResult(
        out=out,
        source=source,
        label_mode=_label_mode(scenes),
        chip_size=grid.chip,
        window=grid.window,
        stride=grid.stride,
        gsd=abs(first.transform[0]) * grid.window / grid.chip,
        crs=_crs_text(first.crs_wkt),
        chips=len(split),
        splits=_split_counts(split),
        skipped_nodata=sum(r.skipped_nodata for r in reports),
        class_pixels={n: int(counts[:, i].sum()) for i, n in enumerate(names)},
        unknown_pixels=sum(r.unknown_pixels for r in reports),
        unknown_values={},
        scenes=reports,
        warnings=warnings,
        seconds=0.0,
        split_shares=split_shares(split, counts, names),
        band_stats=_band_stats(samples, first.dtype),
        classes=classes.to_list(),
        shard=str(state.shard) if state.shard is not None else None,
        tasks=state.tasks,
        tasks_done=state.tasks,
        tasks_kept=state.kept,
    )


def _partial(
    ids: list[str], work: Work, reports: list[SceneReport],
    grid: _Grid, source: str, scenes: list[Scene], warnings: list[str], started: float,
    state: _State,
) -> TileResult:  # fmt: skip
    """What a shard made when the chips folder is left to another process to finish."""
    return TileResult(
        out=work.out, source=source, label_mode=None, chip_size=grid.chip, window=grid.window,
        stride=grid.stride, gsd=abs(scenes[0].transform[0]) * grid.window / grid.chip,
        crs=_crs_text(scenes[0].crs_wkt), chips=0, splits={}, skipped_nodata=0,
        class_pixels={}, unknown_pixels=0, unknown_values={}, scenes=reports,
        warnings=warnings, seconds=round(time.perf_counter() - started, 3),
        shard=str(state.shard) if state.shard is not None else None, complete=False,
        tasks=state.tasks, tasks_kept=state.kept,
        tasks_done=len(work.finished(ids, check=set())),
    )  # fmt: skip


# --------------------------------------------------------------------------- public API


def tile_scenes(
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    labels: Sequence[str | os.PathLike] | None = None,
    labels_vector: str | os.PathLike | None = None,
    class_field: str | None = None,
    vector_layer: str | None = None,
    background: str | int | None = None,
    classes: str | os.PathLike | ClassTable | None = None,
    burn: str | None = None,
    class_map: dict[str, str] | None = None,
    size: int | None = None,
    stride: int | None = None,
    resize: int | None = None,
    nodata_threshold: float = 0.5,
    split: str | None = None,
    val_fraction: float = 0.0,
    val_block: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    creation_options: dict[str, str] | None = None,
    overwrite: bool = False,
    aoi: str | os.PathLike | None = None,
    shard: Shard | None = None,
    progress: ProgressFn | None = None,
) -> TileResult:
    """Cut GeoTIFFs into chips (general mode).

    ``classes`` is a class table, a built-in name (``potsdam``, ``buildings``) or a
    YAML file (:func:`aerialct.classes.resolve_class_table`); it travels with the chips.
    Without it, label rasters that carry a class table give theirs, else Potsdam's; label
    rasters of another table than ``classes`` are refused.
    ``labels`` are rasters in the order of ``images`` (1 band of class ids, or 3
    bands of RGB colours converted through ``classes``); or ``labels_vector`` is a
    polygon file rasterised on each image grid (reprojected when its CRS differs;
    later features win): every polygon is class ``burn``, or ``class_field`` holds
    class names or ids, or values that ``class_map`` maps to class names. Pixels no
    polygon covers get ``background``; by default the table's ``background`` class
    when it has one, else ignore. ``size`` is the window in scene pixels (default 512;
    labelled scenes too small for it are refused with the grid to pass, see
    :mod:`aerialct.tile.advice`), ``stride`` its step (default ``size``), ``resize`` the chip size
    written (image bilinear, mask nearest). Windows with a nodata share above
    ``nodata_threshold`` are skipped. Chips go to ``split`` (default train), or with
    ``val_fraction`` whole blocks of ``val_block`` px (default 2 x size) go to val.
    With ``aoi`` (a polygon file, any CRS) only windows that touch it are cut.
    A killed run resumes when run again with the same arguments; ``shard`` (K/N) cuts
    one share of the band tasks, and the last shard to finish writes the folder
    (:func:`run`).
    """
    from aerialct.geo.inputs import expand_inputs

    started = time.perf_counter()
    warnings: list[str] = []
    imgs = expand_inputs(images)  # files, folders, globs, GDAL paths and URLs
    if split is not None and split not in SPLITS:
        raise InputError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if val_fraction and split not in (None, "train"):
        raise InputError(f"--val-fraction with --split {split}: val is taken from train only")
    given = classes is not None
    table = check_label_options(
        classes if classes is not None else "potsdam",
        labels,
        labels_vector,
        class_field,
        burn,
        class_map,
    )
    scenes = [inspect_image(p) for p in imgs]
    for sc in scenes:
        sc.split = split or "train"
    if labels:
        table = attach_label_rasters(scenes, labels, table, given)
    elif labels_vector is not None:
        attach_vector_labels(
            scenes, labels_vector, table, class_field=class_field, layer=vector_layer,
            burn=burn, class_map=class_map, background=background,
        )  # fmt: skip
    _creation_options(creation_options)  # a wrong --co is refused before the scenes are judged
    advice: list[str] = []
    if (labels or labels_vector is not None) and split is None:
        advice = check_trainable(scenes, size=size, default_size=DEFAULT_SIZE, stride=stride,
                                 val_fraction=val_fraction, val_block=val_block, seed=seed,
                                 assign=_assign_splits)  # fmt: skip
    opts = Options(size=size or DEFAULT_SIZE, stride=stride, resize=resize,
                   nodata_threshold=nodata_threshold, val_fraction=val_fraction,
                   val_block=val_block, seed=seed, workers=workers,
                   creation_options=creation_options, aoi=aoi)  # fmt: skip
    result = run(scenes, Path(out), opts, source="geotiff", classes=table, overwrite=overwrite,
                 warnings=warnings, progress=progress, started=started, shard=shard)  # fmt: skip
    if result.label_mode:
        shares = result.split_shares.get("train", {})
        result.advice = advice + recipe_advice(shares, table.excluded_from_mean)
    return result


def tile_potsdam(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int = pots.CROP_SIZE,
    stride: int | None = None,
    resize: int | None = pots.RESIZE_TO,
    split_file: str | os.PathLike | None = None,
    eroded_for_test: bool = True,
    bands: str = "RGB",
    nodata_threshold: float = 0.5,
    val_fraction: float = 0.0,
    val_block: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    creation_options: dict[str, str] | None = None,
    overwrite: bool = False,
    aoi: str | os.PathLike | None = None,
    shard: Shard | None = None,
    progress: ProgressFn | None = None,
) -> TileResult:
    """Cut the ISPRS Potsdam release (or a folder laid out like it) into chips.

    Finds ``top_potsdam_{a}_{b}_{bands}.tif`` anywhere under ``root`` and the
    matching ``_label.tif`` / ``_label_noBoundary.tif``; converts RGB-colour labels
    through the legend (other colours become ignore, counted and reported); copies
    georeferencing from the image when a label has none and the sizes agree,
    refuses otherwise; splits by the standard 24/14 split or ``split_file``; uses
    the eroded labels for test tiles when present. Defaults follow the CT protocol:
    500 px windows resized to 512 (image bilinear, mask nearest).
    """
    started = time.perf_counter()
    warnings: list[str] = []
    scenes = potsdam_scenes(root, bands=bands, split_file=split_file,
                            eroded_for_test=eroded_for_test, warnings=warnings)  # fmt: skip
    opts = Options(size=size, stride=stride, resize=resize, nodata_threshold=nodata_threshold,
                   val_fraction=val_fraction, val_block=val_block, seed=seed, workers=workers,
                   creation_options=creation_options, aoi=aoi)  # fmt: skip
    return run(scenes, Path(out), opts, source="potsdam", classes=pots.CLASSES,
               overwrite=overwrite, warnings=warnings, progress=progress, started=started,
               shard=shard)  # fmt: skip


__all__ = [
    "DEFAULT_CREATION_OPTIONS",
    "DEFAULT_SIZE",
    "Options",
    "run",
    "tile_potsdam",
    "tile_scenes",
]
