"""`aerialct vectorize`: class raster -> polygons (GeoPackage, GeoJSON, FlatGeobuf)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import Json, Overwrite


@app.command()
def vectorize(
    raster: Annotated[Path, typer.Argument(help="Class raster (uint8 class ids, nodata 255).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output vector file; the driver follows the extension: .gpkg, .geojson or .fgb.",
        ),
    ],
    class_: Annotated[
        list[str] | None,
        typer.Option(
            "--class", "-c", help="Class name or id to polygonise (repeatable). Default: building."
        ),
    ] = None,
    min_area: Annotated[
        float, typer.Option("--min-area", help="Drop polygons smaller than this (map units²).")
    ] = 0.0,
    fill_holes: Annotated[
        float, typer.Option("--fill-holes", help="Fill holes smaller than this (map units²).")
    ] = 0.0,
    simplify: Annotated[
        float,
        typer.Option(
            "--simplify", help="Topology-preserving simplification tolerance (map units)."
        ),
    ] = 0.0,
    regularize: Annotated[
        bool,
        typer.Option(
            "--regularize", help="Right-angled outlines along each building's dominant direction."
        ),
    ] = False,
    morph: Annotated[
        list[str] | None,
        typer.Option(
            "--morph",
            metavar="OP:RADIUS",
            help="Pixel clean-up before polygonising, in order (repeatable): "
            "open:R, close:R, erode:R, dilate:R, e.g. --morph open:1 --morph close:1.",
        ),
    ] = None,
    probabilities: Annotated[
        Path | None,
        typer.Option(
            "--probabilities",
            help="Probability raster from predict: adds mean_confidence and min_confidence.",
        ),
    ] = None,
    layer: Annotated[
        str | None, typer.Option("--layer", help="Layer name. Default: the class name.")
    ] = None,
    connectivity: Annotated[
        int,
        typer.Option(
            "--connectivity", help="8: pixels touching at a corner are one building; or 4."
        ),
    ] = 8,
    window_size: Annotated[
        int, typer.Option("--window-size", help="Pixels per window side (memory bound).")
    ] = 2048,
    append: Annotated[
        bool,
        typer.Option("--append", help="Add to an existing GeoPackage (layer or features)."),
    ] = False,
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Polygonise classes of a class raster into a vector layer, merged exactly across windows.

    Examples:

    \b
      aerialct vectorize pred/a_classes.tif --out buildings.gpkg --min-area 2
      aerialct vectorize classes.tif --probabilities probs.tif --out b.gpkg
    """
    from aerialct.errors import InputError
    from aerialct.vectorize import parse_morph
    from aerialct.vectorize import vectorize as run_vectorize

    if connectivity not in (4, 8):
        raise typer.BadParameter("must be 4 or 8", param_hint="--connectivity")
    if overwrite and append:
        raise typer.BadParameter(
            "--overwrite and --append exclude each other", param_hint="--append"
        )
    try:
        ops = parse_morph(morph)
    except InputError as e:
        raise typer.BadParameter(str(e), param_hint="--morph") from None
    with console.progress("vectorising") as progress:
        result = run_vectorize(
            raster,
            out,
            classes=class_ or ["building"],
            min_area=min_area,
            fill_holes=fill_holes,
            simplify=simplify,
            regularize=regularize,
            morph=ops,
            probabilities=probabilities,
            layer=layer,
            connectivity=connectivity,
            window_size=window_size,
            overwrite=overwrite,
            append=append,
            progress=progress,
        )
    if json_out:
        console.print_json(result)
        return
    console.print_table(
        f"{result.output} (layer {result.layer}, {result.driver})",
        ["class", "polygons"],
        [[name, n] for name, n in result.count_by_class.items()] + [["total", result.count]],
    )
    console.info(
        f"{result.count} polygons, total area {result.total_area:.2f} map units², "
        f"{result.dropped_small} below --min-area dropped, {result.seam_merges} merged across "
        f"{result.windows} windows, {result.seconds:.1f} s"
    )
