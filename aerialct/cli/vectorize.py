"""`aerialct vectorize`: class raster -> polygons (GeoPackage, GeoJSON, FlatGeobuf)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import SHARD_DEFAULTS, Json, Overwrite, Stac, resolve_shard

if TYPE_CHECKING:
    from aerialct.shards import Shard as ShardKN
    from aerialct.vectorize import VectorizeBatch, VectorizeResult

Rasters = Annotated[
    list[str],
    typer.Argument(
        metavar="RASTER...",
        help="Class rasters (uint8 class ids, nodata 255), folders or quoted glob patterns.",
    ),
]
Out = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Output vector file (.gpkg, .geojson or .fgb; several rasters go into one "
        "layer), or a folder for one file per raster.",
    ),
]
Classes = Annotated[
    list[str] | None,
    typer.Option(
        "--class", "-c", help="Class name or id to polygonise (repeatable). Default: building."
    ),
]
MinArea = Annotated[
    float,
    typer.Option("--min-area", min=0.0, help="Drop polygons smaller than this (map units²)."),
]
FillHoles = Annotated[
    float,
    typer.Option("--fill-holes", min=0.0, help="Fill holes smaller than this (map units²)."),
]
Simplify = Annotated[
    float,
    typer.Option(
        "--simplify", min=0.0, help="Topology-preserving simplification tolerance (map units)."
    ),
]
Regularize = Annotated[
    bool,
    typer.Option(
        "--regularize", help="Right-angled outlines along each building's dominant direction."
    ),
]
Morph = Annotated[
    list[str] | None,
    typer.Option(
        "--morph",
        metavar="OP:RADIUS",
        help="Pixel clean-up before polygonising, in order (repeatable): "
        "open:R, close:R, erode:R, dilate:R, e.g. --morph open:1 --morph close:1.",
    ),
]
Probabilities = Annotated[
    str | None,
    typer.Option(
        "--probabilities",
        help="Probability raster from predict (or, for several rasters, the folder holding "
        "<stem>_probabilities.tif): adds mean_confidence and min_confidence.",
    ),
]
FileFormat = Annotated[
    Literal["gpkg", "geojson", "fgb"],
    typer.Option("--format", help="File format when --out is a folder."),
]
Layer = Annotated[str | None, typer.Option("--layer", help="Layer name. Default: the class name.")]
Connectivity = Annotated[
    Literal[4, 8],
    typer.Option("--connectivity", help="8: pixels touching at a corner are one building; or 4."),
]
WindowSize = Annotated[
    int, typer.Option("--window-size", min=16, help="Pixels per window side (memory bound).")
]
Append = Annotated[
    bool, typer.Option("--append", help="Add to an existing GeoPackage (layer or features).")
]
Shard = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="K/N",
        help="Do only the K-th of N shares of the map's rows (K = 1..N); the last shard to "
        "finish joins the parts into --out (with a folder --out: of the rasters). "
        + SHARD_DEFAULTS,
    ),
]


@app.command()
def vectorize(
    rasters: Rasters,
    out: Out,
    class_: Classes = None,
    min_area: MinArea = 0.0,
    fill_holes: FillHoles = 0.0,
    simplify: Simplify = 0.0,
    regularize: Regularize = False,
    morph: Morph = None,
    probabilities: Probabilities = None,
    file_format: FileFormat = "gpkg",
    layer: Layer = None,
    connectivity: Connectivity = 8,
    window_size: WindowSize = 1536,  # aerialct.vectorize.windows.DEFAULT_WINDOW
    append: Append = False,
    shard: Shard = None,
    stac: Stac = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Polygonise classes of class rasters into a vector layer, merged exactly across windows
    and, where rasters touch on one grid, across files: a flight's tiles are one map.

    A folder gives the class rasters in it (found by their AERIALCT_CLASSES tag, so
    predict's probability rasters beside them are not taken). Each output gets a STAC
    Item, <stem>.stac.json beside it, or in the catalogue --stac DIR.

    Examples:

    \b
      aerialct vectorize pred/a_classes.tif --out buildings.gpkg --min-area 2
      aerialct vectorize classes.tif --probabilities probs.tif --out b.gpkg
      aerialct vectorize pred --probabilities pred --out buildings.gpkg
      aerialct vectorize pred --out buildings.gpkg --shard 2/8
      aerialct vectorize 'pred/*_classes.tif' --out polygons/ --format fgb
    """
    from aerialct.cli.app import state

    if state.own_process:  # a process of its own: pyogrio, if needed, without pandas
        from aerialct.geo.ogr import lean_pyogrio_when_needed
        from aerialct.workers import reduce_heap_fragmentation

        lean_pyogrio_when_needed()
        reduce_heap_fragmentation()  # window arrays go back to the system once freed
    from aerialct.errors import InputError
    from aerialct.geo.classraster import expand_class_rasters
    from aerialct.stac import check_stac_dir, deliver_vectors
    from aerialct.vectorize import parse_morph
    from aerialct.vectorize import vectorize as run_vectorize

    if overwrite and append:
        raise typer.BadParameter(
            "--overwrite and --append exclude each other", param_hint="--append"
        )
    try:
        ops = parse_morph(morph)
    except InputError as e:
        raise typer.BadParameter(str(e), param_hint="--morph") from None
    shard_kn = resolve_shard(shard)
    paths = class_rasters(expand_class_rasters(rasters))
    check_stac_dir(stac)
    if len(paths) > 1 or Path(rasters[0]).is_dir() or shard_kn is not None:
        _vectorize_many(paths, out, class_ or ["building"], min_area, fill_holes, simplify,
                        regularize, ops, probabilities, layer, connectivity, window_size,
                        file_format, overwrite, append, json_out, shard_kn, stac)  # fmt: skip
        return
    with console.progress("vectorising") as progress:
        result = run_vectorize(
            paths[0],
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
    _render_one(result, deliver_vectors([result], stac), json_out)


def _render_one(result: VectorizeResult, items: list[Path], json_out: bool) -> None:
    """One raster's result: JSON, or its table of classes and a summary line."""
    from aerialct.render import jsonable

    if json_out:
        console.print_json({**jsonable(result), "stac": [str(p) for p in items]})
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
    if items:
        console.info(f"STAC: {', '.join(str(p) for p in items)}")


def _vectorize_many(
    paths: list[str | Path], out: Path, classes: list[str], min_area: float, fill_holes: float,
    simplify: float, regularize: bool, ops: list, probabilities: str | None, layer: str | None,
    connectivity: int, window_size: int, file_format: str, overwrite: bool, append: bool,
    json_out: bool, shard: ShardKN | None, stac: Path | None,
) -> None:  # fmt: skip
    from aerialct.errors import ItemFailure, raise_for_failures
    from aerialct.geo.inputs import redact
    from aerialct.stac import deliver_vectors
    from aerialct.vectorize import vectorize_many

    if append:
        raise typer.BadParameter(
            "--append takes one raster; several rasters are written together", param_hint="--append"
        )
    with console.progress("vectorising") as progress:
        batch = vectorize_many(
            paths, out, classes=classes, min_area=min_area, fill_holes=fill_holes,
            simplify=simplify, regularize=regularize, morph=ops, probabilities=probabilities,
            layer=layer, connectivity=connectivity, window_size=window_size,
            file_format=file_format, overwrite=overwrite, shard=shard, progress=progress,
        )  # fmt: skip
    items = deliver_vectors(batch.results, stac)
    if json_out:
        console.print_json({**batch.to_dict(), "stac": [str(p) for p in items]})
    else:
        _render_many(batch)
        if items:
            console.info(f"STAC: {', '.join(str(p) for p in items)}")
    failures = [ItemFailure(redact(raster), error) for raster, error in batch.failed]
    raise_for_failures(len(paths), failures, "rasters", batch)


TABLE_ROWS = 40
"""Rasters listed one per row; a larger catalog is summed up in a line."""


def _render_many(batch: VectorizeBatch) -> None:
    """A row per raster (a summary for a large catalog), then what the map and shards did."""
    rows: list[list[object]] = [[r.source, r.output, r.layer, r.count] for r in batch.results]
    if len(rows) > TABLE_ROWS:
        rows = [[f"{len(rows)} rasters", batch.output, batch.results[0].layer,
                 sum(r.count for r in batch.results)]]  # fmt: skip
    failed: list[list[object]] = [[raster, "failed", "", error] for raster, error in batch.failed]
    if rows or failed:
        console.print_table(
            f"{len(batch.results)} rasters -> {batch.output}",
            ["raster", "output", "layer", "polygons"],
            rows + failed,
        )
    if batch.waiting:
        console.info(
            f"shard {batch.shard}: part written to {batch.output}.parts; the last shard to "
            f"finish joins the parts into {batch.output}"
        )
        return
    if batch.parts_joined:
        console.info(f"joined {batch.parts_joined} parts into {batch.output}")
    if batch.mosaics and batch.mosaics < len(batch.results):
        console.info(
            f"{len(batch.results)} rasters in {batch.mosaics} map(s): {batch.across_files} "
            "buildings joined across file seams"
        )


def class_rasters(paths: list[str | Path]) -> list[str | Path]:
    """The class rasters of an input list: predict's ``<stem>_probabilities.tif`` beside a
    ``<stem>_classes.tif`` is left out (a pattern such as ``pred/*.tif`` matches both)."""
    names = {Path(p).name for p in paths}
    return [
        p
        for p in paths
        if not (
            Path(p).name.endswith("_probabilities.tif")
            and Path(p).name.removesuffix("_probabilities.tif") + "_classes.tif" in names
        )
    ]
