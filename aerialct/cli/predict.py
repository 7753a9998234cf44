"""`aerialct predict`: sliding-window inference over whole scenes -> class rasters (COG)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import (
    CreationOptions,
    Device,
    Json,
    Overwrite,
    Stac,
    parse_creation_options,
)

if TYPE_CHECKING:
    from aerialct.predict import BatchResult


def _load_bundle(checkpoint: str, device: str) -> Any:
    """The checkpoint's inference bundle (a seam the tests replace with an oracle model)."""
    from aerialct.predict.bundle import load_inference_model

    return load_inference_model(checkpoint, device=device)


def _overlap_in_range(value: float) -> float:
    """--overlap is a share of the window: [0, 1). The CLI's one check of it."""
    if not 0.0 <= value < 1.0:
        raise typer.BadParameter(f"{value}: must be in [0, 1)")
    return value


def _parse_bands(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        bands = [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a list of band numbers like 1,2,3", param_hint="--bands"
        ) from None
    if not bands or min(bands) < 1:
        raise typer.BadParameter(f"{text!r}: band numbers start at 1", param_hint="--bands")
    return bands


Checkpoint = Annotated[
    str,
    typer.Argument(
        help="Checkpoint written by `aerialct train`, or a model from `aerialct export` "
        "(.onnx runs on the CPU through onnxruntime)."
    ),
]
Scenes = Annotated[
    list[str],
    typer.Argument(
        help="Scenes: files, folders, quoted globs, GDAL paths and URLs (/vsicurl/, s3://, https://).",
    ),
]
Out = Annotated[
    Path, typer.Option("--out", "-o", help="Output folder: <scene>_classes.tif per scene.")
]
Overlap = Annotated[
    float,
    typer.Option(
        callback=_overlap_in_range,
        help="Window overlap as a share of the chip size, in [0, 1).",
    ),
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Windows per forward pass.")]
Probabilities = Annotated[
    bool,
    typer.Option(
        "--probabilities", help="Also write <scene>_probabilities.tif (K bands, 255 = 1.0)."
    ),
]
Tta = Annotated[
    Literal["flips"] | None,
    typer.Option("--tta", help="Test-time augmentation: 'flips' (4x compute)."),
]
Bands = Annotated[
    str | None,
    typer.Option(
        "--bands", help="Bands to use, in training order, e.g. 1,2,3 (default: all but alpha)."
    ),
]
Quicklook = Annotated[
    bool, typer.Option("--quicklook", help="Also write <scene>_quicklook.png with the classes.")
]
AllowNoCrs = Annotated[bool, typer.Option("--allow-no-crs", help="Accept scenes without a CRS.")]
ResampleToTrainingGsd = Annotated[
    bool,
    typer.Option(
        "--resample-to-training-gsd",
        help="Predict at the checkpoint's pixel size when the scene's differs by >25%.",
    ),
]
Aoi = Annotated[
    str | None,
    typer.Option(
        "--aoi",
        help="Polygons of the area of interest (any CRS): only windows touching it run; "
        "pixels outside are nodata.",
    ),
]
SkipExisting = Annotated[
    bool,
    typer.Option(
        "--skip-existing",
        help="Skip outputs that are complete: checked, not trusted (same source, model, "
        "--aoi and classes; every block decodes to its checksum).",
    ),
]
Catalog = Annotated[
    bool,
    typer.Option(
        "--catalog/--no-catalog",
        help="Predict adjacent tiles (a folder, glob or VRT of them) as one map, each with "
        "its neighbours' pixels; --no-catalog predicts every file on its own.",
    ),
]
Mosaic = Annotated[
    bool,
    typer.Option(
        "--mosaic", help="Write one <catalog>_classes.tif per catalog instead of one per tile."
    ),
]
Shard = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="K/N",
        help="Predict only the K-th of N shares of the work (array jobs; K = 1..N): scenes, "
        "or blocks of large scenes and catalogs; the last share to finish writes them. "
        "Default: from SLURM_ARRAY_TASK_ID/COUNT, or JOB_COMPLETION_INDEX with "
        "AERIALCT_SHARD_COUNT (Kubernetes indexed Job).",
    ),
]


@app.command()
def predict(
    checkpoint: Checkpoint,
    scenes: Scenes,
    out: Out,
    overlap: Overlap = 0.25,
    batch_size: BatchSize = 8,
    probabilities: Probabilities = False,
    tta: Tta = None,
    device: Device = "auto",
    co: CreationOptions = None,
    bands: Bands = None,
    quicklook: Quicklook = False,
    allow_no_crs: AllowNoCrs = False,
    resample_to_training_gsd: ResampleToTrainingGsd = False,
    aoi: Aoi = None,
    skip_existing: SkipExisting = False,
    catalog: Catalog = True,
    mosaic: Mosaic = False,
    shard: Shard = None,
    stac: Stac = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Predict class rasters (uint8 COG, colour table, input CRS/grid, nodata 255) for scenes.

    Adjacent tiles of one grid (a folder, a glob, a VRT) are one map: each tile is
    predicted with its neighbours' pixels, exactly as the whole mosaic would be.
    Under torchrun the work is shared out across ranks (WORLD_SIZE, RANK); with
    --shard K/N, N machines (or array tasks) given the same inputs cover it once,
    by scenes or by blocks of large scenes. A killed run resumes from its last
    finished block when run again with the same arguments.
    Each output gets a STAC Item, <stem>.stac.json beside it, or in the
    catalogue --stac DIR.

    Examples:

    \b
      aerialct predict runs/x/best.pt scene.tif --out pred --quicklook
      aerialct predict run/best.pt 'flight/*.tif' --out pred
      aerialct predict run/best.pt flight.vrt --out pred --mosaic
      aerialct predict best.pt 'flight/*.tif' -o pred --shard 3/8
      aerialct predict best.pt tiles/ -o pred --stac delivery/stac
    """
    if skip_existing and overwrite:
        raise typer.BadParameter(
            "--skip-existing keeps outputs, --overwrite replaces them; pick one",
            param_hint="--skip-existing",
        )
    creation = parse_creation_options(co)
    band_list = _parse_bands(bands)

    from aerialct.errors import ItemFailure, raise_for_failures
    from aerialct.geo.inputs import expand_inputs, redact
    from aerialct.predict import predict_scenes, reduce_heap_fragmentation, resolve_device_name
    from aerialct.stac import check_stac_dir, deliver_predictions

    shard_kn = _shard(shard)
    scene_list = expand_inputs(scenes)
    check_stac_dir(stac)
    reduce_heap_fragmentation()
    if checkpoint.lower().endswith(".onnx") and device.strip().lower() == "auto":
        device = "cpu"  # onnxruntime's CPU provider
    dev = resolve_device_name(device)
    bundle = _load_bundle(checkpoint, dev)
    with console.progress("predicting") as progress:
        result = predict_scenes(
            bundle,
            scene_list,
            out,
            overlap=overlap,
            batch_size=batch_size,
            probabilities=probabilities,
            tta=tta,
            device=dev,
            creation_options=creation,
            overwrite=overwrite,
            allow_no_crs=allow_no_crs,
            resample_to_training_gsd=resample_to_training_gsd,
            bands=band_list,
            quicklook=quicklook,
            shard=shard_kn,
            skip_existing=skip_existing,
            catalog=catalog,
            mosaic=mosaic,
            aoi=aoi,
            progress=progress,
        )
    items = deliver_predictions(result.scenes, bundle, stac)
    _render(result, json_out, items)
    raise_for_failures(
        len(result.scenes),
        [
            ItemFailure(redact(s.source or s.scene), s.error or "", s.exception)
            for s in result.failed
        ],
        "scenes",
        result,
    )


def _shard(shard: str | None) -> Any:
    """The --shard K/N given, or the one a Slurm array / Kubernetes indexed Job sets."""
    from aerialct.errors import InputError
    from aerialct.shards import resolve_shard

    try:
        shard_kn = resolve_shard(shard)
    except InputError as e:
        if shard is None:
            raise  # the environment's mistake: its own line names the variable
        raise typer.BadParameter(str(e), param_hint="--shard") from None
    if shard is None and shard_kn is not None:
        console.info(f"shard {shard_kn} from {shard_kn.source}")
    return shard_kn


def _render(result: BatchResult, json_out: bool, items: list[Path]) -> None:
    """The batch as JSON, or as a table of scenes (left out for one failed scene, whose
    error line says it all), and a line about skipped scenes and the STAC Items."""
    single_failure = len(result.scenes) == 1 and bool(result.failed)
    if json_out:
        console.print_json({**result.to_dict(), "stac": [str(p) for p in items]})
    elif not single_failure:
        rows = [
            (
                s.name,
                s.status,
                f"{s.width}x{s.height}" if s.width else "",
                f"{s.seconds:.1f}" if s.status == "ok" else "",
                f"{s.pixels_per_second / 1e6:.2f}" if s.pixels_per_second else "",
                str(s.output) if s.output else (s.error or ""),
            )
            for s in result.scenes
        ]
        title = (
            f"predict ({result.rank + 1}/{result.world_size})"
            if result.world_size > 1
            else "predict"
        )
        console.print_table(
            title, ["scene", "status", "size", "s", "Mpx/s", "output / error"], rows
        )
    if items and not json_out:
        console.info(f"STAC: {', '.join(str(p) for p in items)}")
    outside = [s for s in result.skipped if s.error == "outside --aoi"]
    complete = len(result.skipped) - len(outside)
    if complete:
        console.info(f"{complete} of {len(result.scenes)} scenes skipped: complete outputs exist")
    if outside:
        console.info(
            f"{len(outside)} of {len(result.scenes)} scenes skipped: outside --aoi, nothing "
            f"written ({', '.join(s.name for s in outside)})"
        )
    for job in result.jobs:
        if job.pending:
            console.info(
                f"{job.name}: {job.blocks_run} of {job.blocks} blocks computed here; "
                f"{job.pending} output(s) wait for the other shards' blocks and are written by "
                f"the one that finishes last (or by a rerun); state: {job.state}"
            )
