"""`aerialct info`: what a checkpoint holds."""

from __future__ import annotations

from typing import Annotated

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import Json


@app.command()
def info(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="A last.pt / best.pt written by `aerialct train`, or a model from `aerialct export`."
        ),
    ],
    json_out: Json = False,
) -> None:
    """Show a checkpoint's (or an exported model's) config, classes, normalisation, progress.

    Examples:

    \b
      aerialct info runs/x/best.pt
      aerialct info runs/x/best.pt --json
    """
    from aerialct.engine.info import checkpoint_info

    ci = checkpoint_info(checkpoint)
    if json_out:
        console.print_json(ci)
        return
    m = ci.model
    last = ci.metrics.get("last") or {}
    kind = "" if ci.format == "checkpoint" else f"{ci.format} model exported by "
    rows = [
        ("file", f"{ci.path} ({ci.size_bytes / 1e6:.1f} MB, {kind}aerialct {ci.aerialct_version})"),
        ("experiment", ci.name),
        (
            "model",
            f"{m.get('backbone')} + {m.get('decoder')} decoder ({ci.parameters:,} parameters)",
        ),
        (
            "contrast",
            f"{ci.loss.get('contrast')} (projection heads: {ci.head_parameters:,} parameters)",
        ),
        (
            "input",
            f"{ci.in_chans} bands, {ci.chip_size} px chips, GSD {ci.gsd if ci.gsd is not None else 'unknown'}",
        ),
        ("normalisation", _normalisation(ci)),
        (
            "classes",
            ", ".join(f"{i}={n}" for i, n in enumerate(ci.classes))
            + f" (ignore {ci.ignore_index})",
        ),
        (
            "progress",
            f"epoch {ci.epoch}, step {ci.step}"
            + ("" if ci.has_training_state else " (no training state)"),
        ),
        ("best val mIoU", ci.best_miou if ci.best_miou is not None else "n/a"),
        ("train", ", ".join(f"{k}={v}" for k, v in ci.train.items())),
    ]
    if last:
        rows.append((f"epoch {ci.epoch} metrics", ", ".join(
            f"{k}={console.fmt(v)}" for k, v in last.items()
            if k in ("train_loss", "val_miou", "val_oa", "images_per_s") and v is not None
        )))  # fmt: skip
    console.print_table(None, ["", "value"], rows)
    ious = [(k.removeprefix("iou_"), v) for k, v in last.items() if k.startswith("iou_")]
    if ious:
        console.print_table(f"validation IoU per class, epoch {ci.epoch}", ["class", "IoU"], ious)


def _normalisation(ci) -> str:  # type: ignore[no-untyped-def]
    """``(clip(x, low, high) - mean) / std`` with the numbers, as predict applies it."""
    text = f"mean {[round(v, 3) for v in ci.mean]}, std {[round(v, 3) for v in ci.std]}"
    if ci.low is not None and ci.high is not None:
        text = (
            f"clip to low {[round(v, 3) for v in ci.low]}, high "
            f"{[round(v, 3) for v in ci.high]}; " + text
        )
    return text
