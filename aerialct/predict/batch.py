"""Predict many inputs: scenes and catalogs, shared out by blocks, failures recorded."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aerialct.errors import InputError
from aerialct.geo.inputs import source_label, source_path
from aerialct.geo.outputs import check_not_input
from aerialct.predict.catalog import Job, find_jobs
from aerialct.predict.checks import aoi_frame
from aerialct.predict.job import JobResult, PredictOptions, check_options, job_blocks, run_job
from aerialct.predict.outputs import stem_paths
from aerialct.predict.plan import Block
from aerialct.predict.results import BatchResult, BundleLike, SceneResult
from aerialct.progress import ProgressFn
from aerialct.shards import Shard, share_by_cost

log = logging.getLogger("aerialct")


def predict_scenes(
    bundle: BundleLike,
    scenes: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    shard: Shard | None = None,
    skip_existing: bool = False,
    catalog: bool = True,
    mosaic: bool = False,
    progress: ProgressFn | None = None,
    **kwargs: Any,
) -> BatchResult:
    """Predict many inputs into ``out_dir``: ``<stem>_classes.tif`` per scene and per tile.

    Inputs that are one map (a catalog of adjacent tiles, or a VRT mosaic of them:
    :mod:`aerialct.predict.catalog`) are predicted as one raster, each tile with its
    neighbours' pixels, and cut back into one output per tile on its grid; with
    ``mosaic`` a catalog gets one output, ``<catalog>_classes.tif``, instead. With
    ``catalog=False`` every input is a scene of its own.

    The work is shared out in blocks of the window grid (:mod:`aerialct.predict.plan`):
    ``shard`` (K/N, for array jobs) and the ranks of a ``torchrun`` launch (``WORLD_SIZE``
    > 1) make ``N x world_size`` workers, and each takes a run of consecutive blocks of
    about equal cost (:func:`aerialct.shards.share_by_cost`); a scene smaller than a
    block goes whole to one worker. Blocks are joined into outputs by whichever worker
    finishes the last block an output needs. The result lists this worker's outputs. With
    ``skip_existing`` an output that is complete (checked, not trusted:
    :func:`aerialct.predict.identity.why_incomplete`) is skipped. Keyword arguments are
    the options of :func:`predict_scene`.
    """
    if rank is None or world_size is None:
        from aerialct.engine.distributed import launch_env

        launch = launch_env()
        rank = launch.rank if rank is None else rank
        world_size = launch.world_size if world_size is None else world_size
    opts = PredictOptions(
        skip_existing=skip_existing,
        mosaic=mosaic,
        **{**kwargs, "aoi": aoi_frame(kwargs.get("aoi"))},
    )
    check_options(bundle, opts)
    # outputs beside the scenes would be taken for scenes by the next `predict FOLDER`
    check_not_input(out_dir, [source_path(s) for s in scenes], "folder holds the scene {item}: "
                    "the next run would take its outputs for scenes; choose another --out")  # fmt: skip
    jobs = find_jobs(scenes, catalog=catalog)
    _check_names(jobs, mosaic)
    workers = (shard.count if shard else 1) * world_size
    worker = ((shard.index - 1) if shard else 0) * world_size + rank
    t0 = time.perf_counter()
    results: list[SceneResult] = []
    records: list[JobResult] = []
    position = {str(source_path(p)): i for i, p in enumerate(scenes)}

    def first_input(item: tuple[Job, Any]) -> int:
        job = item[0]
        paths = [job.vrt] if job.vrt is not None else [t.path for t in job.tiles]
        return min(position.get(str(p), len(position)) for p in paths)

    for job, owned in sorted(_my_share(jobs, bundle, opts, worker, workers), key=first_input):
        res = run_job(bundle, job, _paths(out_dir, opts), opts, owned=owned, progress=progress)
        results += res.outputs
        records.append(res)
    return BatchResult(results, time.perf_counter() - t0, rank, world_size, jobs=records)


def _paths(out_dir: str | os.PathLike, opts: PredictOptions) -> Any:
    def paths(stem: str) -> tuple[Path, Path | None, Path | None]:
        p = stem_paths(stem, out_dir)
        return (
            p["classes"],
            p["probabilities"] if opts.probabilities else None,
            p["quicklook"] if opts.quicklook else None,
        )

    return paths


def _check_names(jobs: list[Job], mosaic: bool) -> None:
    """Refuse inputs that would write the same output name."""
    stems: dict[str, int] = {}
    for job in jobs:
        names = (
            [job.name]
            if job.catalog and mosaic
            else [Path(source_label(t.path)).stem for t in job.tiles]
        )
        for s in names:
            stems[s] = stems.get(s, 0) + 1
    dup = sorted(s for s, n in stems.items() if n > 1)
    if dup:
        raise InputError(
            f"scenes {', '.join(dup)} share a file name and would write the same output; "
            "predict them into different --out folders"
        )


def _my_share(
    jobs: list[Job], bundle: BundleLike, opts: PredictOptions, worker: int, workers: int
) -> list[tuple[Job, Any]]:
    """The jobs this worker takes part in, each with the test of the blocks it owns."""
    units: list[tuple[int, int]] = []  # (job, block index or -1 for a job without a plan)
    costs: list[float] = []
    plans: list[list[Block] | None] = []
    for j, job in enumerate(jobs):
        try:
            blocks = job_blocks(job, bundle, opts)
        except Exception:
            blocks = None
        plans.append(blocks)
        if not blocks:
            units.append((j, -1))
            costs.append(1.0)
        for blk in blocks or []:
            units.append((j, blk.index))
            costs.append(float(blk.windows))
    mine: dict[int, set[int]] = {}
    for u in share_by_cost(costs, worker, workers):
        j, index = units[u]
        mine.setdefault(j, set()).add(index)
    out = []
    for j, owned in sorted(mine.items()):
        if plans[j] is None:
            out.append((jobs[j], None))
        else:
            out.append((jobs[j], _owner(owned)))
    return out


def _owner(indices: set[int]) -> Any:
    def owned(block: Block) -> bool:
        return block.index in indices

    return owned
