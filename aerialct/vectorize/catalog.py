"""Many class rasters vectorised as one map: :func:`vectorize_catalog`.

The rasters are placed on their shared grids (:func:`~aerialct.vectorize.mosaic.plan_mosaics`);
each mosaic of touching tiles is traced band by band (:class:`~aerialct.vectorize.windows.Tracer`),
and every finished band of buildings is written at once, so memory holds a band of
pieces, whatever the number of files. A building across file seams is one polygon,
equal to vectorising the mosaic as one raster; rasters that touch nothing stay apart.

Shards (``shard`` K/N): the rows of windows of all mosaics are cut into N runs of
about equal work; each shard traces its run and writes a *part*
(:mod:`aerialct.vectorize.parts`): the buildings it finished, and the open ones
that touch its first or last row with the labels along those rows. When every part
is there, one process joins them (:func:`~aerialct.vectorize.parts.join_parts`):
the open buildings are merged across the part seams with the same label pairing as
window seams, and all buildings are written in the order one process writes them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.errors import InputError
from aerialct.progress import ProgressFn, as_progress
from aerialct.vectorize.mapping import (
    CatalogOptions,
    Tally,
    add_styles,
    numbered,
    write_empty_layers,
)
from aerialct.vectorize.results import VectorizeBatch, VectorizeResult, probabilities_for

if TYPE_CHECKING:
    from aerialct.shards import Shard
    from aerialct.vectorize.mosaic import Mosaic


def _write_whole(
    mosaics: list[Mosaic], out: Path, opts: CatalogOptions, overwrite: bool,
    progress: ProgressFn, tally: Tally,
) -> None:  # fmt: skip
    """Trace every mosaic in one process, writing each band's buildings as it is done."""
    from aerialct.geo.vector import stream_layers

    next_id: dict[str, int] = {}
    with stream_layers(out, overwrite=overwrite) as stream:
        for mosaic in mosaics:
            name = opts.layer_of(mosaic)
            with mosaic, mosaic.block_cache(opts.window_size):
                tracer = opts.tracer(mosaic, progress)
                for batch in tracer.run():
                    done = opts.finish(batch, mosaic)
                    tally.add(mosaic, done)
                    if len(done.layer.geometry):
                        stream.write(name, numbered(done.layer, next_id, name))
                tally.add_windows(mosaic, tracer)
        write_empty_layers(stream, mosaics, opts)
        add_styles(stream, mosaics, opts)


def shard_rows(mosaics: list[Mosaic], size: int, shard: Shard) -> dict[int, range]:
    """The rows of windows of each mosaic that shard K/N traces: N runs of about equal work.

    Rows of all mosaics in order, weighed by their windows inside tiles, are shared by
    :func:`~aerialct.shards.share_by_cost`, so each shard gets one run of rows (a few
    mosaics, or part of one) and the runs meet at N - 1 seams at most.
    """
    from aerialct.shards import share_by_cost

    weights = [m.row_weights(size) for m in mosaics]
    flat = np.concatenate(weights) if weights else np.zeros(0, dtype=np.int64)
    mine = share_by_cost(flat.tolist(), shard.index - 1, shard.count)
    out: dict[int, range] = {}
    start = 0
    for m, w in enumerate(weights):
        lo, hi = max(mine.start, start), min(mine.stop, start + len(w))
        if lo < hi:
            out[m] = range(lo - start, hi - start)
        start += len(w)
    return out


def check_one_crs(mosaics: list[Mosaic]) -> None:
    """One output layer holds one CRS."""
    from aerialct.geo.vector import same_crs

    first = mosaics[0]
    other = next((m for m in mosaics if not same_crs(m.crs, first.crs)), None)
    if other is not None:
        raise InputError(
            f"{other.tiles[0].path} is in {other.crs}, {first.tiles[0].path} in {first.crs}: one "
            "layer holds one CRS; write one file per raster (--out FOLDER) or reproject"
        )


def vectorize_catalog(
    rasters: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    probabilities: str | os.PathLike | None = None,
    overwrite: bool = False,
    shard: Shard | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> VectorizeBatch:
    """Vectorise class rasters into one vector file, as one map where they touch.

    Rasters on one pixel grid that touch form mosaics whose buildings are merged across
    file seams exactly (the same polygons as vectorising the mosaic as one raster);
    the others are vectorised apart. Memory holds a band of tiles, not the catalog.
    ``shard`` (K/N) traces one share and writes a part beside ``out``
    (``<out>.parts/``); the process that finds every part there joins them into
    ``out``. Without ``shard``, a complete set of parts of the same run is joined
    instead of tracing again. ``options`` are :class:`CatalogOptions`' fields.
    """
    from aerialct.geo.outputs import check_output
    from aerialct.geo.vector import driver_for
    from aerialct.vectorize import parts as parts_mod
    from aerialct.vectorize.mosaic import plan_mosaics

    t0 = time.perf_counter()
    out = Path(out)
    driver_for(out)
    given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    opts = CatalogOptions(**given)
    paths = list(rasters)  # GDAL paths and URLs stay verbatim
    check_output(out, overwrite, inputs=paths)
    failed: list[tuple[str, str]] = []
    mosaics = plan_mosaics(paths, opts.classes, lambda r: probabilities_for(r, probabilities),
                           failed)  # fmt: skip
    if not mosaics:
        raise InputError(f"all {len(paths)} rasters failed; first: {failed[0][0]}: {failed[0][1]}")
    check_one_crs(mosaics)
    for m in mosaics:
        m.tolerant = True
    prog = as_progress(progress)
    run = parts_mod.Run(out, mosaics, opts, overwrite)
    joined = 0
    if shard is not None:
        rows = shard_rows(mosaics, opts.window_size, shard)
        total = sum(mosaics[m].covered_windows(opts.window_size, r) for m, r in rows.items())
        prog(0, total=total, description="vectorising")
        joined = parts_mod.write_part(run, shard, rows, prog, failed)
    elif (found := run.complete_parts()) is not None and run.claim():
        joined = run.join(found)
    else:
        prog(0, total=sum(m.covered_windows(opts.window_size) for m in mosaics),
             description="vectorising")  # fmt: skip
        _write_whole(mosaics, out, opts, overwrite, prog, run.tally)
    return _batch(mosaics, out, opts, run.tally, failed, t0, shard, joined)


def _batch(
    mosaics: list[Mosaic], out: Path, opts: CatalogOptions, tally: Tally,
    failed: list[tuple[str, str]], t0: float, shard: Shard | None, joined: int,
) -> VectorizeBatch:  # fmt: skip
    """What the run did, raster by raster (empty for a shard that left the join to another)."""
    from aerialct.geo.inputs import source_name
    from aerialct.geo.vector import driver_for

    seconds = time.perf_counter() - t0
    results = []
    done = shard is None or joined > 0
    for mosaic in mosaics if done else []:
        names = [mosaic.table.names[i] for i in mosaic.ids]
        for t in mosaic.tiles:
            r = tally.rasters.get(t.path)
            if r is None:
                continue
            counts = {n: int(r["counts"].get(n, 0)) for n in names}
            results.append(VectorizeResult(
                source=source_name(t.path), output=str(out), layer=opts.layer_of(mosaic),
                driver=driver_for(out), classes=names, count=sum(counts.values()),
                count_by_class=counts, total_area=float(r["area"]), dropped_small=int(r["dropped"]),
                crs=mosaic.crs.to_string() if mosaic.crs is not None else None,
                window_size=opts.window_size, windows=int(r["windows"]),
                seam_merges=int(r["seams"]), seconds=seconds, options=_options_dict(opts),
            ))  # fmt: skip
    failed = failed + [(p, e) for p, e in tally.failed.items() if p not in dict(failed)]
    return VectorizeBatch(
        results, failed, str(out), seconds, mosaics=len(mosaics), across_files=tally.across,
        shard=str(shard) if shard is not None else None, parts_joined=joined,
    )  # fmt: skip


def _options_dict(opts: CatalogOptions) -> dict[str, Any]:
    d = asdict(opts)
    d["morph"] = [f"{n}:{r}" for n, r in opts.morph]
    d["classes"] = list(opts.classes)
    return d
