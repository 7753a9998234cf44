"""What a catalog run (:mod:`aerialct.vectorize.catalog`) and its shards' parts
(:mod:`aerialct.vectorize.parts`) share: the options, the per-raster tally, ids
numbered through, the bands' numbering and the layers' empty tables and styles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.progress import ProgressFn
from aerialct.vectorize.layer import Finished, finish_pieces, layer_name
from aerialct.vectorize.merge import Pieces
from aerialct.vectorize.windows import DEFAULT_WINDOW, Tracer

if TYPE_CHECKING:
    from aerialct.geo.vector import Layer, LayerStream
    from aerialct.vectorize.mosaic import Mosaic


@dataclass(frozen=True)
class CatalogOptions:
    """How to vectorise (the options of :func:`aerialct.vectorize.vectorize`)."""

    classes: tuple[str | int, ...] = ("building",)
    min_area: float = 0.0
    fill_holes: float = 0.0
    simplify: float = 0.0
    regularize: bool = False
    morph: tuple[tuple[str, int], ...] = ()
    layer: str | None = None
    connectivity: int = 8
    window_size: int = DEFAULT_WINDOW

    def finish(self, pieces: Pieces, mosaic: Mosaic) -> Finished:
        return finish_pieces(pieces, mosaic, min_area=self.min_area, fill_holes=self.fill_holes,
                       simplify=self.simplify, regularize=self.regularize)  # fmt: skip

    def tracer(self, mosaic: Mosaic, progress: ProgressFn) -> Tracer:
        return Tracer(mosaic, mosaic.ids, self.morph, self.connectivity, self.window_size,
                       mosaic.prob_scale is not None, progress)  # fmt: skip

    def layer_of(self, mosaic: Mosaic) -> str:
        return self.layer or layer_name([mosaic.table.names[i] for i in mosaic.ids])


@dataclass
class Tally:
    """Per raster, what its buildings add up to (a building counts for its ``source``)."""

    rasters: dict[str, dict[str, Any]] = field(default_factory=dict)
    across: int = 0
    """Buildings made of pieces of several files."""
    failed: dict[str, str] = field(default_factory=dict)

    def _row(self, path: str) -> dict[str, Any]:
        return self.rasters.setdefault(
            path, {"counts": {}, "area": 0.0, "dropped": 0, "windows": 0, "seams": 0}
        )

    def add(self, mosaic: Mosaic, done: Finished) -> None:
        """Count a finished batch of ``mosaic``'s buildings."""
        fields = done.layer.fields
        for i in np.unique(done.tiles).tolist():
            mine = done.tiles == i
            row = self._row(mosaic.tiles[i].path)
            for name, n in zip(*np.unique(fields["class"][mine], return_counts=True), strict=True):
                row["counts"][str(name)] = row["counts"].get(str(name), 0) + int(n)
            row["area"] += float(fields["area"][mine].sum())
            row["seams"] += int(done.merged[mine].sum())
        for i, n in zip(*np.unique(done.dropped, return_counts=True), strict=True):
            self._row(mosaic.tiles[int(i)].path)["dropped"] += int(n)
        self.across += int(done.spans.sum())

    def add_windows(self, mosaic: Mosaic, tracer: Tracer) -> None:
        for t, n in zip(mosaic.tiles, tracer.tile_windows.tolist(), strict=True):
            self._row(t.path)["windows"] += n
        self.failed.update(mosaic.failed)

    def update(self, other: dict[str, Any]) -> None:
        """Add another tally's counts (a part's, as stored in its header)."""
        for path, r in other["rasters"].items():
            row = self._row(path)
            for name, n in r["counts"].items():
                row["counts"][name] = row["counts"].get(name, 0) + n
            for k in ("area", "dropped", "windows", "seams"):
                row[k] += r[k]
        self.across += other["across"]
        self.failed.update(other["failed"])


def numbered(layer: Layer, next_id: dict[str, int], name: str) -> Layer:
    """``layer`` with ids that continue layer ``name``'s numbering (1, 2, ... through)."""
    from aerialct.geo.vector import Layer

    start = next_id.get(name, 0)
    n = len(layer.geometry)
    fields = dict(layer.fields)
    fields["id"] = np.arange(start + 1, start + n + 1, dtype=np.int64)
    next_id[name] = start + n
    return Layer(layer.geometry, fields, layer.crs)


def write_empty_layers(stream: LayerStream, mosaics: list[Mosaic], opts: CatalogOptions) -> None:
    """Give every layer that got no building its (empty) table."""
    for mosaic in mosaics:
        name = opts.layer_of(mosaic)
        if name not in stream.made:
            stream.write(name, opts.finish(Pieces.empty(), mosaic).layer)


def add_styles(stream: LayerStream, mosaics: list[Mosaic], opts: CatalogOptions) -> None:
    """The QGIS styles of the map's layers (a layer's first mosaic gives its class colours)."""
    from aerialct.styles import vector_styles

    seen: set[str] = set()
    for mosaic in mosaics:
        name = opts.layer_of(mosaic)
        if name in seen:
            continue
        seen.add(name)
        fields = list(opts.finish(Pieces.empty(), mosaic).layer.fields)
        names = [mosaic.table.names[i] for i in mosaic.ids]
        stream.styles.extend(vector_styles(name, mosaic.table, names, fields))


def band_bases(mosaics: list[Mosaic]) -> list[int]:
    """The number of the first band of each mosaic in the map's order of bands."""
    return np.concatenate([[0], np.cumsum([m.bands for m in mosaics])]).astype(int).tolist()
