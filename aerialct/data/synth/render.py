"""Painting the planned town: tree crowns, cast shadows, textures, light and sensor noise.

:func:`generate_scene` lays out a town (:mod:`~aerialct.data.synth.layout`) and
draws it: tree crowns painted last so they overhang roads and roofs, cast shadows of
buildings and trees (sun from the south-west), a texture per kind of surface, a slow
illumination gradient and sensor noise. :func:`convert_image` records the 8-bit RGB
result as other sensors would.

It is learnable but not separable by colour alone: grey roofs have the colour of
asphalt, light flat roofs the colour of sidewalks, grey cars the colour of roads,
and trees differ from lawns mostly by texture and shading.

Everything is vectorised with numpy (object loops touch small slices only), so a
2048x2048 scene takes a few seconds and 512x512 a fraction of one. The same seed
gives the same scene, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from aerialct.data.synth.layout import (
    BUILDING,
    DEFAULT_CRS,
    DEFAULT_ORIGIN,
    LOW_VEG,
    TEX_DIRT,
    TEX_GRASS,
    TEX_PAVING,
    TEX_ROOF_X,
    TEX_ROOF_Y,
    TREE,
    Building,
    Town,
)
from aerialct.errors import InputError

if TYPE_CHECKING:
    from affine import Affine


@dataclass
class SceneArrays:
    """A generated scene in memory.

    ``image`` is (3, H, W) uint8 RGB, ``labels`` (H, W) uint8 class ids (POTSDAM),
    ``transform`` the affine pixel -> map transform, ``buildings`` the footprints.
    """

    image: np.ndarray
    labels: np.ndarray
    transform: Affine
    crs: str
    gsd: float
    buildings: list[Building]

    def building_frame(self):
        """The footprints as a GeoDataFrame in the scene CRS (columns id, height, roof, shape)."""
        import geopandas as gpd
        from shapely import affinity

        t = self.transform
        coeffs = [t.a, t.b, t.d, t.e, t.c, t.f]
        return gpd.GeoDataFrame(
            {
                "id": np.array([b.id for b in self.buildings], dtype=np.int64),
                "height": [round(b.height, 2) for b in self.buildings],
                "roof": [b.roof for b in self.buildings],
                "shape": [b.shape for b in self.buildings],
            },
            geometry=[affinity.affine_transform(b.polygon, coeffs) for b in self.buildings],
            crs=self.crs,
        )


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Zero-mean noise with features of about ``cell`` px: coarse grid, upsampled, smoothed."""
    cell = max(1, int(cell))
    gh, gw = h // cell + 2, w // cell + 2
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    up = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:h, :w]
    if cell > 1:
        up = ndimage.uniform_filter(up, size=cell, mode="nearest")
    return up / max(float(up.std()), 1e-6)


def _shift_or(dst: np.ndarray, mask: np.ndarray, r0: int, c0: int) -> None:
    """dst[r0:r0+h, c0:c0+w] |= mask, clipped to dst."""
    h, w = mask.shape
    H, W = dst.shape
    a0, a1, b0, b1 = max(r0, 0), min(r0 + h, H), max(c0, 0), min(c0 + w, W)
    if a0 >= a1 or b0 >= b1:
        return
    dst[a0:a1, b0:b1] |= mask[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0]


SUN = np.array([-0.62, 0.78])
"""Direction in which shadows fall (d_row, d_col): towards north-east, the sun in the south-west."""
K_SHADOW = 0.5
"""Shadow length per metre of height (sun elevation about 63 degrees)."""


def generate_scene(
    size: int | tuple[int, int] = 2048,
    seed: int = 0,
    *,
    gsd: float = 0.05,
    crs: str = DEFAULT_CRS,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    built_up: float = 1.0,
) -> SceneArrays:
    """Generate a town in memory. ``size`` is an int (square) or ``(height, width)`` in px.

    ``origin`` is the map position of the upper-left corner; pixels are ``gsd`` map units.
    ``built_up`` scales the chance that a block holds buildings (1: the default town;
    0.2: a sparse suburb with about 5% building pixels, the rest parks and parking lots).
    """
    from affine import Affine

    h, w = _scene_shape(size, gsd, built_up)
    rng = np.random.default_rng(seed)
    town = Town(h, w, rng, gsd, built_up)
    vb, hb = town.roads()
    town.blocks(vb, hb)
    cv = town.cv

    shadow = np.zeros((h, w), dtype=bool)
    tree_obj, crown_shade = _paint_crowns(town, shadow)
    _cast_building_shadows(town, shadow)
    shadow &= cv.labels != BUILDING
    shadow &= ~tree_obj
    del tree_obj

    texture = _texture(town)
    light = 1.0 + 0.05 * _smooth_noise(rng, h, w, int(40 / gsd))
    light *= crown_shade
    light[shadow] *= 0.55
    del crown_shade
    image = _expose(town, texture, light, shadow)
    transform = Affine(gsd, 0.0, origin[0], 0.0, -gsd, origin[1])
    return SceneArrays(image, cv.labels, transform, crs, gsd, town.buildings)


def _scene_shape(size: int | tuple[int, int], gsd: float, built_up: float) -> tuple[int, int]:
    """(height, width) of ``size``, after checking the arguments of :func:`generate_scene`."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 16 or w < 16:
        raise InputError(f"size {h}x{w}: too small; give at least 16 px per side")
    if not (gsd > 0 and math.isfinite(gsd)):
        raise InputError(f"gsd {gsd}: must be a positive number of metres per pixel")
    if not 0.0 <= built_up <= 1.0:
        raise InputError(f"built_up {built_up}: must be between 0 and 1")
    return h, w


def _paint_crowns(town: Town, shadow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint the tree crowns, last so they overhang roads and roofs; add their shadows.

    Returns the crowns' pixels and their shading (1 outside crowns).
    """
    cv = town.cv
    tree_obj = np.zeros((cv.h, cv.w), dtype=bool)
    crown_shade = np.ones((cv.h, cv.w), dtype=np.float32)
    for rr, cc, rad, height in town.trees:
        _paint_crown(town, rr, cc, max(rad, 1.5), height, shadow, tree_obj, crown_shade)
    return tree_obj, crown_shade


def _paint_crown(
    town: Town,
    rr: float,
    cc: float,
    rad: float,
    height: float,
    shadow: np.ndarray,
    tree_obj: np.ndarray,
    crown_shade: np.ndarray,
) -> None:
    """One crown: an irregular disc of radius ``rad`` px centred at (rr, cc), darker at its rim."""
    cv, rng = town.cv, town.rng
    r0, r1 = int(rr - rad * 1.2), int(rr + rad * 1.2) + 1
    c0, c1 = int(cc - rad * 1.2), int(cc + rad * 1.2) + 1
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    dy, dx = yy - rr, xx - cc
    ang = np.arctan2(dy, dx)
    ph = rng.uniform(0, 2 * np.pi, 3)
    wobble = 1 + 0.08 * np.sin(3 * ang + ph[0]) + 0.06 * np.sin(5 * ang + ph[1])
    d = np.sqrt(dx * dx + dy * dy) / (rad * wobble)
    crown = d <= 1.0
    shade = (1.05 - 0.35 * d * d).astype(np.float32)
    length = height * K_SHADOW / cv.gsd
    steps = max(1, int(length / max(rad * 0.8, 1)))
    for t in np.linspace(length / steps, length, steps):
        _shift_or(shadow, crown, r0 + int(SUN[0] * t), c0 + int(SUN[1] * t))
    s = cv.clip(r0, r1, c0, c1)
    if s is None:
        return
    sub = crown[s[0].start - r0 : s[0].stop - r0, s[1].start - c0 : s[1].stop - c0]
    shd = shade[s[0].start - r0 : s[0].stop - r0, s[1].start - c0 : s[1].stop - c0]
    g = rng.uniform(65, 125)
    leaf = (g * rng.uniform(0.55, 0.85), g, g * rng.uniform(0.45, 0.65))
    o = cv.new(leaf, TEX_GRASS, 26, 6)
    cv.obj[s][sub] = o
    cv.labels[s][sub] = TREE
    tree_obj[s] |= sub
    cs = crown_shade[s]
    cs[sub] = shd[sub]


def _cast_building_shadows(town: Town, shadow: np.ndarray) -> None:
    """Add each building's shadow: the union of its footprint shifted along the sun direction."""
    from affine import Affine
    from rasterio import features

    gsd = town.cv.gsd
    step = max(1, int(0.4 / gsd))
    for b in town.buildings:
        minx, miny, maxx, maxy = (round(v) for v in b.polygon.bounds)
        mask = features.rasterize(
            [(b.polygon, 1)],
            out_shape=(maxy - miny, maxx - minx),
            transform=Affine.translation(minx, miny),
            dtype="uint8",
        ).astype(bool)
        length = b.height * K_SHADOW / gsd
        n = max(1, int(length / step))
        for t in np.linspace(length / n, length, n):
            _shift_or(shadow, mask, miny + int(SUN[0] * t), minx + int(SUN[1] * t))


def _texture(town: Town) -> np.ndarray:
    """Per-pixel brightness offsets: each object's texture kind, scaled by its amplitude."""
    cv, rng, gsd = town.cv, town.rng, town.cv.gsd
    h, w = cv.h, cv.w
    tex = np.asarray(cv.tex, dtype=np.uint8)
    amp = np.asarray(cv.amp, dtype=np.float32)
    kind = tex[cv.obj]
    fine = rng.standard_normal((h, w), dtype=np.float32)
    mottle = _smooth_noise(rng, h, w, int(0.6 / gsd))
    texture = np.where(kind == TEX_GRASS, 0.55 * mottle + 0.45 * fine, 0.35 * fine)
    texture += np.where(kind == TEX_DIRT, 0.8 * mottle, 0.0)
    period = max(2.0, 0.35 / gsd)
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    texture += np.where(kind == TEX_ROOF_X, np.sin(2 * np.pi * rows / period) * 1.2, 0.0)
    texture += np.where(kind == TEX_ROOF_Y, np.sin(2 * np.pi * cols / period) * 1.2, 0.0)
    texture += np.where(kind == TEX_PAVING, 0.6 * _smooth_noise(rng, h, w, int(0.4 / gsd)), 0.0)
    texture *= amp[cv.obj]
    return texture


def _expose(town: Town, texture: np.ndarray, light: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """The (3, H, W) uint8 image: object colour + texture, lit, bluish in shadow, with noise."""
    cv, rng = town.cv, town.rng
    colors = np.asarray(cv.colors, dtype=np.float32)  # (n, 3)
    image = np.empty((3, cv.h, cv.w), dtype=np.uint8)
    for band in range(3):
        v = colors[cv.obj, band]
        v += texture
        v *= light
        if band == 2:
            v[shadow] += 10.0  # shadows are bluish (sky light)
        v += rng.standard_normal((cv.h, cv.w), dtype=np.float32) * 5.0
        np.clip(v, 0, 255, out=v)
        image[band] = v.astype(np.uint8)
    return image


SYNTH_DTYPES = ("uint8", "uint16", "int16", "float32")
"""Pixel types ``synth --dtype`` writes."""


def convert_image(rgb: np.ndarray, labels: np.ndarray, dtype: str, bands: int) -> np.ndarray:
    """The 8-bit RGB town as other sensors would record it.

    ``bands``: 1 is a panchromatic band (luminance), 3 RGB, 4 RGB + a near-infrared
    band in which vegetation is bright. ``dtype``: uint8 as drawn; uint16 a 12-bit-like
    sensor (DN = 40 x value + 200, as satellite products store it); int16 the same
    shifted by -1000; float32 reflectance (value / 255 x 0.6).
    """
    x = rgb.astype(np.float32)
    if bands == 1:
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    elif bands == 4:
        veg = np.isin(labels, (LOW_VEG, TREE)).astype(np.float32)
        nir = 0.5 * x[0] + 0.3 * x[1] + veg * (90.0 + 0.4 * x[1])
        x = np.concatenate([x, np.clip(nir, 0, 255)[None]])
    if dtype == "uint8":
        return np.rint(x).astype(np.uint8)
    if dtype == "uint16":
        return np.rint(x * 40.0 + 200.0).astype(np.uint16)
    if dtype == "int16":
        return np.rint(x * 40.0 - 800.0).astype(np.int16)
    return (x / 255.0 * 0.6).astype(np.float32)
