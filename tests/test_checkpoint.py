"""The checkpoint contract: atomic writes, validation on load, inference bundle, resume checks."""

from __future__ import annotations

import pytest
import torch

from aerialct.classes import POTSDAM, ClassInfo, ClassTable
from aerialct.config import load_config
from aerialct.engine.checkpoint import (
    check_resume_compatible,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from aerialct.engine.info import checkpoint_info
from aerialct.errors import CheckpointError, InputError
from aerialct.models import build_model
from aerialct.predict.bundle import load_inference_model

MEAN, STD = (90.0, 100.0, 80.0), (40.0, 35.0, 30.0)


def tiny_setup():
    cfg = load_config(None, ["model.backbone=tiny_cnn", "model.decoder=fpn",
                             "model.decoder_channels=16", "model.img_size=64"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=len(POTSDAM), in_chans=3)
    return cfg, model


def make(cfg, model, **kw):
    return make_checkpoint(config=cfg, classes=POTSDAM, mean=MEAN, std=STD, in_chans=3,
                           chip_size=64, model_state=model.state_dict(), gsd=0.5, **kw)  # fmt: skip


def test_roundtrip_gives_the_same_predictions(tmp_path):
    cfg, model = tiny_setup()
    path = save_checkpoint(tmp_path / "m.pt", make(cfg, model, step=7, epoch=2, best_miou=0.5))
    bundle = load_inference_model(path)
    assert bundle.classes == POTSDAM and bundle.chip_size == 64 and bundle.gsd == 0.5
    assert bundle.mean == MEAN and bundle.std == STD and bundle.in_chans == 3
    assert not bundle.model.training and bundle.config.model.backbone == "tiny_cnn"
    raw = torch.randint(0, 256, (2, 3, 64, 64)).float()
    x = bundle.normalize(raw)
    expected = (raw - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), model(x))
    with pytest.raises(InputError, match="3 bands"):
        bundle.normalize(raw[:, :2])


def test_bad_files_are_refused_with_the_file_name(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable aerialct checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt: not an aerialct checkpoint"):
        load_checkpoint(other)
    cfg, model = tiny_setup()
    ck = make(cfg, model)
    ck["version"] = 99
    torch.save(ck, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "v99.pt")
    # An inference-only checkpoint cannot be resumed.
    save_checkpoint(tmp_path / "inf.pt", make(cfg, model))
    with pytest.raises(CheckpointError, match="optimizer"):
        load_checkpoint(tmp_path / "inf.pt", for_training=True)
    # Weights that do not fit the stored config.
    ck = make(cfg, model)
    ck["model"] = {k: v[..., :1] if v.ndim else v for k, v in ck["model"].items()}
    save_checkpoint(tmp_path / "bad.pt", ck)
    with pytest.raises(CheckpointError, match=r"bad\.pt: weights do not fit"):
        load_inference_model(tmp_path / "bad.pt")


def test_save_is_atomic(tmp_path, monkeypatch):
    cfg, model = tiny_setup()
    path = save_checkpoint(tmp_path / "last.pt", make(cfg, model, step=1))
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match=r"last\.pt: no space left on device"):
        save_checkpoint(path, make(cfg, model, step=2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert load_checkpoint(path)["step"] == 1
    with pytest.raises(CheckpointError, match="format"):
        save_checkpoint(tmp_path / "x.pt", {"model": {}})


def test_resume_refuses_another_model_or_class_table(tmp_path):
    cfg, model = tiny_setup()
    ck = make(cfg, model)
    check_resume_compatible(ck, cfg, POTSDAM, 3)  # same: fine
    other = load_config(None, ["model.backbone=tiny_cnn", "model.decoder=unetformer",
                               "model.decoder_channels=16", "model.img_size=64"])  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"another model \(model.decoder: 'fpn' -> 'unetformer'"
    ):
        check_resume_compatible(ck, other, POTSDAM, 3)
    two = ClassTable((ClassInfo(0, "ground", (0, 0, 0)), ClassInfo(1, "building", (0, 0, 255))))
    with pytest.raises(CheckpointError, match="class table"):
        check_resume_compatible(ck, cfg, two, 3)
    with pytest.raises(CheckpointError, match="4"):
        check_resume_compatible(ck, cfg, POTSDAM, 4)
    cfg.loss.contrast = "ct-infonce"
    with pytest.raises(CheckpointError, match="contrast"):
        check_resume_compatible(ck, cfg, POTSDAM, 3)


def test_info_cli(tmp_path, cli):
    cfg, model = tiny_setup()
    save_checkpoint(tmp_path / "m.pt", make(cfg, model, step=5, epoch=1, best_miou=0.42))
    r = cli("info", tmp_path / "m.pt")
    assert r.code == 0, r.err
    assert "tiny_cnn" in r.out and "building" in r.out and "0.42" in r.out
    info = checkpoint_info(tmp_path / "m.pt")
    assert info.step == 5 and info.parameters == sum(p.numel() for p in model.state_dict().values())
    (tmp_path / "junk.pt").write_text("junk")
    r = cli("info", tmp_path / "junk.pt")
    assert r.code == 1 and "junk.pt" in r.err and len(r.err.strip().splitlines()) == 1
