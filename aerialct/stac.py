"""STAC Items for aerialct's outputs: what a catalogue indexes about a delivery (the one owner).

Every ``predict`` scene and every ``vectorize`` output gets a STAC 1.1 Item, built with
``pystac``: either as a sidecar JSON beside the output (``<stem>.stac.json``) or, with
``--stac DIR``, in a static catalogue of a whole delivery (``DIR/catalog.json``, one
``DIR/<id>/<id>.json`` per Item, one Item per model). An Item carries:

- the footprint (WGS84 geometry and bbox) and the ``projection`` extension (EPSG code or
  WKT2, grid shape and transform, native bbox);
- the ``raster`` extension for rasters (data type, nodata, pixel size, probability scale);
- the ``file`` extension (size and sha2-256 multihash of every asset);
- the ``classification`` extension with the class table (value, name, colour; for a class
  raster also each class's pixel count and share);
- the ``processing`` extension (level L4, lineage, software and time) and the model facts
  under ``aerialct:model`` (checkpoint name and sha256, preset, decoder, weights, chip size);
  in a catalogue also a ``derived_from`` link to the model's Item, which uses the ``mlm``
  (Machine Learning Model) extension;
- ``aerialct:source`` (the input, without credentials) and, once ``evaluate`` ran on the
  output, ``aerialct:scores``.

Datetime: the scene's ``TIFFTAG_DATETIME`` when it has one, else the time of the run
(``created`` is always the time of the run).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.errors import InputError
from aerialct.geo.inputs import is_gdal_path, redact

if TYPE_CHECKING:
    import pystac

    from aerialct.predict.results import SceneResult
    from aerialct.vectorize.write import VectorizeResult

log = logging.getLogger("aerialct")

STAC_SUFFIX = ".stac.json"
"""A sidecar Item's name: ``<stem>.stac.json`` beside the output it describes."""

SCHEMAS = {
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "mlm": "https://stac-extensions.github.io/mlm/v1.4.0/schema.json",
}
"""The extensions (and versions) aerialct's Items use."""

MEDIA_TYPES = {
    ".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    ".png": "image/png",
    ".gpkg": "application/geopackage+sqlite3",
    ".geojson": "application/geo+json",
    ".json": "application/geo+json",
    ".fgb": "application/vnd.flatgeobuf",
    ".qml": "application/xml",
    ".xml": "application/xml",
}

"""The lock file of a catalogue folder, held while an Item is added."""

MARK = "aerialct:made_by"
"""A property every aerialct Item carries: what an Item that may be replaced looks like."""


# ---------------------------------------------------------------------------- the model


_FACTS_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_facts(bundle: Any) -> dict[str, Any]:
    """What a prediction's Item says about its model: name, sha256, preset, weights...

    ``bundle`` is an :class:`aerialct.engine.checkpoint.InferenceBundle` (or a stand-in);
    facts it does not know (an exported model has no preset) are null. The checkpoint's
    hash is computed once per file and process.
    """
    path = getattr(bundle, "path", None)
    facts: dict[str, Any] = {"name": None, "sha256": None, "format": None}
    if path is not None and Path(path).is_file():
        p = Path(path)
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FACTS_CACHE:
            _FACTS_CACHE[key] = {"name": p.name, "sha256": file_sha256(p), "size": st.st_size}
        facts.update(_FACTS_CACHE[key])
        suffix = p.suffix.lower()
        config = getattr(bundle, "config", None)
        facts["format"] = (
            "onnx" if suffix == ".onnx" else "aerialct-checkpoint" if config else "torchscript"
        )
    config = getattr(bundle, "config", None)
    model = getattr(config, "model", None)
    facts["preset"] = getattr(model, "backbone", None)
    facts["decoder"] = getattr(model, "decoder", None)
    weights = getattr(model, "weights", None)
    facts["weights"] = redact(weights) if weights else None
    facts["chip_size"] = int(bundle.chip_size)
    facts["in_chans"] = int(bundle.in_chans)
    facts["gsd"] = None if bundle.gsd is None else float(bundle.gsd)
    return facts


def model_tags(bundle: Any) -> dict[str, str]:
    """The dataset tag naming the model that predicted a raster (:data:`MODEL_TAG`)."""
    from aerialct.geo.tags import MODEL_TAG

    facts = {k: v for k, v in model_facts(bundle).items() if k != "size"}
    return {MODEL_TAG: json.dumps(facts, sort_keys=True)}


def raster_model_facts(ds: Any) -> dict[str, Any] | None:
    """The model facts a raster's :data:`MODEL_TAG` holds (None without one)."""
    from aerialct.geo.tags import MODEL_TAG

    raw = ds.tags().get(MODEL_TAG)
    if not raw:
        return None
    try:
        facts = json.loads(raw)
    except ValueError:
        return None
    return facts if isinstance(facts, dict) else None


def model_item_id(facts: dict[str, Any]) -> str | None:
    """The id of a model's Item: ``model-<first 12 hex of its sha256>`` (None: no hash)."""
    return f"model-{facts['sha256'][:12]}" if facts.get("sha256") else None


# -------------------------------------------------------------------------- geometry


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _stac_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tiff_datetime(tags: dict[str, str]) -> dt.datetime | None:
    """``TIFFTAG_DATETIME`` ("YYYY:MM:DD HH:MM:SS", taken as UTC) as a datetime, if valid."""
    raw = tags.get("TIFFTAG_DATETIME", "").strip()
    try:
        return dt.datetime.strptime(raw, "%Y:%m:%d %H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _footprint(crs: Any, bounds: Sequence[float]) -> tuple[dict | None, list[float] | None]:
    """The WGS84 polygon and bbox of ``bounds`` (left, bottom, right, top) in ``crs``."""
    if crs is None:
        return None, None
    import shapely
    from rasterio.warp import transform_geom

    left, bottom, right, top = (float(v) for v in bounds)
    box = shapely.geometry.mapping(shapely.box(left, bottom, right, top))
    geom = transform_geom(crs, "EPSG:4326", box, precision=9)
    shape = shapely.geometry.shape(geom)
    return dict(geom), [round(v, 9) for v in shape.bounds]


def _projection(crs: Any) -> dict[str, Any]:
    """``proj:code`` (``EPSG:n``) when the CRS has one, else ``proj:wkt2``."""
    if crs is None:
        return {"proj:code": None}
    from rasterio.crs import CRS

    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    if epsg:
        return {"proj:code": f"EPSG:{epsg}"}
    return {"proj:code": None, "proj:wkt2": c.to_wkt(version="WKT2_2019")}


def _raster_grid(path: str | os.PathLike) -> dict[str, Any]:
    """What an Item needs of a raster: footprint, projection, grid, pixel size, tags."""
    import rasterio

    from aerialct.geo.io import no_georef_warning

    with no_georef_warning(), rasterio.open(path) as ds:
        geometry, bbox = _footprint(ds.crs, ds.bounds)
        proj = _projection(ds.crs)
        proj["proj:shape"] = [ds.height, ds.width]
        proj["proj:transform"] = [float(v) for v in list(ds.transform)[:6]]
        if ds.crs is not None:
            proj["proj:bbox"] = [float(v) for v in ds.bounds]
        return {
            "geometry": geometry,
            "bbox": bbox,
            "proj": proj,
            "gsd": abs(ds.transform.a) if ds.crs is not None else None,
            "tags": ds.tags(),
            "dtypes": ds.dtypes,
            "nodata": ds.nodata,
        }


# ---------------------------------------------------------------------------- assets


def _checksum(path: Path) -> str:
    """A file's sha2-256 as a multihash (hex): ``1220`` + digest, as the file extension wants."""
    return "1220" + file_sha256(path)


def _asset(path: Path, title: str, roles: list[str], **extra: Any) -> pystac.Asset:
    import pystac

    fields = {"file:size": path.stat().st_size, "file:checksum": _checksum(path), **extra}
    return pystac.Asset(
        href=str(path),
        title=title,
        media_type=MEDIA_TYPES.get(path.suffix.lower()),
        roles=roles,
        extra_fields=fields,
    )


def _class_name(name: str) -> str:
    """A class name as the classification extension allows it (letters, digits, - and _)."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", name).strip("_") or "class"


def classification_classes(
    table: ClassTable,
    ids: Iterable[int] | None = None,
    counts: dict[str, int] | None = None,
    nodata_count: int | None = None,
) -> list[dict[str, Any]]:
    """The ``classification:classes`` of ``table`` (or of its classes ``ids``).

    With ``counts`` (pixels per class name) each class gets its ``count`` and
    ``percentage`` of the valid pixels; with ``nodata_count`` a nodata entry (255) follows.
    """
    wanted = set(ids) if ids is not None else None
    valid = sum(counts.values()) if counts else 0
    out = []
    for c in table:
        if wanted is not None and c.id not in wanted:
            continue
        entry: dict[str, Any] = {
            "value": c.id,
            "name": _class_name(c.name),
            "title": c.name,
            "color_hint": "{:02X}{:02X}{:02X}".format(*c.color),
        }
        if counts is not None:
            n = int(counts.get(c.name, 0))
            entry["count"] = n
            entry["percentage"] = round(100.0 * n / valid, 4) if valid else 0.0
        out.append(entry)
    if nodata_count is not None:
        out.append(
            {"value": IGNORE_INDEX, "name": "nodata", "title": "no data", "nodata": True,
             "count": int(nodata_count)}
        )  # fmt: skip
    return out


def _processing(lineage: str, created: dt.datetime) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from aerialct import __version__

    software = {"aerialct": __version__}
    for lib in ("torch", "rasterio"):  # without importing them (vectorize runs without torch)
        with contextlib.suppress(PackageNotFoundError):
            software[lib] = version(lib).split("+")[0]
    return {
        "processing:level": "L4",
        "processing:lineage": lineage,
        "processing:software": software,
        MARK: f"aerialct {__version__}",
    }


def _item(
    item_id: str,
    grid: dict[str, Any],
    when: dt.datetime,
    created: dt.datetime,
    properties: dict[str, Any],
) -> pystac.Item:
    import pystac

    props = {"created": _stac_time(created), **grid["proj"], **properties}
    if grid.get("gsd"):
        props["gsd"] = grid["gsd"]
    item = pystac.Item(
        id=item_id,
        geometry=grid["geometry"],
        bbox=grid["bbox"],
        datetime=when,
        properties=props,
    )
    item.stac_extensions = sorted(
        SCHEMAS[k] for k in ("projection", "file", "classification", "processing")
    )
    return item


# ------------------------------------------------------------------------------ Items


def item_path(output: str | os.PathLike) -> Path:
    """The sidecar Item of an output: ``<stem>.stac.json`` (a class raster's stem without
    ``_classes``, so one Item describes a scene's class, probability and quick-look files)."""
    p = Path(output)
    stem = p.stem.removesuffix("_classes") if p.suffix.lower() in (".tif", ".tiff") else p.stem
    return p.with_name(stem + STAC_SUFFIX)


def predict_item(
    result: SceneResult, facts: dict[str, Any], created: dt.datetime | None = None
) -> pystac.Item:
    """The Item of one predicted scene: its class raster, probability raster, quick look and
    sidecars as assets."""
    from aerialct.geo.classraster import raster_class_table
    from aerialct.predict.stream import PROB_SCALE

    created = created or _utcnow()
    assert result.output is not None
    classes = Path(result.output)
    grid = _raster_grid(classes)
    import rasterio

    with rasterio.open(classes) as ds:
        table = raster_class_table(ds)
    assert table is not None
    scene = getattr(result, "source", "") or str(result.scene)
    when = _scene_datetime(scene) or created
    model_name = facts.get("name") or "a model"
    item = _item(
        classes.stem.removesuffix("_classes"),
        grid,
        when,
        created,
        {
            "title": f"{classes.name}: classes predicted by aerialct",
            "aerialct:source": redact(scene),
            "aerialct:model": facts,
            **_processing(f"aerialct predict with {model_name} on {redact(scene)}", created),
        },
    )
    item.stac_extensions = sorted({*item.stac_extensions, SCHEMAS["raster"]})
    band = {
        "data_type": "uint8",
        "nodata": IGNORE_INDEX,
        "sampling": "area",
        "classification:classes": classification_classes(
            table, counts=result.class_pixels, nodata_count=result.nodata_pixels
        ),
    }
    if grid["gsd"]:
        band["spatial_resolution"] = grid["gsd"]
    item.add_asset(
        "classes",
        _asset(classes, "class raster (uint8 class ids, 255 = nodata)", ["data"],
               **{"raster:bands": [band]}),
    )  # fmt: skip
    if result.probabilities is not None and Path(result.probabilities).is_file():
        bands = [
            {"data_type": "uint8", "scale": 1.0 / PROB_SCALE, "offset": 0.0, "sampling": "area"}
            for _ in table
        ]
        item.add_asset(
            "probabilities",
            _asset(Path(result.probabilities),
                   "class probabilities, band k = class k (value / 255)", ["data"],
                   description="bands in class order: " + ", ".join(table.names),
                   **{"raster:bands": bands}),
        )  # fmt: skip
    if result.quicklook is not None and Path(result.quicklook).is_file():
        item.add_asset("quicklook", _asset(Path(result.quicklook), "quick look", ["overview"]))
    _add_sidecars(item, classes)
    return item


def _scene_datetime(scene: str) -> dt.datetime | None:
    """The scene's ``TIFFTAG_DATETIME``, when it is a local file that has one."""
    if is_gdal_path(scene) or not Path(scene).is_file():
        return None
    import rasterio

    from aerialct.geo.io import no_georef_warning

    try:
        with no_georef_warning(), rasterio.open(scene) as ds:
            return _tiff_datetime(ds.tags())
    except Exception:
        return None


def _add_sidecars(item: pystac.Item, raster: Path) -> None:
    """The class raster's style (.qml) and GDAL PAM (.aux.xml) files, as metadata assets."""
    from aerialct.styles import qml_path

    for key, path, title in (
        ("style", qml_path(raster), "QGIS style of the class raster (paletted, class names)"),
        ("gdal_pam", Path(str(raster) + ".aux.xml"), "GDAL sidecar: category names and RAT"),
    ):
        if path.is_file():
            item.add_asset(key, _asset(path, title, ["metadata"]))


def vector_item(
    output: str | os.PathLike,
    results: Sequence[VectorizeResult],
    created: dt.datetime | None = None,
) -> pystac.Item:
    """The Item of one ``vectorize`` output file (``results``: the rasters it holds)."""
    import rasterio

    from aerialct.geo.classraster import raster_class_table
    from aerialct.geo.inputs import source_path
    from aerialct.geo.io import no_georef_warning

    created = created or _utcnow()
    out = Path(output)
    layers, info = _vector_facts(out, results)
    crs = next((i.get("crs") for i in info if i.get("crs")), None)
    bounds = _union_bounds(
        [i["total_bounds"] for i in info if i.get("features") and i.get("total_bounds") is not None]
    )
    geometry, bbox = _footprint(crs, bounds) if bounds else (None, None)
    proj = _projection(crs)
    if bounds and crs is not None:
        proj["proj:bbox"] = [float(v) for v in bounds]
    grid: dict[str, Any] = {"geometry": geometry, "bbox": bbox, "proj": proj}
    # every raster the file holds polygons of (an --append run adds to earlier ones), and
    # every raster of this run (a tile of a map may own no building: its neighbours do)
    sources = list(
        dict.fromkeys([*_file_values(out, layers, info, "source"), *(r.source for r in results)])
    )
    table, facts = None, None
    with (
        contextlib.suppress(Exception),
        no_georef_warning(),
        rasterio.open(source_path(sources[0])) as ds,
    ):
        table = raster_class_table(ds)
        facts = raster_model_facts(ds)
    names = sorted(
        {*_file_values(out, layers, info, "class"), *(n for r in results for n in r.classes)}
    )
    props: dict[str, Any] = {
        "title": f"{out.name}: polygons of {', '.join(names)} by aerialct vectorize",
        "aerialct:source": redact(sources[0])
        if len(sources) == 1
        else [redact(s) for s in sources],
        "aerialct:layers": {
            name: int(i.get("features", 0)) for name, i in zip(layers, info, strict=True)
        },
        **_processing(f"aerialct vectorize of {_some(sources)}", created),
    }
    if facts is not None:
        props["aerialct:model"] = facts
    item = _item(out.name, grid, _raster_datetime(sources) or created, created, props)
    extra: dict[str, Any] = {}
    if table is not None:
        ids = [table.names.index(n) for n in names if n in table.names]
        extra["classification:classes"] = classification_classes(table, ids)
    item.add_asset("data", _asset(out, f"polygons ({', '.join(layers)})", ["data"], **extra))
    for src in sources:
        side = item_path(src)
        if not is_gdal_path(src) and side.is_file():
            item.add_link(_link("derived_from", side, "the class raster's Item"))
    return item


def _some(sources: Sequence[str]) -> str:
    """A few sources by name, or how many there are."""
    if len(sources) <= 3:
        return ", ".join(redact(s) for s in sources)
    return f"{len(sources)} class rasters ({redact(sources[0])}, ...)"


def _vector_facts(
    out: Path, results: Sequence[VectorizeResult]
) -> tuple[list[str], list[dict[str, Any]]]:
    """The data layers of a vector file and pyogrio's ``read_info`` of each.

    A GeoPackage is read with sqlite3 (:func:`aerialct.geo.gpkg.read_facts`): pyogrio
    would load a second GDAL library, more memory than the whole vectorize run writes.
    """
    from aerialct.geo.gpkg import read_facts
    from aerialct.styles import STYLE_TABLE

    if out.suffix.lower() == ".gpkg":
        facts = read_facts(out, skip=(STYLE_TABLE,))
        if facts is not None:
            return [f["name"] for f in facts], facts
    from aerialct.geo.ogr import pyogrio_api
    from aerialct.geo.vector import list_layers

    pyogrio = pyogrio_api()  # the CLI's lean import: no pandas for a file's facts
    layers = list_layers(out) if out.suffix.lower() == ".gpkg" else [r.layer for r in results][:1]
    info = [
        pyogrio.read_info(out, layer=name, force_feature_count=True, force_total_bounds=True)
        for name in layers
    ]
    return layers, info


def _file_values(out: Path, layers: Sequence[str], info: Sequence[dict], field: str) -> list[str]:
    """The distinct values of ``field`` in a vector file's layers, in order of appearance."""
    seen: dict[str, None] = {}
    for name, i in zip(layers, info, strict=True):
        if field not in list(i.get("fields", [])):
            continue
        if "name" in i:  # read by sqlite3 (:func:`_vector_facts`)
            from aerialct.geo.gpkg import read_values

            seen.update(dict.fromkeys(read_values(out, name, field)))
            continue
        from aerialct.geo.ogr import pyogrio_api

        _, _, _, (col,) = pyogrio_api().raw.read(
            out, layer=name, columns=[field], read_geometry=False
        )
        seen.update(dict.fromkeys(str(v) for v in col.tolist()))
    return list(seen)


def _raster_datetime(sources: Sequence[str]) -> dt.datetime | None:
    """The datetime of the first source raster's Item, when it has a sidecar Item."""
    for src in sources:
        side = item_path(src)
        if is_gdal_path(src) or not side.is_file():
            continue
        with contextlib.suppress(Exception):
            doc = json.loads(side.read_text())
            return dt.datetime.fromisoformat(doc["properties"]["datetime"].replace("Z", "+00:00"))
    return None


def _union_bounds(boxes: Sequence[Any]) -> list[float] | None:
    if not boxes:
        return None
    return [
        min(float(b[0]) for b in boxes),
        min(float(b[1]) for b in boxes),
        max(float(b[2]) for b in boxes),
        max(float(b[3]) for b in boxes),
    ]


def _link(rel: str, target: Path | str, title: str, media_type: str | None = None) -> Any:
    import pystac

    return pystac.Link(
        rel=rel, target=str(target), media_type=media_type or "application/geo+json", title=title
    )


def model_item(facts: dict[str, Any], table: ClassTable, checkpoint: Path | None) -> pystac.Item:
    """The Item of a model (``mlm`` extension): what it takes, what it gives, its file."""
    import pystac

    item_id = model_item_id(facts)
    assert item_id is not None
    created = _utcnow()
    when = (
        dt.datetime.fromtimestamp(checkpoint.stat().st_mtime, dt.UTC).replace(microsecond=0)
        if checkpoint is not None and checkpoint.is_file()
        else created
    )
    chip, k = facts["chip_size"], len(table)
    props: dict[str, Any] = {
        "title": f"model {facts.get('name')}",
        "created": _stac_time(created),
        "mlm:name": f"{Path(facts.get('name') or 'model').stem}-{facts['sha256'][:12]}",
        "mlm:architecture": f"{facts.get('decoder') or 'segmentation'} decoder on "
        f"{facts.get('preset') or 'an encoder'}",
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "ONNX" if facts.get("format") == "onnx" else "pytorch",
        "mlm:pretrained": bool(facts.get("weights")),
        "mlm:pretrained_source": facts.get("weights"),
        "mlm:input": [
            {
                "name": "image",
                "bands": [],
                "input": {"shape": [-1, facts["in_chans"], chip, chip],
                          "dim_order": ["batch", "channel", "height", "width"],
                          "data_type": "float32"},
                "description": "the scene's bands in training order, clipped to the training "
                "percentiles and standardised with the checkpoint's band statistics",
            }
        ],
        "mlm:output": [
            {
                "name": "classes",
                "tasks": ["semantic-segmentation"],
                "result": {"shape": [-1, k, chip, chip],
                           "dim_order": ["batch", "channel", "height", "width"],
                           "data_type": "float32"},
                "classification:classes": classification_classes(table),
            }
        ],
        "mlm:hyperparameters": {
            k2: v for k2, v in facts.items() if k2 in ("preset", "decoder", "chip_size", "gsd")
        },
        "aerialct:model": facts,
        MARK: _processing("", created)[MARK],
    }  # fmt: skip
    item = pystac.Item(id=item_id, geometry=None, bbox=None, datetime=when, properties=props)
    item.stac_extensions = sorted(SCHEMAS[x] for x in ("mlm", "file", "classification"))
    if checkpoint is not None and checkpoint.is_file():
        artifact = {"onnx": "onnx", "torchscript": "torch.jit.save"}.get(
            str(facts.get("format")), "torch.save"
        )
        item.add_asset(
            "model",
            pystac.Asset(
                href=str(checkpoint),
                title=f"model file {checkpoint.name}",
                media_type="application/octet-stream; framework=pytorch"
                if artifact != "onnx"
                else "application/octet-stream; framework=onnx",
                roles=["mlm:model", "mlm:weights"],
                extra_fields={
                    "mlm:artifact_type": artifact,
                    "file:size": checkpoint.stat().st_size,
                    "file:checksum": "1220" + facts["sha256"],
                },
            ),
        )
    else:  # the schema wants a model asset: name the file the hash identifies
        item.add_asset(
            "model",
            pystac.Asset(
                href=str(facts.get("name") or "model"),
                title="model file (not found beside this catalogue)",
                roles=["mlm:model"],
                extra_fields={"mlm:artifact_type": "torch.save",
                              "file:checksum": "1220" + facts["sha256"]},
            ),
        )  # fmt: skip
    return item


# ---------------------------------------------------------------------------- writing


def is_aerialct_item(path: Path) -> bool:
    """Whether ``path`` is a STAC document aerialct wrote (it may then be replaced)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    props = doc.get("properties") if doc.get("type") == "Feature" else doc
    return isinstance(props, dict) and str(props.get(MARK, "")).startswith("aerialct")


def _write_json(path: Path, doc: dict) -> None:
    from aerialct.geo.outputs import atomic_output
    from aerialct.render import json_text

    with atomic_output(path, overwrite=True, kind="json") as tmp:
        tmp.write_text(json_text(doc), encoding="utf-8")


def _relative_hrefs(doc: dict, base: Path) -> dict:
    """``doc`` with local asset and link hrefs relative to the folder ``base``."""
    for asset in doc.get("assets", {}).values():
        asset["href"] = _rel(asset["href"], base)
    for link in doc.get("links", []):
        link["href"] = _rel(link["href"], base)
    return doc


def _rel(href: str, base: Path) -> str:
    if is_gdal_path(href):
        return href
    rel = os.path.relpath(Path(href).resolve(), base.resolve())
    return rel if rel.startswith("..") else f"./{rel}"


def write_sidecar(item: pystac.Item, output: str | os.PathLike) -> Path | None:
    """Write ``item`` beside ``output`` as ``<stem>.stac.json`` (hrefs relative to it).

    An existing file of that name is replaced only when aerialct wrote it; another file is
    left alone with a warning (None is returned).
    """
    path = item_path(output)
    if path.exists() and not is_aerialct_item(path):
        log.warning("%s: exists and is not an Item aerialct wrote; left as it is", path)
        return None
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    _write_json(path, _relative_hrefs(doc, path.parent))
    return path


def write_catalog(
    stac_dir: str | os.PathLike,
    items: Sequence[pystac.Item],
    models: Sequence[pystac.Item] = (),
    *,
    title: str = "aerialct delivery",
) -> Path:
    """Add ``items`` (and the ``models`` they came from) to the static catalogue ``stac_dir``.

    The catalogue is ``stac_dir/catalog.json`` with one ``stac_dir/<id>/<id>.json`` per
    Item; an Item of the same id is replaced, others are kept, so ``predict`` and
    ``vectorize`` runs add to one delivery. A folder that holds files but no catalogue of
    aerialct's is refused. Prediction Items get a ``derived_from`` link to their model.
    """
    root = Path(stac_dir)
    check_stac_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    with _catalog_lock(root):  # torchrun ranks and array tasks may add to one catalogue
        return _update_catalog(root, items, models, title)


@contextlib.contextmanager
def _catalog_lock(root: Path) -> Iterator[None]:
    """The catalogue's writers take turns: the lock of ``root/catalog.json``
    (:func:`aerialct.geo.locks.output_lock`, which names a holder that died)."""
    from aerialct.geo.locks import output_lock

    with output_lock(root / "catalog.json", wait=True):
        yield


def _update_catalog(
    root: Path, items: Sequence[pystac.Item], models: Sequence[pystac.Item], title: str
) -> Path:
    cat_path = root / "catalog.json"
    catalog = json.loads(cat_path.read_text()) if cat_path.exists() else _new_catalog(title)
    ids = {m.id for m in models}
    for item in [*models, *items]:
        doc = item.to_dict(include_self_link=False, transform_hrefs=False)
        model_id = model_item_id(doc["properties"].get("aerialct:model") or {})
        if model_id in ids and item.id != model_id:
            doc["links"].append(
                {"rel": "derived_from", "href": str(root / model_id / f"{model_id}.json"),
                 "type": "application/geo+json", "title": "the model's Item (mlm)",
                 "mlm:name": next(m.properties["mlm:name"] for m in models if m.id == model_id)}
            )  # fmt: skip
        path = root / item.id / f"{item.id}.json"
        doc["links"] += [
            {"rel": "root", "href": str(cat_path), "type": "application/json"},
            {"rel": "parent", "href": str(cat_path), "type": "application/json"},
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, _relative_hrefs(doc, path.parent))
        href = f"./{item.id}/{item.id}.json"
        catalog["links"] = [lk for lk in catalog["links"] if lk.get("href") != href]
        catalog["links"].append({"rel": "item", "href": href, "type": "application/geo+json"})
    _write_json(cat_path, catalog)
    return cat_path


def _new_catalog(title: str) -> dict:
    from aerialct import __version__

    return {
        "type": "Catalog",
        "stac_version": "1.1.0",
        "id": "aerialct-delivery",
        "title": title,
        "description": "Outputs of aerialct (predict, vectorize) with their models",
        MARK: f"aerialct {__version__}",
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
        ],
    }


def catalog_items(stac_dir: str | os.PathLike) -> list[Path]:
    """The Item files a catalogue aerialct wrote lists."""
    root = Path(stac_dir)
    doc = json.loads((root / "catalog.json").read_text())
    return [(root / lk["href"]).resolve() for lk in doc.get("links", []) if lk.get("rel") == "item"]


# ----------------------------------------------------------------------------- scores


def add_scores(item_file: Path, scores: dict[str, Any]) -> None:
    """Record ``evaluate``'s scores in an aerialct Item (``aerialct:scores``), atomically."""
    doc = json.loads(item_file.read_text())
    doc["properties"]["aerialct:scores"] = scores
    _write_json(item_file, doc)


def items_of(output: str | os.PathLike, stac_dir: str | os.PathLike | None = None) -> list[Path]:
    """The aerialct Items that describe ``output``: its sidecar, and the catalogue's Items
    that list it as an asset."""
    out = Path(output)
    found = []
    side = item_path(out)
    if side.is_file() and is_aerialct_item(side):
        found.append(side)
    if stac_dir is not None and (Path(stac_dir) / "catalog.json").is_file():
        target = out.resolve()
        for path in catalog_items(stac_dir):
            with contextlib.suppress(OSError, ValueError, KeyError):
                doc = json.loads(path.read_text())
                hrefs = [(path.parent / a["href"]).resolve() for a in doc["assets"].values()]
                if target in hrefs:
                    found.append(path)
    return found


# ------------------------------------------------------------------- what the CLI calls


def _is_lock(path: Path) -> bool:
    from aerialct.geo.locks import LOCK_SUFFIX

    return path.name.endswith(LOCK_SUFFIX)


def check_stac_dir(stac_dir: str | os.PathLike | None) -> None:
    """Refuse a ``--stac`` folder before any work: it must be new, empty or aerialct's."""
    if stac_dir is None:
        return
    root = Path(stac_dir)
    cat = root / "catalog.json"
    if root.exists() and not root.is_dir():
        raise InputError(f"--stac {root}: is a file; give a folder for the catalogue")
    if cat.exists() and not is_aerialct_item(cat):
        raise InputError(f"{cat}: is not a catalogue aerialct wrote; give --stac a new folder")
    if not cat.exists() and root.is_dir() and any(not _is_lock(p) for p in root.iterdir()):
        raise InputError(
            f"{root}: folder holds files but no catalog.json; give --stac a new or empty folder"
        )


def deliver_predictions(
    scenes: Sequence[SceneResult], bundle: Any, stac_dir: str | os.PathLike | None = None
) -> list[Path]:
    """The Items of the scenes just predicted: sidecars, or the catalogue ``stac_dir``."""
    done = [s for s in scenes if s.status == "ok" and s.output is not None]
    if not done:
        return []
    facts = {k: v for k, v in model_facts(bundle).items() if k != "size"}
    created = _utcnow()
    items = [predict_item(s, facts, created) for s in done]
    if stac_dir is None:
        return [
            p
            for s, it in zip(done, items, strict=True)
            if (p := write_sidecar(it, Path(str(s.output)))) is not None
        ]
    models = []
    if facts.get("sha256"):
        path = getattr(bundle, "path", None)
        models.append(model_item(facts, bundle.classes, Path(path) if path else None))
    cat = write_catalog(stac_dir, items, models)
    return [cat]


def deliver_vectors(
    results: Sequence[VectorizeResult], stac_dir: str | os.PathLike | None = None
) -> list[Path]:
    """The Items of ``vectorize`` outputs (one per output file): sidecars, or the catalogue."""
    by_output: dict[str, list[VectorizeResult]] = {}
    for r in results:
        by_output.setdefault(r.output, []).append(r)
    created = _utcnow()
    items = [(out, vector_item(out, rs, created)) for out, rs in by_output.items()]
    if stac_dir is None:
        return [p for out, it in items if (p := write_sidecar(it, out)) is not None]
    return [write_catalog(stac_dir, [it for _, it in items])]


_BUILDING_KEYS = ("iou_threshold", "predicted", "reference_count", "true_positives",
                  "false_positives", "false_negatives", "precision", "recall", "f1", "mean_iou",
                  "ap50", "ap75", "ap")  # fmt: skip


def _score_entries(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(prediction, its scores) for each prediction an ``evaluate`` result scored."""
    if result.get("kind") == "building":
        files = result.get("files") or [result]
        return [
            (f["prediction"],
             {"kind": "building", "reference": redact(f["reference"]),
              **{k: f[k] for k in _BUILDING_KEYS if k in f}})
            for f in files
        ]  # fmt: skip
    pairs = result.get("pairs") or []
    if len(pairs) == 1:  # the pooled scores are this pair's, per class included
        per_class = {
            name: {k: d.get(k) for k in ("iou", "f1", "precision", "recall")}
            for name, d in result.get("per_class", {}).items()
        }
        return [
            (pairs[0]["prediction"],
             {"kind": "pixel", "reference": redact(pairs[0]["reference"]),
              "mean_iou": result.get("mean_iou"), "mean_f1": result.get("mean_f1"),
              "overall_accuracy": result.get("overall_accuracy"),
              "excluded": result.get("excluded", []), "per_class": per_class})
        ]  # fmt: skip
    return [
        (p["prediction"],
         {"kind": "pixel", "reference": redact(p["reference"]), "mean_iou": p["mean_iou"],
          "overall_accuracy": p["overall_accuracy"]})
        for p in pairs
    ]  # fmt: skip


def record_scores(result: dict[str, Any], stac_dir: str | os.PathLike | None = None) -> list[Path]:
    """Add an ``evaluate`` result's scores to the Items of the predictions it scored.

    Each scored prediction's Items (:func:`items_of`: its sidecar, and with ``stac_dir``
    the catalogue's) get ``aerialct:scores``; returns the Items updated.
    """
    from aerialct.render import jsonable

    evaluated = _stac_time(_utcnow())
    updated = []
    for prediction, scores in _score_entries(jsonable(result)):
        if is_gdal_path(prediction):
            continue
        for item_file in items_of(prediction, stac_dir):
            add_scores(item_file, {**scores, "evaluated": evaluated})
            updated.append(item_file)
    return updated
