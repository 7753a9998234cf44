"""Rebuild the trained model a checkpoint describes (its config, class table, bands, weights).

Both readers of checkpoints that need the network call :func:`model_from_checkpoint`:
the inference bundle (:mod:`aerialct.predict.bundle`) and ``aerialct export``
(:mod:`aerialct.export`). The file itself is :mod:`aerialct.engine.checkpoint`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aerialct.config import ExperimentConfig, config_from_dict
from aerialct.errors import AerialctError, CheckpointError
from aerialct.models.model import SegmentationModel, build_model

__all__ = ["model_from_checkpoint"]


def model_from_checkpoint(
    ckpt: dict[str, Any], path: str | Path
) -> tuple[SegmentationModel, ExperimentConfig]:
    """The model of a loaded (checked) checkpoint, in eval mode on the CPU, and its config.

    CheckpointError naming ``path`` when the stored config is not valid for this
    aerialct or the weights do not fit the model it describes.
    """
    try:
        cfg = config_from_dict(ckpt["config"])
    except AerialctError as e:
        raise CheckpointError(
            f"{path}: the config stored in the checkpoint is not valid for this aerialct ({e})"
        ) from e
    num_classes, in_chans = len(ckpt["classes"]), int(ckpt["in_chans"])
    # the checkpoint's state dict replaces every tensor: no pretrained file, no init log
    model = build_model(cfg.model, num_classes=num_classes, in_chans=in_chans, load_weights=False)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0][:200]
        raise CheckpointError(
            f"{path}: weights do not fit the model described by its config ({first})"
        ) from e
    return model.eval(), cfg
