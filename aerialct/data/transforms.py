"""Joint image/mask transforms for training chips.

Every geometric transform is applied to the image and its mask together; the
image is resampled bilinearly, the mask by nearest neighbour (labels are never
interpolated). Randomness comes from torch's global generator, which the
DataLoader seeds per worker from the run seed, so runs are reproducible.

Shapes: image ``(C, H, W)`` float (already normalised), mask ``(H, W)`` int64
with ``IGNORE_INDEX`` for unlabelled pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aerialct.classes import IGNORE_INDEX

__all__ = ["JointAugment", "Normalize", "random_scale"]


@dataclass
class Normalize:
    """Raw pixel values -> ``(clip(x, low, high) - mean) / std`` per band, as float32.

    ``low``/``high`` are the robust percentiles of the training pixels (tile time);
    without them the values are not clipped (chips tiled before they existed).
    """

    mean: Sequence[float]
    std: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None

    def __post_init__(self) -> None:
        self._mean = torch.tensor(list(self.mean), dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(list(self.std), dtype=torch.float32).view(-1, 1, 1)
        self._low = self._high = None
        if self.low is not None and self.high is not None:
            self._low = torch.tensor(list(self.low), dtype=torch.float32).view(-1, 1, 1)
            self._high = torch.tensor(list(self.high), dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float()
        if self._low is not None and self._high is not None:
            x = torch.maximum(torch.minimum(x, self._high), self._low)
        return (x - self._mean) / self._std


def random_scale(
    image: torch.Tensor, mask: torch.Tensor, low: float, high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale by a factor drawn from [low, high], then crop or pad back to the input size.

    Padding uses 0 for the (normalised) image, i.e. the band mean, and
    ``IGNORE_INDEX`` for the mask, so padded pixels never count in the loss.
    """
    _, h, w = image.shape
    s = float(torch.empty(1).uniform_(low, high))
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) == (h, w):
        return image, mask
    img = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    msk = F.interpolate(mask[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    if nh > h or nw > w:  # random crop back
        top = int(torch.randint(0, max(nh - h, 0) + 1, (1,)))
        left = int(torch.randint(0, max(nw - w, 0) + 1, (1,)))
        img = img[:, top : top + min(h, nh), left : left + min(w, nw)]
        msk = msk[top : top + min(h, nh), left : left + min(w, nw)]
    ph, pw = h - img.shape[1], w - img.shape[2]
    if ph > 0 or pw > 0:  # pad at a random place
        top = int(torch.randint(0, ph + 1, (1,))) if ph > 0 else 0
        left = int(torch.randint(0, pw + 1, (1,))) if pw > 0 else 0
        pad = (left, pw - left, top, ph - top)
        img = F.pad(img, pad, value=0.0)
        msk = F.pad(msk, pad, value=IGNORE_INDEX)
    return img.contiguous(), msk.contiguous()


@dataclass
class JointAugment:
    """Random flips, quarter turns and rescaling applied jointly to image and mask."""

    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    scale_range: tuple[float, float] | None = None

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale_range is not None:
            image, mask = random_scale(image, mask, *self.scale_range)
        if self.hflip and torch.rand(1).item() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if self.vflip and torch.rand(1).item() < 0.5:
            image, mask = image.flip(-2), mask.flip(-2)
        if self.rot90:
            square = image.shape[-1] == image.shape[-2]
            k = int(torch.randint(0, 4, (1,))) if square else 2 * int(torch.randint(0, 2, (1,)))
            if k:
                image, mask = image.rot90(k, (-2, -1)), mask.rot90(k, (-2, -1))
        return image.contiguous(), mask.contiguous()
