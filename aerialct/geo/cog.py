"""GeoTIFF output: creation profiles, and a streamed, tiled "part" file finished as a COG.

Rasters that are produced row band by row band (``predict``) are first written
as a tiled, compressed GeoTIFF and converted at the end with GDAL's COG driver,
which builds the overviews and puts them in front of the full-resolution data.
:class:`RowWriter` buffers rows so that every write covers whole block rows:
GDAL then never re-reads and re-compresses a half-written tile.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.errors import InputError

#: block side of the intermediate part file; rows are written in whole block rows
PART_BLOCK = 512
#: creation options of the intermediate part file (fast to write, re-read once)
PART_OPTIONS: dict[str, Any] = {
    "tiled": True,
    "blockxsize": PART_BLOCK,
    "blockysize": PART_BLOCK,
    "compress": "zstd",
    "zstd_level": 1,
}

#: defaults of the final COG; ``--co`` entries override them
COG_DEFAULTS = {"COMPRESS": "DEFLATE", "LEVEL": "1", "BLOCKSIZE": "512", "BIGTIFF": "IF_SAFER"}

# GTiff spellings people type out of habit, and what they mean to the COG driver
_GTIFF_ONLY = {"TILED"}
_RENAMED = {"BLOCKXSIZE": "BLOCKSIZE", "BLOCKYSIZE": "BLOCKSIZE", "ZLEVEL": "LEVEL"}


def cog_options(
    user: Mapping[str, str] | None, overview_resampling: str = "NEAREST"
) -> dict[str, str]:
    """Merge ``--co NAME=VALUE`` options over the COG defaults.

    ``TILED`` is dropped (a COG is always tiled) and ``BLOCKXSIZE``/``BLOCKYSIZE``
    become ``BLOCKSIZE``, so options written for the GTiff driver keep working.
    """
    out = dict(COG_DEFAULTS)
    out["OVERVIEW_RESAMPLING"] = overview_resampling
    for k, v in (user or {}).items():
        key = k.strip().upper()
        if key in _GTIFF_ONLY:
            continue
        key = _RENAMED.get(key, key)
        if key == "BLOCKSIZE" and (not str(v).isdigit() or int(v) % 16):
            raise InputError(f"--co {k}={v}: block size must be a multiple of 16, e.g. 512")
        out[key] = str(v)
    check_creation_options("COG", out)
    return out


def check_creation_options(driver: str, options: Mapping[str, str]) -> None:
    """Refuse ``--co`` names or values that ``driver`` (GTiff or COG) does not accept.

    GDAL itself is the judge: a 16x16 dataset is created in memory with the
    options, and the warnings GDAL gives when it checks them against the driver's
    creation-option list (an unknown name, a value outside a choice, a number out
    of range) become an InputError instead of a silently ignored option.
    """
    if not options:
        return
    import logging
    import uuid

    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.shutil import delete as rio_delete

    class _Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if "CPLE_NotSupported" in msg or "CPLE_IllegalArg" in msg:
                self.messages.append(msg.split(" in ", 1)[-1])

    gdal_log = logging.getLogger("rasterio._env")
    handler = _Collect()
    gdal_log.addHandler(handler)
    src = f"/vsimem/aerialct-co-{uuid.uuid4().hex}.tif"
    dst = src.replace(".tif", "-dst.tif")
    opts = {str(k).upper(): str(v) for k, v in options.items()}
    prof = {"driver": "GTiff", "width": 16, "height": 16, "count": 1, "dtype": "uint8"}
    try:
        from aerialct.geo.io import no_georef_warning

        with no_georef_warning():
            if driver == "COG":
                with rasterio.open(src, "w", **prof) as ds:
                    ds.write(np.zeros((1, 16, 16), np.uint8))
                rio_copy(src, dst, driver="COG", **opts)
            else:
                with rasterio.open(src, "w", **{**prof, "driver": driver}, **opts) as ds:
                    ds.write(np.zeros((1, 16, 16), np.uint8))
    except Exception as e:
        handler.messages.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
    finally:
        gdal_log.removeHandler(handler)
        for path in (src, dst):
            with contextlib.suppress(Exception):
                rio_delete(path)
    if handler.messages:
        first = handler.messages[0]
        named = [f"--co {k}={v}" for k, v in opts.items() if k in first]
        given = named[0] if named else " ".join(f"--co {k}={v}" for k, v in opts.items())
        raise InputError(
            f"{given}: refused by GDAL's {driver} driver ({handler.messages[0].rstrip('.')}); "
            f"see the {driver} creation options (gdalinfo --format {driver})"
        )


def finish_cog(
    part: str | os.PathLike, dest: str | os.PathLike, options: Mapping[str, str]
) -> None:
    """Copy the part file ``part`` to ``dest`` as a COG (overviews included), then delete ``part``.

    Colour table, tags, band descriptions, nodata, CRS and transform are carried
    over by the driver.
    """
    copy_as_cog(str(part), dest, options)
    Path(part).unlink(missing_ok=True)


def copy_as_cog(src: Any, dest: str | os.PathLike, options: Mapping[str, str]) -> None:
    """Copy the raster ``src`` (a path, a VRT's XML or an open dataset) to ``dest`` as a COG.

    Dataset tags, colour table, band descriptions, nodata, CRS and transform are carried
    over by the driver.
    """
    from rasterio.shutil import copy as rio_copy

    rio_copy(src, str(dest), driver="COG", **dict(options))


class RowWriter:
    """Write rows of a (bands, rows, width) raster top to bottom in whole block rows."""

    def __init__(self, dataset: Any, block_rows: int) -> None:
        self.ds = dataset
        self.block_rows = block_rows
        self.row = 0  # first row not yet written to the dataset
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows`` (bands, n, width) below what was written so far."""
        self._pending.append(rows)
        self._pending_rows += rows.shape[1]
        if self._pending_rows >= self.block_rows:
            buf = np.concatenate(self._pending, axis=1) if len(self._pending) > 1 else rows
            n = (buf.shape[1] // self.block_rows) * self.block_rows
            self._put(buf[:, :n])
            rest = buf[:, n:]
            self._pending = [rest.copy()] if rest.shape[1] else []
            self._pending_rows = rest.shape[1]

    def close(self) -> None:
        """Write the rows still pending (the last, partial block row)."""
        if self._pending_rows:
            self._put(np.concatenate(self._pending, axis=1))
        self._pending, self._pending_rows = [], 0

    def _put(self, buf: np.ndarray) -> None:
        from rasterio.windows import Window

        n = buf.shape[1]
        self.ds.write(buf, window=Window(0, self.row, buf.shape[2], n))
        self.row += n


def gtiff_profile(
    width: int,
    height: int,
    count: int,
    dtype: str,
    crs: Any,
    transform: Any,
    nodata: float | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A GTiff creation profile; ``options`` (creation options, any case) win over the defaults."""
    prof: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    prof.update({k.lower(): v for k, v in options.items()})
    return prof
