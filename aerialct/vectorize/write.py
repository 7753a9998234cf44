"""Writing polygons: :func:`vectorize` (one raster) and :func:`vectorize_many` (a batch)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from aerialct.errors import InputError
from aerialct.progress import ProgressFn
from aerialct.vectorize.layer import Polygonised, _check_options, polygonise
from aerialct.vectorize.windows import parse_morph

if TYPE_CHECKING:
    from aerialct.geo.vector import Layer
    from aerialct.shards import Shard


@dataclass
class VectorizeResult:
    """What ``vectorize`` wrote."""

    source: str
    output: str
    layer: str
    driver: str
    classes: list[str]
    count: int
    count_by_class: dict[str, int]
    total_area: float
    dropped_small: int
    crs: str | None
    window_size: int
    windows: int
    seam_merges: int
    seconds: float
    appended: bool = False
    options: dict = field(default_factory=dict)


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
    window_size: int = 2048,
    overwrite: bool = False,
    append: bool = False,
    progress: ProgressFn | None = None,
) -> VectorizeResult:
    """Polygonise ``classes`` of a class raster into ``out`` (GeoPackage/GeoJSON/FlatGeobuf).

    Areas are in map units squared, ``simplify`` in map units, ``morph`` radii in
    pixels. The output CRS is the raster's. See the module docstring for the
    order of operations.
    """
    from aerialct.geo.outputs import check_output
    from aerialct.geo.vector import driver_for, write_layers

    t0 = time.perf_counter()
    out = Path(out)
    driver = driver_for(out)
    if overwrite and append:
        raise InputError(f"{out}: --overwrite and --append exclude each other; pick one")
    if not append:
        check_output(out, overwrite, inputs=[p for p in (raster, probabilities) if p is not None])
    _check_options(min_area, fill_holes, simplify, connectivity, window_size)
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
    appended = append and out.exists()
    if appended:
        out_layer = _continue_ids(out, poly.layer_name, out_layer, str(raster))
    write_layers(out, {poly.layer_name: out_layer}, overwrite=overwrite, append=append)
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


@dataclass
class VectorizeBatch:
    """What :func:`vectorize_many` did: one result per raster, failures with their error."""

    results: list[VectorizeResult]
    failed: list[tuple[str, str]]
    output: str
    seconds: float
    mosaics: int = 0
    """Maps the rasters formed (touching rasters on one grid are one map); 0: one file each."""
    across_files: int = 0
    """Buildings joined across file seams."""
    shard: str | None = None
    """K/N when this process traced a share (its part is in ``<output>.parts``)."""
    parts_joined: int = 0
    """How many parts this process joined into ``output`` (0: none, or left to another)."""

    @property
    def waiting(self) -> bool:
        """A shard of a map whose part is written and whose join is left to another process."""
        return self.shard is not None and self.mosaics > 0 and not self.parts_joined

    def to_dict(self) -> dict:
        """Each raster's result, the failures and the total count (the ``--json`` output)."""
        from dataclasses import asdict

        return {
            "output": self.output,
            "rasters": [asdict(r) for r in self.results],
            "failed": [{"raster": r, "error": e} for r, e in self.failed],
            "count": sum(r.count for r in self.results),
            "mosaics": self.mosaics,
            "across_files": self.across_files,
            "shard": self.shard,
            "parts_joined": self.parts_joined,
            "seconds": round(self.seconds, 3),
        }


VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".fgb")


def _probabilities_for(raster: Path, probabilities: str | os.PathLike | None) -> Path | None:
    """The probability raster of ``raster``: a file as given, or ``<stem>_probabilities.tif``
    in a folder (``<stem>`` without ``_classes``, as predict names them)."""
    if probabilities is None:
        return None
    p = Path(probabilities)
    if not p.is_dir():
        return p
    return p / f"{raster.stem.removesuffix('_classes')}_probabilities.tif"


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
    from aerialct.shards import shard_items

    t0 = time.perf_counter()
    paths = [Path(r) for r in rasters]
    if not paths:
        raise InputError("no raster to vectorise; give class rasters, a folder or a pattern")
    _check_options(
        options.get("min_area", 0.0), options.get("fill_holes", 0.0),
        options.get("simplify", 0.0), options.get("connectivity", 8),
        options.get("window_size", 2048),
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
        target = out / f"{r.stem}.{file_format}"
        try:
            results.append(vectorize(r, target, probabilities=_probabilities_for(r, probabilities),
                                     overwrite=overwrite, progress=progress, **options))  # fmt: skip
        except Exception as e:  # one raster's failure must not stop the batch
            failed.append((str(r), " ".join(str(e).split())))
    return VectorizeBatch(results, failed, str(out), time.perf_counter() - t0,
                          shard=str(shard) if shard is not None else None)  # fmt: skip


def _concat(parts: list[Layer]) -> Layer:
    """One layer of several rasters' polygons, ids numbered 1..N through."""
    keys = list(parts[0].fields)
    fields: dict[str, np.ndarray] = {}
    for k in keys:
        arrays = [p.fields.get(k) for p in parts]
        if any(a is None for a in arrays):
            raise InputError(
                "the rasters give different attributes (some with --probabilities, some "
                "without); vectorise them alike"
            )
        fields[k] = np.concatenate(arrays)  # type: ignore[arg-type]
    geometry = np.concatenate([p.geometry for p in parts])
    if "id" in fields:
        fields["id"] = np.arange(1, len(geometry) + 1, dtype=np.int64)
    return type(parts[0])(geometry, fields, parts[0].crs)


def _continue_ids(path: Path, layer: str, out_layer: Layer, source: str) -> Layer:
    """When appending to an existing layer, continue its ``id`` sequence and check the CRS.

    A raster whose polygons the layer already holds (same ``source``) is refused:
    appending it again would duplicate every polygon.
    """
    import pyogrio

    from aerialct.geo.vector import Layer, list_layers, same_crs

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
        if source in set(sources.tolist()):
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
