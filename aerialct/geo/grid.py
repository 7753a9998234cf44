"""The window grid: where tiles and prediction windows start along an axis.

One owner for ``tile`` (chips) and ``predict`` (sliding windows). Both start at
0 and end their last window exactly on the edge; they differ only in how the
windows in between are placed:

- ``even=False`` (tile): step by ``stride``; the last window is shifted back to
  end on the edge (1000 px, size 512, stride 384 -> [0, 384, 488]).
- ``even=True`` (predict): as few windows as the stride allows, spread evenly,
  so every step is <= stride and the overlaps are alike (-> [0, 244, 488]); the
  streaming predictor then carries a steady ``size - stride`` rows.

An axis no longer than ``size`` gets the single window 0; the caller pads.
"""

from __future__ import annotations

import math

from aerialct.errors import InputError


def window_starts(length: int, size: int, stride: int, *, even: bool = False) -> list[int]:
    """Offsets of windows of ``size`` covering an axis of ``length`` (see module doc)."""
    if size <= 0 or stride <= 0:
        raise InputError(f"size {size} / stride {stride}: both must be positive")
    if length <= size:
        return [0]
    last = length - size
    if even:
        n = math.ceil(last / stride) + 1
        return [round(i * last / (n - 1)) for i in range(n)]
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def stride_for(size: int, overlap: float) -> int:
    """The step between windows of ``size`` that overlap by the fraction ``overlap``."""
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap {overlap}: must be in [0, 1), e.g. 0.25")
    return max(1, round(size * (1.0 - overlap)))


__all__ = ["stride_for", "window_starts"]
