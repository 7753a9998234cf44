"""Vector I/O: driver by extension, checked reading, atomic writing with pyogrio.

GeoPackage is the default format (spatial index built by the driver when the
layer is closed); GeoJSON and FlatGeobuf are chosen by the file extension.
Writes go to a temporary sibling that is renamed over the final name, so an
interrupted run never leaves a half file; ``append`` copies the existing file
to the temporary name first, so even an append is all-or-nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.errors import InputError, OutputExistsError, VectorError
from aerialct.geo.ogr import pyogrio_api
from aerialct.geo.outputs import atomic_output

if TYPE_CHECKING:
    import geopandas as gpd

    from aerialct.styles import LayerStyle

DRIVERS = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
}
MULTI_LAYER = {"GPKG"}

GPKG_VERSION = "1.3"
"""GeoPackage version of new files. GDAL 3.6 (Debian 12's) warns that it "may only partially
support" 1.4, the default of newer GDAL; 1.3 reads cleanly everywhere. 1.4 only adds R-tree
triggers that also work under SQL UPSERT statements, which aerialct never issues."""


@dataclass
class Layer:
    """Features to write without pandas: shapely geometries, one array per field, a CRS.

    ``crs`` is anything rasterio or pyproj understands (a CRS object, WKT, "EPSG:n") or None.
    """

    geometry: np.ndarray
    fields: dict[str, np.ndarray]
    crs: Any = None

    @classmethod
    def from_frame(cls, frame: gpd.GeoDataFrame) -> Layer:
        """The geometries, attribute columns and CRS of a GeoDataFrame."""
        fields = {
            str(c): np.asarray(frame[c].to_numpy())
            for c in frame.columns
            if c != frame.geometry.name
        }
        return cls(np.asarray(frame.geometry.values, dtype=object), fields, frame.crs)


def crs_wkt(crs: Any) -> str | None:
    """WKT of a CRS given as an object with ``to_wkt``, a WKT/EPSG string, or None."""
    if crs is None:
        return None
    if hasattr(crs, "to_wkt"):
        return crs.to_wkt()
    from rasterio.crs import CRS

    return CRS.from_user_input(crs).to_wkt()


def same_crs(a: Any, b: Any) -> bool:
    """True when both CRSs are None or describe the same CRS."""
    if a is None or b is None:
        return a is None and b is None
    from rasterio.crs import CRS

    return CRS.from_user_input(crs_wkt(a)) == CRS.from_user_input(crs_wkt(b))


def to_multipolygons(geoms: np.ndarray) -> np.ndarray:
    """Polygons -> MultiPolygons (one type per layer); MultiPolygons and None unchanged."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    out = geoms.copy()
    single = shapely.get_type_id(geoms) == 3
    if single.any():
        out[single] = shapely.multipolygons(geoms[single], indices=np.arange(int(single.sum())))
    return out


def driver_for(path: str | os.PathLike) -> str:
    """The OGR driver for an output path, chosen by its extension."""
    suffix = Path(path).suffix.lower()
    try:
        return DRIVERS[suffix]
    except KeyError:
        raise InputError(
            f"{path}: unknown vector extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(DRIVERS))}"
        ) from None


def list_layers(path: str | os.PathLike) -> list[str]:
    """The data layer names of a vector file (a GeoPackage's table of QGIS styles is not one)."""
    from aerialct.styles import STYLE_TABLE

    pyogrio = pyogrio_api()
    try:
        return [str(name) for name, _ in pyogrio.list_layers(path) if name != STYLE_TABLE]
    except Exception as e:  # pyogrio raises DataSourceError and friends
        raise VectorError(f"{path}: not a readable vector file ({_first_line(e)})") from e


def read_polygons(path: str | os.PathLike, layer: str | None = None) -> gpd.GeoDataFrame:
    """Read a polygon layer (the first one unless ``layer``) as a GeoDataFrame."""
    import pyogrio

    from aerialct.geo.inputs import source_path

    p = source_path(path)  # a URL or /vsi path stays as given (Path would mangle it)
    if isinstance(p, Path) and not p.exists():
        raise VectorError(f"{p}: no such file; check the path")
    layers = list_layers(p)
    if not layers:
        raise VectorError(f"{p}: holds no layer; give a file with a polygon layer")
    if layer is not None and layer not in layers:
        raise InputError(f"{p}: no layer {layer!r}; layers are {', '.join(layers)}")
    if layer is None and len(layers) > 1:
        import logging

        logging.getLogger("aerialct").info(
            "%s: %d layers, reading the first (%s); pass a layer name to choose",
            p,
            len(layers),
            layers[0],
        )
    try:
        frame = pyogrio.read_dataframe(p, layer=layer or layers[0])
    except Exception as e:
        raise VectorError(
            f"{p}: cannot read layer {layer or layers[0]!r} ({_first_line(e)})"
        ) from e
    if "geometry" not in frame or frame.geometry is None:
        raise VectorError(f"{p}: layer has no geometry column; give a polygon layer")
    _require_polygons(frame, p)
    return frame


def _require_polygons(frame: gpd.GeoDataFrame, path: str | os.PathLike) -> None:
    """Refuse points and lines where polygons are read: they cover no area, so labels,
    an area of interest or reference footprints made of them would be (nearly) empty."""
    import shapely

    geoms = np.asarray(frame.geometry.values, dtype=object)
    kinds = shapely.get_type_id(geoms)
    other = ~np.isin(kinds, (-1, 3, 6))  # missing, Polygon, MultiPolygon
    if not other.any():
        return
    names = sorted({g.geom_type for g in geoms[other]})
    raise VectorError(
        f"{path}: {int(other.sum())} of {len(geoms)} features are {', '.join(names)}, not "
        "polygons; they cover no area: give polygons (buffer points or lines first, e.g. "
        "ogr2ogr -dialect sqlite -sql 'SELECT ST_Buffer(geom, 5) AS geom, * FROM layer')"
    )


def read_aoi(path: str | os.PathLike) -> gpd.GeoDataFrame:
    """An area of interest: the polygons of ``path`` (any CRS), refused when empty or CRS-less."""
    frame = read_polygons(path)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if not len(frame):
        raise VectorError(f"{path}: has no features; --aoi needs polygons of the area of interest")
    if frame.crs is None:
        raise VectorError(
            f"{path}: has no CRS; assign one (ogr2ogr -a_srs EPSG:XXXX out.gpkg {path})"
        )
    return frame


def aoi_in_crs(frame: gpd.GeoDataFrame, crs: Any) -> Any:
    """The union of an area of interest reprojected into ``crs`` (a shapely geometry)."""
    import shapely

    geoms = frame.geometry if same_crs(frame.crs, crs) else frame.geometry.to_crs(crs)
    return shapely.union_all(np.asarray(geoms.values, dtype=object))


def write_layers(
    path: str | os.PathLike,
    layers: Mapping[str, Layer | gpd.GeoDataFrame],
    *,
    overwrite: bool = False,
    append: bool = False,
    layer_options: Mapping[str, str] | None = None,
    styles: Sequence[LayerStyle] = (),
) -> Path:
    """Write one or more layers to ``path`` atomically; return the path.

    ``append`` adds the features to an existing layer of the same name (or adds a
    new layer to a GeoPackage); without ``append`` or ``overwrite`` an existing
    file is refused. Polygons are written as MultiPolygons so a layer has one
    geometry type. A new GeoPackage is version :data:`GPKG_VERSION`; ``styles`` go
    into its ``layer_styles`` table (QGIS applies them on open) before the file is
    checked and renamed into place (other formats have no place for them).
    """
    final = Path(path)
    driver = driver_for(final)
    if overwrite and append:
        raise InputError(f"{final}: --overwrite and --append exclude each other; pick one")
    if len(layers) > 1 and driver not in MULTI_LAYER:
        raise InputError(f"{final}: {driver} holds one layer; use a .gpkg for several layers")
    exists = final.exists()
    if exists and not (overwrite or append):
        raise OutputExistsError(final, "pass --overwrite to replace it or --append to add to it")
    if append and exists and driver not in MULTI_LAYER:
        raise InputError(
            f"{final}: appending is supported for GeoPackage only; write a .gpkg or use --overwrite"
        )
    options = _layer_options(driver)
    options.update(layer_options or {})
    prepared = {name: _prepared(item) for name, item in layers.items()}
    with atomic_output(final, overwrite=overwrite or (append and exists)) as tmp:
        plain = driver == "GPKG" and not (append and exists) and not layer_options
        if not (plain and _write_gpkg(tmp, final, prepared)):  # else nothing written: pyogrio
            _write_pyogrio(tmp, final, prepared, driver, options, append and exists)
        if styles and driver == "GPKG":
            from aerialct.styles import write_layer_styles

            write_layer_styles(tmp, styles)
    return final


def _write_pyogrio(
    tmp: Path,
    final: Path,
    prepared: dict[str, tuple[Layer, np.ndarray, str]],
    driver: str,
    options: dict[str, str],
    appending: bool,
) -> None:
    """Write ``prepared`` layers to ``tmp`` with pyogrio (a copy of ``final`` when
    ``appending``); a new GeoPackage is version :data:`GPKG_VERSION`."""
    import shapely

    existing: list[str] = []
    created = appending
    if appending:
        shutil.copy2(final, tmp)
        existing = list_layers(tmp)
    for name, (layer, geoms, geometry_type) in prepared.items():
        _write_wkb(tmp, final, name, shapely.to_wkb(geoms), layer.fields, layer.crs, driver,
                   geometry_type=geometry_type, append=name in existing,
                   options=options if name not in existing else None,
                   new_file=None if created else _new_file_options(driver))  # fmt: skip
        created = True


def _prepared(item: Layer | gpd.GeoDataFrame) -> tuple[Layer, np.ndarray, str]:
    """A layer, its geometries as MultiPolygons (one type per layer) and that type's name."""
    import shapely

    layer = item if isinstance(item, Layer) else Layer.from_frame(item)
    geoms = to_multipolygons(layer.geometry)
    kinds = set(shapely.get_type_id(geoms).tolist()) - {-1}
    return layer, geoms, "MultiPolygon" if kinds <= {6} else "Unknown"


def _write_gpkg(tmp: Path, final: Path, prepared: dict[str, tuple[Layer, np.ndarray, str]]) -> bool:
    """Write a new GeoPackage without pyogrio when every layer allows it (:mod:`aerialct.geo.gpkg`);
    False (nothing written) otherwise."""
    import shapely

    from aerialct.geo.gpkg import GpkgLayer, writable, write_gpkg

    out: dict[str, GpkgLayer] = {}
    for name, (layer, geoms, geometry_type) in prepared.items():
        gtype = "GEOMETRY" if geometry_type == "Unknown" else geometry_type
        if not writable(layer.fields, gtype):
            return False
        bounds = shapely.bounds(geoms)  # NaN for empty and missing geometries
        out[name] = GpkgLayer(shapely.to_wkb(geoms), bounds, layer.fields, layer.crs, gtype)
    try:
        write_gpkg(tmp, out)
    except Exception as e:
        raise VectorError(f"{final}: cannot write the GeoPackage ({_first_line(e)})") from e
    return True


def _write_wkb(
    tmp: Path, final: Path, name: str, wkb: np.ndarray, fields: Mapping[str, np.ndarray],
    crs: Any, driver: str, *, geometry_type: str, append: bool,
    options: Mapping[str, str] | None, new_file: Mapping[str, str] | None = None,
) -> None:  # fmt: skip
    """Write (or append) features as WKB; ``new_file`` are the dataset options of a new file."""
    pyogrio = pyogrio_api()
    try:
        pyogrio.raw.write(
            tmp, wkb, list(fields.values()), list(fields), layer=name, driver=driver,
            geometry_type=geometry_type, crs=crs_wkt(crs), append=append,
            layer_options=dict(options) if options else None,
            dataset_options=dict(new_file) if new_file else None,
        )  # fmt: skip
    except Exception as e:
        raise VectorError(f"{final}: cannot write layer {name!r} ({_first_line(e)})") from e


def _layer_options(driver: str) -> dict[str, str]:
    return {"SPATIAL_INDEX": "YES"} if driver in ("GPKG", "FlatGeobuf") else {}


def _new_file_options(driver: str) -> dict[str, str] | None:
    return {"VERSION": GPKG_VERSION} if driver == "GPKG" else None


class LayerStream:
    """Layers written batch by batch into the temporary file of :func:`stream_layers`."""

    def __init__(self, tmp: Path, final: Path, driver: str) -> None:
        self.tmp, self.final, self.driver = tmp, final, driver
        self.made: set[str] = set()
        self.counts: dict[str, int] = {}
        self.styles: list[LayerStyle] = []
        """QGIS styles to store in the GeoPackage when it is complete (other formats: none)."""

    def write(self, name: str, layer: Layer) -> None:
        """Append ``layer``'s features (polygons) to layer ``name``, made on first use."""
        import shapely

        geoms = to_multipolygons(layer.geometry)
        self.write_wkb(name, shapely.to_wkb(geoms), layer.fields, layer.crs)

    def write_wkb(
        self, name: str, wkb: np.ndarray, fields: Mapping[str, np.ndarray], crs: Any
    ) -> None:
        """Append features given as (Multi)Polygon WKB and field arrays to layer ``name``."""
        if self.driver not in MULTI_LAYER and self.made and name not in self.made:
            raise InputError(
                f"{self.final}: {self.driver} holds one layer, these polygons need layers "
                f"{sorted(self.made | {name})}; use a .gpkg"
            )
        first = name not in self.made
        _write_wkb(self.tmp, self.final, name, wkb, fields, crs, self.driver,
                   geometry_type="MultiPolygon", append=not first,
                   options=_layer_options(self.driver) if first else None,
                   new_file=None if self.made else _new_file_options(self.driver))  # fmt: skip
        self.made.add(name)
        self.counts[name] = self.counts.get(name, 0) + len(wkb)


@contextlib.contextmanager
def stream_layers(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[LayerStream]:
    """Write layers batch by batch, atomically: a temporary sibling renamed when complete.

    Memory holds one batch at a time. An existing file is refused unless ``overwrite``.
    The stream's ``styles`` go into a GeoPackage's ``layer_styles`` table at the end.
    Batches are appended through pyogrio (the sqlite3 writer of :mod:`aerialct.geo.gpkg`
    writes whole layers at once); a new GeoPackage is version :data:`GPKG_VERSION`.
    SQLite does not sync the temporary to disk after each batch (a crash discards the
    temporary anyway; a sync costs 0.1-0.2 s per batch on some disks).
    """
    final = Path(path)
    driver = driver_for(final)
    if final.exists() and not overwrite:
        raise OutputExistsError(final, "pass --overwrite to replace it")
    pyogrio = pyogrio_api()
    key = "OGR_SQLITE_SYNCHRONOUS"
    before = pyogrio.get_gdal_config_option(key)
    pyogrio.set_gdal_config_options({key: "OFF"})
    try:
        with atomic_output(final, overwrite=overwrite) as tmp:
            stream = LayerStream(tmp, final, driver)
            yield stream
            if stream.styles and driver == "GPKG" and stream.made:
                from aerialct.styles import write_layer_styles

                write_layer_styles(tmp, stream.styles)
    finally:
        pyogrio.set_gdal_config_options({key: before})


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
