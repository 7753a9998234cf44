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
    # d/dx of sum(row_index * row), summed over the 2 ranks that computed it, at each
    # rank's place in the concatenation.
    torch.testing.assert_close(r0["grad"], torch.zeros(1, 2))
    torch.testing.assert_close(r1["grad"], 2 * torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    assert r0["flags"].dtype == torch.bool and r0["flags"].tolist() == [
        True,
        True,
        False,
        False,
        False,
    ]


class PooledNet(torch.nn.Module):
    """A projection and a pixel head; the loss pools its embeddings over ranks (``gather``)
    into the MS/CS and CT losses, plus a per-sample term averaged locally, as in training."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Linear(6, 8).double()
        self.head = torch.nn.Linear(6, 3).double()
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)

    def forward(self, x, y, gather=None):
        from aerialct.losses.ct import batched_class_losses
        from aerialct.losses.mscs import supervised_contrastive_loss

        pool = gather or (lambda t: t)
        z = torch.nn.functional.normalize(self.proj(x), dim=1)  # (n, 8)
        zg, yg = pool(z), pool(y)  # every rank's rows, in rank order
        ms = supervised_contrastive_loss(zg, yg, temperature=0.1)
        cs = supervised_contrastive_loss(zg, yg, pool(z[y != 2]), pool(y[y != 2]), 0.1)
        pos, neg = pool(z[y == 0])[:, None], pool(z[y != 0])[:, None]  # one (stage, class)
        ok_p, ok_n = pos.new_ones(pos.shape[:2]).bool(), neg.new_ones(neg.shape[:2]).bool()
        cl = batched_class_losses(pos, ok_p, neg, ok_n, "cl", min_samples=2)[0].sum()
        nce = batched_class_losses(pos, ok_p, neg, ok_n, "infonce", min_samples=2)[0].sum()
        seg = torch.nn.functional.cross_entropy(self.head(x), y)  # local mean, DDP averages
        return seg + ms + cs + cl + nce


def pooled_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (24,), generator=g)


def _pooled_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from torch.nn.parallel import DistributedDataParallel as DDP

    from aerialct.engine.distributed import gather_with_grad
    from aerialct.losses.ct import PatchContrastLoss
    from aerialct.losses.mscs import MultiScaleContrastLoss

    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, y = pooled_batch()
    half = slice(rank * 12, (rank + 1) * 12)  # each rank half of the batch
    net = DDP(PooledNet())
    loss = net(x[half], y[half], gather_with_grad)
    loss.backward()
    grads = {k: p.grad for k, p in net.module.named_parameters()}
    # the loss modules under DDP: pooled, summed backward, each rank its share of the budget
    torch.manual_seed(0)
    feats = [torch.randn(1, 4, 32 // r, 32 // r, requires_grad=True) for r in (4, 8, 16, 32)]
    mask = torch.zeros(1, 32, 32, dtype=torch.long)
    mask[:, :, 16:] = 1
    ct, _ = PatchContrastLoss([4] * 4, [4, 8, 16, 32], 2, max_samples=8)(
        feats, mask, gather_with_grad, world_size=world
    )
    ms, cs = MultiScaleContrastLoss([4] * 4, [4, 8, 16, 32], 2)(
        feats, mask, gather_with_grad, world_size=world
    )
    (ct + ms + cs).backward()
    finite = all(bool(torch.isfinite(f.grad).all()) for f in feats)
    torch.save({"loss": loss.detach(), "grads": grads, "finite": finite}, Path(out) / f"{rank}.pt")
    dist.destroy_process_group()


def test_pooled_losses_give_one_process_gradient_on_two_gloo_ranks(tmp_path):
    # 2 ranks on halves of a batch against 1 process on the whole batch, with the same
    # samples: the same loss and, after DDP's average, the same gradients. (With the
    # gradient into the local rows only, the contrastive part came out halved.)
    mp.spawn(_pooled_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    x, y = pooled_batch()
    net = PooledNet()
    want = net(x, y)
    want.backward()
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1)]
    # the pooled terms are the whole batch's on both ranks; the local CE is each half's
    # mean, and the mean over ranks is the whole batch's mean
    mean = (ranks[0]["loss"] + ranks[1]["loss"]) / 2
    torch.testing.assert_close(mean, want.detach(), rtol=0, atol=1e-9)
    for got in ranks:
        assert got["finite"]
        for k, p in net.named_parameters():
            torch.testing.assert_close(got["grads"][k], p.grad, rtol=0, atol=1e-6, msg=k)


def test_loss_budgets_are_shared_out_over_ranks():
    from aerialct.losses.mscs import MultiScaleContrastLoss

    per_class = MultiScaleContrastLoss([4] * 4, [4, 8, 16, 32], 3, max_k=2500, max_total=10000)
    assert per_class.budget(1) == (2500, 10000) and per_class.budget(8) == (313, 1250)
    pairs = MultiScaleContrastLoss([4] * 4, [4, 8, 16, 32], 3, anchors="per-image-class")
    assert pairs.budget(3) == (2500, 3334)  # K caps each (image, class) pair: not shared


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
