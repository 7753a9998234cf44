"""Predict one job, a scene or a catalog, block by block: what to compute, what to write.

:func:`run_job` is the one path every prediction takes (``predict_scene`` for one
scene, ``predict_scenes`` for many, shards and torchrun ranks alike):

1. open the job's source (the scene, or the VRT mosaic of a catalog's tiles), check it,
   and lay the window grid and its blocks over it (:mod:`aerialct.predict.plan`);
2. decide each output's fate: to write; done (a complete output with this provenance,
   under ``--skip-existing`` or written by an earlier run of this very job); refused
   (an output that exists and is not that, a path that is an input);
3. compute this process's blocks that the outputs to write need and that the state
   folder does not hold yet (:mod:`aerialct.predict.state`), streaming consecutive
   bands without a restart;
4. write every output whose blocks are all there as soon as they are
   (:mod:`aerialct.predict.join`), and remove the state once every output is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aerialct.errors import DiskFullError, InputError, LockedError, OutputExistsError
from aerialct.geo.cog import cog_options
from aerialct.geo.grid import stride_for
from aerialct.geo.inputs import redact, source_label
from aerialct.geo.outputs import check_not_input, check_output
from aerialct.predict.catalog import Job, Tile
from aerialct.predict.checks import (
    aoi_for,
    check_gsd,
    check_resample,
    check_value_range,
    data_bands,
    grid_gsd,
)
from aerialct.predict.device import resolve_device
from aerialct.predict.identity import (
    Provenance,
    aoi_identity,
    digest,
    model_identity,
    source_identity,
    why_incomplete,
    why_quicklook_incomplete,
)
from aerialct.predict.join import GridRef, JoinContext, Output, needed_blocks, write_output
from aerialct.predict.outputs import gdal_env, training_grid_shape, training_grid_vrt
from aerialct.predict.plan import (
    DEFAULT_BLOCK_SHAPE,
    Block,
    BlockIndex,
    BlockShape,
    WindowGrid,
    plan_blocks,
    run_frame,
    runs,
)
from aerialct.predict.reader import FrameInput
from aerialct.predict.results import BundleLike, SceneResult
from aerialct.predict.state import BlockCutter, BlockFiles, State, manifest_changes
from aerialct.predict.stream import GridStats, predict_frame
from aerialct.progress import ProgressFn, as_progress
from aerialct.stac import model_tags

log = logging.getLogger("aerialct")

TTA_MODES = (None, "flips")

#: the output paths for a stem: classes, probabilities (or None), quick look (or None)
OutputPaths = Callable[[str], tuple[Path, Path | None, Path | None]]


@dataclass(frozen=True)
class PredictOptions:
    """The options of a prediction (the keyword arguments of :func:`predict_scene`)."""

    overlap: float = 0.25
    batch_size: int = 8
    probabilities: bool = False
    tta: str | None = None
    device: str | None = None
    creation_options: dict[str, str] | None = None
    overwrite: bool = False
    allow_no_crs: bool = False
    resample_to_training_gsd: bool = False
    bands: Sequence[int] | None = None
    quicklook: bool = False
    overview_resampling: str = "MODE"
    aoi: Any = None  # the area of interest as a frame (aoi_frame)
    skip_existing: bool = False
    mosaic: bool = False
    block_shape: BlockShape = DEFAULT_BLOCK_SHAPE


def check_options(bundle: BundleLike, opts: PredictOptions) -> int:
    """Refuse bad options before any file is touched; the window stride."""
    if opts.tta not in TTA_MODES:
        raise InputError(f"--tta {opts.tta}: unknown; use 'flips' or leave it out")
    if opts.batch_size < 1:
        raise InputError(f"--batch-size {opts.batch_size}: must be at least 1")
    cog_options(opts.creation_options, opts.overview_resampling)  # refuses bad --co
    return stride_for(int(bundle.chip_size), opts.overlap)


@dataclass
class JobResult:
    """What one process did for one job: its output records and its share of the blocks."""

    name: str
    catalog: bool
    outputs: list[SceneResult] = field(default_factory=list)
    blocks: int = 0
    blocks_run: int = 0
    windows: int = 0
    forward_seconds: float = 0.0
    seconds: float = 0.0
    pending: int = 0
    state: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "catalog": self.catalog,
            "outputs": len(self.outputs),
            "blocks": self.blocks,
            "blocks_run": self.blocks_run,
            "windows": self.windows,
            "forward_seconds": round(self.forward_seconds, 3),
            "seconds": round(self.seconds, 3),
            "pending": self.pending,
            "state": str(self.state) if self.state else None,
        }


def prediction_grid(job: Job, bundle: BundleLike, opts: PredictOptions) -> WindowGrid | None:
    """The window grid a job is predicted on (at the training pixel size when it is
    resampled), or None when its source could not be read."""
    if job.width <= 0 or job.height <= 0 or job.error is not None:
        return None
    height, width = job.height, job.width
    if _resampled(job, bundle, opts):
        assert bundle.gsd is not None
        height, width = training_grid_shape(height, width, job.transform, float(bundle.gsd))
    stride = stride_for(int(bundle.chip_size), opts.overlap)
    return WindowGrid.of(height, width, int(bundle.chip_size), stride, opts.batch_size)


def _resampled(job: Job, bundle: BundleLike, opts: PredictOptions) -> bool:
    gsd = grid_gsd(job.crs, job.transform)
    if not (opts.resample_to_training_gsd and bundle.gsd and gsd is not None):
        return False
    return check_gsd(gsd, bundle.gsd, Path(job.name)) is not None


def job_blocks(job: Job, bundle: BundleLike, opts: PredictOptions) -> list[Block] | None:
    """The blocks of a job, as every process plans them (None: a job that cannot be planned)."""
    grid = prediction_grid(job, bundle, opts)
    return None if grid is None else plan_blocks(grid, opts.block_shape)


def run_job(
    bundle: BundleLike,
    job: Job,
    paths: OutputPaths,
    opts: PredictOptions,
    *,
    owned: Callable[[Block], bool] | None = None,
    progress: ProgressFn | None = None,
) -> JobResult:
    """Predict ``job`` (module doc): the blocks ``owned`` says are this process's (all when
    None), and every output they complete. One failure fails this process's outputs of
    the job, recorded in the result; the blocks finished so far stay for a rerun."""
    t0 = time.perf_counter()
    run = _JobRun(bundle, job, paths, opts, owned or (lambda b: True), as_progress(progress))
    try:
        run.execute()
    except Exception as e:  # recorded; the caller decides what a failure means
        log.debug("%s: failed: %s", job.name, e)
        run.fail(e)
    run.result.seconds = time.perf_counter() - t0
    run.sort_records()
    return run.result


class _JobRun:
    """One process's work on one job."""

    def __init__(
        self,
        bundle: BundleLike,
        job: Job,
        paths: OutputPaths,
        opts: PredictOptions,
        owned: Callable[[Block], bool],
        progress: ProgressFn,
    ) -> None:
        self.bundle, self.job, self.paths, self.opts = bundle, job, paths, opts
        self.owned, self.progress = owned, progress
        self.result = JobResult(job.name, job.catalog)
        self.outputs: list[Output] = []
        self.reported: set[int] = set()  # outputs whose record this process gives
        self.recorded: set[int] = set()
        self.outside: set[int] = set()  # outputs outside --aoi: never written
        self.users: dict[int, list[int]] = {}  # block index -> outputs to write that need it
        self.need: dict[int, list[Block]] = {}  # output -> the blocks it needs
        self.todo: dict[int, Output] = {}
        self.replace: set[int] = set()  # ids of outputs whose complete side outputs are redone
        self.written: set[int] = set()
        self.blocks: list[Block] = []
        self.ctx: JoinContext | None = None
        self.state: State | None = None
        self.stats = GridStats()
        self.grid_seconds = 0.0
        self.device = ""
        self.started = time.perf_counter()

    # -- failure and records ---------------------------------------------------

    def fail(self, e: Exception) -> None:
        """Record ``e`` for this process's outputs that have no record yet; a state that holds
        no finished block is removed (there is nothing to resume)."""
        if self.state is not None and self.state.empty():
            self.state.remove()
        if self.outputs:
            targets = [
                o.tile
                for i, o in enumerate(self.outputs)
                if i in self.reported and i not in self.recorded
            ]
        elif self._owns_first():
            targets = list(self.job.tiles)
            if self.job.catalog and self.opts.mosaic:
                targets = [self._mosaic_tile()]
        else:
            targets = []
        for t in targets:
            self.result.outputs.append(
                SceneResult(
                    scene=Path(str(t.path)), source=os.fspath(t.path), status="failed", error=" ".join(str(e).split()),
                    exception=e,
                )
            )  # fmt: skip

    def sort_records(self) -> None:
        """Records in the order of the job's outputs (tiles in input order), not of writing."""
        order = {str(o.classes): i for i, o in enumerate(self.outputs)}
        order.update({str(o.tile.path): i for i, o in enumerate(self.outputs)})

        def key(rec: SceneResult) -> int:
            return order.get(str(rec.output), order.get(str(rec.scene), len(order)))

        self.result.outputs.sort(key=key)

    def _owns_first(self) -> bool:
        try:
            blocks = self.blocks or job_blocks(self.job, self.bundle, self.opts) or []
        except Exception:
            blocks = []
        return not blocks or self.owned(blocks[0])

    def _mosaic_tile(self) -> Tile:
        job = self.job
        return Tile(job.vrt or Path(job.name), 0, 0, job.height, job.width, job.transform, job.crs)

    # -- the run ---------------------------------------------------------------

    def execute(self) -> None:
        job, bundle, opts = self.job, self.bundle, self.opts
        if job.error is not None:
            raise job.error
        check_options(bundle, opts)
        dev = resolve_device(opts.device, bundle.model)
        self.device = str(dev)
        bundle.model.to(dev)
        bundle.model.eval()
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(_open_source(job, not opts.allow_no_crs))
            self.job = job = _sized(job, src)
            chip = int(bundle.chip_size)
            stack.enter_context(gdal_env(src, chip, dev.type == "cuda"))
            bands = data_bands(src, opts.bands, int(bundle.in_chans), self._where())
            self._check_values(src, bands)
            pred = self._prediction_source(stack, src)
            grid = prediction_grid(job, bundle, opts)
            assert grid is not None
            if (grid.height, grid.width) != (pred.height, pred.width):
                raise RuntimeError(f"internal error: grid {grid} vs source {pred.shape}")
            self.blocks = plan_blocks(grid, opts.block_shape)
            self.result.blocks = len(self.blocks)
            aoi = aoi_for(opts.aoi, pred, job.name)
            self._setup(src, pred, bands, aoi)
            cover = job.cover if pred is src else None  # tile rectangles are on src's grid
            self._compute(FrameInput(pred, bands, aoi, cover), dev)
            self._finish()

    def _check_values(self, src: Any, bands: list[int]) -> None:
        """The value-range check on the scene, or on up to three tiles of a catalog."""
        from aerialct.geo.io import no_georef_warning, open_raster

        if not self.job.catalog or self.job.vrt is not None:  # a VRT may pick other bands
            check_value_range(src, bands, self.bundle, self._where())
            return
        tiles = self.job.tiles
        for t in {tiles[0].path: 0, tiles[len(tiles) // 2].path: 0, tiles[-1].path: 0}:
            with no_georef_warning(), open_raster(t) as ds:
                check_value_range(ds, bands, self.bundle, Path(str(t)))

    def _where(self) -> Path:
        """What messages name: the scene's path, or the catalog's VRT or name."""
        job = self.job
        if job.catalog:
            return Path(os.fspath(job.vrt)) if job.vrt is not None else Path(job.name)
        return Path(str(job.tiles[0].path))

    def _prediction_source(self, stack: contextlib.ExitStack, src: Any) -> Any:
        """``src``, or a VRT of it at the training pixel size (with a log line)."""
        job, bundle, where = self.job, self.bundle, self._where()
        gsd = grid_gsd(src.crs, src.transform)
        if not (self.opts.resample_to_training_gsd and bundle.gsd):
            msg = check_gsd(gsd, bundle.gsd, where)
            if msg:
                log.warning(msg)
            return src
        if gsd is None:
            raise InputError(
                f"{where}: cannot resample to the training pixel size without a projected, "
                "north-up CRS; warp it first (gdalwarp -t_srs EPSG:XXXX -tr ...)"
            )
        if check_gsd(gsd, bundle.gsd, where) is None:
            return src
        check_resample(gsd, float(bundle.gsd), src, where)
        log.info("%s: predicting at the training pixel size %g", job.name, bundle.gsd)
        return stack.enter_context(training_grid_vrt(src, float(bundle.gsd)))

    # -- what to write ----------------------------------------------------------

    def _setup(self, src: Any, pred: Any, bands: list[int], aoi: Any) -> None:
        job, opts, bundle = self.job, self.opts, self.bundle
        model = model_identity(bundle)
        options = {
            "chip": int(bundle.chip_size),
            "overlap": opts.overlap,
            "tta": opts.tta,
            "bands": list(bands),
            "resampled": pred is not src,
        }
        aoi_id = aoi_identity(opts.aoi)
        sources = [source_identity(t.path) for t in job.tiles]
        catalog = None
        if job.catalog:
            placed = [[s, list(t.rect)] for s, t in zip(sources, job.tiles, strict=True)]
            vrt = source_identity(job.vrt) if job.vrt is not None else None
            catalog = {"name": job.name, "tiles": len(job.tiles), "hash": digest([placed, vrt])}
        self.outputs = self._outputs(sources, model, options, aoi_id, catalog)
        index = BlockIndex(self.blocks)
        for i, o in enumerate(self.outputs):
            first = (index.within(*o.tile.rect) or self.blocks)[0]
            if self.owned(first):
                self.reported.add(i)
        execution = {
            "batch_size": opts.batch_size,
            "device": self.device.split(":")[0],
            "probabilities": opts.probabilities,
            "block_shape": [opts.block_shape.rows, opts.block_shape.cols, opts.block_shape.part_px],
            "grid": [self.blocks[0].frame.grid.height, self.blocks[0].frame.grid.width],
        }
        manifest = {
            "job": job.name,
            "model": model,
            "options": options,
            "aoi": aoi_id,
            "sources": {"count": len(sources), "hash": digest(sources)},
            "execution": execution,
            "blocks": len(self.blocks),
        }
        self.state = State(self._out_dir(), job.name, digest(manifest), manifest)
        self.ctx = self._join_context(src, pred, bands)
        self.ctx.index = index
        self._decide(aoi)

    def _out_dir(self) -> Path:
        return self.outputs[0].classes.parent

    def _outputs(
        self,
        sources: list[dict[str, Any]],
        model: str,
        options: dict[str, Any],
        aoi_id: str | None,
        catalog: dict[str, Any] | None,
    ) -> list[Output]:
        job = self.job
        if job.catalog and self.opts.mosaic:
            name = redact(os.fspath(job.vrt)) if job.vrt is not None else job.name
            assert catalog is not None
            source = {"path": name, "size": None, "header": catalog["hash"]}
            tile = self._mosaic_tile()
            cls, prob, ql = self.paths(job.name)
            prov = Provenance(source, model, options, aoi_id, catalog)
            given = os.fspath(job.vrt) if job.vrt is not None else _folder(job)
            return [Output(tile, cls, prob, ql, prov, given)]
        outputs = []
        for tile, source in zip(job.tiles, sources, strict=True):
            cls, prob, ql = self.paths(Path(source_label(tile.path)).stem)
            outputs.append(
                Output(tile, cls, prob, ql, Provenance(source, model, options, aoi_id, catalog))
            )
        return outputs

    def _join_context(self, src: Any, pred: Any, bands: list[int]) -> JoinContext:
        assert self.state is not None
        opts, bundle = self.opts, self.bundle
        co = cog_options(opts.creation_options, opts.overview_resampling)
        co_prob = cog_options(opts.creation_options, "AVERAGE")
        if self.device.startswith("cuda"):  # the CPU cores are free to compress
            for c in (co, co_prob):
                c.setdefault("NUM_THREADS", "ALL_CPUS")
        ckpt = getattr(bundle, "path", None)
        return JoinContext(
            state=self.state,
            blocks=self.blocks,
            pred=GridRef(pred.crs, pred.transform, pred.width, pred.height),
            grid=GridRef(src.crs, src.transform, src.width, src.height),
            resampled=pred is not src,
            classes=bundle.classes,
            probabilities=opts.probabilities,
            creation=co,
            creation_prob=co_prob,
            overwrite=opts.overwrite,
            source=src,
            bands=bands,
            title=f" · {Path(ckpt).name}" if ckpt else "",
            model_tags=model_tags(bundle),
        )

    def _decide(self, aoi: Any) -> None:
        """Each output's fate (module doc), and which records this process gives."""
        assert self.state is not None and self.ctx is not None
        resuming = self.state.open()
        for d, theirs in self.state.others():
            changed = ", ".join(manifest_changes(self.state.manifest, theirs)) or "unknown"
            log.warning(
                "%s: the state kept by an earlier run (%s) was made with other arguments (%s); "
                "starting over, it is removed when this run completes",
                self.job.name,
                d,
                changed,
            )
        for i, o in enumerate(self.outputs):
            if aoi is not None and not _touches(o.tile, aoi):
                self.outside.add(i)
                self._record(i, SceneResult(scene=Path(str(o.tile.path)), source=os.fspath(o.tile.path), status="skipped",
                                            error="outside --aoi"))  # fmt: skip
                continue
            if not any(self.owned(b) for b in needed_blocks(self.ctx, o)):
                continue  # another process's: it checks, computes and writes it
            try:
                fate = self._fate(o, resuming)
            except (OutputExistsError, InputError) as e:
                self._record(i, _failed(o, e))
                continue
            if fate == "done":
                log.info(
                    "%s: complete output %s exists; skipped", Path(str(o.tile.path)).name, o.classes
                )
                self._record(i, _skipped(o))
            else:
                self.todo[i] = o

    def _fate(self, o: Output, resuming: bool) -> str:
        """ "todo" or "done"; raises when an existing output stands in the way."""
        for p in o.paths:
            check_not_input(p, [o.tile.path])
        present = [p for p in o.paths if p.exists() or p.is_symlink()]
        if not present:
            return "todo"
        if self.opts.overwrite:
            for p in present:
                check_output(p, True)
            return "todo"
        if not o.classes.exists() and self._sides_complete(o, present):
            self.replace.add(id(o))  # a writer stopped between its renames: write it again
            return "todo"
        reason = self._incomplete(o)
        if reason is None:
            if self.opts.skip_existing or resuming:
                return "done"
            raise OutputExistsError(present[0])
        raise OutputExistsError(
            present[0],
            f"it is not a complete prediction of {o.provenance.source.get('path')} ({reason}); "
            "delete it or pass --overwrite",
        )

    def _sides_complete(self, o: Output, present: list[Path]) -> bool:
        """Whether the side outputs in ``present`` are complete ones of ``o`` (its class
        raster is renamed last, so a writer stopped between its renames leaves these)."""
        import json

        h, w = o.tile.height, o.tile.width
        table = json.dumps(self.bundle.classes.to_list())
        for p in present:
            if p == o.probabilities:
                shape = (len(self.bundle.classes), h, w)
                if why_incomplete(p, o.provenance, table, shape) is not None:
                    return False
            elif p == o.quicklook:
                if why_quicklook_incomplete(p, o.provenance) is not None:
                    return False
            else:
                return False
        return True

    def _incomplete(self, o: Output) -> str | None:
        import json

        h, w = o.tile.height, o.tile.width
        table = json.dumps(self.bundle.classes.to_list())
        K = len(self.bundle.classes)
        for p, shape in ((o.classes, (1, h, w)), (o.probabilities, (K, h, w))):
            if p is None:
                continue
            if not p.exists():
                return f"{p.name} is missing"
            reason = why_incomplete(p, o.provenance, table, shape)
            if reason:
                return f"{p.name}: {reason}" if p != o.classes else reason
        if o.quicklook is not None:
            if not o.quicklook.exists():
                return f"{o.quicklook.name} is missing"
            reason = why_quicklook_incomplete(o.quicklook, o.provenance)
            if reason:
                return f"{o.quicklook.name}: {reason}"
        return None

    def _record(self, i: int, rec: SceneResult) -> None:
        if i in self.reported:
            self.recorded.add(i)
            self.result.outputs.append(rec)

    # -- computing blocks and writing outputs -------------------------------------

    def _compute(self, source: FrameInput, dev: Any) -> None:
        assert self.state is not None and self.ctx is not None
        for i, o in self.todo.items():
            self.need[i] = needed_blocks(self.ctx, o)
            for b in self.need[i]:
                self.users.setdefault(b.index, []).append(i)
        mine = [b for b in self.blocks if b.index in self.users and self.owned(b)]
        for b in mine:  # outputs whose blocks are all there already
            self._write_ready(b)
        todo = [b for b in mine if not self.state.done(b, self.opts.probabilities)]
        try:
            self._stream(todo, source, dev)
        except DiskFullError as e:  # name what could not be written, not a block of the state
            target = self.outputs[0].classes if len(self.outputs) == 1 else self._out_dir()
            raise DiskFullError(target) from e
        self.result.windows = self.stats.windows
        self.result.forward_seconds = self.stats.forward_seconds

    def _stream(self, todo: list[Block], source: FrameInput, dev: Any) -> None:
        """Compute the blocks ``todo``: consecutive bands of a part in one stream each."""
        label = self.job.name
        for run in runs(todo):
            frame = run_frame(run)
            t0 = time.perf_counter()
            with BlockCutter(frame, run, self._open_block, self._block_done) as sink:
                stats = predict_frame(
                    self.bundle,
                    source,
                    frame,
                    sink,
                    probabilities=self.opts.probabilities,
                    tta=self.opts.tta,
                    device=dev,
                    progress=self.progress,
                    label=label,
                )
            self.grid_seconds += time.perf_counter() - t0
            self.stats.windows += stats.windows
            self.stats.forward_seconds += stats.forward_seconds
            self.result.blocks_run += len(run)

    def _open_block(self, block: Block) -> BlockFiles:
        assert self.state is not None and self.ctx is not None
        return BlockFiles(
            self.state, block, self.ctx.pred, self.bundle.classes, self.opts.probabilities
        )

    def _block_done(self, block: Block) -> None:
        self._write_ready(block)

    def _write_ready(self, block: Block) -> None:
        """Write the outputs that ``block`` takes part in and whose blocks are all there."""
        assert self.state is not None
        for i in self.users.get(block.index, []):
            if i in self.written:
                continue
            if all(self.state.done(b, self.opts.probabilities) for b in self.need[i]):
                self._write(i, self.todo[i])

    def _write(self, i: int, o: Output) -> None:
        assert self.ctx is not None
        try:
            rec = write_output(self.ctx, o, replace=id(o) in self.replace)
        except Exception as e:
            assert self.state is not None
            # another process finished the same blocks at the same moment: it renamed the
            # output first, or it holds the output's lock while it writes it
            race = isinstance(e, OutputExistsError | LockedError) or not self.state.root.is_dir()
            if self._written_by_another(o, wait=30.0 if race else 0.0):
                self.written.add(i)
                return
            raise
        self.written.add(i)
        self.recorded.add(i)
        rec.device, rec.gsd = self.device, grid_gsd(o.tile.crs, o.tile.transform)
        rec.resampled = self.ctx.resampled
        self.result.outputs.append(rec)

    def _written_by_another(self, o: Output, wait: float) -> bool:
        """Whether another process that finished the same blocks at the same moment has
        written ``o`` (its class raster, renamed last, appears within ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while not o.classes.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        return o.classes.exists() and self._incomplete(o) is None

    def _finish(self) -> None:
        assert self.state is not None
        waiting = [
            i for i in self.todo if i not in self.written and not self.todo[i].classes.exists()
        ]
        self.result.pending = len(waiting)
        for i in waiting:
            if i in self.reported:
                o = self.todo[i]
                self.result.outputs.append(
                    SceneResult(
                        scene=Path(str(o.tile.path)),
                        source=os.fspath(o.tile.path),
                        status="pending",
                        output=o.classes,
                    )
                )
        unwritten = [
            o
            for i, o in enumerate(self.outputs)
            if i not in self.outside and not o.classes.exists()
        ]
        if unwritten:  # waiting for other processes' blocks (or failed: a rerun needs them)
            self.result.state = self.state.root
            return
        self.state.remove([d for d, _ in self.state.others()])
        if len(self.outputs) == 1 and self.result.outputs:  # a scene: its numbers
            rec = self.result.outputs[0]
            rec.windows, rec.forward_seconds = self.stats.windows, self.stats.forward_seconds
            rec.grid_seconds = self.grid_seconds
            # the whole prediction of the scene, not only the writing of its output (the join)
            rec.seconds = time.perf_counter() - self.started
            rec.pixels_per_second = rec.width * rec.height / max(rec.seconds, 1e-9)


def _sized(job: Job, src: Any) -> Job:
    """``job`` with the size and grid of its opened source (a scene's header may not have
    been read before)."""
    if job.width == src.width and job.height == src.height and job.transform == src.transform:
        return job
    from dataclasses import replace

    tiles = job.tiles
    if not job.catalog:
        tiles = [Tile(tiles[0].path, 0, 0, src.height, src.width, src.transform, src.crs)]
    return replace(
        job, tiles=tiles, width=src.width, height=src.height, crs=src.crs, transform=src.transform
    )


def _folder(job: Job) -> str:
    """The folder of a catalog's files (the first tile's, when they lie in several)."""
    first = os.fspath(job.tiles[0].path)
    return first.rsplit("/", 1)[0] if "/" in first else "."


@contextlib.contextmanager
def _open_source(job: Job, require_crs: bool) -> Any:
    """The job's source raster: the scene, the user's VRT, or the VRT built for its tiles."""
    from rasterio.io import MemoryFile

    from aerialct.geo.io import no_georef_warning, open_raster

    if job.vrt_xml is None:
        assert job.source is not None
        with (
            open_raster(job.source, require_crs=require_crs) as ds,
            no_georef_warning(ds.crs is None),
        ):
            yield ds
        return
    with MemoryFile(job.vrt_xml.encode(), ext=".vrt") as mem, mem.open() as ds:
        yield ds


def _touches(tile: Tile, aoi: Any) -> bool:
    import shapely
    from rasterio.transform import array_bounds

    bounds = array_bounds(tile.height, tile.width, tile.transform)
    return bool(shapely.intersects(shapely.box(*bounds), aoi))


def _failed(o: Output, e: Exception) -> SceneResult:
    return SceneResult(
        scene=Path(str(o.tile.path)),
        source=os.fspath(o.tile.path),
        status="failed",
        error=" ".join(str(e).split()),
        exception=e,
    )


def _skipped(o: Output) -> SceneResult:
    return SceneResult(
        scene=Path(str(o.tile.path)),
        source=os.fspath(o.tile.path),
        status="skipped",
        output=o.classes,
        probabilities=o.probabilities,
        quicklook=o.quicklook,
    )
