"""`aerialct tile`: cut scenes (or the ISPRS Potsdam release) into training chips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import CreationOptions, Json, Overwrite, parse_creation_options


@app.command()
def tile(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT...",
            help="GeoTIFFs (paths or quoted glob patterns); with --dataset potsdam the release folder.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output chips folder.")],
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--labels",
            help="Label raster per image, same order (class ids, or RGB colours of the legend).",
        ),
    ] = None,
    labels_vector: Annotated[
        Path | None,
        typer.Option(
            "--labels-vector", help="Polygons (GeoPackage, ...) rasterised onto each image."
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="Class table: potsdam (default), buildings, or a YAML file (README, 'Your own classes').",
        ),
    ] = None,
    burn: Annotated[
        str | None,
        typer.Option("--burn", help="Burn every polygon of --labels-vector as this class."),
    ] = None,
    class_field: Annotated[
        str | None,
        typer.Option("--class-field", help="Field of --labels-vector holding class names or ids."),
    ] = None,
    class_map: Annotated[
        list[str] | None,
        typer.Option(
            "--class-map",
            help="VALUE=CLASS: a --class-field value that is not a class name (repeatable).",
        ),
    ] = None,
    layer: Annotated[
        str | None, typer.Option("--layer", help="Layer of --labels-vector (default: the first).")
    ] = None,
    background: Annotated[
        str | None,
        typer.Option(
            "--background", help="Class of pixels no polygon covers (name, id or 'ignore')."
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="A known dataset layout: 'potsdam' (ISPRS Potsdam)."),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option("--size", min=1, help="Window in scene pixels (default 512; potsdam 500)."),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option("--stride", min=1, help="Step between windows (default: --size)."),
    ] = None,
    resize: Annotated[
        int | None,
        typer.Option(
            "--resize",
            min=1,
            help="Chip size written (image bilinear, mask nearest) (default none; potsdam 512).",
        ),
    ] = None,
    no_resize: Annotated[
        bool, typer.Option("--no-resize", help="Keep windows at their size (potsdam too).")
    ] = False,
    nodata_threshold: Annotated[
        float,
        typer.Option("--nodata-threshold", help="Skip windows with a larger nodata share (0..1)."),
    ] = 0.5,
    split: Annotated[
        str | None, typer.Option("--split", help="Put all chips into train, val or test.")
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction", help="Move this share of train, by whole spatial blocks, to val."
        ),
    ] = 0.0,
    val_block: Annotated[
        int | None,
        typer.Option("--val-block", help="Side of the spatial blocks in px (default 2 x --size)."),
    ] = None,
    split_file: Annotated[
        Path | None,
        typer.Option(
            "--split-file", help="Potsdam: tile -> split (JSON or '<tile> <split>' lines)."
        ),
    ] = None,
    no_eroded: Annotated[
        bool,
        typer.Option("--no-eroded", help="Potsdam: use full labels for test, not _noBoundary."),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the val block draw.")] = 0,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes.")] = 2,
    aoi: Annotated[
        Path | None,
        typer.Option(
            "--aoi",
            help="Polygons of the area of interest (any CRS): only windows touching it are cut.",
        ),
    ] = None,
    pack: Annotated[
        bool,
        typer.Option(
            "--pack",
            help="Also pack the chips into OUT.packed (aerialct pack), for training without GDAL.",
        ),
    ] = False,
    co: CreationOptions = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Cut GeoTIFFs or the ISPRS Potsdam release into chips + index.gpkg for training.

    Examples:

    \b
      aerialct tile a.tif --labels a_labels.tif --out chips --val-fraction 0.2
      aerialct tile '*.tif' --labels-vector buildings.gpkg --out chips
      aerialct tile a.tif --labels-vector fp.geojson --burn building \\
          --classes buildings --out chips
      aerialct tile --dataset potsdam /data/Potsdam --out chips
    """
    creation = parse_creation_options(co) or None
    if resize is not None and no_resize:
        raise typer.BadParameter("give --resize or --no-resize, not both", param_hint="--resize")
    if dataset is not None:
        if dataset.lower() != "potsdam":
            raise typer.BadParameter(
                f"unknown dataset {dataset!r}; known: potsdam", param_hint="--dataset"
            )
        if len(inputs) != 1:
            raise typer.BadParameter("--dataset potsdam takes one ROOT folder", param_hint="INPUT")
        for name, value in (
            ("--labels", labels),
            ("--labels-vector", labels_vector),
            ("--split", split),
            ("--classes", classes),
        ):
            if value:
                raise typer.BadParameter(
                    f"{name} does not apply to --dataset potsdam", param_hint=name
                )
    elif split_file is not None:
        raise typer.BadParameter("--split-file needs --dataset potsdam", param_hint="--split-file")
    mapping: dict[str, str] = {}
    for item in class_map or []:
        value, sep, name = item.partition("=")
        if not sep or not value or not name:
            raise typer.BadParameter(
                f"{item!r}: write VALUE=CLASS, e.g. house=building", param_hint="--class-map"
            )
        mapping[value] = name

    from aerialct.tile import tile_potsdam, tile_scenes

    packed_out = None
    if pack:
        base = out if out.name else out.resolve()  # `-o .` has no name of its own
        packed_out = base.with_name(base.name + ".packed")
        from aerialct.geo.io import FOLDER, check_output

        check_output(packed_out, overwrite, kind=FOLDER)  # refuse before tiling, not after
    with console.progress("tiling") as progress:
        if dataset is not None:
            result = tile_potsdam(
                inputs[0],
                out,
                size=500 if size is None else size,
                stride=stride,
                resize=None if no_resize else (512 if resize is None else resize),
                split_file=split_file,
                eroded_for_test=not no_eroded,
                nodata_threshold=nodata_threshold,
                val_fraction=val_fraction,
                val_block=val_block,
                seed=seed,
                workers=workers,
                creation_options=creation,
                overwrite=overwrite,
                aoi=aoi,
                progress=progress,
            )
        else:
            result = tile_scenes(
                inputs,
                out,
                labels=labels,
                labels_vector=labels_vector,
                class_field=class_field,
                classes=classes or "potsdam",
                burn=burn,
                class_map=mapping or None,
                vector_layer=layer,
                background=background,
                size=512 if size is None else size,
                stride=stride,
                resize=None if no_resize else resize,
                nodata_threshold=nodata_threshold,
                split=split,
                val_fraction=val_fraction,
                val_block=val_block,
                seed=seed,
                workers=workers,
                creation_options=creation,
                overwrite=overwrite,
                aoi=aoi,
                progress=progress,
            )
    packed = None
    if pack:
        from aerialct.data.packed import pack_chips

        with console.progress("packing") as progress:
            packed = pack_chips(result.out, packed_out, overwrite=overwrite, progress=progress)
    if json_out:
        console.print_json(result if packed is None else {"tile": result, "pack": packed})
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
    if packed is not None:
        from aerialct.cli.pack import render

        render(packed)
