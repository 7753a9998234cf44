"""The window grid of a scene and its blocks: the units that processes share and resume.

Every pixel of a prediction is the blend of the windows that cover it, summed in one
order (:mod:`aerialct.predict.stream`). To cut a scene into parts that several
processes compute, and that a killed run resumes from, without changing a single bit:

* The **window grid** is spread over the whole scene (or the whole mosaic of a
  catalog): window rows and columns from :func:`aerialct.geo.grid.window_starts`.
* **Batches are canonical:** the windows of one window row, in groups of
  ``batch_size`` counted from the row's first window. A model's output for a window
  can depend on the other windows of its batch (a batch of 8 and a batch of 1 differ
  in the last bits), so every process forms exactly these batches.
* A **block** owns the pixels that a band of window rows and a run of whole batches
  finish: rows ``[rows[j0], rows[j1])`` and columns ``[cols[k0], cols[k1])`` (the last
  ones to the scene's edge). To compute them, a process runs every window that touches
  them (the halo: usually one window row above and one batch to the left), starting
  with empty sums. Adding to an empty sum is exact, and a block's pixels receive the
  same windows, from the same batches, in the same order as in one run over the whole
  scene: the result is identical.
* A process that computes consecutive bands of one column part streams on without
  restarting, so a single process pays no halo at all.

Blocks are numbered part by part (column parts of at most :meth:`BlockShape.part_windows`
windows), band by band within a part (:attr:`BlockShape.rows` window rows).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from aerialct.geo.grid import window_starts


@dataclass(frozen=True)
class BlockShape:
    """How many window rows a band has, and at most how many window columns a column part has.

    The column count is rounded up to whole batches. ``cols`` None (the default) sizes
    the parts in pixels: at most ``part_px`` wide (the stream's sums span a part's width),
    so only mosaics wider than about 24,000 px are split, whatever the window. A part
    costs its halo (the windows left of it that touch it) when a process starts it, so
    parts counted in windows split a 4096 px scene of 64 px windows in two and ran 9% more
    windows than one pass. The default bands are 4 window rows (about 1,500 px at 512 px
    windows); a single process streams on from band to band without a halo.
    """

    rows: int = 4
    cols: int | None = None
    part_px: int = 24576

    def part_windows(self, stride: int) -> int:
        """Window columns of a column part (before rounding up to whole batches)."""
        return self.cols if self.cols is not None else max(1, self.part_px // max(1, stride))


DEFAULT_BLOCK_SHAPE = BlockShape()


@dataclass(frozen=True)
class WindowGrid:
    """Where the windows of a ``height`` x ``width`` grid start, and how they are batched."""

    height: int
    width: int
    size: int
    stride: int
    batch_size: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @classmethod
    def of(cls, height: int, width: int, size: int, stride: int, batch_size: int) -> WindowGrid:
        """The grid of a ``height`` x ``width`` raster for windows of ``size`` every ``stride``."""
        rows = tuple(window_starts(height, size, stride, even=True))
        cols = tuple(window_starts(width, size, stride, even=True))
        return cls(height, width, size, stride, batch_size, rows, cols)

    @property
    def windows(self) -> int:
        """Windows in the whole grid."""
        return len(self.rows) * len(self.cols)

    def row_end(self, j: int) -> int:
        """The first pixel row not finished by window row ``j`` (the next row's start)."""
        return self.rows[j + 1] if j + 1 < len(self.rows) else self.height

    def col_end(self, k: int) -> int:
        """The first pixel column not finished by window column ``k``."""
        return self.cols[k + 1] if k + 1 < len(self.cols) else self.width

    def row_bottom(self, j: int) -> int:
        """The first pixel row below window row ``j`` (its valid part)."""
        return self.rows[j] + min(self.size, self.height - self.rows[j])

    def col_right(self, k: int) -> int:
        """The first pixel column right of window column ``k`` (its valid part)."""
        return self.cols[k] + min(self.size, self.width - self.cols[k])

    def first_row_touching(self, y: int) -> int:
        """The first window row whose windows cover pixel row ``y`` or rows below it."""
        return _first_touching(self.rows, self.size, self.height, y)

    def first_col_touching(self, x: int) -> int:
        """The first window column whose windows cover pixel column ``x`` or columns right of it."""
        return _first_touching(self.cols, self.size, self.width, x)


def _first_touching(starts: Sequence[int], size: int, length: int, p: int) -> int:
    ends = [s + min(size, length - s) for s in starts]  # increasing
    return bisect.bisect_right(ends, p)


@dataclass(frozen=True)
class Frame:
    """A rectangle of the window grid that one stream runs from empty sums.

    ``rows`` and ``cols`` are half-open ranges of window indices; the pixels they cover
    are ``[top, bottom) x [left, right)`` of the grid.
    """

    grid: WindowGrid
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def top(self) -> int:
        return self.grid.rows[self.rows[0]]

    @property
    def bottom(self) -> int:
        return self.grid.row_bottom(self.rows[1] - 1)

    @property
    def left(self) -> int:
        return self.grid.cols[self.cols[0]]

    @property
    def right(self) -> int:
        return self.grid.col_right(self.cols[1] - 1)

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def window_rows(self) -> list[int]:
        """Pixel rows (in the grid) where the frame's window rows start."""
        return list(self.grid.rows[self.rows[0] : self.rows[1]])

    @property
    def window_cols(self) -> list[int]:
        """Pixel columns (in the grid) where the frame's window columns start."""
        return list(self.grid.cols[self.cols[0] : self.cols[1]])

    @property
    def windows(self) -> int:
        return (self.rows[1] - self.rows[0]) * (self.cols[1] - self.cols[0])


@dataclass(frozen=True)
class Block:
    """Pixels ``[top, bottom) x [left, right)`` of the grid, finished by band ``band`` of
    column part ``part``; ``frame`` is what a process runs to compute them from scratch."""

    index: int
    part: int
    band: int
    top: int
    bottom: int
    left: int
    right: int
    frame: Frame

    @property
    def windows(self) -> int:
        """Windows a process runs to compute this block alone (halo included)."""
        return self.frame.windows

    def intersects(self, top: int, bottom: int, left: int, right: int) -> bool:
        """Whether the block's pixels meet the rectangle ``[top, bottom) x [left, right)``."""
        return self.top < bottom and top < self.bottom and self.left < right and left < self.right


def _parts(grid: WindowGrid, cols: int) -> list[tuple[int, int]]:
    """Column parts as ranges of window columns: whole batches, at most ``cols`` windows
    (rounded up to a batch)."""
    n, b = len(grid.cols), max(1, grid.batch_size)
    per = max(b, -(-cols // b) * b)
    return [(k, min(n, k + per)) for k in range(0, n, per)]


def plan_blocks(grid: WindowGrid, shape: BlockShape = DEFAULT_BLOCK_SHAPE) -> list[Block]:
    """The blocks of ``grid``, part by part and band by band within a part (module doc)."""
    if shape.rows < 1 or shape.part_windows(grid.stride) < 1 or shape.part_px < 1:
        raise ValueError(f"block shape {shape}: rows, cols and part_px must be at least 1")
    n_rows, b = len(grid.rows), max(1, grid.batch_size)
    blocks: list[Block] = []
    for p, (k0, k1) in enumerate(_parts(grid, shape.part_windows(grid.stride))):
        left = grid.cols[k0]
        right = grid.col_end(k1 - 1)
        run_k0 = (grid.first_col_touching(left) // b) * b  # whole batches
        for band, j0 in enumerate(range(0, n_rows, shape.rows)):
            j1 = min(n_rows, j0 + shape.rows)
            top, bottom = grid.rows[j0], grid.row_end(j1 - 1)
            frame = Frame(grid, (grid.first_row_touching(top), j1), (run_k0, k1))
            blocks.append(Block(len(blocks), p, band, top, bottom, left, right, frame))
    return blocks


def runs(blocks: Sequence[Block]) -> Iterator[list[Block]]:
    """Consecutive bands of one column part, as lists: each list is one stream."""
    run: list[Block] = []
    for blk in blocks:
        if run and (blk.part != run[-1].part or blk.band != run[-1].band + 1):
            yield run
            run = []
        run.append(blk)
    if run:
        yield run


def run_frame(run: Sequence[Block]) -> Frame:
    """The frame that streams the blocks of ``run`` (consecutive bands of one part) in one go."""
    first, last = run[0].frame, run[-1].frame
    return Frame(first.grid, (first.rows[0], last.rows[1]), first.cols)


class BlockIndex:
    """The blocks of a plan that meet a pixel rectangle, found by bisection (bands share
    their rows across parts, parts their columns across bands)."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        self.tops = sorted({b.top for b in blocks})
        self.lefts = sorted({b.left for b in blocks})
        self.at = {(b.top, b.left): b for b in blocks}

    def within(self, top: int, bottom: int, left: int, right: int) -> list[Block]:
        """The blocks meeting ``[top, bottom) x [left, right)``, in plan order."""
        i0 = max(0, bisect.bisect_right(self.tops, top) - 1)
        i1 = bisect.bisect_left(self.tops, bottom)
        j0 = max(0, bisect.bisect_right(self.lefts, left) - 1)
        j1 = bisect.bisect_left(self.lefts, right)
        found = [
            self.at[(self.tops[i], self.lefts[j])] for i in range(i0, i1) for j in range(j0, j1)
        ]
        return sorted(
            (b for b in found if b.intersects(top, bottom, left, right)), key=lambda b: b.index
        )
