"""The fast paths of ``tile``: chips written from a GDAL-made header, pixel samples read in place,
the index written without pandas. Each must give what the plain way gives, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from aerialct.classes import POTSDAM
from aerialct.geo.classraster import tag_class_raster
from aerialct.geo.cog import gtiff_profile
from aerialct.tile.stats import SAMPLE_PER_CHIP, sample_pixels
from aerialct.tile.writer import ChipWriter

CRS_UTM = CRS.from_epsg(32633)


def _profile(count, dtype, origin, nodata=None, **co):
    t = Affine(0.05, 0, origin[0], 0, -0.05, origin[1])
    return gtiff_profile(64, 64, count, dtype, CRS_UTM, t, nodata, **co)


def _gdal_write(path, img, prof, finish=None):
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(img)
        if finish:
            finish(dst)


CASES = [
    ("rgb", 3, "uint8", None, {"photometric": "RGB"}),
    ("pan16", 1, "uint16", 0, {}),
    ("float", 4, "float32", float("nan"), {}),
    ("band-interleaved", 3, "uint8", None, {"INTERLEAVE": "BAND"}),
]


@pytest.mark.parametrize("name,count,dtype,nodata,extra", CASES, ids=[c[0] for c in CASES])
def test_template_chips_equal_gdal_bytes(tmp_path, name, count, dtype, nodata, extra):
    rng = np.random.default_rng(0)
    writer = ChipWriter()
    origins = [(368000.0 + 3.2 * i, 5808000.0 - 1.6 * i) for i in range(4)]
    for i, origin in enumerate(origins):
        band = (rng.random((count, 64, 80)) * 1000).astype(dtype)
        img = band[:, :, 7:71]  # a view, as tile cuts chips from a decoded band
        prof = _profile(count, dtype, origin, nodata, COMPRESS="NONE", **extra)
        writer.write(tmp_path / f"fast{i}.tif", img, prof, "image")
        _gdal_write(tmp_path / f"ref{i}.tif", img, prof)
        assert (tmp_path / f"fast{i}.tif").read_bytes() == (tmp_path / f"ref{i}.tif").read_bytes()
    assert writer.fast == len(origins) - 1  # GDAL wrote the first one only
    with rasterio.open(tmp_path / "fast3.tif") as ds:
        assert ds.transform.c == origins[3][0] and ds.transform.f == origins[3][1]
        assert np.array_equal(ds.read(), img, equal_nan=True)


def test_template_masks_keep_colours_and_tags(tmp_path):
    writer = ChipWriter()
    for i in range(3):
        lab = np.random.default_rng(i).integers(0, 6, (1, 64, 64)).astype(np.uint8)
        prof = _profile(1, "uint8", (368000.0 + i, 5808000.0), 255, COMPRESS="NONE")
        finish = lambda dst: tag_class_raster(dst, POTSDAM)  # noqa: E731
        writer.write(tmp_path / f"m{i}.tif", lab, prof, "mask", finish)
        _gdal_write(tmp_path / f"r{i}.tif", lab, prof, finish)
        assert (tmp_path / f"m{i}.tif").read_bytes() == (tmp_path / f"r{i}.tif").read_bytes()
    assert writer.fast == 2


def test_compressed_or_changed_chips_go_through_gdal(tmp_path):
    img = np.ones((3, 64, 64), np.uint8)
    writer = ChipWriter()
    for i in range(3):
        prof = _profile(3, "uint8", (i, 0.0), COMPRESS="DEFLATE")
        writer.write(tmp_path / f"d{i}.tif", img, prof, "image")
    assert writer.fast == 0  # DEFLATE: every chip by GDAL
    writer = ChipWriter()
    writer.write(tmp_path / "a.tif", img, _profile(3, "uint8", (0, 0), COMPRESS="NONE"), "image")
    other = _profile(3, "uint8", (1, 0), COMPRESS="NONE", photometric="RGB")
    writer.write(tmp_path / "b.tif", img, other, "image")  # another profile: GDAL again
    writer.write(
        tmp_path / "c.tif", img[:1], _profile(1, "uint8", (2, 0), COMPRESS="NONE"), "image"
    )
    assert writer.fast == 0
    with rasterio.open(tmp_path / "b.tif") as ds:
        assert ds.colorinterp[0].name == "red"


def _sample_reference(img, valid, nodata):
    """The sampling rule written the plain way: flatten, mask, take every k-th valid pixel."""
    flat = np.ascontiguousarray(img).reshape(img.shape[0], -1)
    ok = np.ones(flat.shape[1], bool) if valid is None else valid.reshape(-1).copy()
    if nodata is not None:
        ok &= ~np.isnan(flat).all(0) if np.isnan(nodata) else ~(flat == nodata).all(0)
    if np.issubdtype(flat.dtype, np.floating):
        ok &= np.isfinite(flat).all(0)
    idx = np.flatnonzero(ok)
    return flat[:, idx[:: max(1, len(idx) // SAMPLE_PER_CHIP)]].astype(np.float64)


@pytest.mark.parametrize("dtype,nodata", [("uint8", None), ("uint16", 0), ("float32", np.nan)])
@pytest.mark.parametrize("with_valid", [False, True])
def test_sample_pixels_in_place_equals_reference(dtype, nodata, with_valid):
    rng = np.random.default_rng(1)
    band = rng.integers(0, 4, (3, 300, 420)).astype(dtype)
    if dtype == "float32":
        band[:, ::7, ::3] = np.nan
        band[1, ::5, ::2] = np.inf
    img = band[:, 10:250, 33:333]
    valid = rng.random(img.shape[1:]) > 0.3 if with_valid else None
    got = sample_pixels(img, valid, nodata)
    assert np.array_equal(got, _sample_reference(img, valid, nodata), equal_nan=True)


def test_index_boxes_are_shapely_boxes():
    import shapely

    from aerialct.data.index import box_wkb

    b = np.array([[368000.0, 5807974.4, 368025.6, 5808000.0], [1.5, -2.0, 3.25, 4.0]])
    got = box_wkb(b)
    want = shapely.to_wkb(shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]))
    assert list(got) == list(want)


@pytest.mark.parametrize("dtype,top", [("uint8", 256), ("uint16", 65536)])
def test_band_statistics_of_unsigned_samples_equal_those_of_their_floats(dtype, top):
    # unsigned samples find their percentiles without a float64 copy: the same numbers
    from aerialct.tile.stats import band_statistics

    rng = np.random.default_rng(3)
    s = rng.integers(0, top, (3, 10_001)).astype(dtype)
    s[0, :40], s[2, -7:] = 0, top - 1  # ties at both ends
    assert band_statistics(s, dtype) == band_statistics(s.astype(np.float64), dtype)


@pytest.mark.parametrize("h,w", [(512, 512), (64, 64), (32, 4096), (700, 1), (10, 2048), (45, 46)])
def test_sample_pixels_of_whole_chips_are_copies_in_the_reference_order(h, w):
    # strides that divide a row (or rows) are taken as slices; always copies, never views of
    # the band, whose memory the next task of the process reuses
    band = np.random.default_rng(2).integers(0, 255, (3, 720, 5000), dtype=np.uint8)
    img = band[:, 5 : 5 + h, 3 : 3 + w]
    got = sample_pixels(img, None, None)
    assert np.array_equal(got, _sample_reference(img, None, None))
    assert not np.shares_memory(got, band)
