"""The quick-look frame: a title above the map and a legend of class names and colours beside it."""

from __future__ import annotations

from typing import Any

import numpy as np

from aerialct.classes import ClassTable

MARGIN = 8
SWATCH = 14
FONT_SIZE = 14

__all__ = ["frame_with_legend", "legend_swatch_boxes"]


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
