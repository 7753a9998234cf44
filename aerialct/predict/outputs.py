"""Output files: names, GDAL settings for a scene, and the training-pixel-size grid."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.geo.cog import PART_BLOCK
from aerialct.geo.inputs import source_label
from aerialct.geo.io import block_cache_cap


def output_paths(scene: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """The files ``predict`` writes for ``scene`` in ``out_dir``, by kind."""
    return stem_paths(Path(source_label(scene)).stem, out_dir)  # no query in the name


def stem_paths(stem: str, out_dir: str | os.PathLike) -> dict[str, Path]:
    """The files ``predict`` writes for the output stem ``stem`` in ``out_dir``, by kind."""
    d = Path(out_dir)
    return {
        "classes": d / f"{stem}_classes.tif",
        "probabilities": d / f"{stem}_probabilities.tif",
        "quicklook": d / f"{stem}_quicklook.png",
    }


def gdal_env(ds: Any, size: int, gpu: bool) -> Any:
    """GDAL settings for one scene, unless the user set them in the environment.

    The block cache is capped at a few window rows (GDAL's default, 5% of RAM,
    would let cached input and output blocks grow with the scene area). With a
    GPU, decoding and compression use all CPU cores (GDAL_NUM_THREADS) so that
    the reader keeps up with the model; on the CPU the cores belong to the model.
    """
    import rasterio

    # one window row of input (the next one overlaps it) and a block row of output
    rows = max(size, (ds.block_shapes[0][0] if ds.block_shapes else size))
    need = rows * ds.width * ds.count * np.dtype(ds.dtypes[0]).itemsize
    need += PART_BLOCK * ds.width * 2
    opts: dict[str, Any] = dict(block_cache_cap(need, 16 << 20))
    if gpu and "GDAL_NUM_THREADS" not in os.environ:
        opts["GDAL_NUM_THREADS"] = "ALL_CPUS"
    return rasterio.Env(**opts)


def training_grid_vrt(ds: Any, gsd: float) -> Any:
    """A bilinear WarpedVRT of ``ds`` at the pixel size ``gsd``, same CRS and origin."""
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    t = ds.transform
    fx, fy = gsd / abs(t.a), gsd / abs(t.e)
    height, width = training_grid_shape(ds.height, ds.width, t, gsd)
    transform = t @ Affine.scale(fx, fy)
    return WarpedVRT(
        ds,
        crs=ds.crs,
        transform=transform,
        width=width,
        height=height,
        resampling=Resampling.bilinear,
    )


def training_grid_shape(height: int, width: int, t: Any, gsd: float) -> tuple[int, int]:
    """(height, width) of a ``height`` x ``width`` grid with transform ``t`` at the pixel size ``gsd``."""
    fx, fy = gsd / abs(t.a), gsd / abs(t.e)
    return max(1, math.ceil(height / fy)), max(1, math.ceil(width / fx))
