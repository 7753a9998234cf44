"""Class raster -> polygons of chosen classes (``aerialct vectorize``).

How it works (one pass over the raster in windows; memory is bounded by the
window size plus the output polygons):

1. Each window is read (with a halo when morphological clean-up is asked, so
   opening/closing give the same pixels as on the whole raster) and the class
   mask is polygonised by :func:`trace_polygons`, a vectorised tracer of pixel
   boundaries that visits edges only (it gives the same polygons as GDAL's
   polygoniser, which the tests check). Coordinates are pixel coordinates, so
   every vertex is an exact integer.
2. The tracer also says which polygon each pixel of the window's border rows
   and columns belongs to. Polygons that continue across a window border are
   found by comparing these labels on both sides of each seam (the full-width
   last row of the previous window row, the last column of the previous window),
   diagonal neighbours included with 8-connectivity, and joined with an
   array-parallel union-find. Their pieces are unioned on the integer grid, which
   is exact: one building is one feature whatever the window size.
3. Geometries are made valid and canonical (collinear vertices removed,
   normalised ring order), holes smaller than ``fill_holes`` are filled, then the
   pixel coordinates go through the raster's affine transform to map
   coordinates, small polygons are dropped (``min_area``), and the optional
   simplification and orthogonal regularisation run in map units.

Connectivity is 8 by default (pixels touching at a corner belong to one
building, as a photo-interpreter would draw them); ``connectivity=4`` is
available. An 8-connected building whose pixels only touch at a corner is a
valid MultiPolygon (OGC polygons may not pinch), still one feature.
"""

from aerialct.vectorize.layer import Polygonised, polygonise
from aerialct.vectorize.regularise import regularize_polygons
from aerialct.vectorize.trace import trace_polygons
from aerialct.vectorize.windows import MORPH_OPS, parse_morph
from aerialct.vectorize.write import VectorizeBatch, VectorizeResult, vectorize, vectorize_many

__all__ = [
    "MORPH_OPS",
    "Polygonised",
    "VectorizeBatch",
    "VectorizeResult",
    "parse_morph",
    "polygonise",
    "regularize_polygons",
    "trace_polygons",
    "vectorize",
    "vectorize_many",
]
