"""Writing polygons: :func:`vectorize` (one raster) and :func:`vectorize_many` (a batch)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from aerialct.errors import InputError
from aerialct.progress import ProgressFn
from aerialct.styles import vector_styles
from aerialct.vectorize.layer import Polygonised, check_options, polygonise
from aerialct.vectorize.results import VectorizeBatch, VectorizeResult, probabilities_for
from aerialct.vectorize.windows import DEFAULT_WINDOW, parse_morph

if TYPE_CHECKING:
    from aerialct.geo.vector import Layer
    from aerialct.shards import Shard


def vectorize(
    raster: str | os.PathLike,
    out: str | os.PathLike,
    *,
    classes: Sequence[str | int] = ("building",),
    min_area: float = 0.0,
    fill_holes: float = 0.0,
    simplify: float = 0.0,
    regularize: bool = False,
    morph: Sequence[tuple[str, int]] | Sequence[str] = (),
    probabilities: str | os.PathLike | None = None,
    layer: str | None = None,
    connectivity: int = 8,
    window_size: int = DEFAULT_WINDOW,
    overwrite: bool = False,
    append: bool = False,
    progress: ProgressFn | None = None,
) -> VectorizeResult:
    """Polygonise ``classes`` of a class raster into ``out`` (GeoPackage/GeoJSON/FlatGeobuf).

    Areas are in map units squared, ``simplify`` in map units, ``morph`` radii in
    pixels. The output CRS is the raster's. See the module docstring for the
    order of operations.
    """
    from aerialct.geo.locks import output_lock
    from aerialct.geo.outputs import check_not_input, check_output
    from aerialct.geo.vector import driver_for, write_layers

    t0 = time.perf_counter()
    out = Path(out)
    driver = driver_for(out)
    if overwrite and append:
        raise InputError(f"{out}: --overwrite and --append exclude each other; pick one")
    inputs = [p for p in (raster, probabilities) if p is not None]
    if append:
        check_not_input(out, inputs)
    else:
        check_output(out, overwrite, inputs=inputs)
    check_options(min_area, fill_holes, simplify, connectivity, window_size)
    ops = _morph_ops(morph)
    poly = polygonise(
        raster,
        classes=classes,
        min_area=min_area,
        fill_holes=fill_holes,
        simplify=simplify,
        regularize=regularize,
        morph=ops,
        probabilities=probabilities,
        layer=layer,
        connectivity=connectivity,
        window_size=window_size,
        progress=progress,
    )
    out_layer = poly.layer
    # appending writers take turns: each reads the layer (ids, sources) and adds to it whole
    with output_lock(out, wait=True) if append else contextlib.nullcontext():
        appended = append and out.exists()
        if appended:
            out_layer = _continue_ids(out, poly.layer_name, out_layer, poly.source)
        styles = vector_styles(poly.layer_name, poly.table, poly.names, list(out_layer.fields))
        write_layers(
            out, {poly.layer_name: out_layer}, overwrite=overwrite, append=append, styles=styles
        )
    return _result(poly, out_layer, out, driver, window_size, t0, appended, {
        "min_area": min_area,
        "fill_holes": fill_holes,
        "simplify": simplify,
        "regularize": regularize,
        "morph": [f"{n}:{r}" for n, r in ops],
        "connectivity": connectivity,
        "probabilities": str(probabilities) if probabilities else None,
    })  # fmt: skip


def _morph_ops(
    morph: Sequence[tuple[str, int]] | Sequence[str],
) -> list[tuple[str, int]]:
    """Morphology as ``(op, radius)`` pairs, from pairs or from ``"op:radius"`` strings."""
    if morph and isinstance(morph[0], str):
        return parse_morph(cast("Sequence[str]", morph))
    return list(cast("Sequence[tuple[str, int]]", morph))


def _result(
    poly: Polygonised,
    out_layer: Layer,
    out: Path,
    driver: str,
    window_size: int,
    t0: float,
    appended: bool,
    options: dict,
) -> VectorizeResult:
    counts = {n: int((out_layer.fields["class"] == n).sum()) for n in poly.names}
    return VectorizeResult(
        source=poly.source,
        output=str(out),
        layer=poly.layer_name,
        driver=driver,
        classes=poly.names,
        count=len(out_layer.geometry),
        count_by_class=counts,
        total_area=float(out_layer.fields["area"].sum()),
        dropped_small=poly.dropped,
        crs=poly.crs.to_string() if poly.crs is not None else None,
        window_size=window_size,
        windows=poly.windows,
        seam_merges=poly.seam_groups,
        seconds=time.perf_counter() - t0,
        appended=appended,
        options=options,
    )


VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".fgb")


def vectorize_many(
    rasters: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    probabilities: str | os.PathLike | None = None,
    file_format: str = "gpkg",
    overwrite: bool = False,
    shard: Shard | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> VectorizeBatch:
    """Vectorise many class rasters in one process (a shell loop pays start-up per file).

    ``out`` with a vector suffix (.gpkg, .geojson, .fgb) gets every raster's polygons in
    one layer, ids numbered through; rasters that touch on one pixel grid are one map,
    whose buildings are merged across file seams (:func:`vectorize_catalog`; all rasters
    must share a CRS). Any other ``out`` is a folder that gets ``<stem>.<file_format>``
    per raster. ``probabilities`` is a raster (one input) or the folder predict wrote
    them to. A raster that fails is recorded and the others go on. ``shard`` (K/N) does
    one share: of the map's rows (joined when all parts are there), or of the rasters
    with a folder ``out``. ``options`` go to :func:`polygonise`.
    """
    from aerialct.geo.inputs import source_label, source_path
    from aerialct.shards import shard_items

    t0 = time.perf_counter()
    paths = [source_path(r) for r in rasters]  # URLs as given
    if not paths:
        raise InputError("no raster to vectorise; give class rasters, a folder or a pattern")
    check_options(
        options.get("min_area", 0.0), options.get("fill_holes", 0.0),
        options.get("simplify", 0.0), options.get("connectivity", 8),
        options.get("window_size", DEFAULT_WINDOW),
    )  # fmt: skip
    if options.get("morph"):
        options["morph"] = _morph_ops(options["morph"])
    out = Path(out)
    if out.suffix.lower() in VECTOR_SUFFIXES:
        from aerialct.vectorize.catalog import vectorize_catalog

        return vectorize_catalog(paths, out, probabilities=probabilities, overwrite=overwrite,
                                 shard=shard, progress=progress, **options)  # fmt: skip
    if file_format not in ("gpkg", "geojson", "fgb"):
        raise InputError(f"--format {file_format}: use gpkg, geojson or fgb")
    results: list[VectorizeResult] = []
    failed: list[tuple[str, str]] = []
    for r in shard_items(paths, shard):
        target = out / f"{Path(source_label(r)).stem}.{file_format}"
        try:
            results.append(vectorize(r, target, probabilities=probabilities_for(r, probabilities),
                                     overwrite=overwrite, progress=progress, **options))  # fmt: skip
        except Exception as e:  # one raster's failure must not stop the batch
            failed.append((str(r), " ".join(str(e).split())))
    return VectorizeBatch(results, failed, str(out), time.perf_counter() - t0,
                          shard=str(shard) if shard is not None else None)  # fmt: skip


def _continue_ids(path: Path, layer: str, out_layer: Layer, source: str) -> Layer:
    """When appending to an existing layer, continue its ``id`` sequence and check the CRS.

    A raster whose polygons the layer already holds (same ``source``) is refused:
    appending it again would duplicate every polygon.
    """
    from aerialct.geo.inputs import same_source
    from aerialct.geo.ogr import pyogrio_api
    from aerialct.geo.vector import Layer, list_layers, same_crs

    pyogrio = pyogrio_api()

    if layer not in list_layers(path):
        return out_layer
    info = pyogrio.read_info(path, layer=layer)
    existing_crs = info.get("crs")
    if not same_crs(existing_crs, out_layer.crs):
        raise InputError(
            f"{path}: layer {layer!r} is in {existing_crs}, the raster in {out_layer.crs}; "
            "append to a layer in the same CRS or write a new layer with --layer"
        )
    if "source" in list(info.get("fields", [])):
        _, _, _, (sources,) = pyogrio.raw.read(
            path, layer=layer, columns=["source"], read_geometry=False
        )
        if any(same_source(source, s) for s in set(sources.tolist()) if s):
            raise InputError(
                f"{path}: layer {layer!r} already holds the polygons of {source}; appending it "
                "again would duplicate them: skip this raster, or rewrite the file with --overwrite"
            )
    if "id" in list(info.get("fields", [])):
        _, _, _, table = pyogrio.raw.read(path, layer=layer, columns=["id"], read_geometry=False)
        start = int(table[0].max()) if len(table[0]) else 0
        fields = dict(out_layer.fields)
        fields["id"] = np.arange(start + 1, start + 1 + len(out_layer.geometry), dtype=np.int64)
        return Layer(out_layer.geometry, fields, out_layer.crs)
    return out_layer
