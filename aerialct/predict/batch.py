"""Predict many scenes: sharding, skipping complete outputs, recording failures."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aerialct.errors import InputError
from aerialct.geo.inputs import source_path
from aerialct.predict.checks import aoi_frame, touches_aoi
from aerialct.predict.outputs import complete_output, output_paths
from aerialct.predict.results import BatchResult, BundleLike, SceneResult
from aerialct.predict.scene import predict_scene
from aerialct.progress import ProgressFn
from aerialct.shards import Shard, shard_items

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
    progress: ProgressFn | None = None,
    **kwargs: Any,
) -> BatchResult:
    """Predict many scenes into ``out_dir`` as ``<stem>_classes.tif``; failures are recorded.

    ``shard`` (K/N) keeps the K-th of N shares of the scenes (:func:`aerialct.shards.shard_items`),
    for array jobs. Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank then takes every
    ``world_size``-th scene starting at its ``RANK``; the result lists this rank's
    scenes only. With ``skip_existing`` a scene whose complete output exists
    (:func:`complete_output`) is skipped and reported as such. Keyword arguments go
    to :func:`predict_scene`.
    """
    if rank is None or world_size is None:
        from aerialct.engine.distributed import launch_env

        launch = launch_env()
        rank = launch.rank if rank is None else rank
        world_size = launch.world_size if world_size is None else world_size
    paths = [source_path(s) for s in scenes]
    stems = [Path(p).stem for p in paths]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise InputError(
            f"scenes {', '.join(dup)} share a file name and would write the same output; "
            "predict them into different --out folders"
        )
    mine = shard_items(paths, shard)[rank::world_size]
    aoi = aoi_frame(kwargs.pop("aoi", None))
    if aoi is not None:
        kwargs["aoi"] = aoi
    t0 = time.perf_counter()
    results: list[SceneResult] = []
    for p in mine:  # a Path, or a GDAL path / URL as a string (source_path)
        out = output_paths(p, out_dir)["classes"]
        if skip_existing and complete_output(
            p,
            out,
            probabilities=bool(kwargs.get("probabilities")),
            quicklook=bool(kwargs.get("quicklook")),
        ):
            log.info("%s: complete output %s exists; skipped", Path(p).name, out)
            side = output_paths(p, out_dir)
            results.append(
                SceneResult(
                    scene=Path(p),
                    source=os.fspath(p),
                    status="skipped",
                    output=out,
                    probabilities=side["probabilities"] if kwargs.get("probabilities") else None,
                    quicklook=side["quicklook"] if kwargs.get("quicklook") else None,
                )
            )
            continue
        try:
            if not touches_aoi(p, aoi):
                log.info("%s: outside the area of interest; skipped", Path(p).name)
                results.append(
                    SceneResult(
                        scene=Path(p), source=os.fspath(p), status="skipped", error="outside --aoi"
                    )
                )
                continue
            results.append(predict_scene(bundle, p, out, progress=progress, **kwargs))
        except Exception as e:  # one scene's failure must not stop the batch
            # recorded in the result, which the caller renders; visible with --verbose
            log.debug("%s: failed: %s", p, e)
            results.append(
                SceneResult(
                    scene=Path(p),
                    source=os.fspath(p),
                    status="failed",
                    error=" ".join(str(e).split()),
                    exception=e,
                )
            )
    return BatchResult(results, time.perf_counter() - t0, rank, world_size)
