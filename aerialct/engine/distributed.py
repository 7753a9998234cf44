"""Distributed data parallel helpers for runs launched by ``torchrun``.

``torchrun --nproc_per_node N -m aerialct train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``. :func:`launch_env` is the
one place that reads them; :func:`resolve_device` is the one place that turns a
``--device`` / ``train.device`` value into a device (``cuda`` -> ``cuda:LOCAL_RANK``);
:func:`init_distributed` starts a process group (NCCL on CUDA, gloo on the CPU) when
``WORLD_SIZE > 1``. Rank 0 alone writes files; every rank runs the same steps.

:func:`gather_with_grad` is the ``gather`` function handed to the task: it
concatenates a tensor (e.g. contrastive samples) from all ranks along dim 0, and
its backward pass sums the gradient over ranks, so that after DDP's average the
gradient of a pooled loss does not depend on the world size. Sizes may differ per rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from aerialct.errors import InputError

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "gather_with_grad",
    "init_distributed",
    "launch_env",
    "resolve_device",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the launch: rank, number of processes, GPU index on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process: collectives are real."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(
            f"{name}={raw!r} is not an integer; launch with torchrun or unset {name}"
        ) from None


def launch_env() -> DistInfo:
    """The launch as torchrun describes it (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``).

    The one reader of these variables; without them, a single process of rank 0.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(
        rank=_env_int("RANK", 0), world_size=world, local_rank=_env_int("LOCAL_RANK", 0)
    )


def resolve_device(name: str | None) -> torch.device:
    """A device from ``auto`` (or None), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    ``auto`` is the local GPU when there is one, else the CPU; ``cuda`` is
    ``cuda:LOCAL_RANK`` (``cuda:0`` outside torchrun). A device that is not there
    raises InputError naming the value and what to use instead.
    """
    asked = (name or "auto").strip().lower()
    if asked == "auto":
        asked = "cuda" if torch.cuda.is_available() else "cpu"
    if asked == "cuda":
        asked = f"cuda:{launch_env().local_rank}"
    try:
        dev = torch.device(asked)
    except RuntimeError:
        raise InputError(
            f"device {name!r} is not valid; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r}: no CUDA GPU is visible here; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(
                f"device {name!r}: only {count} CUDA GPU(s) are visible; use cuda:0 to "
                f"cuda:{count - 1} (or set CUDA_VISIBLE_DEVICES)"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {name!r}: Apple MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {name!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev


def init_distributed(device: torch.device) -> DistInfo:
    """Start the process group when launched with WORLD_SIZE > 1; no-op otherwise."""
    info = launch_env()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info


def cleanup_distributed(info: DistInfo) -> None:
    """End the process group that :func:`init_distributed` started (no-op for one process)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (in place, returned for convenience)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's value of a picklable object on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, in rank order, with a summing backward.

    Ranks may hold different numbers of rows: sizes are exchanged first and the
    rows padded to the largest count for ``all_gather``. Every rank must call
    this the same number of times in the same order (it is a collective, and so
    is its backward pass).

    Every rank computes the same pooled loss ``L`` from the gathered rows, and each
    rank's rows reach ``L`` on every rank. The backward pass therefore sums the
    incoming gradient over ranks (one ``all_reduce``) and hands each rank the slice of
    its own rows: rank r gets ``sum_q dL_q / dx_r`` = W x ``dL / dx_r``. DDP then
    averages the parameters' gradients over the W ranks, which gives exactly
    ``dL / dtheta``: the gradient of the pooled loss, whatever the world size. (With
    a gradient into the local rows only, DDP's average scaled it by 1 / W.)
    Integer and bool tensors are gathered without a graph.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    if x.dtype == torch.bool:  # gloo cannot all-gather bool tensors
        return gather_with_grad(x.to(torch.uint8)).bool()
    if not x.is_floating_point():
        return _gather_rows(x)[0]
    return _GatherRows.apply(x)


def _gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """All ranks' rows of ``x`` (no graph) and each rank's row count."""
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    biggest = max(counts)
    local = x.detach()
    if x.shape[0] < biggest:
        pad = local.new_zeros((biggest - x.shape[0], *x.shape[1:]))
        local = torch.cat([local, pad], dim=0)
    bufs = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(bufs, local.contiguous())
    parts = [b[:c] for b, c in zip(bufs, counts, strict=True)]
    return torch.cat(parts, dim=0), counts


class _GatherRows(torch.autograd.Function):
    """Forward: all ranks' rows. Backward: the gradient summed over ranks, this rank's rows."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        """Every rank's rows of ``x``, concatenated in rank order."""
        rows, counts = _gather_rows(x)
        rank = dist.get_rank()
        ctx.start, ctx.stop = sum(counts[:rank]), sum(counts[: rank + 1])
        return rows

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        """Sum of every rank's gradient of the gathered rows, sliced to this rank's rows."""
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.start : ctx.stop]
