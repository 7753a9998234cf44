"""The training loop behind ``aerialct train``.

:func:`train` reads the chips index, builds the model and the task (named loss
terms), and runs AdamW with warm-up + cosine/poly decay, gradient clipping,
autocast, gradient accumulation and (under ``torchrun``) DDP. The pieces:
:func:`aerialct.engine.run.build_run` (data checks, model, optimiser, resume, DDP
wrap, saving), :func:`aerialct.engine.epoch.train_epoch` and
:func:`aerialct.engine.epoch.validate`; the loop here ties them together. Rank 0
writes the run folder::

    RUN_DIR/config.yaml    the resolved config (normalisation stats filled in)
    RUN_DIR/last.pt        the latest state (every epoch and every train.checkpoint_every steps)
    RUN_DIR/best.pt        the state with the best validation mean IoU
    RUN_DIR/metrics.csv    one row per epoch: lr, images/s, train_<term> for each loss term the
                           task returns, val CE/mIoU/mF1/OA, IoU/F1 per class
    RUN_DIR/loss.png, iou.png, confusion.png
    RUN_DIR/events.out.tfevents.*  TensorBoard scalars, when tensorboard is installed
    RUN_DIR/summary.json   the final :class:`TrainResult`

Every file is written atomically. ``resume=True`` continues from ``last.pt``
(model, optimiser, scheduler, grad scaler, step, position in the epoch, RNG
states, metric history), so a killed run loses at most the steps since the last
checkpoint.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from aerialct.config import ExperimentConfig
from aerialct.engine.distributed import (
    barrier,
    cleanup_distributed,
    init_distributed,
    resolve_device,
)
from aerialct.engine.epoch import train_epoch, validate
from aerialct.engine.run import Run, build_run, write_text
from aerialct.engine.run_dir import RunFolder
from aerialct.geo.outputs import check_not_input
from aerialct.progress import ProgressFn, as_progress
from aerialct.render import json_text

log = logging.getLogger("aerialct")

__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run produced."""

    run_dir: str
    last_checkpoint: str
    best_checkpoint: str | None
    epochs: int
    """Completed epochs."""
    steps: int
    """Optimiser steps done in total (including those before a resume)."""
    best_miou: float | None
    best_epoch: int | None
    final: dict[str, Any]
    """The last metrics row (loss terms, lr, images/s, IoU/F1 per class, mIoU, OA)."""
    elapsed_s: float
    images_per_s: float
    device: str
    world_size: int
    resumed_from_step: int | None = None
    train_chips: int = 0
    val_chips: int = 0
    val_split: str | None = None
    normalization: dict[str, list[float]] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)


def train(
    cfg: ExperimentConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train ``cfg`` on the chips in ``data_dir``, writing the run folder ``out_dir``.

    ``device`` overrides ``cfg.train.device``. Under ``torchrun`` (WORLD_SIZE > 1)
    every rank calls this; rank 0 writes files and returns the full result.
    """
    out = Path(out_dir)
    # a run written into its own chips would be deleted with them by the next --overwrite
    check_not_input(out, [data_dir], "would mix the run into the chips it trains on ({item}); "
                    "choose another --out")  # fmt: skip
    dev = resolve_device(device or cfg.train.device)
    if dev.type == "cuda":
        # The contrastive similarities run in float32 outside autocast: let them use TF32.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    info = init_distributed(dev)
    try:
        folder = RunFolder(out, resume=resume, overwrite=overwrite, is_main=info.is_main)
        barrier(info)
    except BaseException:
        cleanup_distributed(info)
        raise
    try:
        run = build_run(
            cfg, Path(data_dir), out, dev, info, resume=resume, on_checkpoint=folder.checkpointed
        )
        return _fit(run, as_progress(progress if info.is_main else None))
    except BaseException:
        folder.failed()
        raise
    finally:
        folder.close()
        cleanup_distributed(info)


def _fit(run: Run, prog: ProgressFn) -> TrainResult:
    """The epoch loop: train, validate, keep the best, write the run files; the result."""
    tc, state, info = run.cfg.train, run.state, run.info
    _log_start(run)
    t_start = time.perf_counter()
    prog(0, total=run.total_steps, description="training")
    prog(state.step)
    events = None
    if info.is_main:
        from aerialct.engine.events import EventLog

        # events after the checkpoint's step belong to a killed or replaced run
        events = EventLog(run.out, purge_step=state.step + 1 if run.resumed_from is not None else 0)
    images, train_time = 0, 0.0
    budget = _PlotBudget()
    while state.epoch < tc.epochs and state.step < run.total_steps:
        epoch = train_epoch(run, prog)
        images, train_time = images + epoch.images, train_time + epoch.seconds
        row: dict[str, Any] = {
            "epoch": state.epoch,
            "step": state.step,
            "lr": run.scheduler.get_last_lr()[0],
            "elapsed_s": round(time.perf_counter() - t_start, 2),
            "images_per_s": epoch.images_per_s,
            **{f"train_{name}": value for name, value in epoch.terms.items()},
        }
        last_epoch = state.epoch >= tc.epochs or state.step >= run.total_steps
        improved = False
        if run.val_ds is None:
            improved, state.best_epoch = True, state.epoch
        elif state.epoch % tc.val_every == 0 or last_epoch:
            improved = _validate_into(run, row)
        state.history.append(row)
        # last.pt and the plots every train.save_every epochs (short epochs: each write of a
        # paper model with its AdamW state is ~170 MB), and always at a best or final epoch.
        keep = improved or last_epoch or state.epoch % tc.save_every == 0
        if keep:
            run.save(best=improved)
        if info.is_main:
            draw, started = keep and budget.due(last_epoch), time.perf_counter()
            _write_epoch(run, row, events, plots=draw)
            if draw:
                budget.drawn(started)
        log.info(_epoch_line(row, tc.epochs))
        barrier(info)
    if events is not None:
        events.close()
    return _result(
        run, time.perf_counter() - t_start, images * info.world_size / max(train_time, 1e-9)
    )


def _log_start(run: Run) -> None:
    tc, info = run.cfg.train, run.info
    log.info(
        "training %s on %d chips (%d validation) on %s%s: %d steps of %d images",
        run.cfg.model.backbone,
        len(run.train_ds),
        len(run.val_ds or ()),
        run.dev,
        f" x{info.world_size}" if info.enabled else "",
        run.total_steps,
        tc.batch_size * tc.accumulate * info.world_size,
    )


def _validate_into(run: Run, row: dict[str, Any]) -> bool:
    """Validate, add the scores to the epoch's ``row``; True when the mean IoU is a new best."""
    state = run.state
    scores, val_ce = validate(run)
    row["val_ce"] = val_ce
    row["val_miou"] = scores.mean_iou
    row["val_mf1"] = scores.mean_f1
    row["val_oa"] = scores.overall_accuracy
    for name in run.classes.names:
        row[f"iou_{name}"] = scores.per_class[name]["iou"]
    for name in run.classes.names:
        row[f"f1_{name}"] = scores.per_class[name]["f1"]
    miou = scores.mean_iou
    if miou is None or not math.isfinite(miou):
        return False
    if state.best_miou is not None and miou <= state.best_miou:
        return False
    state.best_miou, state.best_epoch = float(miou), state.epoch
    state.best_confusion = scores.confusion
    return True


# ---------------------------------------------------------------------------
# Run files


class _PlotBudget:
    """When to redraw the PNG plots: at most SHARE of the run's time goes to them.

    Drawing three figures costs one to two CPU seconds (the first drawing also imports
    matplotlib), longer than a whole epoch of a small model. The plots are redrawn once the
    time since the last drawing (or the start) is 1 / SHARE times what a drawing takes
    (FIRST_COST until one was timed), and always at the final epoch: every epoch on runs
    whose epochs take a minute or more. metrics.csv and the TensorBoard scalars still
    follow every epoch.
    """

    SHARE = 0.05
    FIRST_COST = 1.5

    def __init__(self) -> None:
        self.cost = self.FIRST_COST
        self.done = time.perf_counter()

    def due(self, final: bool) -> bool:
        return final or (time.perf_counter() - self.done) * self.SHARE >= self.cost

    def drawn(self, started: float) -> None:
        self.done = time.perf_counter()
        self.cost = self.done - started


def _write_epoch(run: Run, row: dict[str, Any], events: Any, plots: bool) -> None:
    """``metrics.csv`` (every epoch), the TensorBoard scalars and, when ``plots``, the PNGs."""
    _write_csv(run.out / "metrics.csv", run.state.history)
    if events is not None:
        events.add(row)
    if plots:
        _draw(run)


def _write_csv(path: Path, history: list[dict]) -> None:
    cols: list[str] = []
    for row in history:
        cols.extend(k for k in row if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for row in history:
        w.writerow({k: _csv_value(row.get(k)) for k in cols})
    write_text(path, buf.getvalue())


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _draw(run: Run) -> None:
    from aerialct.engine.plots import plot_confusion, plot_history

    state, names, out = run.state, run.classes.names, run.out
    try:
        plot_history(state.history, out, names)
        if state.best_confusion is not None:
            plot_confusion(
                state.best_confusion,
                names,
                out / "confusion.png",
                title=f"Validation confusion, epoch {state.best_epoch} (row-normalised)",
            )
    except (OSError, ValueError, RuntimeError) as e:  # plots are a convenience, never fatal
        log.warning("could not draw the plots in %s: %s", out, e)


def _epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"step {row['step']}"]
    if row.get("train_loss") is not None:
        parts.append(f"loss {row['train_loss']:.4f}")
    if row.get("val_miou") is not None:
        parts.append(f"val mIoU {row['val_miou']:.4f}")
    parts.append(f"{row['images_per_s']:.1f} img/s")
    return ", ".join(parts)


def _result(run: Run, elapsed: float, images_per_s: float) -> TrainResult:
    """The run's :class:`TrainResult`, also written as ``summary.json`` by rank 0."""
    out, state, dc = run.out, run.state, run.cfg.data
    result = TrainResult(
        run_dir=str(out),
        last_checkpoint=str(out / "last.pt"),
        best_checkpoint=str(out / "best.pt") if (out / "best.pt").exists() else None,
        epochs=state.epoch,
        steps=state.step,
        best_miou=state.best_miou,
        best_epoch=state.best_epoch,
        final=state.history[-1] if state.history else {},
        elapsed_s=round(elapsed, 2),
        images_per_s=images_per_s,
        device=str(run.dev),
        world_size=run.info.world_size,
        resumed_from_step=run.resumed_from,
        train_chips=len(run.train_ds),
        val_chips=len(run.val_ds or ()),
        val_split=run.splits.val_split,
        normalization={"mean": list(dc.mean or ()), "std": list(dc.std or ())},
        plots=[
            str(out / n) for n in ("loss.png", "iou.png", "confusion.png") if (out / n).exists()
        ],
    )
    if run.info.is_main:
        write_text(out / "summary.json", json_text(asdict(result)))
    return result
