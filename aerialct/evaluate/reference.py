"""A polygon reference rasterised onto a prediction's grid, for pixel scores."""

from __future__ import annotations

from pathlib import Path

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.errors import InputError


def rasterize_reference(
    prediction: str | Path,
    reference: str | Path,
    out: Path,
    *,
    burn: str = "building",
    layer: str | None = None,
) -> ClassTable:
    """Burn reference polygons onto the prediction's grid with its class table; return the table.

    Every polygon is class ``burn``; pixels no polygon covers are the table's
    ``background`` class, or ignore when the table has none (e.g. Potsdam), so they
    are not scored. Polygons in another CRS are reprojected.
    """
    import rasterio
    import shapely
    from rasterio import features

    from aerialct.geo.classraster import check_class_raster, class_tags, raster_class_table
    from aerialct.geo.cog import gtiff_profile
    from aerialct.geo.io import open_raster
    from aerialct.geo.vector import read_polygons

    with open_raster(prediction) as p:
        check_class_raster(p, "prediction (class raster)")
        table = raster_class_table(p)
        assert table is not None
        try:
            value = table.id_of(burn)
        except ValueError as e:
            raise InputError(f"{reference}: cannot burn the polygons as {burn!r}: {e}") from e
        frame = read_polygons(reference, layer)
        if frame.crs is not None and p.crs is not None and frame.crs != p.crs:
            frame = frame.to_crs(p.crs)
        geoms = [g for g in frame.geometry.values if g is not None and not g.is_empty]
        fill = IGNORE_INDEX if table.background is None else table.background
        b = p.bounds
        if not geoms or not shapely.intersects(
            shapely.union_all(geoms), shapely.box(b.left, b.bottom, b.right, b.top)
        ):
            raise InputError(
                f"{reference}: no polygon touches {prediction}; check the reference's CRS and extent"
            )
        data = features.rasterize(
            [(g, value) for g in geoms],
            out_shape=(p.height, p.width),
            transform=p.transform,
            fill=fill,
            dtype="uint8",
        )
        prof = gtiff_profile(p.width, p.height, 1, "uint8", p.crs, p.transform, IGNORE_INDEX,
                             compress="DEFLATE")  # fmt: skip
        with rasterio.open(out, "w", **prof) as dst:
            dst.write(data, 1)
            dst.update_tags(**class_tags(table))
    return table
