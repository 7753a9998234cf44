"""A synthetic city cut into adjacent tiles with rasterio windows: a flight in miniature."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from aerialct.classes import POTSDAM


def city_classes(path: Path, size: int = 512, seed: int = 3, gsd: float = 0.5) -> Path:
    """A class raster (Potsdam ids, class tag, nodata 255) of a synthetic town."""
    from aerialct.data.synth import generate_scene

    scene = generate_scene(size, seed, gsd=gsd)
    write_class_raster(path, scene.labels, scene.transform, scene.crs)
    return path


def write_class_raster(path: Path, data: np.ndarray, transform, crs, count: int = 1) -> Path:
    """Write class ids (H, W) or probabilities (K, H, W) as a tiled GeoTIFF."""
    arr = data if data.ndim == 3 else data[None]
    prof = {
        "driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
        "dtype": "uint8", "crs": crs, "transform": transform, "compress": "deflate",
    }  # fmt: skip
    if data.ndim == 2:
        prof["nodata"] = 255
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr)
        if data.ndim == 2:
            dst.update_tags(AERIALCT_CLASSES=json.dumps(POTSDAM.to_list()))
    return path


def cut(src: Path, out: Path, rows: list[int], cols: list[int], suffix: str = "") -> list[Path]:
    """Cut ``src`` at the pixel rows and columns given (edges, 0 and the size included)
    into exactly adjacent tiles ``r<i>_c<j><suffix>.tif``, as a delivery of tiles is."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(src) as ds:
        tags = ds.tags()
        for i, (r0, r1) in enumerate(itertools.pairwise(rows)):
            for j, (c0, c1) in enumerate(itertools.pairwise(cols)):
                win = Window(c0, r0, c1 - c0, r1 - r0)
                prof = ds.profile | {
                    "width": c1 - c0, "height": r1 - r0,
                    "transform": window_transform(win, ds.transform),
                }  # fmt: skip
                prof.pop("blockxsize", None), prof.pop("blockysize", None), prof.pop("tiled", None)
                path = out / f"r{i}_c{j}{suffix}.tif"
                with rasterio.open(path, "w", **prof) as dst:
                    dst.write(ds.read(window=win))
                    dst.update_tags(**tags)
                paths.append(path)
    return paths
