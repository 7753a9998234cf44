"""GeoPackage layers written with the standard library's sqlite3 (OGC GeoPackage 1.3).

``tile``'s index and ``vectorize``'s polygons are plain feature tables: geometries
already in WKB, columns of numbers and text. Writing them through pyogrio loads a
second GDAL library (about 50 MB of memory and 0.15 CPU s per process, more than
the whole write), so a new GeoPackage of such layers is written here instead, laid
out as GDAL lays it out: the core tables, one feature table per layer (``fid`` key,
``geom`` column), its extent and SRS, and the R-tree spatial index with the
triggers of the ``gpkg_rtree_index`` extension, so GDAL, QGIS and pyogrio read and
edit it as their own. :func:`writable` says which layers qualify; others (and
appends to existing files) stay with pyogrio (:func:`aerialct.geo.vector.write_layers`).
"""

from __future__ import annotations

import re
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10300  # GeoPackage 1.3, as GDAL writes it (the tables and triggers of 1.2)
_GEOMETRY_TYPES = ("GEOMETRY", "POINT", "LINESTRING", "POLYGON", "MULTIPOLYGON")
_RTREE_DEFINITION = "http://www.geopackage.org/spec120/#extension_rtree"
_UNDEFINED = (
    'LOCAL_CS["Undefined SRS",LOCAL_DATUM["unknown",32767],UNIT["unknown",0],'
    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)
_REQUIRED_SRS = (  # the three rows every GeoPackage holds (spec 1.2, table 21)
    ("Undefined Cartesian SRS", -1, "NONE", -1, "undefined",
     "undefined Cartesian coordinate reference system"),
    ("Undefined geographic SRS", 0, "NONE", 0, "undefined",
     "undefined geographic coordinate reference system"),
)  # fmt: skip


@dataclass
class GpkgLayer:
    """One feature table: WKB geometries (bytes or None), their bounds (N, 4: xmin, ymin, xmax,
    ymax; NaN for empty or missing), attribute columns in order, CRS (or None), geometry type."""

    wkb: Any  # sequence of bytes | None
    bounds: np.ndarray
    fields: dict[str, np.ndarray]
    crs: Any
    geometry_type: str


def _column_type(values: np.ndarray) -> str | None:
    """The GeoPackage column type GDAL gives a numpy column; None when not handled here."""
    kind, size = values.dtype.kind, values.dtype.itemsize
    if kind == "b":
        return "BOOLEAN"
    if kind in "iu":
        return "INTEGER" if size == 8 or (kind == "u" and size == 4) else None
    if kind == "f":
        return "REAL" if size == 8 else None
    if kind == "O":
        ok = all(v is None or isinstance(v, str) for v in values.tolist())
        return "TEXT" if ok else None
    return None


def writable(fields: dict[str, np.ndarray], geometry_type: str) -> bool:
    """Whether :func:`write_gpkg` writes these columns exactly as GDAL would."""
    if geometry_type.upper() not in _GEOMETRY_TYPES:
        return False
    names = [n.lower() for n in fields]
    if len(set(names)) != len(names) or {"fid", "geom"} & set(names):
        return False
    return all(_column_type(np.asarray(v)) is not None for v in fields.values())


def _srs(crs: Any) -> tuple[int, str, str, int, str]:
    """(srs_id, name, organization, organization id, WKT definition) of a CRS, or None."""
    if crs is None:  # GDAL's own "no CRS" entry: it reads back as none
        return 99999, "Undefined SRS", "GDAL", 99999, _UNDEFINED
    from rasterio.crs import CRS

    c = crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
    wkt = c.to_wkt(version="WKT1_GDAL")
    m = re.match(r'\s*\w+\["([^"]*)"', wkt)
    name = m.group(1) if m else "Unknown"
    epsg = c.to_epsg()
    if epsg:
        return epsg, name, "EPSG", epsg, CRS.from_epsg(epsg).to_wkt(version="WKT1_GDAL")
    return 100000, name, "NONE", 100000, wkt


def _blobs(wkb: Any, bounds: np.ndarray, srs_id: int) -> list[bytes | None]:
    """GeoPackage geometry blobs: header (magic, version, flags, SRS, xy envelope) + WKB."""
    xy = struct.Struct("<2sBBi4d")
    empty = struct.Struct("<2sBBi")
    out: list[bytes | None] = []
    for g, (x0, y0, x1, y1) in zip(wkb, bounds.tolist(), strict=True):
        if g is None:
            out.append(None)
        elif x0 != x0:  # NaN bounds: an empty geometry, flagged, no envelope
            out.append(empty.pack(b"GP", 0, 0x11, srs_id) + bytes(g))
        else:
            out.append(xy.pack(b"GP", 0, 0x03, srs_id, x0, x1, y0, y1) + bytes(g))
    return out


_CORE = (
    "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL,srs_id INTEGER NOT NULL PRIMARY"
    " KEY,organization TEXT NOT NULL,organization_coordsys_id INTEGER NOT NULL,definition  TEXT"
    " NOT NULL,description TEXT)",
    "CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY,data_type TEXT NOT NULL,"
    "identifier TEXT UNIQUE,description TEXT DEFAULT '',last_change DATETIME NOT NULL DEFAULT"
    " (strftime('%Y-%m-%dT%H:%M:%fZ','now')),min_x DOUBLE, min_y DOUBLE,max_x DOUBLE, max_y"
    " DOUBLE,srs_id INTEGER,CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES"
    " gpkg_spatial_ref_sys(srs_id))",
    "CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL,column_name TEXT NOT NULL,"
    "geometry_type_name TEXT NOT NULL,srs_id INTEGER NOT NULL,z TINYINT NOT NULL,m TINYINT NOT"
    " NULL,CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),CONSTRAINT"
    " uk_gc_table_name UNIQUE (table_name),CONSTRAINT fk_gc_tn FOREIGN KEY (table_name)"
    " REFERENCES gpkg_contents(table_name),CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES"
    " gpkg_spatial_ref_sys (srs_id))",
    "CREATE TABLE gpkg_extensions (table_name TEXT,column_name TEXT,extension_name TEXT NOT"
    " NULL,definition TEXT NOT NULL,scope TEXT NOT NULL,CONSTRAINT ge_tce UNIQUE (table_name,"
    " column_name, extension_name))",
)

# the gpkg_rtree_index extension's triggers (GeoPackage 1.2, annex F.3); {t} table, {r} R-tree
_BOX = (
    'NEW."fid", ST_MinX(NEW."geom"), ST_MaxX(NEW."geom"), ST_MinY(NEW."geom"), ST_MaxY(NEW."geom")'
)
_TRIGGERS = (
    'CREATE TRIGGER "{r}_insert" AFTER INSERT ON "{t}" WHEN (new."geom" NOT NULL AND NOT'
    ' ST_IsEmpty(NEW."geom")) BEGIN INSERT OR REPLACE INTO "{r}" VALUES (' + _BOX + "); END",
    'CREATE TRIGGER "{r}_update1" AFTER UPDATE OF "geom" ON "{t}" WHEN OLD."fid" = NEW."fid" AND'
    ' (NEW."geom" NOTNULL AND NOT ST_IsEmpty(NEW."geom")) BEGIN INSERT OR REPLACE INTO "{r}"'
    " VALUES (" + _BOX + "); END",
    'CREATE TRIGGER "{r}_update2" AFTER UPDATE OF "geom" ON "{t}" WHEN OLD."fid" = NEW."fid" AND'
    ' (NEW."geom" ISNULL OR ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM "{r}" WHERE id ='
    ' OLD."fid"; END',
    'CREATE TRIGGER "{r}_update3" AFTER UPDATE ON "{t}" WHEN OLD."fid" != NEW."fid" AND'
    ' (NEW."geom" NOTNULL AND NOT ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM "{r}" WHERE id ='
    ' OLD."fid"; INSERT OR REPLACE INTO "{r}" VALUES (' + _BOX + "); END",
    'CREATE TRIGGER "{r}_update4" AFTER UPDATE ON "{t}" WHEN OLD."fid" != NEW."fid" AND'
    ' (NEW."geom" ISNULL OR ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM "{r}" WHERE id IN'
    ' (OLD."fid", NEW."fid"); END',
    'CREATE TRIGGER "{r}_delete" AFTER DELETE ON "{t}" WHEN old."geom" NOT NULL BEGIN DELETE'
    ' FROM "{r}" WHERE id = OLD."fid"; END',
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _values(values: np.ndarray) -> list:
    """A column as Python values sqlite3 stores (None stays NULL)."""
    v = np.asarray(values)
    if v.dtype.kind == "b":
        return [int(x) for x in v.tolist()]
    if v.dtype.kind == "f":
        return [None if x != x else x for x in v.tolist()]  # NaN -> NULL, as GDAL writes it
    return v.tolist()


def _write_layer(db: sqlite3.Connection, name: str, layer: GpkgLayer) -> None:
    srs = _srs(layer.crs)
    db.execute("INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, NULL)",
               (srs[1], srs[0], srs[2], srs[3], srs[4]))  # fmt: skip
    bounds = np.asarray(layer.bounds, dtype=np.float64).reshape(-1, 4)
    real = bounds[~np.isnan(bounds).any(axis=1)]
    extent = (
        (real[:, 0].min(), real[:, 1].min(), real[:, 2].max(), real[:, 3].max())
        if len(real)
        else (None, None, None, None)
    )
    db.execute(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, min_x,"
        " min_y, max_x, max_y, srs_id) VALUES (?, 'features', ?, '', ?, ?, ?, ?, ?)",
        (name, name, *(None if v is None else float(v) for v in extent), srs[0]),
    )
    gtype = layer.geometry_type.upper()
    db.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, 0, 0)",
               (name, gtype, srs[0]))  # fmt: skip
    cols = [f"{_quote(c)} {_column_type(np.asarray(v))}" for c, v in layer.fields.items()]
    table = _quote(name)
    db.execute(
        f'CREATE TABLE {table} ( "fid" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,'
        f' "geom" {gtype}{"".join(", " + c for c in cols)})'
    )
    rows = zip(
        range(1, len(bounds) + 1),
        _blobs(layer.wkb, bounds, srs[0]),
        *(_values(v) for v in layer.fields.values()),
        strict=True,
    )
    marks = ", ".join("?" * (2 + len(cols)))
    db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    rtree = f"rtree_{name}_geom"
    db.execute(f"CREATE VIRTUAL TABLE {_quote(rtree)} USING rtree(id, minx, maxx, miny, maxy)")
    fids = np.flatnonzero(~np.isnan(bounds).any(axis=1))
    db.executemany(
        f"INSERT INTO {_quote(rtree)} VALUES (?, ?, ?, ?, ?)",
        zip((fids + 1).tolist(), *bounds[fids][:, [0, 2, 1, 3]].T.tolist(), strict=True),
    )
    db.execute(
        "INSERT INTO gpkg_extensions VALUES (?, 'geom', 'gpkg_rtree_index', ?, 'write-only')",
        (name, _RTREE_DEFINITION),
    )
    for trigger in _TRIGGERS:
        db.execute(
            trigger.replace("{r}", rtree.replace('"', '""')).replace("{t}", name.replace('"', '""'))
        )


def write_gpkg(path: str | Path, layers: dict[str, GpkgLayer]) -> None:
    """Write ``layers`` into a new GeoPackage at ``path`` (which must not exist)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(path)
    # one transaction for everything (sqlite3 would commit, and sync, each CREATE on its own);
    # no syncing and the journal in memory, as GDAL writes GeoPackages: the file is a
    # temporary that atomic_output checks before renaming it into place
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA journal_mode = MEMORY")
        db.execute("BEGIN")
        with db:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {USER_VERSION}")
            for sql in _CORE:
                db.execute(sql)
            db.executemany(
                "INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", _REQUIRED_SRS
            )
            db.execute(
                "INSERT INTO gpkg_spatial_ref_sys VALUES ('WGS 84 geodetic', 4326, 'EPSG', 4326,"
                " ?, 'longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid')",
                (_srs("EPSG:4326")[4],),
            )
            for name, layer in layers.items():
                _write_layer(db, name, layer)
    finally:
        db.close()


def check_gpkg(path: str | Path) -> None:
    """Read a GeoPackage back whole: every page (SQLite's quick check), the layers it lists.

    OSError naming the file when it is damaged or not a GeoPackage.
    """
    import errno

    try:
        db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        try:
            (ok,) = db.execute("PRAGMA quick_check").fetchone()
            tables = [t for (t,) in db.execute("SELECT table_name FROM gpkg_contents")]
            for t in tables:
                db.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise OSError(errno.EIO, f"unreadable GeoPackage ({e})", str(path)) from e
    if ok != "ok":
        raise OSError(errno.EIO, f"damaged GeoPackage ({ok})", str(path))


def read_facts(path: str | Path, skip: tuple[str, ...] = ()) -> list[dict[str, Any]] | None:
    """What pyogrio's ``read_info`` says of each feature table of a GeoPackage (``name``,
    ``crs``, ``features``, ``total_bounds``, ``fields``), read with sqlite3 alone.

    None when the file is not a GeoPackage this reader understands; the caller then asks
    pyogrio. The bounds come from the table's R-tree (exact for GDAL's, QGIS's and ours).
    """
    try:
        db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        rows = db.execute(
            "SELECT c.table_name, g.column_name, g.srs_id, s.organization, s.organization_coordsys_id,"
            " s.definition FROM gpkg_contents c JOIN gpkg_geometry_columns g ON"
            " g.table_name = c.table_name LEFT JOIN gpkg_spatial_ref_sys s ON s.srs_id = g.srs_id"
            " WHERE c.data_type = 'features' ORDER BY c.rowid"
        ).fetchall()
        out = []
        for table, geom, srs_id, org, code, definition in rows:
            if table in skip:
                continue
            crs = f"EPSG:{code}" if str(org).upper() == "EPSG" and code and code > 0 else None
            undefined = srs_id in (-1, 0, 99999) or str(definition).startswith(
                ("undefined", 'LOCAL_CS["Undefined')
            )  # the spec's rows for "no CRS", and GDAL's
            if crs is None and definition and not undefined:
                crs = definition
            (count,) = db.execute(f"SELECT COUNT(*) FROM {_quote(table)}").fetchone()
            box = db.execute(
                "SELECT MIN(minx), MIN(miny), MAX(maxx), MAX(maxy) FROM "
                f"{_quote(f'rtree_{table}_{geom}')}"
            ).fetchone()
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({_quote(table)})")]
            out.append({
                "name": table, "crs": crs, "features": int(count),
                "total_bounds": None if box[0] is None else tuple(float(v) for v in box),
                "fields": [c for c in cols if c not in ("fid", geom)],
            })  # fmt: skip
        return out
    except sqlite3.Error:
        return None
    finally:
        db.close()


def read_values(path: str | Path, table: str, field: str) -> list[str]:
    """The distinct values of ``field`` in ``table``, in the order they first appear."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        rows = db.execute(
            f"SELECT {_quote(field)} FROM {_quote(table)} GROUP BY {_quote(field)} ORDER BY MIN(fid)"
        ).fetchall()
    finally:
        db.close()
    return [str(v) for (v,) in rows]
