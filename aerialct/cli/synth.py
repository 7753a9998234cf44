"""`aerialct synth`: a synthetic, Potsdam-like city to test and demo on without downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import Json, Overwrite

Dtype = Literal["uint8", "uint16", "int16", "float32"]
"""The pixel types synth writes (the library's ``SYNTH_DTYPES``; a test keeps them equal)."""
Bands = Literal[1, 3, 4]
SynthClasses = Literal["potsdam", "buildings"]
FootprintFormat = Literal["gpkg", "geojson"]


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the scene (or the Potsdam root).")],
    size: Annotated[
        int, typer.Option("--size", min=16, help="Scene width and height in px.")
    ] = 2048,
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
    dtype: Annotated[Dtype, typer.Option("--dtype", help="Pixel type.")] = "uint8",
    bands: Annotated[
        Bands, typer.Option("--bands", help="1 (panchromatic), 3 (RGB) or 4 (RGB + NIR).")
    ] = 3,
    classes: Annotated[
        SynthClasses,
        typer.Option(
            "--classes", case_sensitive=False, help="Label classes: potsdam (6) or buildings."
        ),
    ] = "potsdam",
    built_up: Annotated[
        float,
        typer.Option(
            "--built-up", min=0.0, max=1.0, help="Share of built blocks (0.1: ~5% building px)."
        ),
    ] = 1.0,
    buildings_format: Annotated[
        FootprintFormat, typer.Option("--buildings-format", help="Footprint file format.")
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
    _check_compress(compress)
    common = _Common(size=size, seed=seed, gsd=gsd, crs=crs, label_crs=not label_no_crs,
                     compress=compress, overwrite=overwrite)  # fmt: skip
    if potsdam:
        if (dtype, bands, classes, built_up) != ("uint8", 3, "potsdam", 1.0):
            raise typer.BadParameter(
                "--potsdam writes the release's uint8 RGB tiles and six classes; drop --dtype, "
                "--bands, --classes and --built-up",
                param_hint="--potsdam",
            )
        ids = [t.strip() for t in tiles.split(",") if t.strip()]
        _potsdam(out_dir, ids, common, eroded=not no_eroded, buildings=buildings, json_out=json_out)
        return
    footprints = f"{name}_buildings.{buildings_format}" if buildings else None
    _scene(out_dir, name, footprints, common, json_out=json_out, rgb_labels=rgb_labels,
           dtype=dtype, bands=bands, classes=classes, built_up=built_up)  # fmt: skip


class _Common(TypedDict):
    """The options both forms of synth pass to the library unchanged."""

    size: int
    seed: int
    gsd: float
    crs: str
    label_crs: bool
    compress: str
    overwrite: bool


def _potsdam(
    out_dir: Path, ids: list[str], common: _Common, *, eroded: bool, buildings: bool, json_out: bool
) -> None:
    """Write a Potsdam-like folder and show its tiles."""
    from aerialct.data.synth import synth_potsdam

    with console.progress("synthesising") as progress:
        result = synth_potsdam(
            out_dir, ids, eroded=eroded, buildings=buildings, progress=progress, **common
        )
    if json_out:
        console.print_json(result)
        return
    console.print_table(
        f"Potsdam-like folder {result.root}",
        ["tile", "image", "label"],
        [
            [t, i.name, lab.name]
            for t, i, lab in zip(result.tiles, result.images, result.labels, strict=True)
        ],
    )


def _scene(
    out_dir: Path,
    name: str,
    footprints: str | None,
    common: _Common,
    *,
    json_out: bool,
    rgb_labels: bool,
    dtype: str,
    bands: int,
    classes: str,
    built_up: float,
) -> None:
    """Write one scene (image, labels, optional footprints) into ``out_dir`` and show it."""
    from aerialct.data.synth import synth_scene
    from aerialct.errors import InputError

    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(
            f"{out_dir}: exists and is not a folder; synth writes its files into a "
            "folder: give a folder path"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with console.progress("synthesising") as progress:
        result = synth_scene(
            out_dir / f"{name}.tif",
            # in a subfolder, so `predict OUT/*.tif` or `predict OUT` takes the scene only
            out_dir / "labels" / f"{name}_labels.tif",
            buildings=out_dir / footprints if footprints else None,
            rgb_labels=rgb_labels,
            dtype=dtype,
            bands=bands,
            classes=classes,
            built_up=built_up,
            progress=progress,
            **common,
        )
    if json_out:
        console.print_json(result)
        return
    rows: list[list[Any]] = [["image", result.image], ["labels", result.labels]]
    if result.buildings:
        rows.append(["buildings", result.buildings])
    console.print_table(
        f"{result.width}x{result.height} px at {result.gsd} m, {result.n_buildings} buildings",
        ["output", "path"],
        rows,
    )


def _check_compress(compress: str) -> None:
    """A compression GDAL's GTiff driver knows, or none (GDAL itself would only warn)."""
    if compress.strip().lower() == "none":
        return
    from aerialct.errors import InputError
    from aerialct.geo.cog import check_creation_options

    try:
        check_creation_options("GTiff", {"COMPRESS": compress})
    except InputError:
        raise typer.BadParameter(
            f"{compress!r}: GDAL's GTiff driver does not know this compression; use deflate, "
            "lzw, zstd or none",
            param_hint="--compress",
        ) from None
