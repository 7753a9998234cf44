"""``aerialct info``: what a checkpoint holds, without the tensors.

:func:`checkpoint_info` reads a checkpoint (:mod:`aerialct.engine.checkpoint` owns
the format) and summarises its config, class table, normalisation, progress and
last metrics; the CLI renders the same object as a table or as JSON.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aerialct.classes import IGNORE_INDEX
from aerialct.engine.checkpoint import TRAINING_KEYS, load_checkpoint

__all__ = ["CheckpointInfo", "checkpoint_info"]


@dataclass
class CheckpointInfo:
    """What a checkpoint holds, without the tensors."""

    path: str
    aerialct_version: str | None
    name: str | None
    model: dict
    loss: dict
    train: dict
    classes: list[str]
    ignore_index: int
    in_chans: int
    chip_size: int
    gsd: float | None
    mean: list[float]
    std: list[float]
    step: int
    epoch: int
    best_miou: float | None
    parameters: int
    head_parameters: int
    has_training_state: bool
    size_bytes: int
    metrics: dict
    low: list[float] | None = None
    high: list[float] | None = None
    """Per-band clip bounds applied before mean/std (None: no clipping)."""
    format: str = "checkpoint"
    """``checkpoint``, or the format of an exported model (``onnx``, ``torchscript``)."""


def checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """Summarise a checkpoint (config, classes, normalisation, progress, last metrics), or
    a model written by ``aerialct export`` (its metadata)."""
    from aerialct.engine.checkpoint import local_model
    from aerialct.modelfiles import is_torchscript

    p = local_model(path)
    if p.suffix.lower() == ".onnx" or is_torchscript(p):
        return _exported_info(p)
    ckpt = load_checkpoint(p)

    cfg = ckpt["config"]
    train = cfg.get("train", {})
    return CheckpointInfo(
        path=str(p),
        aerialct_version=ckpt.get("aerialct_version"),
        name=cfg.get("name"),
        model=dict(cfg.get("model", {})),
        loss={k: v for k, v in cfg.get("loss", {}).items()},
        train={k: train.get(k) for k in ("epochs", "batch_size", "lr", "scheduler", "seed")},
        classes=[c["name"] for c in ckpt["classes"]],
        ignore_index=int(ckpt.get("ignore_index", IGNORE_INDEX)),
        in_chans=int(ckpt["in_chans"]),
        chip_size=int(ckpt["chip_size"]),
        gsd=ckpt.get("gsd"),
        mean=[float(v) for v in ckpt["normalization"]["mean"]],
        std=[float(v) for v in ckpt["normalization"]["std"]],
        low=_floats(ckpt["normalization"].get("low")),
        high=_floats(ckpt["normalization"].get("high")),
        step=int(ckpt.get("step") or 0),
        epoch=int(ckpt.get("epoch") or 0),
        best_miou=ckpt.get("best_miou"),
        parameters=_count(ckpt["model"]),
        head_parameters=_count(ckpt.get("heads")),
        has_training_state=all(ckpt.get(k) is not None for k in TRAINING_KEYS),
        size_bytes=p.stat().st_size,
        metrics=dict(ckpt.get("metrics") or {}),
    )


def _exported_info(p: Path) -> CheckpointInfo:
    """What an exported model's metadata says (no training state, no metrics)."""
    from aerialct.export import exported_metadata

    if not p.is_file():
        from aerialct.errors import CheckpointError

        raise CheckpointError(f"{p}: no such model file")
    meta, count = exported_metadata(p)
    return CheckpointInfo(
        path=str(p),
        aerialct_version=meta.get("aerialct_version"),
        name=None,
        model=dict(meta.get("model") or {}),
        loss={},
        train={},
        classes=meta["classes_table"].names,
        ignore_index=int(meta.get("ignore_index", IGNORE_INDEX)),
        in_chans=int(meta["in_chans"]),
        chip_size=int(meta["chip_size"]),
        gsd=meta.get("gsd"),
        mean=[float(v) for v in meta["mean"]],
        std=[float(v) for v in meta["std"]],
        low=_floats(meta.get("low")),
        high=_floats(meta.get("high")),
        step=0,
        epoch=0,
        best_miou=None,
        parameters=count,
        head_parameters=0,
        has_training_state=False,
        size_bytes=p.stat().st_size,
        metrics={},
        format="onnx" if p.suffix.lower() == ".onnx" else "torchscript",
    )


def _floats(values: list | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _count(state: dict | None) -> int:
    """Number of values in the tensors of a state dict."""
    return int(sum(v.numel() for v in (state or {}).values() if hasattr(v, "numel")))
