"""TensorBoard event files beside ``metrics.csv`` (optional: ``pip install 'aerialct[tensorboard]'``).

Every numeric column of an epoch's metrics row becomes a scalar at the
optimiser step that ended the epoch, grouped for TensorBoard's dashboard::

    loss/train_loss, loss/train_ce, ..., loss/val_ce
    val/miou, val/mf1, val/oa
    iou/<class>, f1/<class>
    train/lr, train/images_per_s

The event file is an append-only log written by TensorBoard's own writer (not
through a temporary file, as TensorBoard reads it while it grows). Each run
purges older events from its start step on: a resumed run shows each step once
even when it was killed between checkpoints, and a run started over with
``--overwrite`` hides the replaced run's events. Without the ``tensorboard`` package nothing is written and
the log says so once.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("aerialct")

__all__ = ["EventLog", "scalar_tags"]


def scalar_tags(row: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard tags and values of a metrics row (numbers only, NaN and None left out)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in ("epoch", "step", "elapsed_s") or isinstance(value, bool):
            continue
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue
        if key.startswith("train_") or key == "val_ce":
            tag = f"loss/{key}"
        elif key.startswith("val_"):
            tag = f"val/{key.removeprefix('val_')}"
        elif key.startswith(("iou_", "f1_")):
            kind, name = key.split("_", 1)
            tag = f"{kind}/{name}"
        else:
            tag = f"train/{key}"
        out[tag] = float(value)
    return out


class EventLog:
    """Writes metrics rows as TensorBoard scalars into ``run_dir``, when tensorboard is installed."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None) -> None:
        self.writer: Any = None
        try:
            import tensorboard  # noqa: F401  (torch's writer needs the package)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info(
                "tensorboard is not installed: no event files "
                "(pip install 'aerialct[tensorboard]' to get them)"
            )
            return
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    @property
    def enabled(self) -> bool:
        """True when tensorboard is installed and events are written."""
        return self.writer is not None

    def add(self, row: dict[str, Any]) -> None:
        """Write a metrics row's numbers as scalars at its optimiser step, then flush."""
        if self.writer is None:
            return
        step = int(row.get("step") or 0)
        for tag, value in scalar_tags(row).items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()  # a killed run keeps every finished epoch

    def close(self) -> None:
        """Close the event file (further ``add`` calls do nothing)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
