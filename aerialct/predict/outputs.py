"""Output files: names, part-file profiles and tags, GDAL settings, resampling back, completeness."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.geo.classraster import class_tags, tag_class_raster
from aerialct.geo.cog import PART_BLOCK, PART_OPTIONS, gtiff_profile
from aerialct.geo.tags import CLASSES_TAG, SOURCE_TAG
from aerialct.predict.stream import PROB_SCALE


def output_paths(scene: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """The files ``predict`` writes for ``scene`` in ``out_dir``, by kind."""
    stem = Path(scene).stem
    d = Path(out_dir)
    return {
        "classes": d / f"{stem}_classes.tif",
        "probabilities": d / f"{stem}_probabilities.tif",
        "quicklook": d / f"{stem}_quicklook.png",
    }


def part_profile(src: Any, count: int, nodata: int | None) -> dict[str, Any]:
    """GTiff profile of a uint8 part file on ``src``'s grid (striped when under 16 px)."""
    prof = gtiff_profile(src.width, src.height, count, "uint8", src.crs, src.transform, nodata,
                         **PART_OPTIONS)  # fmt: skip
    if src.width < 16 or src.height < 16:
        prof["tiled"] = False
        del prof["blockxsize"], prof["blockysize"]
    return prof


def tag_class_part(ds: Any, classes: ClassTable, scene: Path) -> None:
    """Class table, colours and source scene on the class raster's part file."""
    tag_class_raster(ds, classes, source=scene.name)
    ds.set_band_description(1, "class")


def tag_prob_part(ds: Any, classes: ClassTable, scene: Path) -> None:
    """Band names, class table, scale and source scene on the probability part file."""
    for i, name in enumerate(classes.names):
        ds.set_band_description(i + 1, name)
    ds.update_tags(**class_tags(classes, source=scene.name, prob_scale=PROB_SCALE))


def part_name(tmp: Path, tag: str) -> Path:
    """``<tmp>.<tag>.tif``: atomic_output's clean-up of ``<tmp>.*`` removes it on error."""
    return tmp.with_name(f"{tmp.name}.{tag}.tif")


def gdal_env(ds: Any, size: int, gpu: bool) -> Any:
    """GDAL settings for one scene, unless the user set them in the environment.

    The block cache is capped at a few window rows (GDAL's default, 5% of RAM,
    would let cached input and output blocks grow with the scene area). With a
    GPU, decoding and compression use all CPU cores (GDAL_NUM_THREADS) so that
    the reader keeps up with the model; on the CPU the cores belong to the model.
    """
    import rasterio

    opts: dict[str, Any] = {}
    if "GDAL_CACHEMAX" not in os.environ:
        # one window row of input (the next one overlaps it) and a block row of output
        rows = max(size, (ds.block_shapes[0][0] if ds.block_shapes else size))
        need = rows * ds.width * ds.count * np.dtype(ds.dtypes[0]).itemsize
        need += PART_BLOCK * ds.width * 2
        opts["GDAL_CACHEMAX"] = int(max(16 << 20, 1.25 * need))
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
    width, height = max(1, math.ceil(ds.width / fx)), max(1, math.ceil(ds.height / fy))
    transform = t @ Affine.scale(fx, fy)
    return WarpedVRT(
        ds,
        crs=ds.crs,
        transform=transform,
        width=width,
        height=height,
        resampling=Resampling.bilinear,
    )


def warp_back(part: Path, like: Any, dest: Path, nodata: int | None, categorical: bool) -> None:
    """Stream ``part`` (on the training grid) onto the grid of ``like`` into a new part ``dest``."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window, subdivide

    with rasterio.open(part) as p:
        vrt_kw: dict[str, Any] = {
            "crs": like.crs,
            "transform": like.transform,
            "width": like.width,
            "height": like.height,
            "resampling": Resampling.nearest if categorical else Resampling.bilinear,
        }
        if nodata is not None:
            vrt_kw["nodata"] = nodata
        prof = part_profile(like, p.count, nodata)
        with WarpedVRT(p, **vrt_kw) as v, rasterio.open(dest, "w", **prof) as out:
            whole = Window(0, 0, like.width, like.height)
            for win in subdivide(whole, PART_BLOCK, like.width):  # block rows
                out.write(v.read(window=win), window=win)
            if categorical:
                out.write_colormap(1, p.colormap(1))
            out.update_tags(**p.tags())
            out.update_tags(1, **p.tags(1))  # class names as band metadata
            for i, d in enumerate(p.descriptions):
                if d:
                    out.set_band_description(i + 1, d)
    part.unlink(missing_ok=True)


def class_histogram(path: Path) -> tuple[np.ndarray, int]:
    """Pixels per class id (256 bins) of a class raster, and its nodata count."""
    import rasterio

    hist = np.zeros(256, dtype=np.int64)
    with rasterio.open(path) as ds:
        for _, win in ds.block_windows(1):
            hist += np.bincount(ds.read(1, window=win).ravel(), minlength=256)
    return hist, int(hist[IGNORE_INDEX])


def complete_output(
    scene: str | os.PathLike, out: Path, *, probabilities: bool, quicklook: bool
) -> bool:
    """Whether ``out`` (and the side outputs asked for) is a finished prediction of ``scene``.

    A file is taken as complete only when it opens, carries aerialct's class tag and
    names this scene as its source, and has the scene's size; a partial or foreign
    file is not (and ``predict`` then refuses to replace it without ``--overwrite``).
    """
    import rasterio

    from aerialct.geo.io import no_georef_warning

    paths = output_paths(scene, out.parent)
    wanted = [out] + ([paths["probabilities"]] if probabilities else [])
    try:
        with no_georef_warning(), rasterio.open(scene) as src:
            size = (src.width, src.height)
        for p in wanted:
            with no_georef_warning(), rasterio.open(p) as ds:
                tags = ds.tags()
                if CLASSES_TAG not in tags or tags.get(SOURCE_TAG) != Path(scene).name:
                    return False
                if (ds.width, ds.height) != size:
                    return False
    except Exception:
        return False
    return not quicklook or paths["quicklook"].is_file()
