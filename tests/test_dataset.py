"""The chip dataset: header checks, normalisation statistics, joint augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_helpers import write_chips

from aerialct.classes import IGNORE_INDEX
from aerialct.config import DataConfig
from aerialct.data.dataset import ChipDataset, compute_band_stats, open_chip_splits
from aerialct.data.transforms import JointAugment, Normalize, random_scale
from aerialct.errors import InputError

rng = np.random.default_rng(0)


def chip(size=32, bands=3):
    img = rng.integers(0, 256, (bands, size, size), dtype=np.uint8)
    msk = rng.integers(0, 6, (size, size), dtype=np.uint8)
    msk[:2] = IGNORE_INDEX
    return img, msk


def folder(tmp_path, specs):
    return write_chips(tmp_path / "chips", [(s, *chip(*a)) for s, *a in specs])


def test_splits_stats_and_items(tmp_path):
    root = folder(tmp_path, [("train", 32), ("train", 32), ("train", 32), ("val", 32)])
    sp = open_chip_splits(root, DataConfig())
    assert (len(sp.train), len(sp.val), sp.val_split) == (3, 1, "val")
    assert (sp.in_chans, sp.chip_size, sp.gsd) == (3, 32, 0.5)
    mean, std = compute_band_stats(sp.train)
    import rasterio

    stack = np.stack([rasterio.open(p).read().astype(np.float64) for p, _ in sp.train])
    np.testing.assert_allclose(mean, stack.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(std, stack.std(axis=(0, 2, 3)), rtol=1e-9)
    ds = ChipDataset(sp.train, Normalize(mean, std), None, num_classes=6)
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    assert y.dtype == torch.int64 and y.shape == (32, 32)
    raw = torch.from_numpy(rasterio.open(sp.train[0][0]).read().astype(np.float32))
    torch.testing.assert_close(
        x,
        (raw - torch.tensor(mean).view(3, 1, 1).float()) / torch.tensor(std).view(3, 1, 1).float(),
    )


def test_validation_falls_back_to_test_then_none(tmp_path):
    sp = open_chip_splits(folder(tmp_path / "a", [("train", 32), ("test", 32)]), DataConfig())
    assert sp.val_split == "test" and len(sp.val) == 1
    sp = open_chip_splits(folder(tmp_path / "b", [("train", 32)]), DataConfig())
    assert sp.val_split is None and sp.val == []


def test_mixed_sizes_and_band_counts_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"r0_c48\.tif: chip is 48x48 px .*mixed sizes"):
        open_chip_splits(folder(tmp_path / "a", [("train", 32), ("train", 48)]), DataConfig())
    with pytest.raises(InputError, match=r"chip has 4 bands .* has 3"):
        open_chip_splits(folder(tmp_path / "b", [("train", 32), ("val", 32, 4)]), DataConfig())


def test_missing_or_unlabelled_data(tmp_path):
    with pytest.raises(InputError, match="aerialct tile"):
        open_chip_splits(tmp_path / "nowhere", DataConfig())
    img, _ = chip()
    root = write_chips(tmp_path / "c", [("train", img, None)])
    with pytest.raises(InputError, match="no labelled chips"):
        open_chip_splits(root, DataConfig())
    root = folder(tmp_path / "d", [("val", 32)])
    with pytest.raises(InputError, match="no 'train' split"):
        open_chip_splits(root, DataConfig())


def test_mask_ids_outside_the_class_table(tmp_path):
    img, msk = chip()
    msk[5, 5] = 9
    root = write_chips(tmp_path / "c", [("train", img, msk)])
    sp = open_chip_splits(root, DataConfig())
    ds = ChipDataset(sp.train, Normalize([0] * 3, [1] * 3), num_classes=6)
    with pytest.raises(InputError, match="class id 9"):
        ds[0]


def test_augmentations_move_image_and_mask_together():
    torch.manual_seed(0)
    # The image encodes the mask exactly, so any misalignment shows.
    mask = torch.randint(0, 6, (16, 16))
    image = torch.stack([mask.float(), mask.float() * 2, torch.zeros(16, 16)])
    aug = JointAugment(hflip=True, vflip=True, rot90=True)
    seen = set()
    for _ in range(40):
        x, y = aug(image, mask)
        assert torch.equal(x[0].long(), y) and torch.equal(x[1], 2 * x[0])
        seen.add(tuple(y.flatten()[:4].tolist()))
    assert len(seen) > 4  # it does transform


def test_random_scale_never_interpolates_labels():
    torch.manual_seed(0)
    mask = torch.randint(0, 3, (32, 32)) * 2  # ids 0, 2, 4
    image = torch.randn(3, 32, 32)
    for _ in range(20):
        x, y = random_scale(image, mask, 0.5, 1.5)
        assert x.shape == (3, 32, 32) and y.shape == (32, 32)
        assert set(torch.unique(y).tolist()) <= {0, 2, 4, IGNORE_INDEX}
        pad = y == IGNORE_INDEX
        if pad.any():
            assert torch.all(x[:, pad] == 0)
