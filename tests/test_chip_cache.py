"""Training from a chips folder holds the decoded chips in memory when they fit (data.cache_gb)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from train_helpers import tiled_synth

from aerialct.config import DataConfig, load_config
from aerialct.data.cache import CachedChipDataset, cache_chips, cache_limit
from aerialct.data.dataset import open_chip_splits
from aerialct.data.transforms import JointAugment, Normalize
from aerialct.engine.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny-cpu.yaml"


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    return tiled_synth(tmp_path_factory.mktemp("city"))


def test_cached_samples_equal_the_files(chips):
    sp = open_chip_splits(chips, DataConfig())
    pairs = [*sp.train, *sp.val]
    cache = cache_chips(pairs, sp.in_chans, sp.chip_shape, "uint8", 6, 1 << 30)
    assert cache is not None and cache.images.shape == (len(pairs), 3, 64, 64)
    norm = Normalize(*sp.band_stats())
    aug = JointAugment(True, True, True, None)
    files = sp.dataset("train", norm, aug, 6)
    mem = CachedChipDataset(cache, range(len(sp.train)), norm, aug, 6)
    for i in range(len(files)):
        torch.manual_seed(i)
        xa, ya = files[i]
        torch.manual_seed(i)
        xb, yb = mem[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xb.dtype == torch.float32
    assert cache_chips(pairs, 3, (64, 64), "uint8", 6, 1000) is None  # over the bound
    assert cache_limit(0) == 0 and cache_limit(1.5) == 1_500_000_000 and cache_limit(None) > 0


def test_training_from_memory_equals_training_from_files(chips, tmp_path, caplog):
    base = ["train.batch_size=4", "train.epochs=1", "data.stats_chips=8"]
    caplog.set_level(logging.INFO, logger="aerialct")
    ra = train(load_config(TINY, base), chips, tmp_path / "mem")
    held = [r.message for r in caplog.records if "held in memory" in r.message]
    assert held and "16 decoded chips" in held[0] and "data.cache_gb" in held[0]
    caplog.clear()
    rb = train(load_config(TINY, [*base, "data.cache_gb=0.000001"]), chips, tmp_path / "files")
    over = [r.message for r in caplog.records if "over the cache bound" in r.message]
    assert over and "aerialct pack" in over[0]
    assert ra.steps == rb.steps == 3 and ra.best_miou == rb.best_miou
    for key in ("train_loss", "train_ct", "val_miou"):
        assert ra.final[key] == rb.final[key], key
    wa = torch.load(tmp_path / "mem" / "last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "files" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
