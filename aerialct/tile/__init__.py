"""``aerialct tile``: cut georeferenced scenes into training chips (the chips dataset).

Public API, re-exported from the modules that own it (see :mod:`aerialct.tile.run`).
"""

from aerialct.tile.run import (
    DEFAULT_CREATION_OPTIONS,
    SceneReport,
    TileResult,
    read_split_file,
    resize_bilinear,
    resize_nearest,
    tile_potsdam,
    tile_scenes,
)

__all__ = [
    "DEFAULT_CREATION_OPTIONS",
    "SceneReport",
    "TileResult",
    "read_split_file",
    "resize_bilinear",
    "resize_nearest",
    "tile_potsdam",
    "tile_scenes",
]
