"""Packed chips (`aerialct pack`, `tile --pack`): same chips, same training, no GDAL to read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import tiled_synth, write_chips

from aerialct.config import DataConfig, load_config
from aerialct.data.dataset import open_chip_splits, read_chip
from aerialct.data.index import read_index
from aerialct.data.packed import is_packed, open_packed, pack_chips
from aerialct.data.transforms import Normalize
from aerialct.engine.train import train
from aerialct.errors import InputError, OutputExistsError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny-cpu.yaml"


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    return tiled_synth(tmp_path_factory.mktemp("city"))


@pytest.fixture(scope="module")
def packed(chips, tmp_path_factory) -> Path:
    return pack_chips(chips, tmp_path_factory.mktemp("p") / "chips.packed").out


def test_pack_holds_every_chip_in_index_order(chips, packed):
    index = read_index(chips)
    p = open_packed(packed)
    assert is_packed(packed) and not is_packed(chips)
    assert len(p) == len(index.frame) == 16
    assert p.images.dtype == np.uint8 and p.images.shape == (16, 3, 64, 64)
    assert p.masks.dtype == np.uint8 and p.masks.shape == (16, 64, 64)
    for i, (_, row) in enumerate(index.frame.iterrows()):
        img, msk = read_chip(index.image_path(row), index.mask_path(row))
        np.testing.assert_array_equal(p.images[i], img.astype(np.uint8))
        np.testing.assert_array_equal(p.masks[i], msk)
        assert p.index["split"][i] == row["split"] and p.index["image"][i] == row["image"]
        counts = [row[f"px_{n}"] for n in index.classes.names] + [row["px_ignore"]]
        np.testing.assert_array_equal(p.index["counts"][i], counts)
    meta = p.meta
    assert meta["format"] == "aerialct-packed" and meta["chip_size"] == 64 and meta["bands"] == 3
    assert meta["crs"] == "EPSG:32633" and meta["gsd"] == index.meta["gsd"]
    assert meta["splits"] == {"train": 12, "val": 4}
    assert meta["class_pixels"]["val"]["building"] == int(index.split("val")["px_building"].sum())
    train_imgs = p.images[p.split("train")].astype(np.float64)
    np.testing.assert_allclose(
        meta["split_band_stats"]["train"]["mean"], train_imgs.mean(axis=(0, 2, 3))
    )
    np.testing.assert_allclose(
        meta["split_band_stats"]["train"]["std"], train_imgs.std(axis=(0, 2, 3))
    )


def test_splits_datasets_and_stats_match_the_folder(chips, packed):
    a, b = open_chip_splits(chips, DataConfig()), open_chip_splits(packed, DataConfig())
    assert (len(a.train), len(a.val), a.val_split) == (len(b.train), len(b.val), b.val_split)
    assert (a.in_chans, a.chip_shape, a.gsd, a.classes) == (
        b.in_chans,
        b.chip_shape,
        b.gsd,
        b.classes,
    )
    assert a.band_stats(5) == b.band_stats(5)
    norm = Normalize(*a.band_stats())
    for which in ("train", "val"):
        da, db = a.dataset(which, norm, None, 6), b.dataset(which, norm, None, 6)
        for i in range(len(da)):
            xa, ya = da[i]
            xb, yb = db[i]
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            assert xb.dtype == torch.float32 and yb.dtype == torch.int64


def test_training_on_both_forms_gives_the_same_run(chips, packed, tmp_path):
    cfg = load_config(TINY, ["train.batch_size=4", "train.epochs=2", "data.stats_chips=8"])
    ra = train(cfg, chips, tmp_path / "a")
    rb = train(cfg, packed, tmp_path / "b")
    assert ra.best_miou == rb.best_miou and ra.steps == rb.steps == 6
    assert ra.normalization == rb.normalization
    for key in ("train_loss", "train_ct", "val_miou", "iou_building"):
        assert ra.final[key] == rb.final[key], key
    wa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


READER_SCRIPT = """
import sys
from aerialct.config import load_config
from aerialct.data.dataset import open_chip_splits
from aerialct.data.transforms import Normalize
from aerialct.engine.train import train
cfg = load_config(sys.argv[3], ["train.batch_size=4", "train.max_steps=2", "data.num_workers=1"])
sp = open_chip_splits(sys.argv[1], cfg.data)
x, y = sp.dataset("train", Normalize(*sp.band_stats()), None, 6)[0]
res = train(cfg, sys.argv[1], sys.argv[2])
heavy = sorted(m for m in ("rasterio", "pyogrio", "geopandas", "shapely", "fiona") if m in sys.modules)
print("HEAVY", heavy, res.steps)
"""


def test_reading_and_training_import_no_gdal_stack(packed, tmp_path):
    """The packed path (open, stats, dataset, a whole training run) never imports GDAL wrappers."""
    proc = subprocess.run(
        [sys.executable, "-c", READER_SCRIPT, str(packed), str(tmp_path / "run"), str(TINY)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY [] 2" in proc.stdout, proc.stdout


def test_cli_pack_tile_pack_and_train(tmp_path, cli):
    from aerialct.data.synth import synth_scene

    synth_scene(tmp_path / "s.tif", tmp_path / "l.tif", size=128, gsd=0.5, seed=3)
    r = cli("tile", tmp_path / "s.tif", "--labels", tmp_path / "l.tif", "--out", tmp_path / "c",
            "--size", 64, "--val-fraction", 0.25, "-j", 1, "--pack")  # fmt: skip
    assert r.code == 0, r.err
    assert is_packed(tmp_path / "c.packed") and "packed into" in r.out
    assert len(open_packed(tmp_path / "c.packed")) == 4
    r = cli("pack", tmp_path / "c", "--out", tmp_path / "p", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["chips"] == 4 and out["splits"]["train"] + out["splits"].get("val", 0) == 4
    r = cli("pack", tmp_path / "c", "--out", tmp_path / "p")
    assert r.code == 1 and "--overwrite" in r.err
    assert cli("pack", tmp_path / "c", "--out", tmp_path / "p", "--overwrite").code == 0
    r = cli("pack", tmp_path / "c")  # default: beside the chips folder, already there from --pack
    assert r.code == 1 and "c.packed" in r.err
    r = cli("train", "--config", TINY, "--data", tmp_path / "p", "--out", tmp_path / "run",
            "--set", "train.max_steps=1", "--set", "train.batch_size=2", "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads(r.out)["steps"] == 1


def test_pack_refuses_bad_chips_and_leaves_nothing(tmp_path):
    img = np.zeros((3, 16, 16), np.uint8)
    bad = np.full((16, 16), 9, np.uint8)
    root = write_chips(
        tmp_path / "c", [("train", img, np.zeros((16, 16), np.uint8)), ("train", img, bad)]
    )
    with pytest.raises(InputError, match="class id 9"):
        pack_chips(root, tmp_path / "p")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c"]
    with pytest.raises(InputError, match="not a chips folder"):
        pack_chips(tmp_path, tmp_path / "p")
    root2 = write_chips(
        tmp_path / "d", [("train", img, None), ("train", np.zeros((3, 8, 8), np.uint8), None)]
    )
    with pytest.raises(InputError, match="mixed sizes"):
        pack_chips(root2, tmp_path / "q")
    (tmp_path / "p").mkdir()
    with pytest.raises(OutputExistsError):
        pack_chips(write_chips(tmp_path / "e", [("train", img, None)]), tmp_path / "p")


def test_open_packed_errors(packed, tmp_path):
    with pytest.raises(InputError, match=r"no packed\.json"):
        open_packed(tmp_path)
    import shutil

    broken = tmp_path / "b"
    shutil.copytree(packed, broken)
    meta = json.loads((broken / "packed.json").read_text())
    (broken / "packed.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(InputError, match="re-pack"):
        open_packed(broken)
    (broken / "packed.json").write_text(json.dumps(meta))
    np.save(broken / "masks.npy", np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(InputError, match="disagree"):
        open_packed(broken)
    # unlabelled chips are kept (mask all ignore) but never trained on
    root = write_chips(tmp_path / "u", [("train", np.zeros((3, 8, 8), np.uint8), None)])
    with pytest.raises(InputError, match="no labelled chips"):
        open_chip_splits(pack_chips(root, tmp_path / "u.packed").out, DataConfig())


def test_dataset_pickles_without_copying_chips(packed):
    import pickle

    sp = open_chip_splits(packed, DataConfig())
    ds = sp.dataset("train", Normalize([0] * 3, [1] * 3), None, 6)
    blob = pickle.dumps(ds)
    assert len(blob) < 100_000
    x, y = pickle.loads(blob)[3]
    assert torch.equal(x, ds[3][0]) and torch.equal(y, ds[3][1])
