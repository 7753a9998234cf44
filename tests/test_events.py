"""TensorBoard event files beside metrics.csv, and their absence without tensorboard."""

from __future__ import annotations

import builtins
import csv
import logging
from pathlib import Path

import pytest
from train_helpers import tiled_synth

from aerialct.config import load_config
from aerialct.engine.events import EventLog, scalar_tags
from aerialct.engine.train import train

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
FAST = ["train.batch_size=4", "train.warmup_steps=2", "data.stats_chips=8"]


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    return tiled_synth(tmp_path_factory.mktemp("city"))


def read_events(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_event_files_hold_the_metrics_and_survive_a_resume(chips, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    train(load_config(TINY, [*FAST, "train.epochs=1"]), chips, run)
    assert list(run.glob("events.out.tfevents.*"))
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ev = read_events(run)
    for tag in ("loss/train_loss", "loss/train_ct", "val/miou", "iou/building", "train/lr"):
        assert tag in ev, tag
    assert [s for s, _ in ev["val/miou"]] == [int(r["step"]) for r in rows]
    assert [v for _, v in ev["val/miou"]] == pytest.approx(
        [float(r["val_miou"]) for r in rows], rel=1e-5
    )
    assert [v for _, v in ev["iou/building"]] == pytest.approx(
        [float(r["iou_building"]) for r in rows], rel=1e-5
    )
    train(load_config(TINY, [*FAST, "train.epochs=2"]), chips, run, resume=True)
    steps = [s for s, _ in read_events(run)["val/miou"]]
    assert steps == [3, 6]  # each epoch once, in order: the resume keeps epoch 1's events


def test_without_tensorboard_nothing_is_written_and_the_log_says_so(tmp_path, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith(("tensorboard.", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with caplog.at_level(logging.INFO, logger="aerialct"):
        events = EventLog(tmp_path, purge_step=0)
    assert not events.enabled
    events.add({"step": 1, "train_loss": 0.5})  # a no-op, as train calls it every epoch
    events.close()
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    assert "tensorboard is not installed" in caplog.text


def test_scalar_tags():
    row = {"epoch": 3, "step": 30, "lr": 1e-3, "train_loss": 0.5, "val_ce": 0.7, "val_miou": 0.4,
           "iou_low_vegetation": 0.2, "f1_car": float("nan"), "images_per_s": 9.0,
           "val_oa": None}  # fmt: skip
    assert scalar_tags(row) == {"train/lr": 1e-3, "loss/train_loss": 0.5, "loss/val_ce": 0.7,
                                "val/miou": 0.4, "iou/low_vegetation": 0.2,
                                "train/images_per_s": 9.0}  # fmt: skip
