"""Decoded chips held in memory: training from a chips folder at the speed of packed chips.

Reading a chip pair from GeoTIFFs costs two GDAL opens and decodes per sample, every
epoch; the model step of a small model is shorter than that. When the decoded chips of
a run (training and validation, images in their own dtype, masks as uint8) fit under a
bound, :func:`cache_chips` reads each once, before the first epoch, into two arrays, and
the run's datasets serve samples from them: the same values, in the same order, as
from the files (so a run trains to the same weights either way). The bound is
``data.cache_gb``: by default a quarter of the memory available when the run starts;
0 turns the cache off. The run logs what it did in one line, and when the chips do not
fit it says how to train fast anyway (``aerialct pack``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from aerialct.classes import IGNORE_INDEX
from aerialct.data.packed import PackedChipDataset
from aerialct.progress import ProgressFn, as_progress

if TYPE_CHECKING:
    from aerialct.data.packed import PackedChips
    from aerialct.data.transforms import JointAugment, Normalize

log = logging.getLogger("aerialct")

AUTO_SHARE = 0.25
"""Default bound: this share of the memory available when training starts."""


@dataclass
class CachedChips:
    """Decoded chips: images (N, C, H, W) in their own dtype, masks (N, H, W), and the pairs
    they came from (for messages); chip i is ``pairs[i]``."""

    images: np.ndarray
    masks: np.ndarray
    pairs: list[tuple[Path, Path]]

    def describe(self, i: int) -> str:
        return str(self.pairs[i][1])


class CachedChipDataset(PackedChipDataset):
    """(image, mask) pairs from the memory cache: what :class:`~aerialct.data.dataset.ChipDataset`
    gives for the same chips, without opening a file (the packed form's sampling, from
    arrays in memory instead of memory-mapped files)."""

    in_memory = True
    """The arrays live in this process: DataLoader workers must be forked, not spawned."""

    def __init__(
        self,
        cache: CachedChips,
        indices: Sequence[int],
        normalize: Normalize,
        augment: JointAugment | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(cast("PackedChips", cache), indices, normalize, augment, num_classes)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``, else None)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def cache_limit(cache_gb: float | None) -> int:
    """The cache bound in bytes: ``cache_gb`` GB, or AUTO_SHARE of the available memory."""
    if cache_gb is not None:
        return int(max(cache_gb, 0.0) * 1e9)
    avail = available_memory()
    return int(AUTO_SHARE * avail) if avail else 0


def cache_chips(
    pairs: Sequence[tuple[Path, Path]],
    bands: int,
    shape: tuple[int, int],
    dtype: str,
    num_classes: int,
    limit: int,
    progress: ProgressFn | None = None,
) -> CachedChips | None:
    """Read every chip pair into memory when the decoded size fits ``limit`` bytes; else None.

    Logs one line either way. Chips of another size, band count or dtype, and unreadable
    chips, raise what reading them during training would (InputError / RasterError).
    """
    n = len(pairs)
    h, w = shape
    mask_dtype = np.uint8 if num_classes < IGNORE_INDEX else np.uint16
    need = n * (bands * h * w * np.dtype(dtype).itemsize + h * w * np.dtype(mask_dtype).itemsize)
    gb = f"{need / 1e9:.2f} GB"
    if need > limit:
        if limit > 0:
            log.info(
                "chips: %d decoded chips take %s, over the cache bound of %.2f GB "
                "(data.cache_gb); reading GeoTIFFs every epoch (aerialct pack makes a fast copy)",
                n, gb, limit / 1e9,
            )  # fmt: skip
        return None
    images = np.empty((n, bands, h, w), dtype=dtype)
    masks = np.empty((n, h, w), dtype=mask_dtype)
    prog = as_progress(progress)
    prog(0, total=n, description="caching chips")
    _read_into(pairs, images, masks, prog)
    log.info(
        "chips: %d decoded chips (%s) held in memory for training, within the bound of %.2f GB "
        "(data.cache_gb; 0 turns the cache off)", n, gb, limit / 1e9,
    )  # fmt: skip
    return CachedChips(images, masks, [(Path(a), Path(b)) for a, b in pairs])


def _read_into(
    pairs: Sequence[tuple[Path, Path]], images: np.ndarray, masks: np.ndarray, prog: Any
) -> None:
    """Decode chip i of ``pairs`` into ``images[i]`` and ``masks[i]`` (checked shapes)."""
    import rasterio
    from rasterio.errors import RasterioError

    from aerialct.errors import InputError
    from aerialct.geo.io import read_failed

    # chips are tile's own files, alone in their folder: no sidecar to look for (a folder
    # listing per open costs more than the chip's decode in a folder of thousands)
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        for i, (img, msk) in enumerate(pairs):
            for path, out in ((img, images[i]), (msk, masks[i : i + 1])):
                try:
                    with rasterio.open(path) as ds:
                        if (ds.count, ds.height, ds.width) != out.shape:
                            raise InputError(
                                f"{path}: chip is {ds.count}x{ds.height}x{ds.width} (bands x px), "
                                f"the others {'x'.join(map(str, out.shape))}; re-run aerialct tile"
                            )
                        out[...] = ds.read()  # the file's values, as read_chip gives them
                except RasterioError as e:
                    raise read_failed(path, e) from None
            prog(1)
