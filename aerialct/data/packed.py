"""Packed chips: one memory-mapped array of chips plus a small index, read with numpy alone.

``aerialct pack chips/`` (or ``aerialct tile ... --pack``) turns a chips folder
into a packed folder that training reads without rasterio, pyogrio or geopandas
(machines without GDAL, and thousands of small GeoTIFF opens per epoch avoided)::

    PACKED/packed.json   format, version, class table, ignore index, chip size,
                         bands, dtype, GSD, CRS (text), splits, per-split class pixel
                         counts, per-split band statistics (``split_band_stats``: sum,
                         sum of squares, count, mean, std), tile's robust statistics of the
                         training pixels (``band_stats``, as in dataset.json: training
                         normalises with them) and the source chips folder
    PACKED/images.npy    (N, C, H, W) chips in their own dtype (uint8 for RGB)
    PACKED/masks.npy     (N, H, W) uint8 class ids, 255 = ignore (uint16 past 255 classes)
    PACKED/index.npz     per chip: split, scene, chip_id, image (source path), row_off,
                         col_off, labelled (bool), counts (N, K+1: per class, then ignore)

Chips keep the order of ``index.gpkg``, so a run on the packed form sees the
same chips in the same order as on the folder and, with the same seed, trains to
the same weights. Readers here import numpy (and torch for the dataset) only;
:func:`pack_chips` alone needs the GDAL stack.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct import __version__
from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.data.index import ChipIndex, read_format_json, read_index, write_format_json
from aerialct.data.samples import band_stats_from, chip_sample
from aerialct.errors import InputError
from aerialct.geo.outputs import FOLDER, atomic_output, check_output
from aerialct.progress import ProgressFn, as_progress

if TYPE_CHECKING:
    import torch

    from aerialct.data.transforms import JointAugment, Normalize

__all__ = [
    "FORMAT",
    "PackResult",
    "PackedChipDataset",
    "PackedChips",
    "is_packed",
    "open_packed",
    "pack_chips",
    "packed_path",
]

FORMAT = "aerialct-packed"
VERSION = 1
META = "packed.json"
IMAGES = "images.npy"
MASKS = "masks.npy"
INDEX = "index.npz"
_FIX = "make one with `aerialct pack CHIPS --out DIR` or `aerialct tile ... --pack`"


@dataclass
class PackResult:
    """What :func:`pack_chips` wrote."""

    out: Path
    source: str
    chips: int
    labelled: int
    chip_size: int
    bands: int
    dtype: str
    splits: dict[str, int]
    bytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


@dataclass
class PackedChips:
    """An opened packed folder: metadata, the memory-mapped arrays and the per-chip index."""

    root: Path
    meta: dict
    classes: ClassTable
    images: np.ndarray
    """(N, C, H, W), memory-mapped read-only."""
    masks: np.ndarray
    """(N, H, W), memory-mapped read-only."""
    index: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def split_names(self) -> list[str]:
        return sorted(set(self.index["split"].tolist()))

    def split(self, name: str, labelled_only: bool = True) -> list[int]:
        """Chip numbers of one split, in index order."""
        sel = self.index["split"] == name
        if labelled_only:
            sel &= self.index["labelled"]
        return np.flatnonzero(sel).tolist()

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn get the paths, not a copy of the chips.
        state = dict(self.__dict__)
        state["images"] = state["masks"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.images = np.load(self.root / IMAGES, mmap_mode="r", allow_pickle=False)
        self.masks = np.load(self.root / MASKS, mmap_mode="r", allow_pickle=False)

    def describe(self, i: int) -> str:
        """A chip's name for messages: its source image path inside the packed folder."""
        return f"{self.root / MASKS}[{i}] ({self.index['image'][i]})"


def is_packed(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a packed dataset (``packed.json``)."""
    return (Path(path) / META).is_file()


def open_packed(path: str | os.PathLike) -> PackedChips:
    """Open a packed folder (numpy only); InputError naming the file and the fix otherwise."""
    root = Path(path)
    meta_path = root / META
    if not meta_path.is_file():
        raise InputError(f"{root}: not a packed chips folder (no {META}); {_FIX}")
    meta = read_format_json(meta_path, FORMAT, VERSION, _FIX, "re-pack with this aerialct version")
    arrays = {}
    for name in (IMAGES, MASKS):
        try:
            arrays[name] = np.load(root / name, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{root / name}: unreadable ({e}); re-pack the chips") from e
    try:
        with np.load(root / INDEX, allow_pickle=False) as z:
            index = {k: z[k] for k in z.files}
        classes = ClassTable.from_list(meta["classes"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{root}: corrupt packed index ({e}); re-pack the chips") from e
    images, masks = arrays[IMAGES], arrays[MASKS]
    n = images.shape[0]
    missing = [k for k in ("split", "labelled", "image") if k not in index]
    if missing:
        raise InputError(f"{root / INDEX}: no {', '.join(missing)} in the index; re-pack the chips")
    if images.ndim != 4 or masks.ndim != 3 or masks.shape[0] != n or len(index["split"]) != n:
        raise InputError(
            f"{root}: images {images.shape}, masks {masks.shape} and index "
            f"({len(index['split'])} chips) disagree; re-pack the chips"
        )
    if images.shape[2:] != masks.shape[1:]:
        raise InputError(f"{root}: image chips are {images.shape[2:]} but masks {masks.shape[1:]}")
    if n == 0:
        raise InputError(f"{root}: the packed dataset has no chips; {_FIX}")
    return PackedChips(root, meta, classes, images, masks, index)


class PackedChipDataset:
    """(image, mask) pairs from packed chips: image (C, H, W) float32 normalised, mask int64.

    The same values, in the same order of operations, as :class:`ChipDataset` gives for
    the GeoTIFF chips they were packed from.
    """

    def __init__(
        self,
        packed: PackedChips,
        indices: Sequence[int],
        normalize: Normalize,
        augment: JointAugment | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.packed = packed
        self.indices = list(indices)
        self.normalize = normalize
        self.augment = augment
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = self.indices[i]
        img = np.asarray(self.packed.images[j], dtype=np.float32)
        msk = np.asarray(self.packed.masks[j], dtype=np.int64)
        return chip_sample(
            img, msk, self.packed.describe(j), self.num_classes, self.normalize, self.augment
        )


def packed_band_stats(
    packed: PackedChips,
    indices: Sequence[int],
    max_chips: int = 256,
    progress: ProgressFn | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean/std over up to ``max_chips`` evenly spaced chips of ``indices``.

    The same chips and the same arithmetic as :func:`aerialct.data.dataset.compute_band_stats`
    on the chips folder, so both forms normalise alike.
    """
    return band_stats_from(
        len(indices),
        lambda k: np.asarray(packed.images[indices[k]], dtype=np.float32),
        max_chips,
        progress,
    )


# --------------------------------------------------------------------------- writing


def packed_path(chips_dir: str | os.PathLike) -> Path:
    """The default packed folder of a chips folder: ``<chips_dir>.packed`` beside it."""
    root = Path(chips_dir)
    named = root if root.name else root.resolve()  # `.` has no name of its own
    return named.with_name(named.name + ".packed")


def pack_chips(
    chips_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> PackResult:
    """Pack the chips folder ``chips_dir`` (index.gpkg + GeoTIFFs) into ``out``.

    ``out`` defaults to ``<chips_dir>.packed`` beside it. Every chip must have the
    same size and band count, and every mask id must be in the class table (one
    InputError naming the file otherwise). Written under a temporary sibling and
    renamed when complete.
    """
    import rasterio

    started = time.perf_counter()
    index = read_index(chips_dir)
    root = Path(index.root)
    dest = Path(out) if out is not None else packed_path(root)
    if dest.resolve() == root.resolve():
        raise InputError(f"{dest}: the packed folder must differ from the chips folder")
    check_output(dest, overwrite, kind=FOLDER, inputs=[root])
    n = len(index.frame)
    prog = as_progress(progress)
    prog(0, total=n, description="packing")
    with rasterio.open(index.image_path(index.frame.iloc[0])) as ds:
        shape = _Shape(n, ds.count, ds.height, ds.width, ds.dtypes[0], len(index.classes))
    with atomic_output(dest, overwrite, kind=FOLDER, inputs=[root], made_by="pack") as tmp:
        packed = _pack_arrays(index, shape, tmp, prog)
        _write_index(tmp, index.frame, packed)
        meta = _packed_meta(index, shape, packed)
        write_format_json(tmp / META, FORMAT, VERSION, meta)
        size = sum(p.stat().st_size for p in tmp.iterdir())
    return PackResult(
        out=dest,
        source=str(root),
        chips=n,
        labelled=int(packed.labelled.sum()),
        chip_size=shape.h,
        bands=shape.bands,
        dtype=str(np.dtype(shape.dtype)),
        splits=meta["splits"],
        bytes=size,
        seconds=round(time.perf_counter() - started, 3),
    )


@dataclass
class _Shape:
    """Chips to pack: how many, bands, height, width, dtype; and the number of classes."""

    n: int
    bands: int
    h: int
    w: int
    dtype: str
    k: int

    @property
    def mask_dtype(self) -> type[np.unsignedinteger]:
        return np.uint8 if self.k < IGNORE_INDEX else np.uint16


@dataclass
class _Packed:
    """Per chip: split, labelled, label pixels (N, K+1); per split: band sums."""

    splits: np.ndarray
    labelled: np.ndarray
    counts: np.ndarray
    stats: dict[str, dict[str, Any]]


def _pack_arrays(index: ChipIndex, shape: _Shape, tmp: Path, prog: Any) -> _Packed:
    """Copy every chip (in index order) into images.npy / masks.npy under ``tmp``."""
    frame, n, k = index.frame, shape.n, shape.k
    first = index.image_path(frame.iloc[0])
    hw = (shape.h, shape.w)
    packed = _Packed(
        splits=_text(frame["split"]),
        labelled=np.zeros(n, dtype=bool),
        counts=np.zeros((n, k + 1), dtype=np.int64),
        stats={},
    )
    images = _reserved_memmap(tmp / IMAGES, np.dtype(shape.dtype), (n, shape.bands, *hw))
    masks = _reserved_memmap(tmp / MASKS, np.dtype(shape.mask_dtype), (n, *hw))
    for i, (_, row) in enumerate(frame.iterrows()):
        img = _read(index.image_path(row), None, shape.bands, hw, first)
        images[i] = img
        msk_path = index.mask_path(row)
        if msk_path is None:
            masks[i] = IGNORE_INDEX
        else:
            msk = _read_mask(msk_path, hw, first, k)
            masks[i] = msk
            packed.labelled[i] = True
            hist = np.bincount(msk.ravel().astype(np.int64), minlength=IGNORE_INDEX + 1)
            packed.counts[i, :k] = hist[:k]
            packed.counts[i, k] = hist[IGNORE_INDEX]
        s = packed.stats.setdefault(
            packed.splits[i],
            {"count": 0, "sum": np.zeros(shape.bands), "sumsq": np.zeros(shape.bands)},
        )
        flat = img.reshape(shape.bands, -1).astype(np.float64)
        s["count"] += flat.shape[1]
        s["sum"] += flat.sum(axis=1)
        s["sumsq"] += (flat * flat).sum(axis=1)
        prog(1)
    images.flush()
    masks.flush()
    del images, masks
    return packed


def _reserved_memmap(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new ``.npy`` array mapped for writing, its disk space reserved before any write.

    ``open_memmap`` makes a sparse file: writing into the mapping on a full disk kills the
    process with SIGBUS, no message, temporaries left. With the blocks allocated first
    (``posix_fallocate``) a full disk is an ENOSPC here instead. Where the filesystem
    cannot allocate ahead, the free space is checked.
    """
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    size = path.stat().st_size
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, size)
    except OSError as e:
        err = e
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize >= size:
                return arr
            err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        del arr
        raise err from None
    except AttributeError:  # no posix_fallocate on this platform
        pass
    return arr


def _read_mask(path: Path, hw: tuple[int, int], first: Path, k: int) -> np.ndarray:
    """A mask chip (H, W); InputError when it holds an id outside the class table."""
    msk = _read(path, 1, 1, hw, first)[0]
    bad = (msk != IGNORE_INDEX) & (msk >= k)
    if bad.any():
        raise InputError(
            f"{path}: mask holds class id {int(msk[bad][0])} but the class table "
            f"has {k} classes; re-tile with the right class table"
        )
    return msk


def _write_index(tmp: Path, frame: Any, packed: _Packed) -> None:
    """index.npz: per chip its split, scene, id, source image, offsets, labelled, counts."""
    n = len(frame)

    def col(name: str, default: Any) -> np.ndarray:
        return frame[name].to_numpy() if name in frame else np.full(n, default)

    def text(name: str) -> np.ndarray:
        return _text(frame[name]) if name in frame else np.full(n, "")

    np.savez(
        tmp / INDEX,
        split=packed.splits,
        scene=text("scene"),
        chip_id=text("chip_id"),
        image=text("image"),
        row_off=col("row_off", -1).astype(np.int64),
        col_off=col("col_off", -1).astype(np.int64),
        labelled=packed.labelled,
        counts=packed.counts,
    )


def _split_band_stats(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per split: count, sum, sum of squares, mean and std of each band."""
    out = {}
    for sp, s in sorted(stats.items()):
        mean = s["sum"] / s["count"]
        std = np.sqrt(np.maximum(s["sumsq"] / s["count"] - mean * mean, 0.0))
        out[sp] = {
            "count": int(s["count"]),
            "sum": s["sum"].tolist(),
            "sumsq": s["sumsq"].tolist(),
            "mean": mean.tolist(),
            "std": std.tolist(),
        }
    return out


def _packed_meta(index: ChipIndex, shape: _Shape, packed: _Packed) -> dict[str, Any]:
    """The body of packed.json (write_format_json adds format and version)."""
    header = index.header
    splits, counts = packed.splits, packed.counts
    names = [*index.classes.names, "ignore"]
    split_names = sorted(set(splits.tolist()))
    return {
        "classes": index.classes.to_list(),
        "ignore_index": int(header.ignore_index),
        "chip_size": shape.h,
        "chip_shape": [shape.h, shape.w],
        "bands": shape.bands,
        "dtype": str(np.dtype(shape.dtype)),
        "mask_dtype": str(np.dtype(shape.mask_dtype)),
        "gsd": header.gsd,
        "crs": header.crs,
        "chips": shape.n,
        "labelled": int(packed.labelled.sum()),
        "splits": {sp: int((splits == sp).sum()) for sp in split_names},
        "class_pixels": {
            sp: {nm: int(counts[splits == sp, j].sum()) for j, nm in enumerate(names)}
            for sp in split_names
        },
        "split_band_stats": _split_band_stats(packed.stats),
        # tile's robust statistics of the training pixels, which training applies
        "band_stats": header.band_stats,
        "source": str(index.root),
        "source_meta": {
            key: getattr(header, key)
            for key in ("source", "label_mode", "window", "stride", "scenes")
        },
        "files": {"images": IMAGES, "masks": MASKS, "index": INDEX},
        "aerialct_version": __version__,
    }


def _text(values: Any) -> np.ndarray:
    """A fixed-width unicode array (loads with allow_pickle=False, unlike object arrays)."""
    return np.array([str(v) for v in values], dtype=str)


def _read(path: Path, band: int | None, bands: int, shape: tuple[int, int], first: Path):
    """One chip as (bands, H, W) in its dtype; InputError when missing, unreadable or off-size."""
    import rasterio
    from rasterio.errors import RasterioIOError

    if not path.exists():
        raise InputError(f"{path}: chip listed in the index is missing; re-run aerialct tile")
    try:
        with rasterio.open(path) as ds:
            hw, count = (ds.height, ds.width), ds.count
            if hw != shape:
                raise InputError(
                    f"{path}: chip is {hw[0]}x{hw[1]} px but {first} is {shape[0]}x{shape[1]}; "
                    "chips of mixed sizes cannot be packed, re-tile with one --size"
                )
            if band is None and count != bands:
                raise InputError(
                    f"{path}: chip has {count} bands but {first} has {bands}; use chips with "
                    "one band count (re-tile with the same --bands)"
                )
            if band is not None and count != 1:
                raise InputError(f"{path}: a mask chip must have 1 band, it has {count}")
            return ds.read() if band is None else ds.read([band])
    except RasterioIOError as e:
        raise InputError(f"{path}: unreadable chip ({e}); re-run aerialct tile") from e
