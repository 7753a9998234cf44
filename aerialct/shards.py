"""Shares of a batch for array jobs: ``--shard K/N``, Slurm job arrays, Kubernetes indexed jobs.

N processes (machines, array tasks, pods) given the same inputs each take one share,
and together cover every item exactly once. The share comes from, in this order:

1. ``--shard K/N`` (shares numbered 1..N);
2. a Slurm job array: ``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_COUNT`` (and
   ``SLURM_ARRAY_TASK_MIN`` / ``SLURM_ARRAY_TASK_STEP`` when the array does not start at
   0 or steps), so ``sbatch --array=0-7`` gives shares 1/8 .. 8/8;
3. a Kubernetes indexed Job: ``JOB_COMPLETION_INDEX`` (0-based) with the count given as
   ``AERIALCT_SHARD_COUNT`` (set it to the Job's ``completions``; Kubernetes does not
   tell a pod how many completions there are).

:func:`shard_items` picks a share of a list the same way on every process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from aerialct.errors import InputError

T = TypeVar("T")

SLURM_ID, SLURM_COUNT = "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"
SLURM_MIN, SLURM_STEP = "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP"
K8S_INDEX, K8S_COUNT = "JOB_COMPLETION_INDEX", "AERIALCT_SHARD_COUNT"


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (1..``count``) of ``count``; ``source`` says where it came from."""

    index: int
    count: int
    source: str = "--shard"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` (shares numbered 1..N) -> ``Shard(K, N)``; InputError otherwise."""
    k_text, sep, n_text = text.partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or n < 1 or not 1 <= k <= n:
        raise InputError(
            f"--shard {text}: give K/N with shards numbered 1..N, e.g. --shard 2/8 "
            "(Slurm and Kubernetes indexed jobs set it themselves: see `aerialct predict --help`)"
        )
    return Shard(k, n)


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw and default is not None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(
            f"{name}={raw!r} is not an integer; fix the job's environment or pass --shard K/N"
        ) from None


def shard_from_env(environ: Mapping[str, str] | None = None) -> Shard | None:
    """The share a Slurm array task or a Kubernetes indexed Job pod runs, or None."""
    env = os.environ if environ is None else environ
    if env.get(SLURM_ID, "").strip() and env.get(SLURM_COUNT, "").strip():
        task, count = _int(env, SLURM_ID), _int(env, SLURM_COUNT)
        low, step = _int(env, SLURM_MIN, 0), max(_int(env, SLURM_STEP, 1), 1)
        k = (task - low) // step + 1
        if count < 1 or not 1 <= k <= count or (task - low) % step:
            raise InputError(
                f"{SLURM_ID}={task} does not fit an array of {count} tasks from {low} in steps "
                f"of {step}; pass --shard K/N"
            )
        return Shard(k, count, SLURM_ID)
    if env.get(K8S_INDEX, "").strip():
        index = _int(env, K8S_INDEX)
        if not env.get(K8S_COUNT, "").strip():
            raise InputError(
                f"{K8S_INDEX}={index} is set (a Kubernetes indexed Job) but {K8S_COUNT} is not: "
                f"set {K8S_COUNT} to the Job's completions, or pass --shard K/N"
            )
        count = _int(env, K8S_COUNT)
        if count < 1 or not 0 <= index < count:
            raise InputError(
                f"{K8S_INDEX}={index} is outside 0..{count - 1} ({K8S_COUNT}={count}); "
                f"set {K8S_COUNT} to the Job's completions"
            )
        return Shard(index + 1, count, K8S_INDEX)
    return None


def resolve_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard`` when given, else the array job's share from the environment, else None."""
    if text is not None:
        return parse_shard(text)
    return shard_from_env(environ)


def shard_items(items: Sequence[T], shard: Shard | None) -> list[T]:
    """The items of ``shard`` K/N: every N-th of the items sorted by name, starting at K.

    Sorting makes the split independent of the order a shell or a file system lists
    the items in, so N processes given the same set cover each item exactly once.
    The chosen items keep the caller's order.
    """
    if shard is None:
        return list(items)
    k, n = shard.index, shard.count
    order = sorted(range(len(items)), key=lambda i: str(items[i]))
    mine = set(order[k - 1 :: n])
    return [p for i, p in enumerate(items) if i in mine]


def share_by_cost(costs: Sequence[float], index: int, count: int) -> range:
    """The items of worker ``index`` (0-based) of ``count``: a run of consecutive items whose
    costs add up to about ``1/count`` of the total.

    An item belongs to the worker in whose part of the total cost its middle falls, so
    N workers given the same list cover every item exactly once, each a contiguous run
    (consecutive blocks of a scene stream on without a restart).
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"worker {index} of {count}")
    total = float(sum(costs))
    first, last = len(costs), -1
    acc = 0.0
    for i, c in enumerate(costs):
        mid = acc + c / 2.0
        acc += c
        w = min(count - 1, int(mid * count / total)) if total > 0 else i * count // len(costs)
        if w == index:
            first, last = min(first, i), i
    return range(first, last + 1) if last >= 0 else range(0)
