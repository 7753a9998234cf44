"""ISPRS Potsdam: file names, the standard split and the legend
(README, "The data: `synth` and `tile`")."""

from __future__ import annotations

import re

from aerialct.classes import POTSDAM

CLASSES = POTSDAM

TRAIN_TILES = (
    "2_10 2_11 2_12 3_10 3_11 3_12 4_10 4_11 4_12 5_10 5_11 5_12 "
    "6_7 6_8 6_9 6_10 6_11 6_12 7_7 7_8 7_9 7_10 7_11 7_12"
).split()
TEST_TILES = "2_13 2_14 3_13 3_14 4_13 4_14 4_15 5_13 5_14 5_15 6_13 6_14 6_15 7_13".split()

TILE_SIZE = 6000
GSD = 0.05
CROP_SIZE = 500
"""CT protocol: 500x500 crops resized to 512 (image bilinear, mask nearest)."""
RESIZE_TO = 512
EXCLUDED_FROM_MEAN = ("clutter",)

_IMAGE_RE = re.compile(r"^top_potsdam_(\d+)_(\d+)_(RGB|RGBIR|IRRG)\.tif$", re.IGNORECASE)
_LABEL_RE = re.compile(r"^top_potsdam_(\d+)_(\d+)_label(_noBoundary)?\.tif$", re.IGNORECASE)
_TILE_RE = re.compile(r"(?:top_potsdam_)?(\d+)_(\d+)")


def image_name(tile: str, bands: str = "RGB") -> str:
    """The image file of a tile: ``top_potsdam_2_10_RGB.tif``."""
    return f"top_potsdam_{tile}_{bands}.tif"


def label_name(tile: str) -> str:
    """The label file of a tile: ``top_potsdam_2_10_label.tif``."""
    return f"top_potsdam_{tile}_label.tif"


def eroded_label_name(tile: str) -> str:
    """The eroded (boundary-free) label file of a tile, used for testing."""
    return f"top_potsdam_{tile}_label_noBoundary.tif"


def tile_id(text: str) -> str | None:
    """``"2_10"`` or ``"top_potsdam_02_10"`` -> ``"2_10"``; None if not a tile id."""
    m = _TILE_RE.fullmatch(text.strip())
    return f"{int(m.group(1))}_{int(m.group(2))}" if m else None


def parse_label_name(name: str) -> tuple[str, bool] | None:
    """``top_potsdam_2_10_label_noBoundary.tif`` -> ``("2_10", True)`` (True: eroded);
    None if not a Potsdam label name."""
    m = _LABEL_RE.match(name)
    if not m:
        return None
    return f"{int(m.group(1))}_{int(m.group(2))}", bool(m.group(3))


def parse_image_name(name: str) -> tuple[str, str] | None:
    """``top_potsdam_2_10_RGB.tif`` -> ``("2_10", "RGB")``; None if not a Potsdam image name."""
    m = _IMAGE_RE.match(name)
    if not m:
        return None
    return f"{int(m.group(1))}_{int(m.group(2))}", m.group(3).upper()


def standard_split(tile: str) -> str | None:
    """ "train", "test" or None for a tile id outside the standard split."""
    if tile in TRAIN_TILES:
        return "train"
    if tile in TEST_TILES:
        return "test"
    return None
