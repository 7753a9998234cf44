"""Read what GDAL itself reports about a raster, through the libgdal that rasterio ships.

rasterio has no reader for category names; ``gdalinfo`` (not installed here) prints
them under ``Categories:``. This reads them the way gdalinfo does: open, list the
files (which loads the PAM sidecar), then ask band 1 for its category names.
"""

from __future__ import annotations

import ctypes
import glob
import os


def _libgdal() -> ctypes.CDLL:
    import rasterio

    here = os.path.dirname(rasterio.__file__)
    found = glob.glob(os.path.join(here, "..", "rasterio.libs", "libgdal*"))
    lib = ctypes.CDLL(found[0]) if found else ctypes.CDLL("libgdal.so")
    lib.GDALAllRegister()
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetFileList.restype = ctypes.c_void_p
    lib.GDALGetFileList.argtypes = [ctypes.c_void_p]
    lib.GDALGetRasterBand.restype = ctypes.c_void_p
    lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALGetRasterCategoryNames.restype = ctypes.c_void_p
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.CSLCount.argtypes = [ctypes.c_void_p]
    lib.CSLDestroy.argtypes = [ctypes.c_void_p]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    return lib


def gdal_category_names(path: str | os.PathLike) -> list[str]:
    """Band 1's category names as gdalinfo lists them (empty list when there are none)."""
    lib = _libgdal()
    ds = lib.GDALOpen(os.fsencode(os.path.abspath(path)), 0)
    assert ds, f"GDAL cannot open {path}"
    try:
        lib.CSLDestroy(lib.GDALGetFileList(ds))  # as gdalinfo does; loads the .aux.xml
        names = lib.GDALGetRasterCategoryNames(lib.GDALGetRasterBand(ds, 1))
        if not names:
            return []
        arr = ctypes.cast(names, ctypes.POINTER(ctypes.c_char_p))
        return [arr[i].decode() for i in range(lib.CSLCount(names))]
    finally:
        lib.GDALClose(ds)
