"""DDP on the CPU: two gloo processes train the tiny preset (with CT, so samples are gathered)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from train_helpers import tiled_synth

from aerialct.config import load_config

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
OVERRIDES = ["train.batch_size=3", "train.epochs=2", "train.warmup_steps=1", "data.stats_chips=4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, chips: str, run: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    import aerialct.engine.epoch as ep
    import aerialct.engine.train as tr
    from aerialct.engine.distributed import gather_with_grad

    dist.init_process_group("gloo", rank=rank, world_size=world)
    # gather_with_grad: rows of every rank (sizes differ), gradient only into the local rows.
    x = torch.full((rank + 1, 2), float(rank + 1), requires_grad=True)
    g = gather_with_grad(x)
    flags = gather_with_grad(torch.tensor([rank == 0] * (rank + 2)))
    (g * torch.arange(g.shape[0], dtype=torch.float32)[:, None]).sum().backward()
    gathered = {"rows": g.detach(), "grad": x.grad, "flags": flags}

    final: dict = {}
    step = ep.optimizer_step

    def spy(task, *args, **kwargs):
        step(task, *args, **kwargs)
        final["model"] = {k: v.detach().clone() for k, v in task.model.named_parameters()}
        final["heads"] = {k: v.detach().clone() for k, v in task.heads.named_parameters()}

    ep.optimizer_step = spy
    res = tr.train(load_config(TINY, OVERRIDES), chips, run, device="cpu")
    torch.save({**final, **gathered, "steps": res.steps}, Path(out) / f"rank{rank}.pt")


def test_two_gloo_processes_train_in_lockstep(tmp_path):
    chips = tiled_synth(tmp_path / "city")
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(chips), str(run), str(out)), nprocs=2, join=True)
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    # 12 chips over 2 ranks, batches of 3: 2 steps per epoch, 2 epochs.
    assert r0["steps"] == r1["steps"] == 4
    for part in ("model", "heads"):
        assert r0[part].keys() == r1[part].keys() and r0[part]
        for k in r0[part]:
            torch.testing.assert_close(r0[part][k], r1[part][k], rtol=0, atol=0, msg=k)
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["step"] == 4
    for k, v in r0["model"].items():
        torch.testing.assert_close(ck["model"][k], v, rtol=0, atol=0, msg=k)
    assert (run / "metrics.csv").exists() and (run / "best.pt").exists()
    # Gathered rows: rank 0 gave one row of 1s, rank 1 two rows of 2s.
    expected = torch.tensor([[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]])
    torch.testing.assert_close(r0["rows"], expected)
    torch.testing.assert_close(r1["rows"], expected)
    # d/dx of sum(row_index * row): local rows only, at their place in the concatenation.
    torch.testing.assert_close(r0["grad"], torch.zeros(1, 2))
    torch.testing.assert_close(r1["grad"], torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    assert r0["flags"].dtype == torch.bool and r0["flags"].tolist() == [
        True,
        True,
        False,
        False,
        False,
    ]


@pytest.mark.skipif(not dist.is_gloo_available(), reason="gloo backend not built")
def test_gather_is_identity_without_a_process_group():
    from aerialct.engine.distributed import gather_with_grad

    x = torch.randn(3, 4)
    assert gather_with_grad(x) is x


def test_launch_env_is_read_in_one_place(monkeypatch):
    from aerialct.engine.distributed import DistInfo, launch_env
    from aerialct.errors import InputError

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launch_env() == DistInfo() and launch_env().is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = launch_env()
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 1)
    assert info.enabled and not info.is_main
    monkeypatch.setenv("RANK", "three")
    with pytest.raises(InputError, match=r"RANK='three' is not an integer"):
        launch_env()


def test_resolve_device_accepts_the_documented_names_and_says_how_to_fix(monkeypatch):
    from aerialct.engine.distributed import resolve_device
    from aerialct.errors import InputError

    assert resolve_device("cpu") == resolve_device(" CPU ") == torch.device("cpu")
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == resolve_device("auto").type == expected_auto
    for bad in ("tpu9", "cuda:x"):
        with pytest.raises(InputError, match=rf"device '{bad}' is not valid; use auto, cpu"):
            resolve_device(bad)
    with pytest.raises(InputError, match=r"device 'meta' is not supported"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match=r"device 'cuda': no CUDA GPU.*use --device cpu"):
            resolve_device("cuda")
    else:  # under torchrun, "cuda" is this process's GPU
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count() - 1))
        assert resolve_device("cuda").index == torch.cuda.device_count() - 1
    if not torch.backends.mps.is_available():
        with pytest.raises(InputError, match=r"device 'mps': Apple MPS is not available"):
            resolve_device("mps")
