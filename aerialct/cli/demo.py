"""`aerialct demo`: the whole pipeline on a synthetic city, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import Device, Json, Overwrite


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for every output.")] = Path(
        "demo-run"
    ),
    config: Annotated[
        str, typer.Option("--config", "-c", help="Preset name in configs/ or a YAML file.")
    ] = "tiny-cpu",
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Training epochs (preset's by default).")
    ] = None,
    city_size: Annotated[
        int, typer.Option("--city-size", min=256, help="Training city side in pixels.")
    ] = 1024,
    heldout_size: Annotated[
        int, typer.Option("--heldout-size", min=128, help="Held-out district side in pixels.")
    ] = 512,
    gsd: Annotated[float, typer.Option("--gsd", min=0.01, help="Pixel size in metres.")] = 0.5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic city.")] = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Config override, e.g. train.lr=1e-3."),
    ] = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Synthesise a city, tile it, train the tiny CT preset, predict, vectorise and evaluate.

    Runs in a few minutes on a 2-core CPU with no data and no network. Use
    --config dcswin-ct-cl --device cuda --city-size 6000 for a longer GPU run.

    Examples:

    \b
      aerialct demo --out demo-run
      aerialct demo --out demo-run --epochs 60 --overwrite
    """
    from aerialct.demo import run_demo

    with console.progress("demo", total=6) as progress:
        result = run_demo(
            out,
            config=config,
            epochs=epochs,
            city_size=city_size,
            heldout_size=heldout_size,
            gsd=gsd,
            seed=seed,
            overrides=tuple(set_ or ()),
            device=device,
            overwrite=overwrite,
            progress=progress,
        )
    if json_out:
        console.print_json(result)
        return
    console.print_table(
        "Held-out district: pixel IoU per class",
        ["class", "IoU"],
        [*result.per_class_iou.items(), ("mean IoU", result.mean_iou)],
    )
    console.print_table(
        "Held-out district: buildings (one-to-one, IoU >= 0.5)",
        ["predicted", "reference", "precision", "recall", "F1"],
        [
            (
                result.predicted_buildings,
                result.reference_buildings_count,
                result.building_precision,
                result.building_recall,
                result.building_f1,
            )
        ],
    )
    console.print_table(
        "Outputs (open in QGIS)",
        ["what", "where"],
        [
            ("scene", result.scene),
            ("class raster (COG)", result.classes_raster),
            ("probabilities", result.probabilities or "-"),
            ("quick look", result.quicklook or "-"),
            ("buildings", result.buildings),
            ("review (TP/FP/FN)", result.review),
            ("reports", f"{result.pixel_report}, {result.building_report}"),
            ("STAC Items", ", ".join(str(p) for p in _items(result))),
            ("training run", result.run),
            ("checkpoint", result.checkpoint),
        ],
    )
    console.info(f"done in {result.seconds:.0f} s (training {result.train_seconds:.0f} s)")


def _items(result: Any) -> list[Path]:
    """The STAC Items the demo wrote beside its outputs (with the scores)."""
    from aerialct.stac import item_path

    return [
        p for p in (item_path(result.classes_raster), item_path(result.buildings)) if p.is_file()
    ]
