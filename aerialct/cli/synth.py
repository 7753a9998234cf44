"""`aerialct synth`: a synthetic, Potsdam-like city to test and demo on without downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import Json, Overwrite


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the scene (or the Potsdam root).")],
    size: Annotated[int, typer.Option("--size", help="Scene width and height in px.")] = 2048,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same city.")] = 0,
    gsd: Annotated[float, typer.Option("--gsd", help="Pixel size in metres.")] = 0.05,
    crs: Annotated[str, typer.Option("--crs", help="CRS of the scene.")] = "EPSG:32633",
    name: Annotated[str, typer.Option("--name", help="File stem of a single scene.")] = "scene",
    rgb_labels: Annotated[
        bool, typer.Option("--rgb-labels", help="Labels as Potsdam RGB colours, not class ids.")
    ] = False,
    buildings: Annotated[
        bool, typer.Option("--buildings", help="Also write the building footprints (GeoPackage).")
    ] = False,
    potsdam: Annotated[
        bool, typer.Option("--potsdam", help="Write a folder laid out like the ISPRS release.")
    ] = False,
    tiles: Annotated[
        str,
        typer.Option("--tiles", help="Potsdam tile ids, comma-separated."),
    ] = "2_10,2_11,3_10,2_13,2_14",
    label_no_crs: Annotated[
        bool, typer.Option("--label-no-crs", help="Write labels without georeferencing.")
    ] = False,
    no_eroded: Annotated[
        bool, typer.Option("--no-eroded", help="Potsdam: no _label_noBoundary files.")
    ] = False,
    compress: Annotated[
        str, typer.Option("--compress", help="GDAL compression of the rasters (or none).")
    ] = "deflate",
    dtype: Annotated[
        str, typer.Option("--dtype", help="Pixel type: uint8, uint16, int16 or float32.")
    ] = "uint8",
    bands: Annotated[
        int, typer.Option("--bands", help="1 (panchromatic), 3 (RGB) or 4 (RGB + NIR).")
    ] = 3,
    classes: Annotated[
        str, typer.Option("--classes", help="Label classes: potsdam (6) or buildings.")
    ] = "potsdam",
    built_up: Annotated[
        float,
        typer.Option("--built-up", help="Share of built blocks, 0..1 (0.1: ~5% building px)."),
    ] = 1.0,
    buildings_format: Annotated[
        str, typer.Option("--buildings-format", help="Footprint file format: gpkg or geojson.")
    ] = "gpkg",
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Synthesise a town: RGB orthophoto + 6-class labels (+ building footprints).

    Examples:

    \b
      aerialct synth data --size 2048 --seed 0 --buildings
      aerialct synth data --dtype uint16 --bands 1 --classes buildings
      aerialct synth potsdam_like --potsdam --size 1000 --tiles 2_10,2_11,2_13
    """
    from aerialct.data.synth import synth_potsdam, synth_scene
    from aerialct.errors import InputError

    imagery = (dtype, bands, classes, built_up) != ("uint8", 3, "potsdam", 1.0)
    if potsdam and imagery:
        raise typer.BadParameter(
            "--potsdam writes the release's uint8 RGB tiles and six classes; drop --dtype, "
            "--bands, --classes and --built-up",
            param_hint="--potsdam",
        )
    with console.progress("synthesising") as progress:
        if potsdam:
            ids = [t.strip() for t in tiles.split(",") if t.strip()]
            result = synth_potsdam(
                out_dir,
                ids,
                size=size,
                seed=seed,
                gsd=gsd,
                crs=crs,
                label_crs=not label_no_crs,
                eroded=not no_eroded,
                buildings=buildings,
                compress=compress,
                overwrite=overwrite,
                progress=progress,
            )
        else:
            if out_dir.exists() and not out_dir.is_dir():
                raise InputError(
                    f"{out_dir}: exists and is not a folder; synth writes its files into a "
                    "folder: give a folder path"
                )
            if buildings_format not in ("gpkg", "geojson"):
                raise InputError(f"--buildings-format {buildings_format}: use gpkg or geojson")
            out_dir.mkdir(parents=True, exist_ok=True)
            result = synth_scene(
                out_dir / f"{name}.tif",
                # in a subfolder, so `predict OUT/*.tif` or `predict OUT` takes the scene only
                out_dir / "labels" / f"{name}_labels.tif",
                size=size,
                seed=seed,
                gsd=gsd,
                crs=crs,
                rgb_labels=rgb_labels,
                buildings=out_dir / f"{name}_buildings.{buildings_format}" if buildings else None,
                label_crs=not label_no_crs,
                compress=compress,
                overwrite=overwrite,
                progress=progress,
                dtype=dtype,
                bands=bands,
                classes=classes,
                built_up=built_up,
            )
    if json_out:
        console.print_json(result)
        return
    if potsdam:
        console.print_table(
            f"Potsdam-like folder {result.root}",
            ["tile", "image", "label"],
            [
                [t, i.name, lab.name]
                for t, i, lab in zip(result.tiles, result.images, result.labels, strict=True)
            ],
        )
    else:
        console.print_table(
            f"{result.width}x{result.height} px at {result.gsd} m, {result.n_buildings} buildings",
            ["output", "path"],
            [["image", result.image], ["labels", result.labels]]
            + ([["buildings", result.buildings]] if result.buildings else []),
        )
