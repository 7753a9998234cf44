"""`aerialct export`: slim checkpoint, ONNX and TorchScript; predict runs the exported models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import rasterio
import torch

from aerialct.classes import POTSDAM
from aerialct.config import load_config
from aerialct.engine.checkpoint import (
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from aerialct.engine.info import checkpoint_info
from aerialct.engine.task import SegmentationTask
from aerialct.errors import CheckpointError
from aerialct.export import export_model
from aerialct.models import build_model
from aerialct.predict.bundle import load_inference_model
from tests.synth_helpers import write_raster

MEAN, STD = (90.0, 100.0, 80.0), (40.0, 35.0, 30.0)


def training_checkpoint(path):
    """A checkpoint as `train` writes it: model, CT heads, AdamW state after one step."""
    cfg = load_config(None, ["model.backbone=tiny_cnn", "model.decoder=fpn",
                             "model.decoder_channels=16", "model.img_size=64",
                             "loss.contrast=ct-cl"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=len(POTSDAM), in_chans=3)
    task = SegmentationTask(model, cfg.loss, num_classes=len(POTSDAM))
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, len(POTSDAM), (2, 64, 64))
    task(x, y)["loss"].backward()
    opt.step()
    ck = make_checkpoint(config=cfg, classes=POTSDAM, mean=MEAN, std=STD, in_chans=3,
                         chip_size=64, gsd=0.25, model_state=model.state_dict(),
                         heads_state=task.heads.state_dict(), optimizer=opt.state_dict(),
                         scheduler={"last_epoch": 1}, step=1, epoch=1, rng={"torch": 1},
                         best_miou=0.4, metrics={"history": [{"epoch": 1}] * 50,
                                                 "last": {"epoch": 1}, "best_epoch": 1})  # fmt: skip
    return save_checkpoint(path, ck), model.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return training_checkpoint(tmp_path_factory.mktemp("ck") / "best.pt")


def scene(path, h=150, w=131):
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (3, h // 8 + 1, w // 8 + 1)).astype(np.float32)
    img = np.kron(base, np.ones((8, 8)))[:, :h, :w] + rng.normal(0, 20, (3, h, w))
    return write_raster(path, img.clip(0, 255).astype(np.uint8))


def test_slim_pt_drops_training_state_and_predicts_the_same(ckpt, tmp_path):
    path, model = ckpt
    r = export_model(path, tmp_path / "slim.pt", "pt")
    assert r.output_bytes < 0.5 * r.source_bytes  # heads + AdamW moments dominate the file
    slim = load_checkpoint(tmp_path / "slim.pt")
    assert slim["heads"] == {} and slim["optimizer"] is None and slim["rng"] is None
    assert slim["metrics"] == {"last": {"epoch": 1}, "best_epoch": 1}
    info = checkpoint_info(tmp_path / "slim.pt")
    assert not info.has_training_state and info.head_parameters == 0
    assert info.parameters == sum(v.numel() for v in model.state_dict().values())
    with pytest.raises(CheckpointError, match="lacks optimizer"):
        load_checkpoint(tmp_path / "slim.pt", for_training=True)
    bundle = load_inference_model(tmp_path / "slim.pt")
    assert (bundle.mean, bundle.std, bundle.gsd, bundle.chip_size) == (MEAN, STD, 0.25, 64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), model(x))


def test_onnx_carries_the_metadata_and_no_heads(ckpt, tmp_path):
    path, model = ckpt
    r = export_model(path, tmp_path / "m.onnx", "onnx")
    assert r.max_abs_diff is not None and r.max_abs_diff < 1e-4
    proto = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"]) == POTSDAM.to_list()
    assert json.loads(meta["mean"]) == list(MEAN) and json.loads(meta["std"]) == list(STD)
    assert json.loads(meta["chip_size"]) == 64 and json.loads(meta["gsd"]) == 0.25
    weights = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    # no projection-head tensors: the graph holds at most the model's own parameters
    assert weights <= sum(p.numel() for p in model.parameters()) + 1000
    assert [i.name for i in proto.graph.input] == ["image"]


@pytest.mark.parametrize("fmt,name", [("onnx", "m.onnx"), ("torchscript", "m.torchscript")])
def test_predict_with_the_exported_model_gives_the_same_rasters(ckpt, tmp_path, cli, fmt, name):
    path, _ = ckpt
    src = scene(tmp_path / "tile.tif")
    r = cli("export", path, "--format", fmt, "--out", tmp_path / name)
    assert r.code == 0, r.err
    for model, out in ((path, "torch"), (tmp_path / name, "exported")):
        r = cli("predict", model, src, "--out", tmp_path / out, "--probabilities",
                "--device", "cpu", "--batch-size", "3")  # fmt: skip
        assert r.code == 0, r.err
    with rasterio.open(tmp_path / "torch" / "tile_classes.tif") as a:
        expected = a.read(1)
    with rasterio.open(tmp_path / "exported" / "tile_classes.tif") as b:
        got = b.read(1)
        assert b.colormap(1)[1][:3] == POTSDAM.classes[1].color
    assert len(np.unique(expected)) >= 3  # a real map, not one class
    np.testing.assert_array_equal(got, expected)
    with rasterio.open(tmp_path / "torch" / "tile_probabilities.tif") as a:
        pa = a.read().astype(int)
    with rasterio.open(tmp_path / "exported" / "tile_probabilities.tif") as b:
        pb = b.read().astype(int)
    assert np.abs(pa - pb).max() <= 1


def test_cli_export_table_and_errors(ckpt, tmp_path, cli):
    path, _ = ckpt
    r = cli("export", path, "--format", "pt", "--out", tmp_path / "s.pt", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["format"] == "pt" and d["size_ratio"] < 0.5
    assert cli("export", path, "--format", "pt", "--out", tmp_path / "s.pt").code == 1
    r = cli("export", path, "--format", "tflite", "--out", tmp_path / "x")
    assert r.code == 2 and "--format" in r.err
    r = cli("export", path, "--format", "onnx", "--out", tmp_path / "m.pt")
    assert r.code == 1 and "m.pt: an onnx model needs a .onnx name" in r.err
    r = cli("export", path, "--format", "pt", "--out", tmp_path / "m.onnx")
    assert r.code == 1 and "must not be named .onnx" in r.err
    r = cli("info", tmp_path / "s.pt")
    assert r.code == 0 and "no training state" in r.out
    r = cli(
        "predict", tmp_path / "missing.onnx", scene(tmp_path / "t.tif"), "--out", tmp_path / "p"
    )
    assert r.code == 1 and "missing.onnx" in r.err
