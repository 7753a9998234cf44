"""``aerialct tile``: cut georeferenced scenes into training chips (the chips dataset).

The package follows the run's steps:

- :mod:`~aerialct.tile.scenes`: scene specs (images checked, raster or vector labels
  attached; the Potsdam release's layout and split files);
- :mod:`~aerialct.tile.worker`: the per-band chip writer (read a row band once, cut,
  pad, resize, write chips and masks) and the resizers;
- :mod:`~aerialct.tile.stats`: band statistics and class shares;
- :mod:`~aerialct.tile.run`: the engine (window grid, splits, area of interest, tasks,
  index and ``dataset.json`` through :mod:`aerialct.data.index`) and the two entry
  points :func:`tile_scenes` and :func:`tile_potsdam`;
- :mod:`~aerialct.tile.result`: what a run returns.
"""

from aerialct.tile.result import SceneReport, TileResult
from aerialct.tile.run import DEFAULT_CREATION_OPTIONS, tile_potsdam, tile_scenes
from aerialct.tile.scenes import read_split_file
from aerialct.tile.stats import band_statistics
from aerialct.tile.worker import resize_bilinear, resize_nearest

__all__ = [
    "DEFAULT_CREATION_OPTIONS",
    "SceneReport",
    "TileResult",
    "band_statistics",
    "read_split_file",
    "resize_bilinear",
    "resize_nearest",
    "tile_potsdam",
    "tile_scenes",
]
