"""One training epoch and one validation pass over a :class:`~aerialct.engine.run.Run`.

:func:`train_epoch` feeds this rank's share of the shuffled chips through the task
(autocast, gradient accumulation, DDP gradient sync on the batch that ends an
accumulation), steps the optimiser and the schedule, writes ``last.pt`` every
``train.checkpoint_every`` steps, and returns the epoch's mean of every named loss
term the task returns. :func:`validate` returns the validation confusion-matrix
scores and cross-entropy, summed over ranks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from aerialct.engine.distributed import DistInfo, all_reduce_sum
from aerialct.engine.run import Run, local_count
from aerialct.errors import TrainingError
from aerialct.progress import ProgressFn
from aerialct.workers import worker_signals

if TYPE_CHECKING:
    from aerialct.evaluate.metrics import PixelScores

__all__ = ["EpochSampler", "EpochStats", "LossMeter", "optimizer_step", "train_epoch", "validate"]


@dataclass
class EpochStats:
    """What one training epoch did on every rank together."""

    terms: dict[str, float | None]
    """Mean of each named loss term over the epoch's batches and ranks, in the task's order."""
    images: int
    """Images this rank trained on."""
    seconds: float
    images_per_s: float
    """Images per second over all ranks."""


def train_epoch(run: Run, prog: ProgressFn) -> EpochStats:
    """Train one epoch (or up to ``run.total_steps``); the state advances to the next epoch."""
    tc, state, dev = run.cfg.train, run.state, run.dev
    pin = dev.type == "cuda"
    loader = _loader(run, pin)
    run.net.train()
    meter = LossMeter(run.task.terms, state.epoch, run.out, run.info)
    t0 = time.perf_counter()
    n_images = pending = 0
    labelled = torch.zeros((), dtype=torch.float64, device=dev)
    run.optimizer.zero_grad(set_to_none=True)
    for images, masks in loader:
        images = images.to(dev, non_blocking=pin)
        masks = masks.to(dev, non_blocking=pin)
        n_images += images.shape[0]
        labelled += (masks != run.ignore).sum()
        result = _forward_backward(run, images, masks, sync=pending + 1 == tc.accumulate)
        # Kept on the device; read back (one host sync) every LossMeter.every batches and
        # before any checkpoint, so a NaN never reaches a checkpoint.
        if meter.push(result, state.step + 1):
            prog(0, description=meter.flush(tc.epochs))
        pending += 1
        state.batch_in_epoch += 1
        if pending == tc.accumulate:
            optimizer_step(run.task, run.optimizer, run.scaler, run.scheduler, tc.grad_clip)
            pending = 0
            state.step += 1
            prog(1, description=meter.line(tc.epochs))
            if tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
                prog(0, description=meter.flush(tc.epochs))
                run.save(best=False)
            if state.step >= run.total_steps:
                break
    if pending:
        optimizer_step(run.task, run.optimizer, run.scaler, run.scheduler, tc.grad_clip)
        state.step += 1
        prog(1)
    prog(0, description=meter.flush(tc.epochs))
    dt = time.perf_counter() - t0
    sync_buffers(run.task, run.info)
    # Collectives on the training device (NCCL reduces CUDA tensors only).
    sums = all_reduce_sum(meter.sums.to(dev), run.info).cpu()
    count = torch.stack([torch.tensor(float(n_images), dtype=torch.float64, device=dev), labelled])
    images_all, labelled_all = all_reduce_sum(count, run.info).cpu().tolist()
    if n_images and not labelled_all:
        raise TrainingError(
            f"{run.splits.root}: every mask pixel of the epoch's training chips is ignore "
            f"({run.ignore}): the loss is 0 and nothing is learnt; tile with labels that cover "
            "the images"
        )
    state.epoch += 1
    state.batch_in_epoch = 0
    return EpochStats(meter.means(sums), n_images, dt, images_all / max(dt, 1e-9))


def _loader(run: Run, pin: bool) -> DataLoader:
    """This rank's batches of the current epoch, from where a resumed run stopped."""
    tc, state, info = run.cfg.train, run.state, run.info
    sampler = EpochSampler(
        len(run.train_ds), info, tc.seed, state.epoch,
        skip=state.batch_in_epoch * tc.batch_size, weights=run.chip_weights,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(tc.seed * 100_003 + state.epoch * 101 + info.rank)
    return DataLoader(
        run.train_ds,
        batch_size=tc.batch_size,
        sampler=sampler,
        num_workers=run.workers,
        drop_last=run.drop_last,
        pin_memory=pin,
        generator=gen,
        persistent_workers=False,
        worker_init_fn=worker_signals,
        multiprocessing_context=_worker_context(run.train_ds, run.workers),
    )


def _worker_context(ds: Any, workers: int) -> Any:
    """Fork the workers of a dataset held in memory (a spawned worker would get a pickled
    copy of every chip); None (the default start method) otherwise."""
    import multiprocessing as mp

    if workers and getattr(ds, "in_memory", False) and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return None


def _forward_backward(
    run: Run, images: torch.Tensor, masks: torch.Tensor, sync: bool
) -> dict[str, torch.Tensor]:
    """The task's terms for one batch, with the scaled loss back-propagated.

    Under DDP, gradients are all-reduced only when ``sync`` (the batch that ends an
    accumulation).
    """
    tc, dev, dtype = run.cfg.train, run.dev, run.amp_dtype
    net: Any = run.net
    try:
        with contextlib.nullcontext() if sync or not run.info.enabled else net.no_sync():
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                result = net(images, masks)
            run.scaler.scale(result["loss"] / tc.accumulate).backward()
    except torch.OutOfMemoryError as e:
        bs = tc.batch_size
        h, w = run.splits.chip_shape
        raise TrainingError(
            f"out of GPU memory at step {run.state.step + 1} with train.batch_size="
            f"{bs} and {h}x{w} chips; lower it (--set train.batch_size="
            f"{max(1, bs // 2)}) and raise train.accumulate to keep the effective batch"
        ) from e
    return result


def optimizer_step(
    task: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_clip: float,
) -> None:
    """Clip the gradient norm, step optimiser, scaler and schedule, clear the gradients."""
    if grad_clip and grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(task.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


def sync_buffers(task: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running stats drift apart under DDP)."""
    if not info.enabled:
        return
    import torch.distributed as dist

    for buf in task.buffers():
        dist.broadcast(buf, src=0)


class EpochSampler(Sampler[int]):
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
            ).tolist()
            padded = drawn + drawn[: local_count(n, info.world_size) * info.world_size - n]
            self.indices: list[int] = padded[info.rank :: info.world_size][skip:]
            return
        base: DistributedSampler[int] = DistributedSampler(
            range(n),  # type: ignore[arg-type]  # any sized sequence works; stubs ask a Dataset
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True,
            seed=seed,
        )
        base.set_epoch(epoch)
        self.indices = list(base)[skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class LossMeter:
    """The named loss terms of each batch, kept on the device and read back in one sync.

    ``terms`` are the task's term names, ``"loss"`` first. ``push`` stacks a batch's
    terms (no host sync) and says when ``every`` batches are waiting; ``flush`` sums the
    total loss over ranks (every rank flushes at the same batches), copies the terms to
    the host once, raises TrainingError at the first non-finite loss (naming its step)
    and adds the terms to the epoch sums. On a GPU this removes the per-step stall that
    kept the device idle while the host read the loss.
    """

    every = 16

    def __init__(self, terms: tuple[str, ...], epoch: int, out: Path, info: DistInfo) -> None:
        if not terms or terms[0] != "loss":
            raise ValueError(f"loss terms must start with 'loss', got {terms}")
        self.terms, self.epoch, self.out, self.info = terms, epoch, out, info
        self.rows: list[torch.Tensor] = []
        self.steps: list[int] = []
        self.sums = torch.zeros(len(terms), 2, dtype=torch.float64)
        self.last: float | None = None

    def push(self, result: dict[str, torch.Tensor], step: int) -> bool:
        """Keep a batch's terms (on the device); True when ``every`` batches wait for a flush."""
        self.rows.append(torch.stack([result[name].detach().float() for name in self.terms]))
        self.steps.append(step)
        return len(self.rows) >= self.every

    def flush(self, epochs: int) -> str | None:
        """Check and sum the waiting batches; the progress line (None when nothing waited)."""
        if not self.rows:
            return None
        vec = torch.stack(self.rows)  # (batches, terms)
        total = all_reduce_sum(vec[:, 0].contiguous(), self.info)
        host = torch.cat([total[:, None], vec], dim=1).double().cpu()  # (batches, 1 + terms)
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
        self.sums[:, 0] += host[:, 1:].sum(dim=0)
        self.sums[:, 1] += len(host)
        self.last = float(host[-1, 1])
        return self.line(epochs)

    def line(self, epochs: int) -> str:
        """The progress line with the loss read back last (no sync)."""
        loss = "" if self.last is None else f" loss {self.last:.4f}"
        return f"epoch {self.epoch + 1}/{epochs}{loss}"

    def means(self, sums: torch.Tensor) -> dict[str, float | None]:
        """Each term's mean from (possibly rank-summed) ``sums``; None for a term never seen."""
        return {
            name: float(sums[i, 0] / sums[i, 1]) if sums[i, 1] else None
            for i, name in enumerate(self.terms)
        }


def validate(run: Run) -> tuple[PixelScores, float | None]:
    """Scores (:class:`aerialct.evaluate.metrics.PixelScores`) and mean CE of the validation chips.

    The chips are sharded over ranks and the confusion matrix summed. Running out of
    GPU memory raises TrainingError suggesting a smaller ``train.eval_batch_size``.
    """
    tc = run.cfg.train
    batch_size = tc.eval_batch_size or tc.batch_size
    try:
        return _validate(run, batch_size)
    except torch.OutOfMemoryError as e:
        raise TrainingError(
            f"out of GPU memory while validating epoch {run.state.epoch} with batch size "
            f"{batch_size}; lower it (--set train.eval_batch_size={max(1, batch_size // 2)})"
        ) from e


@torch.no_grad()
def _validate(run: Run, batch_size: int) -> tuple[PixelScores, float | None]:
    import torch.nn.functional as F

    from aerialct.evaluate.metrics import scores_from_confusion

    model, info, dev, dtype, val_ds = run.task.model, run.info, run.dev, run.amp_dtype, run.val_ds
    assert val_ds is not None, "validate() needs validation chips"
    names, ignore = run.classes.names, run.ignore
    k = len(names)
    was_training = model.training
    model.eval()
    idx = list(range(len(val_ds)))[info.rank :: info.world_size]
    loader = DataLoader(
        torch.utils.data.Subset(val_ds, idx),
        batch_size=batch_size,
        shuffle=False,
        num_workers=run.workers,
        worker_init_fn=worker_signals,
        multiprocessing_context=_worker_context(val_ds, run.workers),
    )
    cm = torch.zeros(k * k, dtype=torch.float64, device=dev)
    ce = torch.zeros(2, dtype=torch.float64, device=dev)
    for images, masks in loader:
        images, masks = images.to(dev), masks.to(dev)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
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
    scores = scores_from_confusion(matrix, names, exclude=tuple(run.cfg.data.exclude_from_mean))
    return scores, float(ce[0] / ce[1]) if ce[1] > 0 else None
