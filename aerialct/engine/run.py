"""Building a training run: data checks, model, task, optimiser, resume, DDP wrap, saving.

:func:`build_run` turns a config and a chips folder into a :class:`Run`, everything
one training needs in one place: the config as resolved against the chips
(class table, chip size, normalisation), the datasets, the task (model + named
loss terms), the optimiser with its schedule and grad scaler, the DDP wrapper and
the :class:`TrainState` (restored from ``last.pt`` when resuming). :meth:`Run.save`
writes ``last.pt`` (and ``best.pt``) from rank 0.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.config import ExperimentConfig, TrainConfig, dump_yaml
from aerialct.data.dataset import open_chip_splits
from aerialct.data.transforms import JointAugment, Normalize
from aerialct.engine.checkpoint import (
    check_resume_compatible,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from aerialct.engine.distributed import DistInfo, broadcast_object, gather_with_grad
from aerialct.engine.task import SegmentationTask
from aerialct.errors import CheckpointError, ConfigError
from aerialct.geo.outputs import atomic_output
from aerialct.losses.imbalance import class_weights_from_counts, rare_chip_weights
from aerialct.models import build_model

log = logging.getLogger("aerialct")

__all__ = [
    "Run",
    "TrainState",
    "amp_setup",
    "build_run",
    "loader_workers",
    "local_count",
    "lr_factor",
    "seed_everything",
    "write_text",
]


@dataclass
class TrainState:
    """Where training stands; saved in and restored from every checkpoint."""

    step: int = 0
    epoch: int = 0
    """Completed epochs."""
    batch_in_epoch: int = 0
    """Batches of the current (incomplete) epoch already trained; non-zero only mid-epoch."""
    best_miou: float | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    best_confusion: list | None = None


@dataclass
class Run:
    """Everything one training run holds, built by :func:`build_run`."""

    cfg: ExperimentConfig
    """The resolved config (chip size, class exclusions, normalisation filled in), as saved."""
    out: Path
    dev: torch.device
    info: DistInfo
    splits: Any
    """The :class:`aerialct.data.dataset.ChipSplits` read from the chips folder."""
    ignore: int
    train_ds: Any
    val_ds: Any | None
    chip_weights: np.ndarray | None
    """Sampling weight per training chip (``data.oversample_rare``), or None."""
    workers: int
    """DataLoader workers, sized to this machine (the config keeps the value asked for)."""
    task: SegmentationTask
    net: torch.nn.Module
    """The task, wrapped in DistributedDataParallel under torchrun."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    total_steps: int
    drop_last: bool
    state: TrainState
    resumed_from: int | None
    on_checkpoint: Callable[[], None]
    encoder_weights: dict | None = None
    """Where the encoder's starting weights came from (None: random init), as checkpoints keep it."""

    @property
    def classes(self) -> ClassTable:
        """The chips' class table."""
        return self.splits.classes

    def save(self, best: bool) -> None:
        """Write ``last.pt`` (and copy it to ``best.pt`` when ``best``) from rank 0."""
        if not self.info.is_main:
            return
        dc, st, heads = self.cfg.data, self.state, self.task.heads
        ck = make_checkpoint(
            config=self.cfg,
            classes=self.classes,
            mean=dc.mean or (),
            std=dc.std or (),
            low=dc.low,
            high=dc.high,
            in_chans=self.splits.in_chans,
            chip_size=self.splits.chip_size,
            gsd=self.splits.gsd,
            ignore_index=self.ignore,
            model_state=self.task.model.state_dict(),
            heads_state=heads.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            step=st.step,
            epoch=st.epoch,
            batch_in_epoch=st.batch_in_epoch,
            rng=_rng_state(),
            best_miou=st.best_miou,
            encoder_weights=self.encoder_weights,
            metrics={
                "history": st.history,
                "last": st.history[-1] if st.history else {},
                "best_epoch": st.best_epoch,
                "best_confusion": st.best_confusion,
            },
        )
        last = self.out / "last.pt"
        save_checkpoint(last, ck)
        if best:
            _same_file(last, self.out / "best.pt")
        self.on_checkpoint()


def build_run(
    cfg: ExperimentConfig,
    data_dir: Path,
    out: Path,
    dev: torch.device,
    info: DistInfo,
    *,
    resume: bool,
    on_checkpoint: Callable[[], None],
) -> Run:
    """Check the chips against ``cfg``, build model, task and optimiser, restore a resumed state."""

    ckpt = load_checkpoint(out / "last.pt", for_training=True) if resume else None
    if ckpt is not None:  # normalisation is part of the model: a resumed run keeps the checkpoint's
        cfg = _with_normalization(cfg, ckpt["normalization"])
    _validate_train_config(cfg)
    splits = open_chip_splits(data_dir, cfg.data, check_files=True)
    _check_trainable(splits, cfg.data.train_split)
    cfg = _fit_to_chips(cfg, splits)
    if ckpt is not None:
        check_resume_compatible(ckpt, cfg, splits.classes, splits.in_chans, out / "last.pt")
    cfg = _resolve_normalization(cfg, splits, info)
    dc, k = cfg.data, len(splits.classes)
    assert dc.mean is not None and dc.std is not None
    normalize = Normalize(dc.mean, dc.std, dc.low, dc.high)
    augment = JointAugment(dc.hflip, dc.vflip, dc.rot90, dc.scale_range)
    train_ds, val_ds = _datasets(splits, dc, normalize, augment, k)
    chip_weights = _rare_chip_weights(cfg, splits)
    if info.is_main:
        write_text(out / "config.yaml", dump_yaml(cfg))
    workers = loader_workers(dc.num_workers)

    seed_everything(cfg.train.seed)
    ignore = int(splits.meta.get("ignore_index", IGNORE_INDEX))
    # a resumed run takes every tensor from last.pt: its starting weights are not looked up again
    task = _build_task(cfg, splits, ignore, info, dev, pretrained=ckpt is None)
    report = task.model.weights_report
    encoder_weights = report.record() if report is not None else None
    if ckpt is not None:
        _load_weights(task, ckpt, out)
        encoder_weights = ckpt.get("encoder_weights")
    if cfg.train.compile:
        # An instance attribute: forward() and the task both call it; state_dict is unchanged.
        model: Any = task.model
        model.forward_with_features = torch.compile(model.forward_with_features)
    optimizer = _optimizer(task, cfg.train)
    drop_last, total_steps = _schedule_length(len(train_ds), info, cfg.train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, cfg.train)
    )
    amp_dtype, use_scaler = amp_setup(cfg.train.amp, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=use_scaler)
    state = TrainState()
    if ckpt is not None:
        state = _restore(ckpt, optimizer, scheduler, scaler)
        log.info("resuming %s at step %d (epoch %d)", out, state.step, state.epoch + 1)
    return Run(
        cfg=cfg, out=out, dev=dev, info=info, splits=splits, ignore=ignore,
        train_ds=train_ds, val_ds=val_ds, chip_weights=chip_weights, workers=workers,
        task=task, net=_wrap_ddp(task, info, dev, cfg.train), optimizer=optimizer,
        scheduler=scheduler, scaler=scaler, amp_dtype=amp_dtype, total_steps=total_steps,
        drop_last=drop_last, state=state, resumed_from=state.step if ckpt is not None else None,
        on_checkpoint=on_checkpoint, encoder_weights=encoder_weights,
    )  # fmt: skip


def _datasets(splits: Any, dc: Any, normalize: Any, augment: Any, k: int) -> tuple[Any, Any]:
    """The training and validation datasets: from memory when a chips folder's decoded chips
    fit ``data.cache_gb`` (:mod:`aerialct.data.cache`), else from the chips as they are."""
    if splits.packed is None:
        from aerialct.data.cache import CachedChipDataset, cache_chips, cache_limit

        pairs = [*splits.train, *splits.val]
        dtype = str(splits.meta.get("dtype") or "uint8")
        cache = cache_chips(pairs, splits.in_chans, splits.chip_shape, dtype, k,
                            cache_limit(dc.cache_gb))  # fmt: skip
        if cache is not None:
            n = len(splits.train)
            train = CachedChipDataset(cache, range(n), normalize, augment, k)
            val = CachedChipDataset(cache, range(n, len(pairs)), normalize, None, k)
            return train, (val if splits.val else None)
    train_ds = splits.dataset("train", normalize, augment, num_classes=k)
    val_ds = splits.dataset("val", normalize, None, num_classes=k) if splits.val else None
    return train_ds, val_ds


def _same_file(src: Path, dest: Path) -> None:
    """Make ``dest`` hold what ``src`` holds, atomically: a hard link to the file just written
    and verified (the next ``last.pt`` replaces its name, not its bytes), else a verified copy."""
    try:
        with atomic_output(dest, overwrite=True, verify=False) as tmp:
            os.link(src, tmp)
        return
    except OSError:  # no hard links on this file system
        pass
    with atomic_output(dest, overwrite=True) as tmp:
        shutil.copyfile(src, tmp)


# ---------------------------------------------------------------------------
# The config against the chips


def _with_normalization(cfg: ExperimentConfig, norm: dict) -> ExperimentConfig:
    """``cfg`` with the normalisation stored in a checkpoint."""
    return replace(
        cfg,
        data=replace(
            cfg.data,
            mean=tuple(norm["mean"]),
            std=tuple(norm["std"]),
            low=tuple(norm["low"]) if norm.get("low") else None,
            high=tuple(norm["high"]) if norm.get("high") else None,
        ),
    )


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


def _check_trainable(splits: Any, split: str) -> None:
    """Refuse chips a model cannot learn from: under two classes, or no labelled pixel."""
    names = splits.classes.names
    if len(names) < 2:
        raise ConfigError(
            f"{splits.root}: the chips' class table has {len(names)} class(es) "
            f"({', '.join(names) or 'none'}); a segmentation model needs at least two (e.g. "
            "background and building): tile again with --classes buildings or your own table"
        )
    meta = splits.meta
    pixels = (meta.get("class_pixels") or {}).get(split)  # packed chips: counts, ignore last
    shares = (meta.get("class_shares") or {}).get(split)  # chips: shares, ignore last
    table = pixels or shares
    if table and not any(float(table.get(n, 0) or 0) > 0 for n in names):
        raise ConfigError(
            f"{splits.root}: every label pixel of the {split!r} split is ignore "
            f"({splits.meta.get('ignore_index', IGNORE_INDEX)}); a model cannot learn from "
            "that: tile with labels that cover the images (check their CRS, --class-field, "
            "--background)"
        )


def _fit_to_chips(cfg: ExperimentConfig, splits: Any) -> ExperimentConfig:
    """Refuse chips of another class table; take the chip size as the model's image size."""
    classes, dc = splits.classes, cfg.data
    if dc.classes is not None and list(dc.classes) != classes.names:
        raise ConfigError(
            f"{splits.root}: chips have classes {classes.names} but data.classes is "
            f"{list(dc.classes)}; tile with the expected class table or fix data.classes"
        )
    size = getattr(cfg.model, "img_size", splits.chip_size)
    if size != splits.chip_size:  # said loudly: the preset was made for other chips
        log.warning(
            "config %s is set for %d px chips (model.img_size) but the chips in %s are %d px: "
            "training at %d px; tile with --size %d to train at %d px, or pass "
            "--set model.img_size=%d to confirm",
            cfg.name, size, splits.root, splits.chip_size, splits.chip_size, size, size,
            splits.chip_size,
        )  # fmt: skip
        cfg = replace(cfg, model=replace(cfg.model, img_size=splits.chip_size))
    return cfg


def _resolve_normalization(cfg: ExperimentConfig, splits: Any, info: DistInfo) -> ExperimentConfig:
    """Join the class table's mean-IoU exclusions and fill in the per-band statistics."""
    dc = cfg.data
    excluded_by_table = splits.classes.excluded_from_mean
    if excluded_by_table:  # the class table's own exclusions join the config's
        dc = replace(
            dc, exclude_from_mean=tuple(dict.fromkeys((*dc.exclude_from_mean, *excluded_by_table)))
        )
    chip_stats = splits.meta.get("band_stats") or {}
    if (dc.mean is None or dc.std is None) and len(chip_stats.get("mean", ())) == splits.in_chans:
        # robust statistics of the training pixels, computed by `tile` over valid pixels
        dc = replace(
            dc,
            mean=tuple(chip_stats["mean"]),
            std=tuple(chip_stats["std"]),
            low=dc.low or tuple(chip_stats["low"]),
            high=dc.high or tuple(chip_stats["high"]),
        )
    if dc.mean is None or dc.std is None:  # chips tiled before band_stats existed
        stats = splits.band_stats(dc.stats_chips) if info.is_main else None
        mean, std = cast(
            "tuple[tuple[float, ...], tuple[float, ...]]", broadcast_object(stats, info)
        )
        dc = replace(dc, mean=tuple(mean), std=tuple(std))
    n_mean, n_std = len(dc.mean or ()), len(dc.std or ())
    if n_mean != splits.in_chans or n_std != splits.in_chans:
        raise ConfigError(
            f"data.mean/std have {n_mean}/{n_std} values but the chips "
            f"have {splits.in_chans} bands; give one value per band or leave them null"
        )
    return replace(cfg, data=dc)


def _class_weights(cfg: ExperimentConfig, splits: Any) -> torch.Tensor | None:
    """Cross-entropy class weights: given (``loss.class_weight_values``), from the training
    split's pixel counts (``loss.class_weights: auto``), or None."""

    lc, names = cfg.loss, splits.classes.names
    if lc.class_weight_values is not None:
        if len(lc.class_weight_values) != len(names) or min(lc.class_weight_values) < 0:
            raise ConfigError(
                f"loss.class_weight_values has {len(lc.class_weight_values)} values; give "
                f"{len(names)} non-negative weights, one per class ({', '.join(names)})"
            )
        w = np.asarray(lc.class_weight_values, dtype=np.float64)
    elif lc.class_weights == "auto":
        w = class_weights_from_counts(splits.extra["train_counts"].sum(axis=0))
    else:
        return None
    log.info("class weights: %s", ", ".join(f"{n} {v:.3g}" for n, v in zip(names, w, strict=True)))
    return torch.tensor(w, dtype=torch.float32)


def _rare_chip_weights(cfg: ExperimentConfig, splits: Any) -> np.ndarray | None:
    """Sampling weights of the training chips for ``data.oversample_rare`` (None when 1)."""

    dc = cfg.data
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


def loader_workers(asked: int) -> int:
    """DataLoader workers: ``asked``, at most the CPUs this process may run on.

    More workers than CPUs only adds processes that compete for the same cores
    (and PyTorch warns about it in every DataLoader).
    """
    from aerialct.workers import usable_cpus

    cpus = usable_cpus()
    if asked > cpus:
        log.info("data.num_workers=%d lowered to %d, the CPUs available here", asked, cpus)
        return cpus
    return asked


def write_text(path: Path, text: str) -> None:
    """Write a run file atomically (temporary sibling, then rename)."""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(text)


# ---------------------------------------------------------------------------
# Model, task and optimiser


def _build_task(
    cfg: ExperimentConfig,
    splits: Any,
    ignore: int,
    info: DistInfo,
    dev: torch.device,
    *,
    pretrained: bool = True,
) -> SegmentationTask:
    """The model (checked against the chip size) inside its task, on ``dev``."""

    k = len(splits.classes)
    model = build_model(cfg.model, num_classes=k, in_chans=splits.in_chans, load_weights=pretrained)
    model.check_input_size(*splits.chip_shape)
    task = SegmentationTask(
        model, cfg.loss, num_classes=k, ignore_index=ignore,
        gather=gather_with_grad if info.enabled else None,
        class_weight=_class_weights(cfg, splits), world_size=info.world_size,
    )  # fmt: skip
    return task.to(dev)


def _load_weights(task: SegmentationTask, ckpt: dict, out: Path) -> None:
    """The checkpoint's model and projection-head weights into ``task``."""
    task.model.load_state_dict(ckpt["model"])
    if ckpt.get("heads"):
        try:
            task.heads.load_state_dict(ckpt["heads"])
        except RuntimeError as e:
            raise CheckpointError(
                f"{out / 'last.pt'}: projection heads do not fit the loss config "
                f"({str(e).splitlines()[0][:120]}); "
                + _heads_hint(ckpt["heads"], task.cfg.mscs_settings()[1])
            ) from e


def _heads_hint(heads: dict, layers: int) -> str:
    """How to resume when the heads do not fit: the MS/CS projector depth, else the loss settings.

    MS/CS checkpoints from before the loss modes have one-layer projectors
    (``mscs.projectors.<stage>.pre.<i>``: three modules a layer) where the paper mode
    now builds two.
    """
    parts = [k.split(".") for k in heads]  # mscs.projectors.<stage>.pre.<i>.<param>
    found = {
        int(p[4]) // 3 + 1 for p in parts if p[:2] == ["mscs", "projectors"] and p[3:4] == ["pre"]
    }
    saved = max(found, default=0)
    if saved and saved != layers:
        return (
            f"its MS/CS projectors have {saved} layer(s), the config {layers}: resume with "
            f"--set loss.mscs_proj_layers={saved}"
        )
    return "keep the checkpoint's loss settings"


def _optimizer(task: SegmentationTask, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and kernels only (not on norms and biases)."""
    decay = [p for p in task.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in task.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": tc.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=tc.lr,
    )


def _schedule_length(n_train: int, info: DistInfo, tc: TrainConfig) -> tuple[bool, int]:
    """(drop the last incomplete batch, optimiser steps in the whole run)."""
    local_n = local_count(n_train, info.world_size)
    drop_last = local_n >= tc.batch_size
    batches_per_epoch = local_n // tc.batch_size if drop_last else 1
    total_steps = tc.epochs * math.ceil(batches_per_epoch / tc.accumulate)
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    return drop_last, total_steps


def local_count(n: int, world: int) -> int:
    """Chips per rank when ``n`` are shared out over ``world`` ranks (padded up)."""
    return math.ceil(n / world)


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


def amp_setup(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler) for ``train.amp`` on ``device``."""
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


def _wrap_ddp(
    task: SegmentationTask, info: DistInfo, dev: torch.device, tc: TrainConfig
) -> torch.nn.Module:
    """The task, wrapped in DistributedDataParallel when there is more than one rank."""
    if not info.enabled:
        return task
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(
        task,
        device_ids=[dev.index] if dev.type == "cuda" else None,
        find_unused_parameters=tc.find_unused_parameters,
    )


# ---------------------------------------------------------------------------
# Resume: optimiser state, progress and random number generators


def _restore(
    ckpt: dict,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
) -> TrainState:
    """Load the optimiser, schedule, scaler and RNG states; the progress saved with them."""
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    m = ckpt.get("metrics") or {}
    _set_rng_state(ckpt.get("rng"))
    return TrainState(
        step=int(ckpt["step"]),
        epoch=int(ckpt["epoch"]),
        batch_in_epoch=int(ckpt.get("batch_in_epoch", 0)),
        best_miou=ckpt.get("best_miou"),
        best_epoch=m.get("best_epoch"),
        history=list(m.get("history", [])),
        best_confusion=m.get("best_confusion"),
    )


def _rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()
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


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
