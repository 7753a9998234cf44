"""Many class rasters vectorised as one map: :func:`vectorize_catalog`.

The rasters are placed on their shared grids (:func:`~aerialct.vectorize.mosaic.plan_mosaics`);
each mosaic of touching tiles is traced band by band (:class:`~aerialct.vectorize.windows._Tracer`),
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.errors import InputError
from aerialct.progress import ProgressFn, as_progress
from aerialct.vectorize.layer import _finish, _Finished, layer_name
from aerialct.vectorize.merge import _Pieces
from aerialct.vectorize.windows import _Tracer

if TYPE_CHECKING:
    from aerialct.geo.vector import Layer, LayerStream
    from aerialct.shards import Shard
    from aerialct.vectorize.mosaic import Mosaic
    from aerialct.vectorize.write import VectorizeBatch


@dataclass(frozen=True)
class CatalogOptions:
    """How to vectorise (the options of :func:`aerialct.vectorize.vectorize`)."""

    classes: tuple[str | int, ...] = ("building",)
    min_area: float = 0.0
    fill_holes: float = 0.0
    simplify: float = 0.0
    regularize: bool = False
    morph: tuple[tuple[str, int], ...] = ()
    layer: str | None = None
    connectivity: int = 8
    window_size: int = 2048

    def finish(self, pieces: _Pieces, mosaic: Mosaic) -> _Finished:
        return _finish(pieces, mosaic, min_area=self.min_area, fill_holes=self.fill_holes,
                       simplify=self.simplify, regularize=self.regularize)  # fmt: skip

    def tracer(self, mosaic: Mosaic, progress: ProgressFn) -> _Tracer:
        return _Tracer(mosaic, mosaic.ids, self.morph, self.connectivity, self.window_size,
                       mosaic.prob_scale is not None, progress)  # fmt: skip

    def layer_of(self, mosaic: Mosaic) -> str:
        return self.layer or layer_name([mosaic.table.names[i] for i in mosaic.ids])


@dataclass
class Tally:
    """Per raster, what its buildings add up to (a building counts for its ``source``)."""

    rasters: dict[str, dict[str, Any]] = field(default_factory=dict)
    across: int = 0
    """Buildings made of pieces of several files."""
    failed: dict[str, str] = field(default_factory=dict)

    def _row(self, path: str) -> dict[str, Any]:
        return self.rasters.setdefault(
            path, {"counts": {}, "area": 0.0, "dropped": 0, "windows": 0, "seams": 0}
        )

    def add(self, mosaic: Mosaic, done: _Finished) -> None:
        """Count a finished batch of ``mosaic``'s buildings."""
        fields = done.layer.fields
        for i in np.unique(done.tiles).tolist():
            mine = done.tiles == i
            row = self._row(mosaic.tiles[i].path)
            for name, n in zip(*np.unique(fields["class"][mine], return_counts=True), strict=True):
                row["counts"][str(name)] = row["counts"].get(str(name), 0) + int(n)
            row["area"] += float(fields["area"][mine].sum())
            row["seams"] += int(done.merged[mine].sum())
        for i, n in zip(*np.unique(done.dropped, return_counts=True), strict=True):
            self._row(mosaic.tiles[int(i)].path)["dropped"] += int(n)
        self.across += int(done.spans.sum())

    def add_windows(self, mosaic: Mosaic, tracer: _Tracer) -> None:
        for t, n in zip(mosaic.tiles, tracer.tile_windows.tolist(), strict=True):
            self._row(t.path)["windows"] += n
        self.failed.update(mosaic.failed)

    def update(self, other: dict[str, Any]) -> None:
        """Add another tally's counts (a part's, as stored in its header)."""
        for path, r in other["rasters"].items():
            row = self._row(path)
            for name, n in r["counts"].items():
                row["counts"][name] = row["counts"].get(name, 0) + n
            for k in ("area", "dropped", "windows", "seams"):
                row[k] += r[k]
        self.across += other["across"]
        self.failed.update(other["failed"])


def numbered(layer: Layer, next_id: dict[str, int], name: str) -> Layer:
    """``layer`` with ids that continue layer ``name``'s numbering (1, 2, ... through)."""
    from aerialct.geo.vector import Layer

    start = next_id.get(name, 0)
    n = len(layer.geometry)
    fields = dict(layer.fields)
    fields["id"] = np.arange(start + 1, start + n + 1, dtype=np.int64)
    next_id[name] = start + n
    return Layer(layer.geometry, fields, layer.crs)


def write_empty_layers(stream: LayerStream, mosaics: list[Mosaic], opts: CatalogOptions) -> None:
    """Give every layer that got no building its (empty) table."""
    for mosaic in mosaics:
        name = opts.layer_of(mosaic)
        if name not in stream.made:
            stream.write(name, opts.finish(_Pieces.empty(), mosaic).layer)


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
            with mosaic:
                tracer = opts.tracer(mosaic, progress)
                for batch in tracer.run():
                    done = opts.finish(batch, mosaic)
                    tally.add(mosaic, done)
                    if len(done.layer.geometry):
                        stream.write(name, numbered(done.layer, next_id, name))
                tally.add_windows(mosaic, tracer)
        write_empty_layers(stream, mosaics, opts)


def shard_rows(mosaics: list[Mosaic], size: int, shard: Shard) -> dict[int, range]:
    """The rows of windows of each mosaic that shard K/N traces: N runs of about equal work.

    Rows of all mosaics in order, weighed by their windows inside tiles, are cut where
    the running total crosses k/N of the whole, so each shard gets one run of rows (a
    few mosaics, or part of one) and the runs meet at N - 1 seams at most.
    """
    weights = [m.row_weights(size) for m in mosaics]
    flat = np.concatenate(weights) if weights else np.zeros(0, dtype=np.int64)
    total = int(flat.sum())
    if total == 0:
        owner = np.zeros(len(flat), dtype=np.int64)
    else:
        middle = np.cumsum(flat) - flat / 2
        owner = np.minimum((middle * shard.count / total).astype(np.int64), shard.count - 1)
    out: dict[int, range] = {}
    start = 0
    for m, w in enumerate(weights):
        mine = np.flatnonzero(owner[start : start + len(w)] == shard.index - 1)
        if len(mine):
            out[m] = range(int(mine[0]), int(mine[-1]) + 1)
        start += len(w)
    return out


def band_bases(mosaics: list[Mosaic]) -> list[int]:
    """The number of the first band of each mosaic in the map's order of bands."""
    return np.concatenate([[0], np.cumsum([m.bands for m in mosaics])]).astype(int).tolist()


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
    from aerialct.vectorize.write import _probabilities_for

    t0 = time.perf_counter()
    out = Path(out)
    driver_for(out)
    given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    opts = CatalogOptions(**given)
    paths = [Path(r) for r in rasters]
    check_output(out, overwrite, inputs=paths)
    failed: list[tuple[str, str]] = []
    mosaics = plan_mosaics(paths, opts.classes, lambda r: _probabilities_for(Path(r), probabilities),
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
    from aerialct.geo.vector import driver_for
    from aerialct.vectorize.write import VectorizeBatch, VectorizeResult

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
                source=t.path, output=str(out), layer=opts.layer_of(mosaic),
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
