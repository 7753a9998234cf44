"""Training samples of either chip form (GeoTIFF chips, packed arrays): below both readers.

:func:`chip_sample` turns raw chip arrays into one (image, mask) training pair;
:func:`band_stats_from` computes per-band mean/std over evenly spaced chips. The
GeoTIFF reader (:mod:`aerialct.data.dataset`) and the packed reader
(:mod:`aerialct.data.packed`) both call them, so both forms give the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from aerialct.classes import IGNORE_INDEX
from aerialct.errors import InputError
from aerialct.progress import ProgressFn, as_progress

if TYPE_CHECKING:
    import torch

__all__ = ["band_stats_from", "chip_sample"]


def band_stats_from(
    n: int,
    read: Callable[[int], np.ndarray],
    max_chips: int = 256,
    progress: ProgressFn | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean/std over up to ``max_chips`` evenly spaced of ``n`` chips; ``read(i)``
    returns chip i as (C, H, W) float32."""
    if not n:
        raise InputError("no training chips to compute normalisation statistics from")
    take = np.unique(np.linspace(0, n - 1, min(n, max(1, max_chips))).round().astype(int))
    prog = as_progress(progress)
    prog(0, total=len(take), description="band statistics")
    total = None
    total_sq = None
    count = 0
    for i in take:
        img = read(int(i))
        flat = img.reshape(img.shape[0], -1).astype(np.float64)
        s, sq = flat.sum(axis=1), (flat * flat).sum(axis=1)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += flat.shape[1]
        prog(1)
    assert total is not None and total_sq is not None
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    std = np.sqrt(var)
    std = np.where(std < 1e-6, 1.0, std)  # a constant band: leave it centred, unscaled
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def chip_sample(
    img: np.ndarray,
    msk: np.ndarray,
    name: str,
    num_classes: int | None,
    normalize: Callable,
    augment: Callable | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training sample from raw chip arrays (either chip form): ids checked against the
    class table (InputError naming ``name``), image normalised, both augmented together."""
    import torch  # here: the packed reader stays numpy-only until a sample is asked for

    if num_classes is not None:
        bad = (msk != IGNORE_INDEX) & ((msk < 0) | (msk >= num_classes))
        if bad.any():
            raise InputError(
                f"{name}: mask holds class id {int(msk[bad][0])} but the class table has "
                f"{num_classes} classes; re-tile with the right class table"
            )
    image = normalize(torch.from_numpy(img))
    mask = torch.from_numpy(msk)
    if augment is not None:
        image, mask = augment(image, mask)
    return image, mask
