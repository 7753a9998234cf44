"""Pixel and building-level evaluation (``aerialct evaluate``).

- :mod:`~aerialct.evaluate.pixel`: class rasters against label rasters (confusion
  matrix, per-class IoU/F1) in blocks of rows; folders matched by name; chip masks.
- :mod:`~aerialct.evaluate.reference`: a polygon reference burnt onto the prediction's grid.
- :mod:`~aerialct.evaluate.buildings`: one-to-one building matching, precision/recall/F1,
  review layers.
- :mod:`~aerialct.evaluate.metrics`: the confusion matrix and its scores (shared with
  training), :mod:`~aerialct.evaluate.object_scores`: COCO-style AP of scored polygons.
- :mod:`~aerialct.evaluate.dispatch`: :func:`evaluate`, by the kind of inputs.

Importing this package is light (numpy only; rasterio, shapely and geopandas are
imported where they are used), so the training engine imports
:mod:`aerialct.evaluate.metrics` at no cost.
"""

from __future__ import annotations

from aerialct.evaluate.buildings import (
    BuildingEvaluation,
    evaluate_building_files,
    evaluate_buildings,
    match_buildings,
    match_vector_folders,
)
from aerialct.evaluate.dispatch import evaluate
from aerialct.evaluate.pixel import (
    PairResult,
    PixelEvaluation,
    evaluate_pixels,
    match_chips,
    match_folders,
)
from aerialct.evaluate.reference import rasterize_reference

__all__ = [
    "BuildingEvaluation",
    "PairResult",
    "PixelEvaluation",
    "evaluate",
    "evaluate_building_files",
    "evaluate_buildings",
    "evaluate_pixels",
    "match_buildings",
    "match_chips",
    "match_folders",
    "match_vector_folders",
    "rasterize_reference",
]
