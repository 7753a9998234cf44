"""`aerialct tile`: cut scenes (or the ISPRS Potsdam release) into training chips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import (
    SHARD_DEFAULTS,
    CreationOptions,
    Json,
    Overwrite,
    parse_creation_options,
    resolve_shard,
)

# The defaults quoted in the help are aerialct.tile.run.DEFAULT_SIZE and the Potsdam CT
# protocol (aerialct.data.potsdam.CROP_SIZE, RESIZE_TO); the library applies them.
Inputs = Annotated[
    list[str],
    typer.Argument(
        metavar="INPUT...",
        help="GeoTIFFs (paths or quoted glob patterns); with --dataset potsdam the release folder.",
    ),
]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output chips folder.")]
Labels = Annotated[
    list[str] | None,
    typer.Option(
        "--labels",
        help="Label raster per image, same order (class ids, or RGB colours of the legend).",
    ),
]
LabelsVector = Annotated[
    str | None,
    typer.Option("--labels-vector", help="Polygons (GeoPackage, ...) rasterised onto each image."),
]
Classes = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Class table: potsdam (default), buildings, or a YAML file (README, 'Your own classes').",
    ),
]
Burn = Annotated[
    str | None, typer.Option("--burn", help="Burn every polygon of --labels-vector as this class.")
]
ClassField = Annotated[
    str | None,
    typer.Option("--class-field", help="Field of --labels-vector holding class names or ids."),
]
ClassMap = Annotated[
    list[str] | None,
    typer.Option(
        "--class-map",
        help="VALUE=CLASS: a --class-field value that is not a class name (repeatable).",
    ),
]
Layer = Annotated[
    str | None, typer.Option("--layer", help="Layer of --labels-vector (default: the first).")
]
Background = Annotated[
    str | None,
    typer.Option("--background", help="Class of pixels no polygon covers (name, id or 'ignore')."),
]
Dataset = Annotated[
    Literal["potsdam"] | None,
    typer.Option(
        "--dataset", case_sensitive=False, help="A known dataset layout: 'potsdam' (ISPRS Potsdam)."
    ),
]
Size = Annotated[
    int | None,
    typer.Option("--size", min=1, help="Window in scene pixels (default 512; potsdam 500)."),
]
Stride = Annotated[
    int | None, typer.Option("--stride", min=1, help="Step between windows (default: --size).")
]
Resize = Annotated[
    int | None,
    typer.Option(
        "--resize",
        min=1,
        help="Chip size written (image bilinear, mask nearest) (default none; potsdam 512).",
    ),
]
NoResize = Annotated[
    bool, typer.Option("--no-resize", help="Keep windows at their size (potsdam too).")
]
NodataThreshold = Annotated[
    float,
    typer.Option(
        "--nodata-threshold", min=0.0, max=1.0, help="Skip windows with a larger nodata share."
    ),
]
Split = Annotated[
    Literal["train", "val", "test"] | None,
    typer.Option("--split", help="Put all chips into train, val or test."),
]
ValFraction = Annotated[
    float,
    typer.Option(
        "--val-fraction",
        min=0.0,
        max=1.0,
        help="Move this share (below 1) of train, by whole spatial blocks, to val.",
    ),
]
ValBlock = Annotated[
    int | None,
    typer.Option("--val-block", help="Side of the spatial blocks in px (default 2 x --size)."),
]
SplitFile = Annotated[
    Path | None,
    typer.Option("--split-file", help="Potsdam: tile -> split (JSON or '<tile> <split>' lines)."),
]
NoEroded = Annotated[
    bool, typer.Option("--no-eroded", help="Potsdam: use full labels for test, not _noBoundary.")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the val block draw.")]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        min=1,
        help="Worker processes (default: one per CPU, or one per 4 CPUs for uncompressed "
        "chips, at most 8); the CPUs are shared among them as GDAL decoding threads.",
    ),
]
Aoi = Annotated[
    str | None,
    typer.Option(
        "--aoi",
        help="Polygons of the area of interest (any CRS): only windows touching it are cut.",
    ),
]
Shard = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="K/N",
        help="Cut only every N-th row band of windows, starting at the K-th (K = 1..N); the "
        "last shard to finish writes the index and the folder. " + SHARD_DEFAULTS,
    ),
]
Pack = Annotated[
    bool,
    typer.Option(
        "--pack",
        help="Also pack the chips into OUT.packed (aerialct pack), for training without GDAL.",
    ),
]


@app.command()
def tile(
    inputs: Inputs,
    out: Out,
    labels: Labels = None,
    labels_vector: LabelsVector = None,
    classes: Classes = None,
    burn: Burn = None,
    class_field: ClassField = None,
    class_map: ClassMap = None,
    layer: Layer = None,
    background: Background = None,
    dataset: Dataset = None,
    size: Size = None,
    stride: Stride = None,
    resize: Resize = None,
    no_resize: NoResize = False,
    nodata_threshold: NodataThreshold = 0.5,
    split: Split = None,
    val_fraction: ValFraction = 0.0,
    val_block: ValBlock = None,
    split_file: SplitFile = None,
    no_eroded: NoEroded = False,
    seed: Seed = 0,
    workers: Workers = None,
    aoi: Aoi = None,
    pack: Pack = False,
    shard: Shard = None,
    co: CreationOptions = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Cut GeoTIFFs or the ISPRS Potsdam release into chips + index.gpkg for training.

    A killed run continues where it stopped when run again with the same arguments
    (its finished work waits in OUT.parts).

    Examples:

    \b
      aerialct tile a.tif --labels a_labels.tif --out chips --val-fraction 0.2
      aerialct tile '*.tif' --labels-vector buildings.gpkg --out chips
      aerialct tile a.tif --labels-vector fp.geojson --burn building \\
          --classes buildings --out chips
      aerialct tile --dataset potsdam /data/Potsdam --out chips
      aerialct tile 'flight/*.tif' --labels-vector b.gpkg --out chips --shard 2/8
    """
    creation = parse_creation_options(co) or None
    if resize is not None and no_resize:
        raise typer.BadParameter("give --resize or --no-resize, not both", param_hint="--resize")
    if dataset is not None:
        _check_potsdam_options(inputs, labels=labels, labels_vector=labels_vector, split=split,
                               classes=classes)  # fmt: skip
    elif split_file is not None:
        raise typer.BadParameter("--split-file needs --dataset potsdam", param_hint="--split-file")
    mapping = _class_map(class_map)
    shard_kn = resolve_shard(shard)
    from aerialct.data.packed import packed_path
    from aerialct.tile import tile_potsdam, tile_scenes

    packed_out = packed_path(out) if pack else None
    if packed_out is not None:
        from aerialct.geo.outputs import FOLDER, check_output

        # refuse before tiling, not after
        check_output(packed_out, overwrite, kind=FOLDER, inputs=[*inputs, *(labels or [])])
    # size and resize: the mode's defaults unless given (--no-resize: none)
    grid: dict[str, Any] = {k: v for k, v in (("size", size), ("resize", resize)) if v is not None}
    if no_resize:
        grid["resize"] = None
    common = dict(stride=stride, nodata_threshold=nodata_threshold, val_fraction=val_fraction,
                  val_block=val_block, seed=seed, workers=workers, creation_options=creation,
                  overwrite=overwrite, aoi=aoi, shard=shard_kn, **grid)  # fmt: skip
    with console.progress("tiling") as progress:
        if dataset is not None:
            result = tile_potsdam(inputs[0], out, split_file=split_file,
                                  eroded_for_test=not no_eroded, progress=progress, **common)  # fmt: skip
        else:
            result = tile_scenes(
                inputs, out, labels=labels, labels_vector=labels_vector, class_field=class_field,
                classes=classes, burn=burn, class_map=mapping or None,
                vector_layer=layer, background=background, split=split, progress=progress,
                **common,
            )  # fmt: skip
    packed = None
    if packed_out is not None and result.complete:
        from aerialct.data.packed import pack_chips

        with console.progress("packing") as progress:
            packed = pack_chips(result.out, packed_out, overwrite=overwrite, progress=progress)
    if json_out:
        console.print_json(result if packed is None else {"tile": result, "pack": packed})
        return
    _render(result, packed)


def _check_potsdam_options(inputs: list[str], **general: object) -> None:
    """--dataset potsdam takes one root folder and none of the general mode's label options."""
    if len(inputs) != 1:
        raise typer.BadParameter("--dataset potsdam takes one ROOT folder", param_hint="INPUT")
    for key, value in general.items():
        name = "--" + key.replace("_", "-")
        if value:
            raise typer.BadParameter(f"{name} does not apply to --dataset potsdam", param_hint=name)


def _class_map(items: list[str] | None) -> dict[str, str]:
    """``["house=building"]`` -> ``{"house": "building"}``; a malformed item is a usage error."""
    mapping: dict[str, str] = {}
    for item in items or []:
        value, sep, name = item.partition("=")
        if not sep or not value or not name:
            raise typer.BadParameter(
                f"{item!r}: write VALUE=CLASS, e.g. house=building", param_hint="--class-map"
            )
        if mapping.get(value, name) != name:
            raise typer.BadParameter(
                f"{value!r} is mapped to both {mapping[value]!r} and {name!r}; give one class "
                "per value",
                param_hint="--class-map",
            )
        mapping[value] = name
    return mapping


def _render(result: Any, packed: Any) -> None:
    """The tables `tile` prints: chips per split, label pixels per class, the packed form."""
    if result.tasks_kept:
        console.info(
            f"resumed: {result.tasks_kept} of {result.tasks} row bands kept from an interrupted run"
        )
    if not result.complete:
        console.info(
            f"shard {result.shard}: {result.tasks_done} of {result.tasks} row bands done in "
            f"{result.out}.parts; the last shard to finish writes {result.out}"
        )
        return
    total = sum(result.class_pixels.values()) or 1
    console.print_table(
        f"{result.chips} chips of {result.chip_size} px in {result.out} ({result.seconds:.1f} s)",
        ["split", "chips"],
        [[k, v] for k, v in result.splits.items() if v],
    )
    if result.label_mode:
        shares = result.split_shares
        console.print_table(
            "label pixels",
            ["class", "pixels", "share", *(f"share {s}" for s in shares)],
            [
                [k, v, v / total, *(shares[s].get(k, 0.0) for s in shares)]
                for k, v in result.class_pixels.items()
            ],
        )
    if result.skipped_nodata:
        console.info(f"{result.skipped_nodata} windows skipped (nodata above the threshold)")
    for line in result.advice:
        console.info(f"advice: {line}")
    if packed is not None:
        from aerialct.cli.pack import render

        render(packed)
