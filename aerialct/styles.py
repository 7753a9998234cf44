"""Layer styles that QGIS (and SLD readers) apply on open: the one owner of aerialct's symbology.

- Vector layers: QGIS reads the ``layer_styles`` table of a GeoPackage when it opens a
  layer and applies the row marked ``useAsDefault``. :func:`write_layer_styles` writes
  that table with :mod:`sqlite3` (registered in ``gpkg_contents`` as an attributes table,
  as QGIS itself does), each row holding a QML document (QGIS) and an SLD 1.1 document
  (other clients).
- Class rasters: QGIS reads ``<raster stem>.qml`` beside a raster as its default style;
  :func:`class_raster_qml` is a paletted renderer with exactly the class table's classes
  and the nodata value 255 (transparent), labelled with the class names.

The styles: ``vectorize`` layers by class colour (and an optional graduated style on
``mean_confidence``), ``evaluate``'s review layers tp green, fp red, fn blue.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from aerialct.classes import IGNORE_INDEX, ClassTable

STYLE_TABLE = "layer_styles"
"""The table of a GeoPackage where QGIS looks for a layer's styles."""

REVIEW_COLOURS = {"tp": (0, 170, 0), "fp": (220, 30, 30), "fn": (30, 90, 255)}
"""Review layers: true positives green, false positives red, false negatives blue."""

REVIEW_TITLES = {
    "tp": "true positive (matched)",
    "fp": "false positive (predicted, no reference)",
    "fn": "false negative (reference, missed)",
}

CONFIDENCE_STEPS = (
    (0.0, 0.5, (215, 25, 28)),
    (0.5, 0.7, (253, 174, 97)),
    (0.7, 0.9, (166, 217, 106)),
    (0.9, 1.0, (26, 150, 65)),
)
"""Graduated confidence style: the ranges of ``mean_confidence`` and their colours."""

FILL_ALPHA = 90
"""Fill opacity (of 255): the imagery stays visible under the polygons."""

_QML_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


@dataclass(frozen=True)
class LayerStyle:
    """One row of ``layer_styles``: a named style of one layer."""

    layer: str
    name: str
    qml: str
    sld: str
    description: str = ""
    default: bool = False


def _rgba(rgb: Sequence[int], alpha: int = 255) -> str:
    return f"{rgb[0]},{rgb[1]},{rgb[2]},{alpha}"


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def _outline(rgb: Sequence[int]) -> tuple[int, int, int]:
    """The outline colour of a fill: the fill colour, darkened when it is very light."""
    r, g, b = (int(v) for v in rgb[:3])
    if 0.299 * r + 0.587 * g + 0.114 * b > 200:  # white-ish fills need a visible edge
        return (r * 3 // 5, g * 3 // 5, b * 3 // 5)
    return (r, g, b)


def _fill_symbol(name: str, rgb: Sequence[int], width: float = 0.5) -> str:
    """A QGIS fill symbol: translucent fill, solid outline (both the old and new property forms)."""
    props = {
        "color": _rgba(rgb, FILL_ALPHA),
        "outline_color": _rgba(_outline(rgb)),
        "outline_style": "solid",
        "outline_width": f"{width:g}",
        "outline_width_unit": "MM",
        "style": "solid",
        "joinstyle": "miter",
    }
    options = "".join(
        f'<Option type="QString" name={quoteattr(k)} value={quoteattr(v)}/>'
        for k, v in props.items()
    )
    legacy = "".join(f"<prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items())
    return (
        f'<symbol type="fill" name={quoteattr(name)} alpha="1" clip_to_extent="1" force_rhr="0">'
        f'<layer class="SimpleFill" enabled="1" locked="0" pass="0">'
        f'<Option type="Map">{options}</Option>{legacy}</layer></symbol>'
    )


def _qml(renderer: str) -> str:
    return (
        f'{_QML_HEAD}<qgis version="3.22.0" styleCategories="Symbology">{renderer}'
        "<blendMode>0</blendMode><featureBlendMode>0</featureBlendMode>"
        "<layerGeometryType>2</layerGeometryType></qgis>\n"
    )


def _sld(layer: str, title: str, rules: Sequence[tuple[str, str, Sequence[int]]]) -> str:
    """An SLD 1.1 document: one rule per (title, OGC filter or "", fill colour)."""
    body = []
    for rule_title, ogc_filter, rgb in rules:
        body.append(
            f"<se:Rule><se:Name>{_esc(rule_title)}</se:Name>"
            f"<se:Description><se:Title>{_esc(rule_title)}</se:Title></se:Description>"
            f"{ogc_filter}<se:PolygonSymbolizer><se:Fill>"
            f'<se:SvgParameter name="fill">{_hex(rgb)}</se:SvgParameter>'
            f'<se:SvgParameter name="fill-opacity">{FILL_ALPHA / 255:.2f}</se:SvgParameter>'
            f'</se:Fill><se:Stroke><se:SvgParameter name="stroke">{_hex(_outline(rgb))}'
            '</se:SvgParameter><se:SvgParameter name="stroke-width">2</se:SvgParameter>'
            "</se:Stroke></se:PolygonSymbolizer></se:Rule>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<StyledLayerDescriptor version="1.1.0" xmlns="http://www.opengis.net/sld" '
        'xmlns:ogc="http://www.opengis.net/ogc" xmlns:se="http://www.opengis.net/se" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.opengis.net/sld '
        'http://schemas.opengis.net/sld/1.1.0/StyledLayerDescriptor.xsd">'
        f"<NamedLayer><se:Name>{_esc(layer)}</se:Name><UserStyle>"
        f"<se:Name>{_esc(title)}</se:Name><se:FeatureTypeStyle>{''.join(body)}"
        "</se:FeatureTypeStyle></UserStyle></NamedLayer></StyledLayerDescriptor>\n"
    )


def _esc(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(str(text))


def _equals(field: str, value: str) -> str:
    return (
        f"<ogc:Filter><ogc:PropertyIsEqualTo><ogc:PropertyName>{_esc(field)}</ogc:PropertyName>"
        f"<ogc:Literal>{_esc(value)}</ogc:Literal></ogc:PropertyIsEqualTo></ogc:Filter>"
    )


def _between(field: str, low: float, high: float) -> str:
    return (
        f"<ogc:Filter><ogc:And><ogc:PropertyIsGreaterThanOrEqualTo><ogc:PropertyName>{field}"
        f"</ogc:PropertyName><ogc:Literal>{low:g}</ogc:Literal>"
        f"</ogc:PropertyIsGreaterThanOrEqualTo><ogc:PropertyIsLessThan><ogc:PropertyName>"
        f"{field}</ogc:PropertyName><ogc:Literal>{high:g}</ogc:Literal>"
        "</ogc:PropertyIsLessThan></ogc:And></ogc:Filter>"
    )


def class_style(
    layer: str, table: ClassTable, names: Sequence[str], field: str = "class"
) -> LayerStyle:
    """Polygons by class: each of ``names`` (classes of ``table``) in its table colour."""
    classes = [c for c in table if c.name in set(names)] or list(table)
    cats = "".join(
        f'<category render="true" symbol="{i}" value={quoteattr(c.name)} label={quoteattr(c.name)}/>'
        for i, c in enumerate(classes)
    )
    symbols = "".join(_fill_symbol(str(i), c.color) for i, c in enumerate(classes))
    renderer = (
        f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" '
        f'enableorderby="0" forceraster="0"><categories>{cats}</categories>'
        f"<symbols>{symbols}</symbols></renderer-v2>"
    )
    rules = [(c.name, _equals(field, c.name), c.color) for c in classes]
    return LayerStyle(
        layer,
        "by class",
        _qml(renderer),
        _sld(layer, "by class", rules),
        "each class in its colour of the class table (aerialct)",
        default=True,
    )


def confidence_style(layer: str, field: str = "mean_confidence") -> LayerStyle:
    """Polygons graduated by the model's mean confidence (red low, green high)."""
    ranges, symbols, rules = [], [], []
    for i, (low, high, rgb) in enumerate(CONFIDENCE_STEPS):
        label = f"{low:g} - {high:g}"
        ranges.append(
            f'<range render="true" symbol="{i}" lower="{low:.6f}" upper="{high:.6f}" '
            f"label={quoteattr(label)}/>"
        )
        symbols.append(_fill_symbol(str(i), rgb))
        rules.append((label, _between(field, low, high + (1e-9 if high >= 1 else 0)), rgb))
    renderer = (
        f'<renderer-v2 type="graduatedSymbol" graduatedMethod="GraduatedColor" '
        f'attr={quoteattr(field)} symbollevels="0" enableorderby="0" forceraster="0">'
        f"<ranges>{''.join(ranges)}</ranges><symbols>{''.join(symbols)}</symbols>"
        '<classificationMethod id="Custom"><labelFormat format="%1 - %2" '
        'trimtrailingzeroes="1" labelprecision="2"/></classificationMethod></renderer-v2>'
    )
    return LayerStyle(
        layer,
        "confidence",
        _qml(renderer),
        _sld(layer, "confidence", rules),
        f"graduated by {field}, the model's mean class probability (aerialct)",
    )


def review_style(layer: str) -> LayerStyle:
    """A review layer (``tp``, ``fp`` or ``fn``) in its one colour."""
    rgb = REVIEW_COLOURS[layer]
    title = REVIEW_TITLES[layer]
    renderer = (
        '<renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">'
        f"<symbols>{_fill_symbol('0', rgb, width=0.7)}</symbols></renderer-v2>"
    )
    return LayerStyle(
        layer, "review", _qml(renderer), _sld(layer, title, [(title, "", rgb)]), title, True
    )


def vector_styles(
    layer: str, table: ClassTable, names: Sequence[str], fields: Sequence[str]
) -> list[LayerStyle]:
    """The styles of a ``vectorize`` layer: by class (default), by confidence when it has it."""
    styles = [class_style(layer, table, names)]
    if "mean_confidence" in fields:
        styles.append(confidence_style(layer))
    return styles


_CREATE = f"""CREATE TABLE IF NOT EXISTS {STYLE_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256),
    f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
    useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""

_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"


def write_layer_styles(gpkg: str | os.PathLike, styles: Sequence[LayerStyle]) -> None:
    """Add ``styles`` to the ``layer_styles`` table of the GeoPackage ``gpkg``.

    The table is created (and registered in ``gpkg_contents``) when missing. A style of
    the same layer and name is replaced; a default style makes the layer's others
    non-default. Call it on a closed file, inside the atomic write (before it is checked
    and renamed).
    """
    con = sqlite3.connect(os.fspath(gpkg))
    try:
        with con:
            con.execute(_CREATE)
            registered = con.execute(
                "SELECT 1 FROM gpkg_contents WHERE table_name = ?", (STYLE_TABLE,)
            ).fetchone()
            if not registered:
                con.execute(
                    "INSERT INTO gpkg_contents (table_name, data_type, identifier, "
                    f"description, last_change) VALUES (?, 'attributes', ?, ?, {_NOW})",
                    (STYLE_TABLE, STYLE_TABLE, "QGIS layer styles (aerialct)"),
                )
            for s in styles:
                geom = con.execute(
                    "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                    (s.layer,),
                ).fetchone()
                con.execute(
                    f"DELETE FROM {STYLE_TABLE} WHERE f_table_name = ? AND styleName = ?",
                    (s.layer, s.name),
                )
                if s.default:
                    con.execute(
                        f"UPDATE {STYLE_TABLE} SET useAsDefault = 0 WHERE f_table_name = ?",
                        (s.layer,),
                    )
                con.execute(
                    f"INSERT INTO {STYLE_TABLE} (f_table_catalog, f_table_schema, f_table_name, "
                    "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, "
                    f"description, owner, ui, update_time) VALUES "
                    f"('', '', ?, ?, ?, ?, ?, ?, ?, '', NULL, {_NOW})",
                    (s.layer, geom[0] if geom else "geom", s.name, s.qml, s.sld,
                     int(s.default), s.description),
                )  # fmt: skip
    finally:
        con.close()


def read_layer_styles(gpkg: str | os.PathLike) -> list[dict]:
    """The rows of a GeoPackage's ``layer_styles`` table (empty when it has none)."""
    con = sqlite3.connect(f"file:{Path(gpkg).resolve()}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        try:
            rows = con.execute(f"SELECT * FROM {STYLE_TABLE} ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []
        return [dict(r) for r in rows]
    finally:
        con.close()


def class_raster_qml(table: ClassTable) -> str:
    """A QGIS paletted renderer of exactly ``table``'s classes, plus nodata 255 (transparent)."""
    entries = [
        f'<paletteEntry value="{c.id}" color="{_hex(c.color)}" alpha="255" label={quoteattr(c.name)}/>'
        for c in table
    ]
    entries.append(
        f'<paletteEntry value="{IGNORE_INDEX}" color="#000000" alpha="0" label="nodata"/>'
    )
    return (
        f'{_QML_HEAD}<qgis version="3.22.0" styleCategories="Symbology"><pipe>'
        '<provider><resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" '
        'zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/></provider>'
        '<rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">'
        f"<colorPalette>{''.join(entries)}</colorPalette></rasterrenderer>"
        '<brightnesscontrast brightness="0" contrast="0" gamma="1"/>'
        '<huesaturation saturation="0" grayscaleMode="0" invertColors="0" colorizeOn="0" '
        'colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>'
        '<rasterresampler maxOversampling="2"/></pipe><blendMode>0</blendMode></qgis>\n'
    )


def qml_path(raster: str | os.PathLike) -> Path:
    """Where QGIS looks for a raster's default style: ``<stem>.qml`` beside it."""
    p = Path(raster)
    return p.with_suffix(".qml")
