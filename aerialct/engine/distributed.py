"""Distributed data parallel helpers for runs launched by ``torchrun``.

``torchrun --nproc_per_node N -m aerialct train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``; :func:`init_distributed`
reads them and starts a process group (NCCL on CUDA, gloo on the CPU) when
``WORLD_SIZE > 1``. Rank 0 alone writes files; every rank runs the same steps.

:func:`gather_with_grad` is the ``gather`` function handed to the task: it
concatenates a tensor (e.g. contrastive samples) from all ranks along dim 0,
keeping the autograd graph for this rank's part. Sizes may differ per rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "gather_with_grad",
    "init_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Start the process group when launched with WORLD_SIZE > 1; no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
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
    """Concatenate ``x`` from all ranks along dim 0; gradient flows into the local part only.

    Ranks may hold different numbers of rows: sizes are exchanged first and the
    rows padded to the largest count for ``all_gather``. Every rank must call
    this the same number of times in the same order (it is a collective).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    if x.dtype == torch.bool:  # gloo cannot all-gather bool tensors
        return gather_with_grad(x.to(torch.uint8)).bool()
    world, rank = dist.get_world_size(), dist.get_rank()
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
    parts[rank] = x  # the local part keeps its graph
    return torch.cat(parts, dim=0)
