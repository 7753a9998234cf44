"""Statistics a tiling run stores and warns about: band statistics, class shares per split."""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_PER_CHIP = 2048
"""Valid pixels per chip kept (evenly strided) for the band statistics."""
PERCENTILES = (0.5, 99.5)
"""The robust range of each band: values outside are clipped before normalising."""
ONE_SIDED_SHARE = 0.95
"""A split whose label pixels are more than this share one class (or ignore) is warned about."""


def sample_pixels(img: np.ndarray, valid: np.ndarray | None, nodata: float | None) -> np.ndarray:
    """Up to SAMPLE_PER_CHIP valid pixels (C, n) of a chip (C, H, W), evenly strided in row-major
    order, in the chip's dtype (a task's record holds them; :func:`band_statistics` takes them
    as float64). Reads the chip in place (it is usually a view into a decoded band)."""
    h, w = img.shape[1:]
    ok = None if valid is None else valid.reshape(-1)
    if nodata is not None:
        kept = ~np.isnan(img).all(axis=0) if np.isnan(nodata) else ~(img == nodata).all(axis=0)
        ok = kept.reshape(-1) if ok is None else ok & kept.reshape(-1)
    if np.issubdtype(img.dtype, np.floating):
        finite = np.isfinite(img).all(axis=0).reshape(-1)
        ok = finite if ok is None else ok & finite
    if ok is None:  # every pixel: the same stride, as a slice where the stride allows one
        step = max(1, h * w // SAMPLE_PER_CHIP)
        if w % step == 0:  # every row, every step-th column
            return img[:, :, ::step].reshape(img.shape[0], -1).copy()  # a copy: bands are reused
        if step % w == 0:  # every (step / w)-th row, its first pixel
            return img[:, :: step // w, 0].copy()
        ys, xs = _strided(h, w)
        return img[:, ys, xs]
    idx = np.flatnonzero(ok)
    idx = idx[:: max(1, len(idx) // SAMPLE_PER_CHIP)]
    return img[:, idx // w, idx % w]


@functools.lru_cache(maxsize=8)
def _strided(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of every ``h * w // SAMPLE_PER_CHIP``-th pixel of an h x w chip."""
    idx = np.arange(0, h * w, max(1, h * w // SAMPLE_PER_CHIP))
    ys, xs = idx // w, idx % w
    ys.flags.writeable = xs.flags.writeable = False  # shared by every call
    return ys, xs


def band_statistics(samples: np.ndarray, dtype: str) -> dict:
    """Robust per-band statistics of valid training pixels (C, n), stored in dataset.json.

    ``low``/``high`` are the PERCENTILES of each band (not min/max, so a few hot or
    dead pixels do not stretch the range); ``mean``/``std`` are those of the pixels
    clipped to that range. Training and prediction both compute
    ``(clip(x, low, high) - mean) / std``.
    """
    if samples.dtype.kind != "u":  # unsigned samples: the same percentiles, found in fewer bytes
        samples = samples.astype(np.float64)
    low, high = np.percentile(samples, PERCENTILES, axis=1)  # one pass for both
    clipped = np.clip(samples.astype(np.float64, copy=False), low[:, None], high[:, None])
    mean, std = clipped.mean(axis=1), clipped.std(axis=1)
    std = np.where(std < 1e-6, 1.0, std)  # a constant band: centred, unscaled
    return {
        "dtype": dtype,
        "pixels": int(samples.shape[1]),
        "percentiles": list(PERCENTILES),
        "low": [float(v) for v in low],
        "high": [float(v) for v in high],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }


def warn_one_sided(
    splits: np.ndarray, counts: np.ndarray, names: list[str], warnings: list[str]
) -> None:
    """Warn about each split whose label pixels are more than ONE_SIDED_SHARE one class."""
    for split in sorted(set(splits.tolist())):
        per_class = counts[splits == split].sum(axis=0)
        total = int(per_class.sum())
        if not total:
            continue
        top = int(per_class.argmax())
        share = per_class[top] / total
        if share > ONE_SIDED_SHARE:
            warnings.append(
                f"split {split}: {share:.1%} of the label pixels are {names[top]}; a model "
                "cannot learn from that: check the labels (their CRS, --class-field, --background)"
            )


def split_shares(
    splits: np.ndarray, counts: np.ndarray, names: list[str]
) -> dict[str, dict[str, float]]:
    """Per split, each class's share (and ignore's) of the label pixels."""
    out: dict[str, dict[str, float]] = {}
    for split in sorted(set(splits.tolist())):
        per_class = counts[splits == split].sum(axis=0)
        total = int(per_class.sum())
        if total:
            out[split] = {
                n: round(float(c) / total, 4) for n, c in zip(names, per_class, strict=True)
            }
    return out


def top_counts(d: dict[str, int], n: int = 3) -> str:
    """The ``n`` largest counts of ``d`` as text, with how many more there are."""
    items = sorted(d.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k}: {v}" for k, v in items[:n])
    return text + (f", ... {len(items) - n} more" if len(items) > n else "")
