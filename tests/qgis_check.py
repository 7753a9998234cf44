"""Open aerialct's outputs with QGIS's own Python, as a reviewer's QGIS does, and report.

Run with the interpreter that has ``qgis.core`` (Debian/Ubuntu: ``apt-get install
python3-qgis``, then ``/usr/bin/python3``), not aerialct's environment:

    /usr/bin/python3 tests/qgis_check.py OUTPUT... [--render PNG --scene SCENE.tif]

Each OUTPUT is a GeoPackage (every data layer is opened) or a raster. Prints one JSON
object on stdout: per layer, whether it is valid, its renderer and the classes, ranges or
colour it draws with (from the style QGIS loaded on open, nothing set here), and the
styles stored with it. ``--render`` draws the vector layers over ``--scene`` into a PNG.
``tests/test_qgis.py`` runs it and checks the answer; the README shows its picture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _colour(c) -> list[int]:
    return [c.red(), c.green(), c.blue(), c.alpha()]


def _symbol_colour(symbol) -> list[int]:
    return _colour(symbol.symbolLayer(0).color())


def describe_vector(layer) -> dict:
    r = layer.renderer()
    out: dict = {"valid": layer.isValid(), "renderer": r.type(), "features": layer.featureCount()}
    if r.type() == "categorizedSymbol":
        out["attribute"] = r.classAttribute()
        out["categories"] = [
            {"value": c.value(), "label": c.label(), "color": _symbol_colour(c.symbol())}
            for c in r.categories()
        ]
    elif r.type() == "graduatedSymbol":
        out["attribute"] = r.classAttribute()
        out["ranges"] = [
            {"lower": g.lowerValue(), "upper": g.upperValue(), "color": _symbol_colour(g.symbol())}
            for g in r.ranges()
        ]
    elif r.type() == "singleSymbol":
        out["color"] = _symbol_colour(r.symbol())
    n, _ids, names, _descriptions, _ = layer.listStylesInDatabase()
    out["styles"] = list(names)[:n]  # the first n are this layer's
    return out


def describe_raster(layer) -> dict:
    r = layer.renderer()
    out: dict = {"valid": layer.isValid(), "renderer": r.type()}
    if r.type() == "paletted":
        out["classes"] = [
            {"value": int(c.value), "label": c.label, "color": _colour(c.color)}
            for c in r.classes()
        ]
    return out


def open_layers(path: str):
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    if path.lower().endswith(".gpkg"):
        from osgeo import ogr

        ds = ogr.Open(path)
        names = [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())]
        ds = None
        return [
            (n, QgsVectorLayer(f"{path}|layername={n}", n, "ogr"))
            for n in names
            if n != "layer_styles"
        ]
    return [(os.path.basename(path), QgsRasterLayer(path, os.path.basename(path)))]


def render(layers: list, scene: str, png: str, size: int) -> None:
    """Draw ``layers`` (top first) over the raster ``scene`` into ``png``."""
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings, QgsRasterLayer
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    base = QgsRasterLayer(scene, "scene")
    settings = QgsMapSettings()
    settings.setLayers([*layers, base])
    settings.setDestinationCrs(base.crs())
    settings.setExtent(base.extent())
    w = base.width()
    h = base.height()
    scale = size / max(w, h)
    settings.setOutputSize(QSize(max(1, round(w * scale)), max(1, round(h * scale))))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(png, "PNG")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outputs", nargs="+")
    ap.add_argument("--render", help="PNG to draw the vector layers over --scene into")
    ap.add_argument("--scene", help="the raster under the rendered layers")
    ap.add_argument("--size", type=int, default=900, help="longest side of the PNG (pixels)")
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import Qgis, QgsApplication, QgsVectorLayer

    app = QgsApplication([], False)
    app.initQgis()
    report: dict = {"qgis": Qgis.version(), "layers": {}}
    drawn = []
    for path in args.outputs:
        for name, layer in open_layers(path):
            key = f"{os.path.basename(path)}:{name}"
            if isinstance(layer, QgsVectorLayer):
                report["layers"][key] = describe_vector(layer)
                drawn.append(layer)
            else:
                report["layers"][key] = describe_raster(layer)
    if args.render:
        render(drawn, args.scene, args.render, args.size)
        report["render"] = args.render
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    sys.stdout.flush()
    os._exit(0)  # QgsApplication's exit can crash headless interpreters; the report is out


if __name__ == "__main__":
    sys.exit(main())
