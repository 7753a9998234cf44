"""The training loop behind ``aerialct train``.

:func:`train` reads the chips index, builds the model and the task (named loss
terms), and runs AdamW with warm-up + cosine/poly decay, gradient clipping,
autocast, gradient accumulation and (under ``torchrun``) DDP. Rank 0 writes the
run folder::

    RUN_DIR/config.yaml    the resolved config (normalisation stats filled in)
    RUN_DIR/last.pt        the latest state (every epoch and every train.checkpoint_every steps)
    RUN_DIR/best.pt        the state with the best validation mean IoU
    RUN_DIR/metrics.csv    one row per epoch: loss terms, lr, images/s, IoU/F1 per class, mIoU, OA
    RUN_DIR/loss.png, iou.png, confusion.png
    RUN_DIR/events.out.tfevents.*  TensorBoard scalars, when tensorboard is installed
    RUN_DIR/summary.json   the final :class:`TrainResult`

Every file is written atomically. ``resume=True`` continues from ``last.pt``
(model, optimiser, scheduler, grad scaler, step, position in the epoch, RNG
states, metric history), so a killed run loses at most the steps since the last
checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.config import ExperimentConfig, dump_yaml
from aerialct.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    gather_with_grad,
    init_distributed,
)
from aerialct.engine.run_dir import RunFolder
from aerialct.errors import CheckpointError, ConfigError, TrainingError
from aerialct.geo.io import atomic_output
from aerialct.progress import ProgressFn, as_progress
from aerialct.workers import worker_signals

log = logging.getLogger("aerialct")

__all__ = ["TrainResult", "lr_factor", "resolve_device", "train"]

LOSS_TERMS = ("loss", "ce", "dice", "ct", "ms", "cs")


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


# ---------------------------------------------------------------------------
# Small pieces (public where tests or other modules use them)


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local GPU when there is one, else CPU; ``cuda`` -> cuda:LOCAL_RANK."""
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: no CUDA GPU is visible; use --device cpu")
        return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps': not available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"device {name!r} is not valid; use cpu, cuda, cuda:N or auto") from e


def lr_factor(step: int, total: int, cfg: Any) -> float:
    """LR multiplier at optimiser step ``step``: linear warm-up from 1%, then cosine/poly/constant."""
    warm = max(0, int(cfg.warmup_steps))
    if warm and step < warm:
        return 0.01 + 0.99 * step / warm
    if cfg.scheduler == "constant":
        return 1.0
    p = min(1.0, max(0.0, (step - warm) / max(1, total - warm)))
    lo = float(cfg.min_lr_ratio)
    if cfg.scheduler == "cosine":
        return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * p))
    return lo + (1.0 - lo) * (1.0 - p) ** float(cfg.poly_power)


def _amp_setup(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler)."""
    if amp == "auto":
        if device.type == "cuda":
            return (
                (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
            )
        return None, False
    if amp == "none":
        return None, False
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp=fp16 needs a CUDA GPU; use bf16 or none on the CPU")
        return torch.float16, True
    return torch.bfloat16, False


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any] | None) -> None:
    if not state:
        return
    with contextlib.suppress(KeyError, TypeError, ValueError, RuntimeError):
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _EpochSampler(Sampler[int]):
    """This rank's shuffled indices for one epoch, from position ``skip`` on (for resume).

    Same order as :class:`torch.utils.data.DistributedSampler` (seeded by run seed and
    epoch, padded so every rank gets the same count and hence the same number of steps).
    With ``weights`` (one per chip, ``data.oversample_rare``) the epoch's ``n`` indices
    are drawn with replacement in proportion to them (same seed rule), then shared out.
    """

    def __init__(
        self,
        n: int,
        info: DistInfo,
        seed: int,
        epoch: int,
        skip: int = 0,
        weights: np.ndarray | None = None,
    ) -> None:
        from torch.utils.data import DistributedSampler

        if weights is not None:
            g = torch.Generator().manual_seed(seed + epoch)
            drawn = torch.multinomial(
                torch.as_tensor(weights, dtype=torch.float64), n, True, generator=g
            )
            per_rank = _local_count(n, info.world_size)
            padded = drawn.tolist() + drawn.tolist()[: per_rank * info.world_size - n]
            self.indices = padded[info.rank :: info.world_size][skip:]
            return

        base = DistributedSampler(
            range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed
        )
        base.set_epoch(epoch)
        self.indices = list(base)[skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _class_weights(cfg: ExperimentConfig, splits: Any, k: int) -> torch.Tensor | None:
    """Cross-entropy class weights: given (``loss.class_weight_values``), from the training
    split's pixel counts (``loss.class_weights: auto``), or None."""
    from aerialct.losses.imbalance import class_weights_from_counts

    lc = cfg.loss
    if lc.class_weight_values is not None:
        if len(lc.class_weight_values) != k or min(lc.class_weight_values) < 0:
            raise ConfigError(
                f"loss.class_weight_values has {len(lc.class_weight_values)} values; give {k} "
                f"non-negative weights, one per class ({', '.join(splits.classes.names)})"
            )
        w = np.asarray(lc.class_weight_values, dtype=np.float64)
    elif lc.class_weights == "auto":
        w = class_weights_from_counts(splits.extra["train_counts"].sum(axis=0))
    else:
        return None
    log.info(
        "class weights: %s",
        ", ".join(f"{n} {v:.3g}" for n, v in zip(splits.classes.names, w, strict=True)),
    )
    return torch.tensor(w, dtype=torch.float32)


def _rare_chip_weights(dc: Any, splits: Any) -> np.ndarray | None:
    """Sampling weights of the training chips for ``data.oversample_rare`` (None when 1)."""
    from aerialct.losses.imbalance import rare_chip_weights

    if dc.oversample_rare == 1.0:
        return None
    if dc.oversample_rare <= 0 or not 0 < dc.rare_share < 1:
        raise ConfigError(
            f"data.oversample_rare {dc.oversample_rare} must be > 0 and data.rare_share "
            f"{dc.rare_share} in (0, 1)"
        )
    w = rare_chip_weights(splits.extra["train_counts"], dc.rare_share, dc.oversample_rare)
    log.info(
        "oversampling %d of %d training chips (rare classes) %gx",
        int((w != 1.0).sum()), len(w), dc.oversample_rare,
    )  # fmt: skip
    return w


def _local_count(n: int, world: int) -> int:
    return math.ceil(n / world)


# ---------------------------------------------------------------------------
# Run folder


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(text)


def _write_csv(path: Path, history: list[dict]) -> None:
    cols: list[str] = []
    for row in history:
        cols.extend(k for k in row if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for row in history:
        w.writerow({k: _csv_value(row.get(k)) for k in cols})
    _write_text(path, buf.getvalue())


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


# ---------------------------------------------------------------------------
# The loop


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    """Completed epochs."""
    batch_in_epoch: int = 0
    """Batches of the current (incomplete) epoch already trained; non-zero only mid-epoch."""
    best_miou: float | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    best_confusion: list | None = None


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
    from aerialct.engine.checkpoint import check_resume_compatible, load_checkpoint

    out = Path(out_dir)
    dev_name = device or cfg.train.device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(dev_name, local_rank)
    if dev.type == "cuda":
        # The contrastive similarities run in float32 outside autocast: let them use TF32.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    info = init_distributed(dev)
    try:
        run = RunFolder(out, resume=resume, overwrite=overwrite, is_main=info.is_main)
        barrier(info)
    except BaseException:
        cleanup_distributed(info)
        raise
    try:
        ckpt = load_checkpoint(out / "last.pt", for_training=True) if resume else None
        if ckpt is not None:
            # Normalisation is part of the model: a resumed run keeps the checkpoint's.
            norm = ckpt["normalization"]
            cfg = replace(
                cfg,
                data=replace(
                    cfg.data,
                    mean=tuple(norm["mean"]),
                    std=tuple(norm["std"]),
                    low=tuple(norm["low"]) if norm.get("low") else None,
                    high=tuple(norm["high"]) if norm.get("high") else None,
                ),
            )
        return _train(
            cfg, Path(data_dir), out, ckpt, dev, info, progress, check_resume_compatible,
            on_checkpoint=run.checkpointed,
        )  # fmt: skip
    except BaseException:
        run.failed()
        raise
    finally:
        cleanup_distributed(info)


def _train(
    cfg: ExperimentConfig,
    data_dir: Path,
    out: Path,
    ckpt: dict | None,
    dev: torch.device,
    info: DistInfo,
    progress: ProgressFn | None,
    check_resume_compatible: Callable[..., None],
    on_checkpoint: Callable[[], None] = lambda: None,
) -> TrainResult:
    from aerialct.data.dataset import open_chip_splits
    from aerialct.data.transforms import JointAugment, Normalize
    from aerialct.engine.checkpoint import make_checkpoint, save_checkpoint
    from aerialct.engine.task import SegmentationTask
    from aerialct.models import build_model

    prog = as_progress(progress if info.is_main else None)
    tc, dc = cfg.train, cfg.data
    _validate_train_config(cfg)

    # Data -------------------------------------------------------------------
    splits = open_chip_splits(data_dir, dc, check_files=True)
    classes: ClassTable = splits.classes
    if dc.classes is not None and list(dc.classes) != classes.names:
        raise ConfigError(
            f"{splits.root}: chips have classes {classes.names} but data.classes is "
            f"{list(dc.classes)}; tile with the expected class table or fix data.classes"
        )
    if getattr(cfg.model, "img_size", splits.chip_size) != splits.chip_size:
        log.info("model.img_size set to the chip size, %d", splits.chip_size)
        cfg = replace(cfg, model=replace(cfg.model, img_size=splits.chip_size))
    k = len(classes)
    ignore = int(splits.meta.get("ignore_index", IGNORE_INDEX))
    if ckpt is not None:
        check_resume_compatible(ckpt, cfg, classes, splits.in_chans, out / "last.pt")
    if classes.excluded_from_mean:  # the class table's own exclusions join the config's
        excluded = tuple(dict.fromkeys((*dc.exclude_from_mean, *classes.excluded_from_mean)))
        cfg = replace(cfg, data=replace(dc, exclude_from_mean=excluded))
        dc = cfg.data
    chip_stats = splits.meta.get("band_stats") or {}
    if (dc.mean is None or dc.std is None) and len(chip_stats.get("mean", ())) == splits.in_chans:
        # robust statistics of the training pixels, computed by `tile` over valid pixels
        cfg = replace(
            cfg,
            data=replace(
                dc,
                mean=tuple(chip_stats["mean"]),
                std=tuple(chip_stats["std"]),
                low=dc.low or tuple(chip_stats["low"]),
                high=dc.high or tuple(chip_stats["high"]),
            ),
        )
        dc = cfg.data
    if dc.mean is None or dc.std is None:  # chips tiled before band_stats existed
        stats = None
        if info.is_main:
            stats = splits.band_stats(dc.stats_chips)
        mean, std = broadcast_object(stats, info)  # type: ignore[misc]
        cfg = replace(cfg, data=replace(dc, mean=tuple(mean), std=tuple(std)))
        dc = cfg.data
    if len(dc.mean or ()) != splits.in_chans or len(dc.std or ()) != splits.in_chans:
        raise ConfigError(
            f"data.mean/std have {len(dc.mean or ())}/{len(dc.std or ())} values but the chips "
            f"have {splits.in_chans} bands; give one value per band or leave them null"
        )
    assert dc.mean is not None and dc.std is not None
    normalize = Normalize(dc.mean, dc.std, dc.low, dc.high)
    augment = JointAugment(dc.hflip, dc.vflip, dc.rot90, dc.scale_range)
    train_ds = splits.dataset("train", normalize, augment, num_classes=k)
    chip_weights = _rare_chip_weights(dc, splits)
    val_ds = splits.dataset("val", normalize, None, num_classes=k) if splits.val else None
    if info.is_main:
        _write_text(out / "config.yaml", dump_yaml(cfg))
    # sized to this machine here, not in cfg: the saved config keeps the value asked for
    dc = replace(dc, num_workers=loader_workers(dc.num_workers))

    # Model, task, optimiser -----------------------------------------------------
    _seed_everything(tc.seed)
    model = build_model(cfg.model, num_classes=k, in_chans=splits.in_chans)
    h, w = splits.chip_shape
    model.check_input_size(h, w)
    class_weight = _class_weights(cfg, splits, k)
    task = SegmentationTask(
        model, cfg.loss, num_classes=k, ignore_index=ignore,
        gather=gather_with_grad if info.enabled else None,
        class_weight=class_weight,
    )  # fmt: skip
    task.to(dev)
    heads = getattr(task, "heads", None)
    if ckpt is not None:
        task.model.load_state_dict(ckpt["model"])
        if heads is not None and ckpt.get("heads"):
            try:
                heads.load_state_dict(ckpt["heads"])
            except RuntimeError as e:
                raise CheckpointError(
                    f"{out / 'last.pt'}: projection heads do not fit the loss config "
                    f"({str(e).splitlines()[0][:120]}); keep the checkpoint's loss settings"
                ) from e
    if tc.compile:
        # An instance attribute: forward() and the task both call it; state_dict is unchanged.
        task.model.forward_with_features = torch.compile(task.model.forward_with_features)  # type: ignore[method-assign]
    decay = [p for p in task.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in task.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": tc.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=tc.lr,
    )
    local_n = _local_count(len(train_ds), info.world_size)
    drop_last = local_n >= tc.batch_size
    batches_per_epoch = local_n // tc.batch_size if drop_last else 1
    steps_per_epoch = math.ceil(batches_per_epoch / tc.accumulate)
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, tc)
    )
    amp_dtype, use_scaler = _amp_setup(tc.amp, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=use_scaler)

    state = _State()
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        m = ckpt.get("metrics") or {}
        state = _State(
            step=int(ckpt["step"]),
            epoch=int(ckpt["epoch"]),
            batch_in_epoch=int(ckpt.get("batch_in_epoch", 0)),
            best_miou=ckpt.get("best_miou"),
            best_epoch=m.get("best_epoch"),
            history=list(m.get("history", [])),
            best_confusion=m.get("best_confusion"),
        )
        _set_rng_state(ckpt.get("rng"))
        log.info("resuming %s at step %d (epoch %d)", out, state.step, state.epoch + 1)
    resumed_from = state.step if ckpt is not None else None

    net: torch.nn.Module = task
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(
            task,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=tc.find_unused_parameters,
        )

    def save(name_best: bool) -> None:
        """Write last.pt (and best.pt when ``name_best``) from rank 0."""
        if not info.is_main:
            return
        ck = make_checkpoint(
            config=cfg,
            classes=classes,
            mean=dc.mean or (),
            std=dc.std or (),
            low=dc.low,
            high=dc.high,
            in_chans=splits.in_chans,
            chip_size=splits.chip_size,
            gsd=splits.gsd,
            ignore_index=ignore,
            model_state=task.model.state_dict(),
            heads_state=heads.state_dict() if heads is not None else {},
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict() if use_scaler else None,
            step=state.step,
            epoch=state.epoch,
            rng=_rng_state(),
            best_miou=state.best_miou,
            metrics={
                "history": state.history,
                "last": state.history[-1] if state.history else {},
                "best_epoch": state.best_epoch,
                "best_confusion": state.best_confusion,
            },
        )
        ck["batch_in_epoch"] = state.batch_in_epoch
        save_checkpoint(out / "last.pt", ck)
        if name_best:
            with atomic_output(out / "best.pt", overwrite=True) as tmp:
                shutil.copyfile(out / "last.pt", tmp)
        on_checkpoint()

    log.info(
        "training %s on %d chips (%d validation) on %s%s: %d steps of %d images",
        cfg.model.backbone,
        len(train_ds),
        len(val_ds or ()),
        dev,
        f" x{info.world_size}" if info.enabled else "",
        total_steps,
        tc.batch_size * tc.accumulate * info.world_size,
    )
    t_start = time.perf_counter()
    prog(0, total=total_steps, description="training")
    prog(state.step)
    events = None
    if info.is_main:
        from aerialct.engine.events import EventLog

        # events after the checkpoint's step belong to a killed or replaced run
        events = EventLog(out, purge_step=state.step + 1 if ckpt is not None else 0)
    images_total = 0
    train_time = 0.0
    train_bs = tc.batch_size
    eval_bs = tc.eval_batch_size or tc.batch_size
    pin = dev.type == "cuda"

    while state.epoch < tc.epochs and state.step < total_steps:
        epoch = state.epoch
        skip = state.batch_in_epoch * train_bs
        sampler = _EpochSampler(
            len(train_ds), info, tc.seed, epoch, skip=skip, weights=chip_weights
        )
        gen = torch.Generator().manual_seed(tc.seed * 100_003 + epoch * 101 + info.rank)
        loader = DataLoader(
            train_ds,
            batch_size=train_bs,
            sampler=sampler,
            num_workers=dc.num_workers,
            drop_last=drop_last,
            pin_memory=pin,
            generator=gen,
            persistent_workers=False,
            worker_init_fn=worker_signals,
        )
        net.train()
        losses = _LossLog(epoch, out, info)
        t0 = time.perf_counter()
        n_images = 0
        optimizer.zero_grad(set_to_none=True)
        pending = 0
        for images, masks in loader:
            images = images.to(dev, non_blocking=pin)
            masks = masks.to(dev, non_blocking=pin)
            n_images += images.shape[0]
            # Under DDP, all-reduce gradients only on the batch that ends an accumulation.
            sync = not info.enabled or pending + 1 == tc.accumulate
            try:
                with contextlib.nullcontext() if sync else net.no_sync():  # type: ignore[operator]
                    with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        result = net(images, masks)
                    loss = result["loss"]
                    scaler.scale(loss / tc.accumulate).backward()
            except torch.OutOfMemoryError as e:
                raise TrainingError(
                    f"out of GPU memory at step {state.step + 1} with train.batch_size="
                    f"{train_bs} and {h}x{w} chips; lower it (--set train.batch_size="
                    f"{max(1, train_bs // 2)}) and raise train.accumulate to keep the effective batch"
                ) from e
            # Kept on the device; read back (one host sync) every _LossLog.every batches and
            # before any checkpoint, so a NaN never reaches a checkpoint.
            if losses.push(result, state.step + 1):
                prog(0, description=losses.flush(tc.epochs))
            pending += 1
            state.batch_in_epoch += 1
            if pending == tc.accumulate:
                _optimizer_step(task, optimizer, scaler, scheduler, tc.grad_clip)
                pending = 0
                state.step += 1
                prog(1, description=losses.line(tc.epochs))
                if tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
                    prog(0, description=losses.flush(tc.epochs))
                    save(name_best=False)
                if state.step >= total_steps:
                    break
        if pending:
            _optimizer_step(task, optimizer, scaler, scheduler, tc.grad_clip)
            state.step += 1
            prog(1)
        prog(0, description=losses.flush(tc.epochs))
        dt = time.perf_counter() - t0
        train_time += dt
        _sync_buffers(task, info)
        images_total += n_images
        # Collectives on the training device (NCCL reduces CUDA tensors only).
        sums = all_reduce_sum(losses.sums.to(dev), info).cpu()
        counts = all_reduce_sum(
            torch.tensor([n_images], dtype=torch.float64, device=dev), info
        ).cpu()
        state.epoch += 1
        state.batch_in_epoch = 0

        row: dict[str, Any] = {
            "epoch": state.epoch,
            "step": state.step,
            "lr": scheduler.get_last_lr()[0],
            "elapsed_s": round(time.perf_counter() - t_start, 2),
            "images_per_s": float(counts[0]) / max(dt, 1e-9),
        }
        for i, name in enumerate(LOSS_TERMS):
            if name in ("ct",) and "ct" not in cfg.loss.contrast:
                continue
            if name in ("ms", "cs") and "mscs" not in cfg.loss.contrast:
                continue
            row[f"train_{name}"] = float(sums[i, 0] / sums[i, 1]) if sums[i, 1] else None
        improved = False
        last_epoch = state.epoch >= tc.epochs or state.step >= total_steps
        if val_ds is not None and (state.epoch % tc.val_every == 0 or last_epoch):
            try:
                scores, val_ce = _validate(
                    task.model, val_ds, info, dev, eval_bs, amp_dtype, classes.names, ignore, dc
                )
            except torch.OutOfMemoryError as e:
                raise TrainingError(
                    f"out of GPU memory while validating epoch {state.epoch} with batch size "
                    f"{eval_bs}; lower it (--set train.eval_batch_size={max(1, eval_bs // 2)})"
                ) from e
            row["val_ce"] = val_ce
            row["val_miou"] = scores.mean_iou
            row["val_mf1"] = scores.mean_f1
            row["val_oa"] = scores.overall_accuracy
            for name in classes.names:
                row[f"iou_{name}"] = scores.per_class[name]["iou"]
            for name in classes.names:
                row[f"f1_{name}"] = scores.per_class[name]["f1"]
            miou = scores.mean_iou
            if (
                miou is not None
                and math.isfinite(miou)
                and (state.best_miou is None or miou > state.best_miou)
            ):
                state.best_miou, state.best_epoch = float(miou), state.epoch
                state.best_confusion = scores.confusion
                improved = True
        elif val_ds is None:
            improved, state.best_epoch = True, state.epoch
        state.history.append(row)
        # last.pt and the plots every train.save_every epochs (short epochs: each write of a
        # paper model with its AdamW state is ~170 MB), and always at a best or final epoch.
        keep = improved or last_epoch or state.epoch % tc.save_every == 0
        if keep:
            save(name_best=improved)
        if info.is_main:
            _write_csv(out / "metrics.csv", state.history)
            if events is not None:
                events.add(row)
            if keep:
                _draw(out, state, classes)
        log.info(_epoch_line(row, tc.epochs))
        barrier(info)

    if events is not None:
        events.close()
    elapsed = time.perf_counter() - t_start
    final = state.history[-1] if state.history else {}
    result = TrainResult(
        run_dir=str(out),
        last_checkpoint=str(out / "last.pt"),
        best_checkpoint=str(out / "best.pt") if (out / "best.pt").exists() else None,
        epochs=state.epoch,
        steps=state.step,
        best_miou=state.best_miou,
        best_epoch=state.best_epoch,
        final=final,
        elapsed_s=round(elapsed, 2),
        images_per_s=images_total * info.world_size / max(train_time, 1e-9),
        device=str(dev),
        world_size=info.world_size,
        resumed_from_step=resumed_from,
        train_chips=len(train_ds),
        val_chips=len(val_ds or ()),
        val_split=splits.val_split,
        normalization={"mean": list(dc.mean), "std": list(dc.std)},
        plots=[
            str(out / n) for n in ("loss.png", "iou.png", "confusion.png") if (out / n).exists()
        ],
    )
    if info.is_main:
        _write_text(out / "summary.json", json.dumps(_jsonable(asdict(result)), indent=2) + "\n")
    return result


def loader_workers(asked: int) -> int:
    """DataLoader workers: ``asked``, at most the CPUs this process may run on.

    More workers than CPUs only adds processes that compete for the same cores
    (and PyTorch warns about it in every DataLoader).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    if asked > cpus:
        log.info("data.num_workers=%d lowered to %d, the CPUs available here", asked, cpus)
        return cpus
    return asked


def _validate_train_config(cfg: ExperimentConfig) -> None:
    tc = cfg.train
    for name in ("epochs", "batch_size", "accumulate", "val_every", "save_every"):
        if getattr(tc, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {getattr(tc, name)}")
    if tc.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {tc.lr}")
    if tc.checkpoint_every < 0:
        raise ConfigError(
            f"train.checkpoint_every must be 0 (epochs only) or more, got {tc.checkpoint_every}"
        )
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers must be 0 or more, got {cfg.data.num_workers}")
    sr = cfg.data.scale_range
    if sr is not None and not (0 < sr[0] <= sr[1]):
        raise ConfigError(
            f"data.scale_range must be [low, high] with 0 < low <= high, got {list(sr)}"
        )


class _LossLog:
    """The named loss terms of each batch, kept on the device and read back in one sync.

    ``push`` stacks a batch's terms (no host sync) and says when ``every`` batches are
    waiting; ``flush`` sums the losses over ranks (every rank flushes at the same batches),
    copies them to the host once, raises TrainingError at the first non-finite loss (naming
    its step) and adds the terms to the epoch sums. On a GPU this removes the per-step stall
    that kept the device idle while the host read the loss.
    """

    every = 16

    def __init__(self, epoch: int, out: Path, info: DistInfo) -> None:
        self.epoch, self.out, self.info = epoch, out, info
        self.rows: list[torch.Tensor] = []
        self.steps: list[int] = []
        self.present: list[bool] | None = None
        self.sums = torch.zeros(len(LOSS_TERMS), 2, dtype=torch.float64)
        self.last: float | None = None

    def push(self, result: dict[str, torch.Tensor], step: int) -> bool:
        loss = result["loss"].detach().float()
        terms = [result.get(name) for name in LOSS_TERMS]
        self.present = [t is not None for t in terms]
        zero = loss.new_zeros(())
        self.rows.append(
            torch.stack([loss] + [zero if t is None else t.detach().float() for t in terms])
        )
        self.steps.append(step)
        return len(self.rows) >= self.every

    def flush(self, epochs: int) -> str | None:
        """Check and sum the waiting batches; the progress line (None when nothing waited)."""
        if not self.rows:
            return None
        vec = torch.stack(self.rows)  # (batches, 1 + terms)
        total = all_reduce_sum(vec[:, 0].contiguous(), self.info)
        host = torch.cat([total[:, None], vec[:, 1:]], dim=1).double().cpu()
        steps, self.rows, self.steps = self.steps, [], []
        bad = (~torch.isfinite(host[:, 0])).nonzero()
        if len(bad):
            i = int(bad[0])
            last = self.out / "last.pt"
            kept = (
                f"the last good checkpoint is {last}"
                if last.exists()
                else "no checkpoint was written yet"
            )
            raise TrainingError(
                f"loss became {float(host[i, 0])} at step {steps[i]} (epoch {self.epoch + 1}); "
                f"stopped, {kept}; lower train.lr or check the chips for bad values"
            )
        assert self.present is not None
        for j, present in enumerate(self.present):
            if present:
                self.sums[j, 0] += float(host[:, j + 1].sum())
                self.sums[j, 1] += len(host)
        self.last = float(host[-1, 1])
        return self.line(epochs)

    def line(self, epochs: int) -> str:
        """The progress line with the loss read back last (no sync)."""
        loss = "" if self.last is None else f" loss {self.last:.4f}"
        return f"epoch {self.epoch + 1}/{epochs}{loss}"


def _sync_buffers(task: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running stats drift apart under DDP)."""
    if not info.enabled:
        return
    import torch.distributed as dist

    for buf in task.buffers():
        dist.broadcast(buf, src=0)


def _optimizer_step(task, optimizer, scaler, scheduler, grad_clip: float) -> None:
    if grad_clip and grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(task.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


@torch.no_grad()
def _validate(model, dataset, info: DistInfo, dev, batch_size, amp_dtype, names, ignore, dc):
    """Confusion matrix and CE over the validation chips (sharded over ranks, then summed)."""
    import torch.nn.functional as F

    from aerialct.evaluate.metrics import scores_from_confusion

    k = len(names)
    was_training = model.training
    model.eval()
    idx = list(range(len(dataset)))[info.rank :: info.world_size]
    loader = DataLoader(
        torch.utils.data.Subset(dataset, idx),
        batch_size=batch_size,
        shuffle=False,
        num_workers=dc.num_workers,
        worker_init_fn=worker_signals,
    )
    cm = torch.zeros(k * k, dtype=torch.float64, device=dev)
    ce = torch.zeros(2, dtype=torch.float64, device=dev)
    for images, masks in loader:
        images, masks = images.to(dev), masks.to(dev)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        logits = logits.float()
        valid = masks != ignore
        if valid.any():
            ce[0] += F.cross_entropy(logits, masks, ignore_index=ignore, reduction="sum").double()
            ce[1] += valid.sum()
        pred = logits.argmax(1)
        cm += torch.bincount(masks[valid] * k + pred[valid], minlength=k * k).double()
    cm_cpu = all_reduce_sum(cm, info).cpu()
    ce = all_reduce_sum(ce, info).cpu()
    model.train(was_training)
    matrix = cm_cpu.round().long().numpy().reshape(k, k)
    scores = scores_from_confusion(matrix, names, exclude=tuple(dc.exclude_from_mean))
    return scores, float(ce[0] / ce[1]) if ce[1] > 0 else None


def _draw(out: Path, state: _State, classes: ClassTable) -> None:
    from aerialct.engine.plots import plot_confusion, plot_history

    try:
        plot_history(state.history, out, classes.names)
        if state.best_confusion is not None:
            plot_confusion(
                state.best_confusion,
                classes.names,
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


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
