"""Atomic outputs and checked raster opening.

Every file aerialct writes goes through :func:`atomic_output`: the data is
written under a temporary name in the destination folder and renamed over the
final name only when complete, so an interrupted run never leaves a half file
under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from aerialct.classes import POTSDAM, ClassTable
from aerialct.errors import InputError, OutputExistsError, RasterError

if TYPE_CHECKING:
    import rasterio

TMP_MARK = ".aerialct-tmp"


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; return the path."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(p)
    return p


def temp_path_for(path: str | os.PathLike) -> Path:
    """A temporary sibling of ``path`` that keeps its suffix (drivers look at it)."""
    p = Path(path)
    return p.with_name(f"{p.stem}{TMP_MARK}-{uuid.uuid4().hex[:8]}{p.suffix}")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any exception the temporary file (or folder) is removed and the final
    path is left as it was. The existence check happens before and again after
    the work, so a concurrent writer is not silently overwritten.
    """
    final = check_output(path, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{final}: nothing was written to the temporary file {tmp}")
        if final.exists():
            if not overwrite:
                raise OutputExistsError(final)
            if final.is_dir():  # os.replace cannot replace a folder
                _remove(final)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        # GDAL may leave sidecars (.aux.xml, .ovr) beside the temporary file.
        for side in final.parent.glob(tmp.name + ".*"):
            _remove(side)
        raise


def open_raster(path: str | os.PathLike, *, require_crs: bool = False) -> rasterio.DatasetReader:
    """Open a raster for reading, turning rasterio's errors into one-line messages."""
    import rasterio
    from rasterio.errors import RasterioIOError

    p = Path(path)
    if not p.exists():
        raise RasterError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise RasterError(f"{p}: is a folder, not a raster; give a GeoTIFF file")
    try:
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


CLASSES_TAG = "AERIALCT_CLASSES"
"""Dataset tag holding a class raster's class table as JSON (``ClassTable.to_list()``)."""


def raster_class_table(
    ds: rasterio.DatasetReader, default: ClassTable | None = POTSDAM
) -> ClassTable | None:
    """The class table stored in a class raster's tag, else ``default``."""
    raw = ds.tags().get(CLASSES_TAG)
    if not raw:
        return default
    try:
        return ClassTable.from_list(json.loads(raw))
    except (ValueError, KeyError, TypeError) as e:
        raise RasterError(
            f"{ds.name}: tag {CLASSES_TAG} is not a class table ({e}); "
            "rewrite it or remove the tag to use the Potsdam classes"
        ) from e
