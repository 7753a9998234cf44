"""The chips dataset as torch sees it: (normalised image, mask) pairs from ``index.gpkg``.

:func:`open_chip_splits` reads the index written by ``aerialct tile``, checks
that every chip has the same size and band count (one line naming two
disagreeing files otherwise), and picks the training and validation splits.
It reads a packed folder (``aerialct pack``, :mod:`aerialct.data.packed`) too;
then ``train``/``val`` hold chip numbers and nothing imports rasterio or pyogrio.
Use :meth:`ChipSplits.dataset` and :meth:`ChipSplits.band_stats` for either form.
:func:`compute_band_stats` computes the per-band mean/std from training chips;
the trainer stores them in the checkpoint so prediction normalises the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from aerialct.classes import ClassTable
from aerialct.data.index import INDEX, ChipIndex, read_index
from aerialct.data.packed import (
    PackedChipDataset,
    PackedChips,
    is_packed,
    open_packed,
    packed_band_stats,
)
from aerialct.data.samples import band_stats_from, chip_sample
from aerialct.errors import InputError
from aerialct.geo.io import read_failed, read_window
from aerialct.progress import ProgressFn

if TYPE_CHECKING:
    from aerialct.config import DataConfig
    from aerialct.data.transforms import JointAugment, Normalize

log = logging.getLogger("aerialct")

__all__ = [
    "ChipDataset",
    "ChipSplits",
    "band_stats_from",
    "compute_band_stats",
    "open_chip_splits",
    "read_chip",
]


@dataclass
class ChipSplits:
    """The chips one training run uses, after validation."""

    root: Path
    classes: ClassTable
    meta: dict
    train: list[Any]
    """(image, mask) path pairs, or chip numbers when read from a packed folder."""
    val: list[Any]
    """Like ``train``."""
    val_split: str | None
    in_chans: int
    chip_size: int
    """Chip height (= width for square chips)."""
    chip_shape: tuple[int, int]
    gsd: float | None
    skipped_unlabelled: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    packed: PackedChips | None = None
    """The :class:`~aerialct.data.packed.PackedChips` when read from a packed folder
    (``train``/``val`` are then chip numbers), else None."""

    def dataset(
        self,
        which: str,
        normalize: Normalize,
        augment: JointAugment | None = None,
        num_classes: int | None = None,
    ) -> Dataset | PackedChipDataset:
        """The torch dataset of ``which`` ('train' or 'val') for either form."""
        items = self.train if which == "train" else self.val
        if self.packed is not None:
            return PackedChipDataset(self.packed, items, normalize, augment, num_classes)
        return ChipDataset(items, normalize, augment, num_classes)

    def band_stats(
        self, max_chips: int = 256, progress: ProgressFn | None = None
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-band mean/std of the training chips (same chips and values for either form)."""
        if self.packed is not None:
            return packed_band_stats(self.packed, self.train, max_chips, progress)
        return compute_band_stats(self.train, max_chips, progress)


def _pairs(index: ChipIndex, split: str) -> tuple[list[tuple[Path, Path]], int]:
    """(image, mask) paths of the labelled chips of ``split`` and the number of unlabelled."""
    frame = index.split(split)
    pairs = [
        (Path(index.image_path(row)), mask)
        for _, row in frame.iterrows()
        if (mask := index.mask_path(row)) is not None
    ]
    return pairs, len(frame) - len(pairs)


def _split_names(index: Any) -> list[str]:
    frame = index.frame
    return sorted(set(frame["split"].astype(str))) if len(frame) else []


def open_chip_splits(
    data_dir: str | Path, cfg: DataConfig, *, check_files: bool = True
) -> ChipSplits:
    """Read the chip index and choose the train/val chip lists; InputError on bad data.

    ``check_files`` opens every chip's header to catch mixed sizes and band counts.
    """
    if is_packed(data_dir):
        return _open_packed_splits(data_dir, cfg)
    index = read_index(data_dir)
    root = Path(index.root)
    names = _split_names(index)
    unlabelled = {}

    def labelled(split: str) -> list[tuple[Path, Path]]:
        pairs, unlabelled[split] = _pairs(index, split)
        return pairs

    train, val_split, val = _choose_splits(root, names, cfg, labelled)
    if val_split is None:
        log.warning("%s: no labelled validation chips; best.pt will follow the last epoch", root)
    elif val_split != cfg.val_split:
        log.warning("%s: no %r split; validating on %r instead", root, cfg.val_split, val_split)

    header = index.header
    bands = int(header.bands or 0)
    size = header.chip_size
    shape: tuple[int, int] | None = (int(size), int(size)) if size else None
    if check_files:
        bands, shape = _check_headers(root, [*train, *val], bands or None, shape)
    elif not bands or shape is None:
        bands, shape = _check_headers(root, train[:1], None, None)
    gsd = header.gsd
    extra = {"train_counts": index.label_counts(cfg.train_split)}
    return ChipSplits(
        root=root,
        classes=index.classes,
        meta=dict(index.meta),
        train=train,
        val=val,
        val_split=val_split,
        in_chans=bands,
        chip_size=shape[0],
        chip_shape=shape,
        gsd=None if gsd is None else float(gsd),
        skipped_unlabelled=unlabelled.get(cfg.train_split, 0),
        extra=extra,
    )


def _choose_splits(root: Path, names: list[str], cfg: DataConfig, labelled: Callable) -> tuple:
    """(train items, val split name or None, val items) by the rules of open_chip_splits."""
    if cfg.train_split not in names:
        raise InputError(
            f"{root}: the chip index has no {cfg.train_split!r} split (it has {names or 'none'}); "
            "tile training data into it or set data.train_split"
        )
    train = labelled(cfg.train_split)
    if not train:
        raise InputError(
            f"{root}: the {cfg.train_split!r} split has no labelled chips; tile with labels "
            "(aerialct tile ... --labels) before training"
        )
    for cand in (cfg.val_split, "test"):
        if cand in names and cand != cfg.train_split:
            val = labelled(cand)
            if val:
                return train, cand, val
    return train, None, []


def _open_packed_splits(data_dir: str | Path, cfg: DataConfig) -> ChipSplits:
    """open_chip_splits for a packed folder: numpy only, shapes checked at open."""
    packed = open_packed(data_dir)
    root = packed.root
    train, val_split, val = _choose_splits(root, packed.split_names, cfg, packed.split)
    if val_split is None:
        log.warning("%s: no labelled validation chips; best.pt will follow the last epoch", root)
    elif val_split != cfg.val_split:
        log.warning("%s: no %r split; validating on %r instead", root, cfg.val_split, val_split)
    n_train = len(packed.split(cfg.train_split, labelled_only=False))
    _, bands, h, w = packed.images.shape
    gsd = packed.meta.get("gsd")
    return ChipSplits(
        root=root,
        classes=packed.classes,
        meta=dict(packed.meta),
        train=train,
        val=val,
        val_split=val_split,
        in_chans=int(bands),
        chip_size=int(h),
        chip_shape=(int(h), int(w)),
        gsd=None if gsd is None else float(gsd),
        skipped_unlabelled=n_train - len(train),
        packed=packed,
        extra={"train_counts": _packed_counts(packed, train, len(packed.classes))},
    )


def _packed_counts(packed: PackedChips, chips: Sequence[int], k: int) -> np.ndarray:
    """Per labelled chip of a packed split (in ``chips`` order), its pixels per class ``(N, K)``."""
    counts = packed.index.get("counts")
    if counts is None:
        return np.zeros((len(chips), k), dtype=np.int64)
    return np.asarray(counts)[list(chips), :k].astype(np.int64)


def _check_headers(
    root: Path,
    pairs: Sequence[tuple[Path, Path]],
    bands: int | None,
    shape: tuple[int, int] | None,
) -> tuple[int, tuple[int, int]]:
    """Every image has ``bands`` bands and every image/mask has ``shape``; else InputError."""
    import rasterio
    from rasterio.errors import RasterioIOError

    first: dict[str, Any] = {}
    for img, msk in pairs:
        for path, is_mask in ((img, False), (msk, True)):
            if not path.exists():
                raise InputError(
                    f"{path}: chip listed in {root / INDEX} is missing; re-run aerialct tile"
                )
            try:
                with rasterio.open(path) as ds:
                    h, w, n = ds.height, ds.width, ds.count
            except RasterioIOError as e:
                raise InputError(f"{path}: unreadable chip ({e}); re-run aerialct tile") from e
            if shape is None:
                shape, first["shape"] = (h, w), path
            if (h, w) != shape:
                where = first.get("shape", "dataset.json chip_size")
                raise InputError(
                    f"{path}: chip is {h}x{w} px but {where} is {shape[0]}x{shape[1]}; chips of "
                    "mixed sizes cannot be batched, re-tile with one --size"
                )
            if is_mask:
                if n != 1:
                    raise InputError(f"{path}: a mask chip must have 1 band, it has {n}")
                continue
            if bands is None:
                bands, first["bands"] = n, path
            if n != bands:
                where = first.get("bands", "dataset.json")
                raise InputError(
                    f"{path}: chip has {n} bands but {where} has {bands}; use chips with one band "
                    "count (re-tile with the same --bands)"
                )
    if shape is None or not bands:
        raise InputError(f"{root}: no chips to read; re-run aerialct tile")
    return int(bands), shape


def read_chip(image: Path, mask: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one chip: image (C, H, W) float32 raw values, mask (H, W) int64 or None."""
    import rasterio
    from rasterio.errors import RasterioError

    path = image
    try:
        with rasterio.open(image) as ds:
            img = read_window(ds, out_dtype="float32")
        msk = None
        if mask is not None:
            path = mask
            with rasterio.open(mask) as ds:
                msk = read_window(ds, 1).astype(np.int64)
    except RasterioError as e:
        raise read_failed(path, e) from None
    return img, msk


def compute_band_stats(
    pairs: Sequence[tuple[Path, Path]],
    max_chips: int = 256,
    progress: ProgressFn | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std (raw pixel units) over up to ``max_chips`` evenly spaced chips."""
    return band_stats_from(
        len(pairs), lambda i: read_chip(pairs[i][0], None)[0], max_chips, progress
    )


class ChipDataset(Dataset):
    """(image, mask) pairs: image (C, H, W) float32 normalised, mask (H, W) int64."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        normalize: Normalize,
        augment: JointAugment | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.normalize = normalize
        self.augment = augment
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img_path, mask_path = self.pairs[i]
        img, msk = read_chip(img_path, mask_path)
        assert msk is not None
        return chip_sample(img, msk, str(mask_path), self.num_classes, self.normalize, self.augment)
