"""The kept state of a prediction: finished blocks and a manifest, next to the outputs.

A job (a scene or a catalog, :mod:`aerialct.predict.catalog`) is computed block by block
(:mod:`aerialct.predict.plan`). Each finished block is a pair of small GeoTIFFs in the
job's state folder; outputs are cut from them when every block they need is there,
by whichever process finishes the last of those blocks (:mod:`aerialct.predict.join`).
Processes that share a job (shards, torchrun ranks) and a rerun after a kill meet
here. The layout::

    OUT/.aerialct-state/
      .aerialct                       marker: aerialct made this folder
      <job>.<key>/                    one job; <key> is a hash of everything that
                                      decides the pixels (sources, model, options,
                                      batch size, device kind, block shape)
        manifest.json                 format, version, key, and what the key covers
        blocks/b000012_classes.tif    block 12: class ids (255 = nodata), zstd
        blocks/b000012_probabilities.tif   its probabilities (with --probabilities)

A block is written under a temporary name, read back, and renamed (probabilities
first, classes last), so a block file under its final name is complete. A rerun
with the same arguments finds the same key and computes only the missing blocks; a
run with other arguments has another key and starts over, saying what changed. The
state folder of a job is removed once all its outputs are written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.geo.classraster import class_tags
from aerialct.geo.cog import PART_BLOCK, PART_OPTIONS, RowWriter, gtiff_profile
from aerialct.geo.io import verify_raster
from aerialct.geo.outputs import (
    MARKER,
    TMP_MARK,
    atomic_output,
    is_aerialct_folder,
    remove_path,
    write_marker,
)
from aerialct.predict.plan import Block, Frame

log = logging.getLogger("aerialct")

STATE_DIR = ".aerialct-state"
STATE_FORMAT = "aerialct-predict-state"
STATE_VERSION = 1


class State:
    """The state folder of one job with one key (module doc)."""

    def __init__(self, out_dir: str | os.PathLike, job: str, key: str, manifest: dict[str, Any]):
        self.base = Path(out_dir) / STATE_DIR
        self.job, self.key = job, key
        self.root = self.base / f"{job}.{key[:16]}"
        self.manifest = {"format": STATE_FORMAT, "version": STATE_VERSION, "key": key, **manifest}

    def open(self) -> bool:
        """Create the folder and its manifest; True when an earlier run left it (a resume)."""
        existed = (self.root / "manifest.json").is_file()
        self.base.mkdir(parents=True, exist_ok=True)
        if not (self.base / MARKER).is_file():
            write_marker(self.base, "predict (state of unfinished predictions)")
        (self.root / "blocks").mkdir(parents=True, exist_ok=True)
        if not existed:  # same key, same content: concurrent writers agree
            tmp = self.root / f"manifest.json{TMP_MARK}-{os.getpid()}"
            tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.root / "manifest.json")
        return existed

    def others(self) -> list[tuple[Path, dict[str, Any]]]:
        """State folders of this job kept by runs with other arguments, with their manifests."""
        found: list[tuple[Path, dict[str, Any]]] = []
        if not self.base.is_dir():
            return found
        for d in sorted(self.base.glob(f"{_glob_escape(self.job)}.*")):
            if d == self.root or not d.is_dir() or d.name.rpartition(".")[0] != self.job:
                continue
            try:
                found.append((d, json.loads((d / "manifest.json").read_text())))
            except (OSError, ValueError):
                found.append((d, {}))
        return found

    def classes_path(self, block: Block) -> Path:
        return self.root / "blocks" / f"b{block.index:06d}_classes.tif"

    def prob_path(self, block: Block) -> Path:
        return self.root / "blocks" / f"b{block.index:06d}_probabilities.tif"

    def done(self, block: Block, probabilities: bool) -> bool:
        """Whether the block's files are there (they appear complete or not at all)."""
        return self.classes_path(block).is_file() and (
            not probabilities or self.prob_path(block).is_file()
        )

    def empty(self) -> bool:
        """Whether no block is finished (and no other process is writing one)."""
        blocks = self.root / "blocks"
        return not blocks.is_dir() or not any(blocks.iterdir())

    def remove(self, others: Sequence[Path] = ()) -> None:
        """Remove this job's state (and ``others``: older states of the job), and the state
        folder itself when nothing else is left in it."""
        for d in [self.root, *others]:
            remove_path(d)
        with contextlib.suppress(OSError):
            rest = [p for p in self.base.iterdir() if p.name != MARKER]
            if not rest and is_aerialct_folder(self.base):
                remove_path(self.base)


def _glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


def manifest_changes(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """What differs between the manifests of two states of one job: entry names, and the
    names inside ``options`` and ``execution`` (the arguments a user changed)."""
    changed = []
    for k in sorted({*mine, *theirs} - {"key", "format", "version", "blocks"}):
        a, b = mine.get(k), theirs.get(k)
        if a == b:
            continue
        if k in ("options", "execution") and isinstance(a, dict) and isinstance(b, dict):
            changed += [s for s in sorted({*a, *b}) if a.get(s) != b.get(s) and s != "grid"]
        else:
            changed.append(k)
    return changed


class BlockFiles:
    """The files of one block being written: class ids and (optionally) probabilities."""

    def __init__(
        self,
        state: State,
        block: Block,
        grid: Any,
        classes: ClassTable,
        probabilities: bool,
    ) -> None:
        import rasterio
        from affine import Affine

        self.stack = contextlib.ExitStack()
        w, h = block.right - block.left, block.bottom - block.top
        transform = grid.transform @ Affine.translation(block.left, block.top)
        options = dict(PART_OPTIONS)
        if w < 16 or h < 16:
            options = {"compress": "zstd", "zstd_level": 1}
        try:
            tmp = self.stack.enter_context(_block_output(state.classes_path(block)))
            tmp_p = None
            if probabilities:
                tmp_p = self.stack.enter_context(_block_output(state.prob_path(block)))
            prof = gtiff_profile(w, h, 1, "uint8", grid.crs, transform, IGNORE_INDEX, **options)
            ds = self.stack.enter_context(rasterio.open(tmp, "w", **prof))
            ds.update_tags(**class_tags(classes))
            self.cls_out = RowWriter(ds, PART_BLOCK)
            self.prob_out = None
            if tmp_p is not None:
                prof.update(count=len(classes), nodata=None)
                pds = self.stack.enter_context(rasterio.open(tmp_p, "w", **prof))
                pds.update_tags(**class_tags(classes))
                self.prob_out = RowWriter(pds, PART_BLOCK)
        except BaseException:
            self.stack.close()
            raise

    def write(self, cls: np.ndarray, p8: np.ndarray | None) -> None:
        self.cls_out.write(cls[None])
        if self.prob_out is not None and p8 is not None:
            self.prob_out.write(p8)

    def finish(self) -> None:
        """Flush and close; the files are renamed into place (probabilities first)."""
        self.cls_out.close()
        if self.prob_out is not None:
            self.prob_out.close()
        self.stack.close()

    def abort(self, exc: BaseException) -> None:
        """Remove the temporaries after ``exc``."""
        self.stack.__exit__(type(exc), exc, exc.__traceback__)


@contextlib.contextmanager
def _block_output(path: Path) -> Iterator[Path]:
    """:func:`atomic_output` for a block file, read back by its last block only.

    A GeoTIFF's directory is written last, on close, and every block write raises on
    failure, so a file that opens and decodes its last block was written to the end;
    the join decodes every block again when it cuts the outputs.
    """
    with atomic_output(path, True, verify=False) as tmp:
        yield tmp
        verify_raster(tmp, whole=False)


class BlockCutter:
    """A :class:`~aerialct.predict.stream.RowSink` that cuts a frame's rows into its blocks.

    ``blocks`` are consecutive bands of one column part (what ``frame`` streams); rows
    above the first block (the halo) are dropped. ``on_done(block)`` is called after each
    block's files are in place. Use as a context manager: an error removes the block
    being written.
    """

    def __init__(
        self,
        frame: Frame,
        blocks: Sequence[Block],
        open_block: Callable[[Block], BlockFiles],
        on_done: Callable[[Block], None],
    ) -> None:
        self.frame, self.blocks = frame, list(blocks)
        self.open_block, self.on_done = open_block, on_done
        self.y = frame.top
        self.i = 0
        self.files: BlockFiles | None = None

    def __enter__(self) -> BlockCutter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.files is not None:
            files, self.files = self.files, None
            files.abort(exc if exc is not None else RuntimeError("stream ended inside a block"))
        if exc is None and self.i < len(self.blocks):
            raise RuntimeError(f"internal error: the stream ended at row {self.y} inside a block")

    def write(self, cls: np.ndarray, p8: np.ndarray | None) -> None:
        y0, y1 = self.y, self.y + cls.shape[0]
        self.y = y1
        while self.i < len(self.blocks):
            b = self.blocks[self.i]
            lo, hi = max(y0, b.top), min(y1, b.bottom)
            if lo >= hi:
                return  # rows above the block: the halo
            if self.files is None:
                self.files = self.open_block(b)
            c0, c1 = b.left - self.frame.left, b.right - self.frame.left
            r0, r1 = lo - y0, hi - y0
            self.files.write(cls[r0:r1, c0:c1], None if p8 is None else p8[:, r0:r1, c0:c1])
            if hi < b.bottom:
                return
            files, self.files = self.files, None
            files.finish()
            self.i += 1
            self.on_done(b)
