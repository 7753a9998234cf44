"""The kept work of a tiling run: resume after a kill, share among shards.

A run cuts its band tasks (:class:`~aerialct.tile.worker.Job`) into ``<out>.parts/``
(:mod:`aerialct.resume`):

- ``chips/``: the chips folder being made (``<split>/images``, ``<split>/masks``);
- ``tasks/<scene>_r<row>.npz``: one record per finished task, written when all its
  chips are written and verified: the chips' index rows, windows skipped, label
  values outside the table and the pixel samples of the band statistics;
- ``run.json``: the run's fingerprint (inputs, the tasks, every option that shapes
  the chips).

A run with the same fingerprint keeps the finished tasks (their chips are checked
first: each must exist and decode) and does the rest; when every task has its record,
one process writes ``index.gpkg`` and ``dataset.json`` from the records, in task
order, and renames ``chips/`` to the output. So a killed, resumed or sharded run
writes the same folder as one uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct import resume
from aerialct.data.index import ChipRow
from aerialct.errors import InputError

if TYPE_CHECKING:
    from aerialct.shards import Shard
    from aerialct.tile.worker import BandResult, Job

log = logging.getLogger("aerialct")

FORMAT = "aerialct-tile-work"
VERSION = 1


def task_id(job: Job) -> str:
    """The name of a band task (and of its record): ``<scene>_r<row>``."""
    return f"{job.scene.name}_r{job.row}"


def fingerprint(jobs: list[Job], inputs: list[str], settings: dict[str, Any]) -> str:
    """The run's identity: its inputs (path, size, time), tasks and settings."""
    digest = hashlib.sha256()
    for job in jobs:
        sc = job.scene
        described = {k: v for k, v in asdict(sc).items() if k != "shapes"}
        digest.update(json.dumps([described, job.row, job.cols, job.splits], default=str).encode())
        for wkb, class_id in sc.shapes or []:
            digest.update(wkb)
            digest.update(str(class_id).encode())
    return resume.fingerprint(inputs, settings | {"tasks": digest.hexdigest()})


@dataclass
class Record:
    """What a finished band task made (see :class:`~aerialct.tile.worker.BandResult`)."""

    rows: list[ChipRow]
    skipped: int
    unknown: dict[str, int]
    samples: dict[str, np.ndarray]

    @classmethod
    def of(cls, res: BandResult) -> Record:
        samples = {s: np.concatenate(a, axis=1) for s, a in res.samples.items() if a}
        return cls(res.rows, res.skipped, dict(res.unknown), samples)

    def save(self, path: Path) -> None:
        """Write the record atomically (npz: the rows as JSON bytes, a sample array per split)."""
        names = [f.name for f in fields(ChipRow)]  # shallow: asdict deep-copies every array
        rows = [
            {n: getattr(r, n) for n in names}
            | {"counts": np.asarray(r.counts).tolist(), "bounds": list(r.bounds)}
            for r in self.rows
        ]
        meta = json.dumps({"rows": rows, "skipped": self.skipped, "unknown": self.unknown})
        arrays = {"meta": np.frombuffer(meta.encode(), dtype=np.uint8)}
        arrays |= {f"samples_{s}": a for s, a in self.samples.items()}
        tmp = resume.temp_path_for(path)
        try:
            np.savez(tmp, allow_pickle=False, **arrays)
            tmp.replace(path)
        except BaseException:
            resume.remove_path(tmp)
            raise

    @classmethod
    def load(cls, path: Path) -> Record | None:
        """A record, or None when it is missing or damaged (the task is done again)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes())
                samples = {k.removeprefix("samples_"): z[k] for k in z.files if k != "meta"}
        except (OSError, ValueError, KeyError):
            return None
        try:
            rows = [
                replace(
                    ChipRow(**r),
                    counts=np.asarray(r["counts"], dtype=np.int64),
                    bounds=tuple(r["bounds"]),
                )
                for r in meta["rows"]
            ]
        except (TypeError, KeyError):
            return None
        return cls(rows, int(meta["skipped"]), dict(meta["unknown"]), samples)

    def chips_intact(self, chips: Path) -> bool:
        """Every chip (and mask) of the record is there and decodes to its last block."""
        from aerialct.geo.io import verify_raster

        for row in self.rows:
            for rel in (row.image, row.mask):
                if rel is None:
                    continue
                try:
                    verify_raster(chips / rel, whole=False)
                except Exception:
                    return False
        return True


class Work:
    """The parts folder of one tiling run (see the module docstring)."""

    def __init__(self, out: Path, key: str) -> None:
        self.out, self.key = out, key
        self.dir = resume.parts_dir(out)
        self.chips = self.dir / "chips"
        self.tasks = self.dir / "tasks"
        self.kept = 0
        self.made: dict[str, Record] = {}  # the records this process wrote, kept for the join

    def open(self, shard: Shard | None) -> None:
        """Make the folder, or take over one of the same run.

        Another run's folder is replaced by a plain run (logged) and refused by a shard,
        which cannot tell it from the live work of other shards.
        """
        from aerialct.geo.outputs import write_marker

        header = resume.read_json(self.dir / "run.json") if self.dir.is_dir() else None
        if header is not None and header.get("run") != self.key:
            if shard is not None:
                raise InputError(
                    f"{self.dir}: holds the work of a tiling with other inputs or options; "
                    "give every shard the same arguments, or remove that folder to start over"
                )
            log.warning("%s: work of a tiling with other arguments; starting over", self.dir)
            resume.prepare(self.dir, "tile")  # refuses a folder aerialct did not make
            resume.remove_path(self.dir)
        resume.prepare(self.dir, "tile")
        self.tasks.mkdir(exist_ok=True)
        self.chips.mkdir(exist_ok=True)
        write_marker(self.chips, "tile")
        if header is None or header.get("run") != self.key:
            resume.write_json(self.dir / "run.json", {"format": FORMAT, "version": VERSION,
                                                      "run": self.key})  # fmt: skip

    def record_path(self, tid: str) -> Path:
        return self.tasks / f"{tid}.npz"

    def save(self, tid: str, res: BandResult) -> None:
        rec = Record.of(res)
        rec.save(self.record_path(tid))
        self.made[tid] = rec

    def finished(self, ids: list[str], check: set[str]) -> set[str]:
        """The tasks with a record; records of ``check`` are kept only when their chips
        are intact (an interrupted run's), the others are dropped and done again."""
        done = set()
        for tid in ids:
            path = self.record_path(tid)
            if not path.exists():
                continue
            if tid in check:
                rec = Record.load(path)
                if rec is None or not rec.chips_intact(self.chips):
                    log.warning("%s: its chips are damaged or missing; cutting it again", path)
                    resume.remove_path(path)
                    continue
                self.kept += 1
            done.add(tid)
        return done

    def records(self, ids: list[str]) -> list[Record]:
        """Every task's record, in task order (all of them must be there): those this process
        wrote as they were, the others read back."""
        out = []
        for tid in ids:
            rec = self.made.get(tid) or Record.load(self.record_path(tid))
            if rec is None:
                raise InputError(
                    f"{self.record_path(tid)}: the record of a finished task is unreadable; "
                    "run the same command again to cut that band again"
                )
            out.append(rec)
        return out
