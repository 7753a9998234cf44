"""The city plan: roads, blocks, buildings, cars, clutter and trees, painted as objects.

The town is laid out in metres and drawn at ``gsd`` metres per pixel:

* a jittered grid of asphalt roads with lane markings and paved sidewalks (impervious);
* blocks of several kinds: residential parcels with houses in gardens, perimeter blocks
  with courtyards (split into separate buildings by passages), industrial halls with
  paved yards and clutter, parks, and parking lots;
* buildings as rectangles, L-shapes, U-shapes and courtyard rings, with roofs that are
  gabled (two shaded halves), tiled (stripes) or flat (with vents and solar panels);
* cars parked along the roads and in lots, clutter (containers, dirt, bins), low
  vegetation with a mottled texture, and tree centres (their crowns are drawn by
  :mod:`aerialct.data.synth.render`, over roads and roofs).

Every painted region is an object of a :class:`Canvas` with a colour, a texture kind
and a texture amplitude; :mod:`~aerialct.data.synth.render` turns objects into pixels.

Building footprints are exact: every building is a rectilinear polygon with
vertices on pixel corners, and its pixels in the label raster are exactly the
pixels whose centre lies inside it, except where a tree crown overhangs the roof
(labelled tree, as in Potsdam). Features are sized in metres, so small test scenes
with many objects use a coarser ``gsd`` (e.g. 0.25 m: 512 px = 128 m).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from shapely.geometry import Polygon

IMPERVIOUS, BUILDING, LOW_VEG, TREE, CAR, CLUTTER = range(6)
"""Class ids of the Potsdam table (:data:`aerialct.classes.POTSDAM`) the town is labelled with."""

DEFAULT_CRS = "EPSG:32633"
DEFAULT_ORIGIN = (368000.0, 5808000.0)
"""Upper-left corner (easting, northing) in UTM 33N, roughly where Potsdam lies."""

# Texture kinds of painted objects.
TEX_SMOOTH, TEX_GRASS, TEX_ROOF_X, TEX_ROOF_Y, TEX_PAVING, TEX_DIRT = range(6)


@dataclass
class Building:
    """One building: footprint in pixel coordinates (x = column, y = row) and attributes."""

    id: int
    polygon: Polygon  # in pixel coordinates
    height: float
    roof: str
    shape: str


class Canvas:
    """Object-id painting: every painted region gets an object with colour and texture."""

    def __init__(self, h: int, w: int, rng: np.random.Generator, gsd: float) -> None:
        self.h, self.w, self.rng, self.gsd = h, w, rng, gsd
        self.obj = np.zeros((h, w), dtype=np.int32)
        self.labels = np.full((h, w), LOW_VEG, dtype=np.uint8)
        self.colors: list[tuple[float, float, float]] = [(96.0, 122.0, 70.0)]
        self.tex: list[int] = [TEX_GRASS]
        self.amp: list[float] = [14.0]

    def px(self, metres: float) -> int:
        """A length in metres as a whole number of pixels, at least 1."""
        return max(1, round(metres / self.gsd))

    def new(
        self, color: Sequence[float] | np.ndarray, tex: int, amp: float, jitter: float = 8.0
    ) -> int:
        """A new object: ``color`` (RGB) jittered by ``jitter``, texture kind and amplitude."""
        c = np.clip(np.asarray(color, float) + self.rng.normal(0, jitter, 3), 0, 255)
        self.colors.append((float(c[0]), float(c[1]), float(c[2])))
        self.tex.append(tex)
        self.amp.append(amp)
        return len(self.colors) - 1

    def clip(self, r0: int, r1: int, c0: int, c1: int) -> tuple[slice, slice] | None:
        """The slices of rows r0:r1, cols c0:c1 inside the canvas, or None when outside."""
        r0, r1 = max(r0, 0), min(r1, self.h)
        c0, c1 = max(c0, 0), min(c1, self.w)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def rect(self, r0: int, r1: int, c0: int, c1: int, obj: int, label: int) -> None:
        """Paint rows r0:r1, cols c0:c1 (clipped) with object ``obj`` and class ``label``."""
        s = self.clip(r0, r1, c0, c1)
        if s is not None:
            self.obj[s] = obj
            self.labels[s] = label


def _intervals(
    total_px: int, rng: np.random.Generator, gsd: float
) -> list[tuple[int, int, int, int]]:
    """Road bands along one axis: (sidewalk start, road start, road end, sidewalk end) in px."""
    bands = []
    x = -rng.uniform(10, 60) / gsd
    while x < total_px + 40 / gsd:
        road = rng.uniform(6.5, 11.0) / gsd
        walk = rng.uniform(1.8, 3.2) / gsd
        s0 = round(x)
        r0 = round(x + walk)
        r1 = round(x + walk + road)
        s1 = round(x + 2 * walk + road)
        bands.append((s0, r0, r1, s1))
        x = s1 + rng.uniform(38, 95) / gsd
    return bands


def _shape_polygon(kind: str, r0: int, r1: int, c0: int, c1: int, cv: Canvas):
    """A rectilinear building footprint inside the box rows r0:r1, cols c0:c1 (pixel corners)."""
    from shapely.geometry import box

    rng = cv.rng
    h, w = r1 - r0, c1 - c0
    outer = box(c0, r0, c1, r1)
    if kind == "L":
        # remove one corner quadrant, keeping wings at least 35 % of the box
        fr, fc = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)
        cut_h, cut_w = int(h * fr), int(w * fc)
        corner = rng.integers(4)
        rr = r0 if corner in (0, 1) else r1 - cut_h
        cc = c0 if corner in (0, 2) else c1 - cut_w
        return outer.difference(box(cc, rr, cc + cut_w, rr + cut_h))
    if kind == "U":
        depth = int(h * rng.uniform(0.35, 0.55))
        width = int(w * rng.uniform(0.3, 0.45))
        cc = c0 + (w - width) // 2
        return outer.difference(box(cc, r0, cc + width, r0 + depth))
    if kind == "courtyard":
        t = max(cv.px(6.0), int(min(h, w) * rng.uniform(0.22, 0.32)))
        if h - 2 * t < cv.px(4.0) or w - 2 * t < cv.px(4.0):
            return outer
        return outer.difference(box(c0 + t, r0 + t, c1 - t, r1 - t))
    return outer


class Town:
    """The plan of a town on a :class:`Canvas`: roads, then blocks, cars, clutter, trees.

    ``buildings`` collects the exact footprints, ``trees`` the crowns that
    :mod:`~aerialct.data.synth.render` paints last (row, col, radius px, height m).
    """

    def __init__(
        self, h: int, w: int, rng: np.random.Generator, gsd: float, built_up: float = 1.0
    ) -> None:
        self.built_up = built_up
        self.cv = Canvas(h, w, rng, gsd)
        self.rng = rng
        self.buildings: list[Building] = []
        self.trees: list[tuple[float, float, float, float]] = []  # row, col, radius px, height m
        self.clutter_boxes: list[tuple[int, int, int, int]] = []

    # ---------------------------------------------------------------- roads
    def roads(self) -> tuple[list, list]:
        """Paint the road grid; return the vertical and horizontal bands (see ``_intervals``)."""
        cv, rng = self.cv, self.rng
        vbands = _intervals(cv.w, rng, cv.gsd)
        hbands = _intervals(cv.h, rng, cv.gsd)
        walks = [(150, 151, 148), (172, 166, 150), (128, 126, 124), (150, 100, 85)]  # brick too
        walk_color = np.asarray(walks[int(rng.integers(len(walks)))], float)
        for s0, _, _, s1 in vbands:
            cv.rect(0, cv.h, s0, s1, cv.new(walk_color, TEX_PAVING, 9.0, 5), IMPERVIOUS)
        for s0, _, _, s1 in hbands:
            cv.rect(s0, s1, 0, cv.w, cv.new(walk_color, TEX_PAVING, 9.0, 5), IMPERVIOUS)
        for bands, vertical in ((vbands, True), (hbands, False)):
            for _, r0, r1, _ in bands:
                grey = rng.uniform(72, 135)
                o = cv.new((grey, grey + 2, grey + 5), TEX_SMOOTH, 5.0, 3)
                if vertical:
                    cv.rect(0, cv.h, r0, r1, o, IMPERVIOUS)
                else:
                    cv.rect(r0, r1, 0, cv.w, o, IMPERVIOUS)
                self._markings(r0, r1, vertical)
        return vbands, hbands

    def _markings(self, r0: int, r1: int, vertical: bool) -> None:
        cv = self.cv
        mid = (r0 + r1) // 2
        half = max(1, cv.px(0.12))
        dash, gap = cv.px(3.0), cv.px(3.0)
        length = cv.h if vertical else cv.w
        o = cv.new((205, 205, 200), TEX_SMOOTH, 4.0, 6)
        # a periodic dash pattern along the road, vectorised as a 1-D mask
        along = (np.arange(length) % (dash + gap)) < dash
        if vertical:
            s = cv.clip(0, cv.h, mid - half, mid + half)
            if s is not None:
                sub = cv.obj[s]
                sub[along[s[0]], :] = o
        else:
            s = cv.clip(mid - half, mid + half, 0, cv.w)
            if s is not None:
                sub = cv.obj[s]
                sub[:, along[s[1]]] = o

    # ---------------------------------------------------------------- blocks
    def blocks(self, vbands: list, hbands: list) -> None:
        """Fill every block between the roads, then line the roads with cars, trees and bins."""
        xs = [(a[3], b[0]) for a, b in itertools.pairwise(vbands)]
        ys = [(a[3], b[0]) for a, b in itertools.pairwise(hbands)]
        for r0, r1 in ys:
            for c0, c1 in xs:
                if r1 <= 0 or c1 <= 0 or r0 >= self.cv.h or c0 >= self.cv.w:
                    continue
                self.block(r0, r1, c0, c1)
        cv, rng = self.cv, self.rng
        for s0, r0, r1, s1 in vbands:
            self.street_cars(r0, r1, vertical=True)
            self.street_trees(r0, r1, vertical=True)
            for _ in range(int(rng.poisson(cv.h * cv.gsd / 40))):  # bins, kiosks on sidewalks
                self.clutter(0, cv.h, *((s0, r0) if rng.random() < 0.5 else (r1, s1)), size=1.5)
        for s0, r0, r1, s1 in hbands:
            self.street_cars(r0, r1, vertical=False)
            self.street_trees(r0, r1, vertical=False)
            for _ in range(int(rng.poisson(cv.w * cv.gsd / 40))):
                a, b = (s0, r0) if rng.random() < 0.5 else (r1, s1)
                self.clutter(a, b, 0, cv.w, size=1.5)

    def block(self, r0: int, r1: int, c0: int, c1: int) -> None:
        """Fill one block with a kind drawn by its size and ``built_up``."""
        rng, cv = self.rng, self.cv
        small = min(r1 - r0, c1 - c0) * cv.gsd < 30
        kinds = ["residential", "courtyard", "industrial", "park", "parking"]
        p = [0.3, 0.0, 0.2, 0.3, 0.2] if small else [0.45, 0.25, 0.13, 0.08, 0.09]
        if self.built_up != 1.0:  # fewer built blocks: the rest become parks and parking lots
            built = [v * self.built_up for v in p[:3]]
            rest = (1.0 - sum(built)) / (p[3] + p[4])
            p = [*built, p[3] * rest, p[4] * rest]
        kind = rng.choice(kinds, p=p)
        getattr(self, f"block_{kind}")(r0, r1, c0, c1)

    def _yard_ground(self, r0: int, r1: int, c0: int, c1: int) -> None:
        rng, cv = self.rng, self.cv
        green = (rng.uniform(62, 118), rng.uniform(88, 145), rng.uniform(42, 85))
        if rng.random() < 0.25:  # dry lawn
            green = (rng.uniform(120, 160), rng.uniform(118, 150), rng.uniform(75, 100))
        cv.rect(r0, r1, c0, c1, cv.new(green, TEX_GRASS, 16.0, 6), LOW_VEG)

    def add_building(self, poly, kind: str, height: float | None = None) -> None:
        """Paint a footprint (pixel corners) with a random roof and record it; skip tiny ones.

        A footprint cut in pieces by the scene border becomes one building per piece.
        """
        rng, cv = self.rng, self.cv
        if poly.is_empty or poly.area < (2.5 / cv.gsd) ** 2:
            return
        from rasterio import features
        from shapely.geometry import box

        clipped = poly.intersection(box(0, 0, cv.w, cv.h))
        parts = [g for g in getattr(clipped, "geoms", [clipped]) if g.geom_type == "Polygon"]
        if len(parts) > 1:  # a building cut in pieces by the scene border
            for part in parts:
                self.add_building(part, kind, height)
            return
        if not parts or parts[0].area < 4:
            return
        poly = parts[0]
        minx, miny, maxx, maxy = (round(v) for v in poly.bounds)
        sub_shape = (maxy - miny, maxx - minx)
        from affine import Affine

        mask = features.rasterize(
            [(poly, 1)],
            out_shape=sub_shape,
            transform=Affine.translation(minx, miny),
            dtype="uint8",
        ).astype(bool)
        if not mask.any():
            return
        s = (slice(miny, maxy), slice(minx, maxx))
        roof = rng.choice(
            ["gable", "tiles", "flat_grey", "flat_light", "flat_dark", "green"],
            p=[0.22, 0.18, 0.25, 0.17, 0.1, 0.08],
        )
        if roof in ("gable", "tiles"):
            base = rng.choice([(150, 72, 55), (120, 60, 48), (105, 95, 92), (150, 100, 85)])
        elif roof == "green":  # a planted roof: the colour and texture of a lawn
            base = (rng.uniform(75, 115), rng.uniform(95, 135), rng.uniform(50, 80))
        elif roof == "flat_grey":
            g = rng.uniform(75, 135)
            base = (g, g + 1, g + 4)  # the colour of asphalt
        elif roof == "flat_light":
            g = rng.uniform(150, 190)
            base = (g + 3, g, g - 5)  # the colour of sidewalks
        else:
            g = rng.uniform(55, 75)
            base = (g, g + 2, g + 4)
        horizontal = (maxx - minx) >= (maxy - miny)
        obj_sub = cv.obj[s]
        if roof in ("gable", "tiles"):
            tex = TEX_ROOF_X if horizontal else TEX_ROOF_Y
            a = cv.new(base, tex, 7.0, 10)
            b = cv.new(np.asarray(cv.colors[a]) * rng.uniform(0.62, 0.8), tex, 6.0, 0)
            half = np.zeros(sub_shape, dtype=bool)
            if horizontal:
                half[: sub_shape[0] // 2, :] = True
            else:
                half[:, : sub_shape[1] // 2] = True
            obj_sub[mask & half] = a
            obj_sub[mask & ~half] = b
        elif roof == "green":
            obj_sub[mask] = cv.new(base, TEX_GRASS, 14.0, 6)
        else:
            o = cv.new(base, TEX_SMOOTH, 5.0, 8)
            obj_sub[mask] = o
            self._roof_details(s, mask, base)
        cv.labels[s][mask] = BUILDING
        h = height if height is not None else float(rng.uniform(6, 18))
        self.buildings.append(Building(len(self.buildings) + 1, poly, h, str(roof), kind))

    def _roof_details(self, s: tuple[slice, slice], mask: np.ndarray, base) -> None:
        rng, cv = self.rng, self.cv
        hh, ww = mask.shape
        for _ in range(int(rng.integers(0, 5))):
            dh, dw = cv.px(rng.uniform(0.8, 3.0)), cv.px(rng.uniform(0.8, 3.0))
            if dh >= hh or dw >= ww:
                continue
            r, c = int(rng.integers(0, hh - dh)), int(rng.integers(0, ww - dw))
            if not mask[r : r + dh, c : c + dw].all():
                continue
            shade = rng.uniform(0.6, 1.35)
            o = cv.new(np.asarray(base) * shade, TEX_SMOOTH, 4.0, 4)
            cv.obj[s][r : r + dh, c : c + dw] = o
        if rng.random() < 0.35:  # a field of solar panels
            dh, dw = int(hh * rng.uniform(0.2, 0.4)), int(ww * rng.uniform(0.2, 0.5))
            if dh > 2 and dw > 2:
                r, c = int(rng.integers(0, hh - dh)), int(rng.integers(0, ww - dw))
                if mask[r : r + dh, c : c + dw].all():
                    o = cv.new((45, 52, 75), TEX_ROOF_Y, 10.0, 5)
                    cv.obj[s][r : r + dh, c : c + dw] = o

    def block_residential(self, r0: int, r1: int, c0: int, c1: int) -> None:
        """Parcels with a house (rectangle, L or U) in a garden, some with a driveway and a car."""
        rng, cv = self.rng, self.cv
        self._yard_ground(r0, r1, c0, c1)
        bh, bw = r1 - r0, c1 - c0
        parcel = rng.uniform(15, 26) / cv.gsd
        ny, nx = max(1, int(bh // parcel)), max(1, int(bw // parcel))
        ys = np.linspace(r0, r1, ny + 1).round().astype(int)
        xs = np.linspace(c0, c1, nx + 1).round().astype(int)
        gap = cv.px(1.5)
        for i in range(ny):
            for j in range(nx):
                pr0, pr1, pc0, pc1 = ys[i] + gap, ys[i + 1] - gap, xs[j] + gap, xs[j + 1] - gap
                ph, pw = pr1 - pr0, pc1 - pc0
                if min(ph, pw) * cv.gsd < 6:
                    continue
                if rng.random() < 0.12:
                    self._garden(pr0, pr1, pc0, pc1)
                    continue
                h = int(ph * rng.uniform(0.55, 0.85))
                w = int(pw * rng.uniform(0.55, 0.85))
                br0 = pr0 + int(rng.integers(0, max(1, ph - h)))
                bc0 = pc0 + int(rng.integers(0, max(1, pw - w)))
                kind = rng.choice(["rect", "L", "U"], p=[0.55, 0.33, 0.12])
                self.add_building(_shape_polygon(kind, br0, br0 + h, bc0, bc0 + w, cv), kind)
                self._garden(pr0, pr1, pc0, pc1)
                if rng.random() < 0.45:  # a driveway with a car
                    dw = cv.px(3.0)
                    dc0 = pc0 if bc0 - pc0 > dw else pc1 - dw
                    if (bc0 - pc0 > dw) or (pc1 - (bc0 + w) > dw):
                        cv.rect(pr0, pr1, dc0, dc0 + dw, cv.new((140, 138, 135), TEX_PAVING, 8), 0)
                        self.car(pr0 + (pr1 - pr0) // 2, dc0 + dw // 2, vertical=True)

    def _garden(self, r0: int, r1: int, c0: int, c1: int) -> None:
        rng, cv = self.rng, self.cv
        for _ in range(int(rng.integers(0, 3))):
            rr, cc = rng.uniform(r0, r1), rng.uniform(c0, c1)
            self.trees.append((rr, cc, rng.uniform(2.0, 4.5) / cv.gsd, rng.uniform(5, 12)))
        for _ in range(int(rng.integers(0, 3))):
            self.clutter(r0, r1, c0, c1)

    def block_courtyard(self, r0: int, r1: int, c0: int, c1: int) -> None:
        """A perimeter block round a paved courtyard, split into buildings by passages."""
        rng, cv = self.rng, self.cv
        from shapely.geometry import box

        self._yard_ground(r0, r1, c0, c1)
        m = cv.px(rng.uniform(0.5, 2.0))
        a0, a1, b0, b1 = r0 + m, r1 - m, c0 + m, c1 - m
        depth = cv.px(rng.uniform(10, 14))
        if min(a1 - a0, b1 - b0) < 2 * depth + cv.px(8):
            self.add_building(box(b0, a0, b1, a1), "rect")
            return
        ring = box(b0, a0, b1, a1).difference(box(b0 + depth, a0 + depth, b1 - depth, a1 - depth))
        # courtyard paving and trees
        yard = cv.new((150, 145, 138), TEX_PAVING, 9)
        cv.rect(a0 + depth, a1 - depth, b0 + depth, b1 - depth, yard, IMPERVIOUS)
        inner_h, inner_w = a1 - a0 - 2 * depth, b1 - b0 - 2 * depth
        lawn = cv.px(2.0)
        if min(inner_h, inner_w) > 4 * lawn:
            self._yard_ground(
                a0 + depth + lawn, a1 - depth - lawn, b0 + depth + lawn, b1 - depth - lawn
            )
            self._garden(a0 + depth + lawn, a1 - depth - lawn, b0 + depth + lawn, b1 - depth - lawn)
        # passages through the ring split it into separate buildings
        cuts, paving = [], []
        passage = cv.px(rng.uniform(2.5, 4.0))
        for _ in range(int(rng.integers(0, 4))):
            if rng.random() < 0.5:
                c = int(rng.uniform(b0 + depth, b1 - depth - passage))
                cuts.append(box(c, a0 - 1, c + passage, a1 + 1))
                paving += [(a0, a0 + depth, c, c + passage), (a1 - depth, a1, c, c + passage)]
            else:
                r = int(rng.uniform(a0 + depth, a1 - depth - passage))
                cuts.append(box(b0 - 1, r, b1 + 1, r + passage))
                paving += [(r, r + passage, b0, b0 + depth), (r, r + passage, b1 - depth, b1)]
        pave = cv.new((150, 145, 138), TEX_PAVING, 9)
        for rect in paving:
            cv.rect(*rect, pave, IMPERVIOUS)
        parts = ring
        for cut in cuts:
            parts = parts.difference(cut)
        height = float(rng.uniform(12, 22))
        for g in getattr(parts, "geoms", [parts]):
            self.add_building(g, "courtyard" if len(g.interiors) else "block", height)

    def block_industrial(self, r0: int, r1: int, c0: int, c1: int) -> None:
        """A hall on a paved yard with clutter and a few cars."""
        rng, cv = self.rng, self.cv
        cv.rect(r0, r1, c0, c1, cv.new((128, 126, 122), TEX_PAVING, 10.0, 10), IMPERVIOUS)
        m = cv.px(rng.uniform(3, 8))
        bh, bw = r1 - r0 - 2 * m, c1 - c0 - 2 * m
        if min(bh, bw) > cv.px(8):
            h, w = int(bh * rng.uniform(0.5, 0.8)), int(bw * rng.uniform(0.5, 0.8))
            br0 = r0 + m + int(rng.integers(0, max(1, bh - h)))
            bc0 = c0 + m + int(rng.integers(0, max(1, bw - w)))
            kind = rng.choice(["rect", "L", "courtyard"], p=[0.6, 0.25, 0.15])
            self.add_building(_shape_polygon(kind, br0, br0 + h, bc0, bc0 + w, cv), kind)
        for _ in range(int(rng.integers(3, 10))):
            self.clutter(r0, r1, c0, c1, size=12.0)
        for _ in range(int(rng.integers(0, 6))):
            rr, cc = int(rng.uniform(r0, r1)), int(rng.uniform(c0, c1))
            if cv.labels[min(max(rr, 0), cv.h - 1), min(max(cc, 0), cv.w - 1)] == IMPERVIOUS:
                self.car(rr, cc, vertical=bool(rng.random() < 0.5))

    def block_park(self, r0: int, r1: int, c0: int, c1: int) -> None:
        """A lawn with trees and a footpath."""
        rng, cv = self.rng, self.cv
        self._yard_ground(r0, r1, c0, c1)
        area = (r1 - r0) * (c1 - c0) * cv.gsd**2
        n = int(area / rng.uniform(60, 160))
        rr = rng.uniform(r0, r1, n)
        cc = rng.uniform(c0, c1, n)
        for a, b in zip(rr, cc, strict=True):
            self.trees.append((a, b, rng.uniform(2.5, 6.0) / cv.gsd, rng.uniform(8, 18)))
        # a footpath
        pw = cv.px(2.0)
        mid = int(rng.uniform(c0, c1))
        cv.rect(
            r0, r1, mid - pw // 2, mid + pw // 2, cv.new((160, 150, 130), TEX_DIRT, 10), IMPERVIOUS
        )
        if rng.random() < 0.5:
            self.clutter(r0, r1, c0, c1)

    def block_parking(self, r0: int, r1: int, c0: int, c1: int) -> None:
        """A parking lot on part of the block, houses on the rest."""
        rng, cv = self.rng, self.cv
        if min(r1 - r0, c1 - c0) * cv.gsd > 40:
            cut = int(r0 + (r1 - r0) * rng.uniform(0.35, 0.6))
            self.block_residential(cut + cv.px(3.0), r1, c0, c1)
            r1 = cut
        grey = rng.uniform(90, 120)
        cv.rect(r0, r1, c0, c1, cv.new((grey, grey, grey + 3), TEX_SMOOTH, 6.0, 4), IMPERVIOUS)
        row_pitch = cv.px(rng.uniform(6.0, 7.5))
        slot = cv.px(2.6)
        for rr in range(r0 + cv.px(3.0), r1 - cv.px(3.0), row_pitch):
            for cc in range(c0 + slot, c1 - slot, slot):
                if rng.random() < 0.5:
                    self.car(rr, cc, vertical=True)

    # ---------------------------------------------------------------- small objects
    def car(self, rc: float, cc: float, vertical: bool) -> None:
        """A car centred at (rc, cc) with a windscreen; none where it would touch a building."""
        rng, cv = self.rng, self.cv
        length, width = cv.px(rng.uniform(4.0, 5.0)), cv.px(rng.uniform(1.7, 2.0))
        h, w = (length, width) if vertical else (width, length)
        r0, c0 = int(rc - h / 2), int(cc - w / 2)
        s = cv.clip(r0, r0 + h, c0, c0 + w)
        if s is None or (cv.labels[s] == BUILDING).any():
            return
        palette = [(225, 225, 228), (170, 172, 175), (105, 107, 110), (35, 36, 40),
                   (150, 30, 30), (30, 50, 120), (40, 70, 50), (200, 180, 150)]  # fmt: skip
        col = palette[int(rng.integers(len(palette)))]
        body = cv.new(col, TEX_SMOOTH, 5.0, 8)
        cv.rect(r0, r0 + h, c0, c0 + w, body, CAR)
        glass = cv.new((30, 35, 40), TEX_SMOOTH, 3.0, 4)
        if vertical:
            g0 = r0 + int(h * 0.25)
            cv.rect(g0, g0 + max(1, int(h * 0.18)), c0 + 1, c0 + w - 1, glass, CAR)
        else:
            g0 = c0 + int(w * 0.25)
            cv.rect(r0 + 1, r0 + h - 1, g0, g0 + max(1, int(w * 0.18)), glass, CAR)

    def street_cars(self, r0: int, r1: int, vertical: bool) -> None:
        """Cars parked along both sides of the road between r0 and r1."""
        rng, cv = self.rng, self.cv
        length = cv.h if vertical else cv.w
        lane = cv.px(1.4)
        for side in (r0 + lane, r1 - lane):
            pos = rng.uniform(0, 15) / cv.gsd
            while pos < length:
                if rng.random() < 0.55:
                    if vertical:
                        self.car(pos, side, vertical=True)
                    else:
                        self.car(side, pos, vertical=False)
                pos += rng.uniform(5.5, 14.0) / cv.gsd

    def street_trees(self, r0: int, r1: int, vertical: bool) -> None:
        """Half the roads get a row of trees along each sidewalk."""
        rng, cv = self.rng, self.cv
        if rng.random() < 0.5:
            return
        length = cv.h if vertical else cv.w
        for side in (r0 - cv.px(1.5), r1 + cv.px(1.5)):
            pos = rng.uniform(0, 10) / cv.gsd
            while pos < length:
                radius = rng.uniform(2.5, 5.0) / cv.gsd
                if vertical:
                    self.trees.append((pos, side, radius, rng.uniform(8, 15)))
                else:
                    self.trees.append((side, pos, radius, rng.uniform(8, 15)))
                pos += rng.uniform(8.0, 16.0) / cv.gsd

    def clutter(self, r0: int, r1: int, c0: int, c1: int, size: float = 5.0) -> None:
        """A clutter patch of up to ``size`` metres per side somewhere in the rectangle."""
        rng, cv = self.rng, self.cv
        h, w = cv.px(rng.uniform(0.6, size)), cv.px(rng.uniform(0.6, size))
        if r1 - r0 <= h or c1 - c0 <= w:
            return
        rr, cc = int(rng.integers(r0, r1 - h)), int(rng.integers(c0, c1 - w))
        s = cv.clip(rr, rr + h, cc, cc + w)
        if s is None or (cv.labels[s] == BUILDING).any():
            return
        kind = int(rng.integers(4))
        color = [(120, 95, 70), (190, 60, 40), (60, 110, 160), (200, 200, 80)][kind]
        o = cv.new(color, TEX_DIRT if kind == 0 else TEX_SMOOTH, 14, 25)
        cv.rect(rr, rr + h, cc, cc + w, o, CLUTTER)
        self.clutter_boxes.append((rr, rr + h, cc, cc + w))
