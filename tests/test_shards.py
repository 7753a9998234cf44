"""Shares of a batch: --shard K/N, Slurm job arrays and Kubernetes indexed Jobs."""

from __future__ import annotations

import pytest

from aerialct.errors import InputError
from aerialct.shards import Shard, parse_shard, resolve_shard, shard_from_env, shard_items


def test_parse_shard_and_its_refusals():
    assert parse_shard("2/8") == Shard(2, 8)
    for bad in ("0/8", "9/8", "2", "a/b", "1/0"):
        with pytest.raises(InputError, match=f"--shard {bad}"):
            parse_shard(bad)


@pytest.mark.parametrize(
    "env, want",
    [
        ({}, None),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}, (1, 4)),
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, (4, 4)),
        # --array=1-4 starts at 1; --array=10-16:2 steps by 2
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, (1, 4)),
        ({"SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "10",
          "SLURM_ARRAY_TASK_STEP": "2"}, (3, 4)),
        ({"JOB_COMPLETION_INDEX": "0", "AERIALCT_SHARD_COUNT": "3"}, (1, 3)),
        ({"JOB_COMPLETION_INDEX": "2", "AERIALCT_SHARD_COUNT": "3"}, (3, 3)),
        # a Slurm job that is not an array sets no task id
        ({"SLURM_JOB_ID": "77"}, None),
    ],
)  # fmt: skip
def test_shard_from_the_environment(env, want):
    got = shard_from_env(env)
    assert (got.index, got.count) == want if want else got is None


@pytest.mark.parametrize(
    "env, words",
    [
        ({"JOB_COMPLETION_INDEX": "1"}, "AERIALCT_SHARD_COUNT is not"),
        ({"JOB_COMPLETION_INDEX": "3", "AERIALCT_SHARD_COUNT": "3"}, "outside 0..2"),
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "'x' is not an integer"),
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4"}, "does not fit"),
    ],
)
def test_bad_job_environments_are_refused_in_one_line(env, words):
    with pytest.raises(InputError, match=words) as e:
        shard_from_env(env)
    assert "\n" not in str(e.value)


def test_the_option_wins_over_the_environment():
    env = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert resolve_shard("2/3", env) == Shard(2, 3)
    assert resolve_shard(None, env) == Shard(1, 4, "SLURM_ARRAY_TASK_ID")


def test_shares_cover_every_item_once_whatever_the_listing_order():
    items = [f"t{i:02d}.tif" for i in range(11)]
    shares = [shard_items(items, Shard(k, 3)) for k in (1, 2, 3)]
    assert sorted(x for share in shares for x in share) == items
    assert shard_items(list(reversed(items)), Shard(2, 3)) == list(reversed(shares[1]))
