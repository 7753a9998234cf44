"""`aerialct train`: train a segmentation model on a chips folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import Json, Overwrite

if TYPE_CHECKING:
    from aerialct.engine.train import TrainResult


@app.command()
def train(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Chips folder written by `aerialct tile` (index.gpkg), or a packed folder (`aerialct pack`).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Run folder: config.yaml, last.pt, best.pt, metrics.csv, plots."
        ),
    ],
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Preset name (dcswin-ct-cl, tiny-cpu, ... from configs/) or a YAML file. "
            "With --resume it defaults to RUN_DIR/config.yaml.",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a config value (repeatable), e.g. --set train.lr=1e-4.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")
    ] = False,
    device: Annotated[
        str | None,
        typer.Option(
            "--device", help="cpu, cuda, cuda:N or auto; default: train.device of the config."
        ),
    ] = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Train a segmentation model (CT / MS-CS contrast optional); writes checkpoints and metrics.

    Under torchrun (torchrun --nproc_per_node N -m aerialct train ...) every process
    trains a shard with DDP and rank 0 writes the run folder.

    Examples:

    \b
      aerialct train --config tiny-cpu --data chips --out runs/tiny
      aerialct train --data chips --out runs/tiny --resume --set train.epochs=60
    """
    from aerialct.config import load_config, resolve_config_path
    from aerialct.engine.distributed import launch_env
    from aerialct.engine.train import train as run_training

    if resume and overwrite:
        raise typer.BadParameter(
            "--resume and --overwrite exclude each other", param_hint="--resume"
        )
    if config is None:
        if not resume:
            raise typer.BadParameter(
                "give a preset, e.g. --config configs/tiny-cpu.yaml", param_hint="--config"
            )
        from aerialct.engine.run_dir import check_resumable

        check_resumable(out)  # "no run exists there", not "config.yaml not found"
        config = str(out / "config.yaml")
    cfg = load_config(resolve_config_path(config), overrides or [])
    if launch_env().is_main:
        with console.progress("training") as progress:
            result = run_training(
                cfg, data, out, resume=resume, overwrite=overwrite, device=device, progress=progress
            )
    else:
        run_training(cfg, data, out, resume=resume, overwrite=overwrite, device=device)
        return
    if json_out:
        console.print_json(result)
        return
    _render(result, cfg.name)


def _render(result: TrainResult, name: str) -> None:
    """The finished run as two tables: the summary and the last validation IoU per class."""
    final = result.final
    rows = [
        ("run folder", result.run_dir),
        ("epochs / steps", f"{result.epochs} / {result.steps}"),
        (
            "best val mIoU",
            result.best_miou if result.best_miou is not None else "n/a (no validation)",
        ),
        ("best epoch", result.best_epoch),
        ("last train loss", final.get("train_loss")),
        ("last val mIoU", final.get("val_miou")),
        ("last val OA", final.get("val_oa")),
        ("images/s", result.images_per_s),
        ("device", f"{result.device} x{result.world_size}"),
        ("best checkpoint", result.best_checkpoint),
    ]
    console.print_table(f"trained {name}", ["", "value"], rows)
    ious = [(k.removeprefix("iou_"), v) for k, v in final.items() if k.startswith("iou_")]
    if ious:
        console.print_table("last epoch: validation IoU per class", ["class", "IoU"], ious)
