"""The quick look: a PNG of the scene with the classes over it, a title above, a legend beside."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.geo.tags import CHECKSUM_TAG
from aerialct.predict.identity import image_checksum

MARGIN = 8
SWATCH = 14
FONT_SIZE = 14

__all__ = ["frame_with_legend", "legend_swatch_boxes", "write_quicklook"]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, AttributeError):  # Pillow < 10.1 or no FreeType: bitmap font
        return ImageFont.load_default()


def _text_size(font: Any, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text or " ")
    return int(right - min(left, 0)), int(bottom - min(top, 0))


def legend_swatch_boxes(
    map_size: tuple[int, int], classes: ClassTable, title: str
) -> tuple[tuple[int, int, int, int], list[tuple[int, int, int, int]], tuple[int, int]]:
    """Layout: the map's box, one swatch box per class (x0, y0, x1, y1) and the canvas size."""
    font = _font(FONT_SIZE)
    w, h = map_size
    _, title_h = _text_size(font, title)
    row_h = max(SWATCH, _text_size(font, "Hg")[1]) + 4
    name_w = max(_text_size(font, c.name)[0] for c in classes)
    top = MARGIN + (title_h + MARGIN if title else 0)
    map_box = (MARGIN, top, MARGIN + w, top + h)
    lx = map_box[2] + MARGIN
    swatches = [
        (lx, top + i * row_h, lx + SWATCH, top + i * row_h + SWATCH) for i in range(len(classes))
    ]
    width = max(lx + SWATCH + 6 + name_w + MARGIN, _text_size(font, title)[0] + 2 * MARGIN)
    height = max(map_box[3], top + len(classes) * row_h) + MARGIN
    return map_box, swatches, (width, height)


def frame_with_legend(rgb: np.ndarray, classes: ClassTable, title: str) -> Any:
    """A PIL image: ``title`` on top, the map ``rgb`` (H, W, 3 uint8) below, the legend beside it."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    map_box, swatches, size = legend_swatch_boxes((w, h), classes, title)
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(Image.fromarray(rgb), map_box[:2])
    draw = ImageDraw.Draw(canvas)
    font = _font(FONT_SIZE)
    if title:
        draw.text((MARGIN, MARGIN), title, fill=(0, 0, 0), font=font)
    for c, (x0, y0, x1, y1) in zip(classes, swatches, strict=True):
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=tuple(c.color), outline=(80, 80, 80))
        draw.text((x1 + 6, y0), c.name, fill=(0, 0, 0), font=font)
    return canvas


def write_quicklook(
    ds: Any,
    bands: Sequence[int],
    classes_path: Path,
    out_png: Path,
    classes: ClassTable,
    max_size: int = 1024,
    alpha: float = 0.45,
    title: str = "",
    texts: dict[str, str] | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> str:
    """A PNG thumbnail of the scene (first three bands, 2-98% stretch) with the class colours over it.

    The map is framed with ``title`` above it and a legend of the class names and
    colours beside it (:func:`frame_with_legend`); the title is also the PNG's Title.
    ``texts`` become PNG text entries, with the checksum of the framed image's pixels
    (:func:`aerialct.predict.identity.image_checksum`) under the checksum tag, which is
    returned. ``window`` (top, bottom, left, right) limits the scene to a rectangle.
    """
    import rasterio
    from PIL.PngImagePlugin import PngInfo
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    top, bottom, left, right = window or (0, ds.height, 0, ds.width)
    width, height = right - left, bottom - top
    scale = max(width, height) / max_size
    w = max(1, round(width / max(scale, 1)))
    h = max(1, round(height / max(scale, 1)))
    rgb_bands = list(bands[:3]) if len(bands) >= 3 else [bands[0]] * 3
    win = Window(left, top, width, height)
    img = ds.read(rgb_bands, out_shape=(3, h, w), window=win, resampling=Resampling.average)
    img = img.astype(np.float32)
    for i in range(3):
        lo, hi = np.percentile(img[i], (2, 98))
        img[i] = np.clip((img[i] - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    with rasterio.open(classes_path) as c:
        ids = c.read(1, out_shape=(h, w), resampling=Resampling.nearest)
    lut = np.zeros((256, 3), dtype=np.float32)
    for ci in classes:
        lut[ci.id] = ci.color
    over = np.moveaxis(lut[ids], -1, 0)
    a = np.where(ids == IGNORE_INDEX, 0.0, alpha)[None]
    out = (img * (1 - a) + over * a).round().clip(0, 255).astype(np.uint8)
    meta = PngInfo()
    meta.add_text("Title", title)
    framed = frame_with_legend(np.moveaxis(out, 0, -1), classes, title)
    checksum = image_checksum(np.asarray(framed.convert("RGB")))
    for key, value in {**(texts or {}), CHECKSUM_TAG: checksum}.items():
        meta.add_text(key, value)
    framed.save(out_png, format="PNG", pnginfo=meta)
    return checksum
