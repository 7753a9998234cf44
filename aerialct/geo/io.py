"""Raster reading: checked opening, reads that name the file, verification, grid comparison."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.errors import InputError, RasterError
from aerialct.geo.inputs import is_gdal_path

if TYPE_CHECKING:
    import rasterio


@contextlib.contextmanager
def no_georef_warning(enabled: bool = True) -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning (labels and chips without a CRS are on purpose)."""
    if not enabled:
        yield
        return
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def open_raster(path: str | os.PathLike, *, require_crs: bool = False) -> rasterio.DatasetReader:
    """Open a raster for reading, turning rasterio's errors into one-line messages."""
    import rasterio
    from rasterio.errors import RasterioIOError

    p: Any = os.fspath(path) if is_gdal_path(path) else Path(path)  # URLs pass untouched
    if isinstance(p, Path) and not p.exists():
        raise RasterError(f"{p}: no such file; check the path")
    if isinstance(p, Path) and p.is_dir():
        raise RasterError(f"{p}: is a folder, not a raster; give a GeoTIFF file")
    env = {}
    if not isinstance(p, Path) and "GDAL_DISABLE_READDIR_ON_OPEN" not in os.environ:
        # a remote scene: no listing of its folder and probing for sidecars, one request each
        env["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    try:
        with rasterio.Env(**env):
            ds = rasterio.open(p)
    except RasterioIOError as e:
        first = str(e).splitlines()[0] if str(e) else "unreadable"
        raise RasterError(
            f"{p}: not a readable raster ({first}); give a GeoTIFF or another GDAL raster"
        ) from e
    if require_crs and ds.crs is None:
        ds.close()
        raise RasterError(
            f"{p}: has no CRS; assign one (gdal_edit.py -a_srs EPSG:XXXX {p}) or pass --allow-no-crs"
        )
    return ds


def block_cache_cap(need: float, floor: int) -> dict[str, int]:
    """GDAL's block cache capped at 1.25x ``need`` bytes, at least ``floor`` (rasterio.Env
    options), or nothing when the user set GDAL_CACHEMAX: their cap wins.

    GDAL's default cap (5% of RAM) keeps every block a streaming reader ever decoded, and
    the memory of each new block costs page faults; tile, predict and vectorize read each
    block once, or again only within the next band or window row, so they cap the cache at
    what that needs.
    """
    if "GDAL_CACHEMAX" in os.environ:
        return {}
    return {"GDAL_CACHEMAX": int(max(floor, 1.25 * need))}


def describe_grid(ds: rasterio.DatasetReader) -> str:
    return f"{ds.width}x{ds.height} px, CRS {ds.crs}, transform {tuple(round(v, 6) for v in ds.transform[:6])}"


def grid_mismatch(
    a: rasterio.DatasetReader, b: rasterio.DatasetReader, tol: float = 1e-6
) -> str | None:
    """None when two rasters share CRS, size and transform; otherwise what differs, in words."""
    problems = []
    if (a.width, a.height) != (b.width, b.height):
        problems.append(f"size {a.width}x{a.height} vs {b.width}x{b.height}")
    if a.crs != b.crs:
        problems.append(f"CRS {a.crs} vs {b.crs}")
    if not a.transform.almost_equals(b.transform, precision=tol):
        problems.append(f"transform {tuple(a.transform[:6])} vs {tuple(b.transform[:6])}")
    return "; ".join(problems) if problems else None


def require_same_grid(
    a: rasterio.DatasetReader, b: rasterio.DatasetReader, what: str = "the first"
) -> None:
    """Raise an InputError naming both rasters and what differs unless they share a grid."""
    diff = grid_mismatch(a, b)
    if diff:
        raise InputError(
            f"{a.name} and {b.name}: grids differ ({diff}); resample {what} onto the other's "
            "grid (gdalwarp -tr/-te or rio warp --like)"
        )


def read_window(ds: rasterio.DatasetReader, *args: Any, **kwargs: Any) -> np.ndarray:
    """``ds.read(...)`` whose errors name the file and the window and say what to do."""
    from rasterio.errors import RasterioError

    try:
        return ds.read(*args, **kwargs)
    except RasterioError as e:
        raise read_failed(ds.name, e, kwargs.get("window")) from None


def read_failed(path: object, e: BaseException, window: Any = None) -> RasterError:
    """A RasterError for a failed read, naming the file (and window)."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "See previous exception" in first:
        first = "a block could not be decoded"
    where = f" at {window_text(window)}" if window is not None else ""
    return RasterError(
        f"{path}: read failed{where} ({first}); the file is corrupt or truncated: re-export "
        "or re-download it (gdalinfo -checksum shows the damage)"
    )


def window_text(window: Any) -> str:
    return (
        f"col {int(window.col_off)}, row {int(window.row_off)}, "
        f"{int(window.width)}x{int(window.height)} px"
    )


def verify_raster(path: str | os.PathLike, *, whole: bool = True) -> None:
    """Re-open a raster and decode every block of every band.

    ``whole=False`` decodes only the last block: for the many small chips of ``tile``,
    where reading everything back costs half the tiling time. A GeoTIFF's directory
    is written last, on close, and every block write raises on failure, so a chip that
    opens and decodes its last block was written to the end.
    """
    import rasterio

    with no_georef_warning(), rasterio.open(path) as ds:
        windows = [win for _, win in ds.block_windows(1)]
        for win in windows if whole else windows[-1:]:
            ds.read(window=win)
