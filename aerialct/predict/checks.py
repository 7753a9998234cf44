"""Input checks: bands, pixel size, value range and the area of interest of a scene."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.errors import InputError
from aerialct.geo.io import open_raster, read_window
from aerialct.predict.results import BundleLike

#: GSD ratio (either way) beyond which a scene is "far" from the training GSD
GSD_TOLERANCE = 1.25
#: --resample-to-training-gsd refuses to scale a scene by more than this factor either way
MAX_RESAMPLE = 8.0
#: a scene band whose mean lies further than this many training standard deviations from the
#: training mean, or whose spread differs by more than RANGE_RATIO, is not the imagery the
#: model was trained on (e.g. 16-bit pixels given to a model trained on 8-bit chips)
RANGE_SIGMAS = 6.0
RANGE_RATIO = 10.0


def data_bands(ds: Any, bands: Sequence[int] | None, in_chans: int, path: str | Path) -> list[int]:
    """The bands to feed the model: ``bands`` (checked), else all but alpha; as many as it takes."""
    from rasterio.enums import ColorInterp

    if bands:
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise InputError(f"{path}: band(s) {bad} do not exist (it has {ds.count}); fix --bands")
        chosen = list(bands)
    else:
        chosen = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci != ColorInterp.alpha]
    if len(chosen) != in_chans:
        hint = " ".join(f"-b {i}" for i in range(1, in_chans + 1))
        raise InputError(
            f"{path}: {len(chosen)} data band(s) but the checkpoint was trained on {in_chans}; "
            f"pick the bands in training order with --bands (or gdal_translate {hint})"
        )
    return chosen


def scene_gsd(ds: Any) -> float | None:
    """Pixel size in map units for a north-up projected scene; None when not meaningful."""
    return grid_gsd(ds.crs, ds.transform)


def grid_gsd(crs: Any, t: Any) -> float | None:
    """Pixel size in map units of a north-up projected grid (CRS, transform); None otherwise."""
    if crs is None or t is None or not crs.is_projected or t.b != 0 or t.d != 0:
        return None
    return float((abs(t.a) + abs(t.e)) / 2)


def check_gsd(scene: float | None, training: float | None, path: str | Path) -> str | None:
    """A warning text when the scene's GSD is far from the training GSD, else None."""
    if scene is None or not training:
        return None
    ratio = scene / training
    if max(ratio, 1 / ratio) <= GSD_TOLERANCE:
        return None
    if max(ratio, 1 / ratio) > MAX_RESAMPLE:
        return (
            f"{path}: pixel size {scene:g} is {ratio:.2f}x the training pixel size {training:g}; "
            "predictions will be poor; use a model trained near this pixel size"
        )
    return (
        f"{path}: pixel size {scene:g} is {ratio:.2f}x the training pixel size {training:g}; "
        "predictions may be poor; pass --resample-to-training-gsd to predict at the training scale"
    )


def check_resample(scene: float, training: float, ds: Any, path: str | Path) -> None:
    """Refuse --resample-to-training-gsd beyond MAX_RESAMPLE (the size it would make, in words)."""
    ratio = scene / training
    if max(ratio, 1 / ratio) <= MAX_RESAMPLE:
        return
    w, h = math.ceil(ds.width * ratio), math.ceil(ds.height * ratio)
    raise InputError(
        f"{path}: --resample-to-training-gsd would scale the scene {ratio:.3g}x (pixel size "
        f"{scene:g} to the training {training:g}, {ds.width}x{ds.height} -> {w}x{h} px); it "
        f"refuses beyond {MAX_RESAMPLE:g}x: use a model trained near this pixel size"
    )


def check_value_range(ds: Any, bands: Sequence[int], bundle: BundleLike, path: str | Path) -> None:
    """Refuse a scene whose pixel values are not the kind the model was trained on.

    A thumbnail of at most 512 px (valid pixels only) is compared with the training
    statistics stored in the checkpoint: a band mean more than RANGE_SIGMAS training
    standard deviations away, or a spread RANGE_RATIO times larger or smaller (with 16
    valid pixels or more; under 16, every value outside the training clip range), means
    the model would see values it never saw (16-bit or reflectance imagery given to
    a model trained on 8-bit chips) and answer with confident nonsense. An identity
    normalisation (mean 0, std 1) carries no training statistics and is not checked.
    """
    from rasterio.enums import Resampling

    if all(m == 0.0 for m in bundle.mean) and all(s == 1.0 for s in bundle.std):
        return

    scale = max(1.0, max(ds.width, ds.height) / 512)
    shape = (len(bands), max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
    data = read_window(ds, list(bands), out_shape=shape, resampling=Resampling.nearest, masked=True)
    low, high = getattr(bundle, "low", None), getattr(bundle, "high", None)
    for i, band in enumerate(bands):
        values = data[i].compressed().astype(np.float64)
        if values.size == 0:
            continue
        mean, std = float(values.mean()), float(values.std())
        t_mean, t_std = float(bundle.mean[i]), max(float(bundle.std[i]), 1e-6)
        far = abs(mean - t_mean) / t_std > RANGE_SIGMAS
        # a spread needs a sample: a handful of pixels of one roof is narrow and legitimate
        spread = (
            values.size >= 16 and std > 0 and not (1 / RANGE_RATIO <= std / t_std <= RANGE_RATIO)
        )
        if low is not None and high is not None and values.size < 16:
            # few pixels: all of them outside the training range (clipped to its bounds) is
            # imagery of another kind, and the model would see a constant
            spread = bool(((values < low[i]) | (values > high[i])).all())
        if far or spread:
            raise InputError(
                f"{path}: band {band} ({ds.dtypes[band - 1]}) has mean {mean:.4g} and spread "
                f"{std:.4g}, but the model was trained on mean {t_mean:.4g} and spread "
                f"{t_std:.4g}; it would predict nonsense: rescale the scene to the training "
                "range (for a model trained on 8-bit chips: gdal_translate -ot Byte -scale) or "
                "train on chips of this imagery"
            )


def aoi_frame(aoi: Any) -> Any:
    """The area of interest as a frame: read from a file once, or passed on as given (or None)."""
    if aoi is None or hasattr(aoi, "geometry"):
        return aoi
    from aerialct.geo.vector import read_aoi

    return read_aoi(aoi)


def aoi_for(aoi: Any, src: Any, scene: str | os.PathLike) -> Any:
    """The area of interest in ``src``'s CRS, or None."""
    frame = aoi_frame(aoi)
    if frame is None:
        return None
    if src.crs is None:
        raise InputError(f"{scene}: has no CRS, so --aoi cannot be placed on it; assign one")
    from aerialct.geo.vector import aoi_in_crs

    return aoi_in_crs(frame, src.crs)


def touches_aoi(scene: str | os.PathLike, aoi: Any) -> bool:
    """Whether the scene's footprint touches the area of interest (True without one)."""
    frame = aoi_frame(aoi)
    if frame is None:
        return True
    import shapely

    from aerialct.geo.io import no_georef_warning

    with no_georef_warning(), open_raster(scene) as ds:
        geom = aoi_for(frame, ds, scene)
        return bool(shapely.intersects(shapely.box(*ds.bounds), geom))
