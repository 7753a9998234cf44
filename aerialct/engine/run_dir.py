"""The run folder's life cycle: new, resumed, or replaced with ``--overwrite``.

A retrain with ``--overwrite`` must never leave the user with nothing: the old
run is moved aside (``<run>.aerialct-old-<pid>``) rather than deleted, and put
back when the new run fails before its first checkpoint. Once the new run has
written a checkpoint, the old one is removed. A run killed outright (SIGKILL) is
repaired by the next run in the same folder: the old run comes back if the new
one never checkpointed, else it is removed.

Only folders aerialct made are replaced: they hold the ``.aerialct`` marker, or
(runs from before the marker) nothing but run files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from pathlib import Path

from aerialct.errors import CheckpointError, OutputExistsError
from aerialct.geo.locks import LOCK_SUFFIX, output_lock
from aerialct.geo.outputs import (
    MARKER,
    TMP_MARK,
    pid_alive,
    remove_path,
    remove_stale_temps,
    write_marker,
)

log = logging.getLogger("aerialct")

RUN_FILES = (
    "config.yaml",
    "last.pt",
    "best.pt",
    "metrics.csv",
    "loss.png",
    "iou.png",
    "confusion.png",
    "summary.json",
)
"""Files a run writes into its folder."""

OLD_MARK = ".aerialct-old"
CHECKPOINTS = ("last.pt", "best.pt")


EVENTS = "events.out.tfevents."
"""TensorBoard's event files a run writes (engine/events.py)."""


def _is_run_folder(out: Path) -> bool:
    if (out / MARKER).is_file():
        return True
    names = [p.name for p in out.iterdir()]
    return bool(names) and all(
        n in RUN_FILES or TMP_MARK in n or n.endswith(LOCK_SUFFIX) for n in names
    )


def _unfinished(out: Path) -> bool:
    """A run folder of aerialct's without a checkpoint: a run that stopped before its first."""
    return (out / MARKER).is_file() and not any((out / c).exists() for c in CHECKPOINTS)


def check_resumable(out: Path) -> None:
    """Refuse ``--resume`` where no run can continue: no folder, or no ``last.pt`` in it."""
    if not out.exists():
        raise CheckpointError(
            f"{out}: no run exists there (no such folder); start without --resume, or give "
            "the folder of the run to continue"
        )
    if not (out / "last.pt").exists():
        raise CheckpointError(
            f"{out / 'last.pt'}: nothing to resume (no last.pt in {out}); start without --resume"
        )


class RunFolder:
    """Prepare ``out`` for a run (rank 0 only touches files); see the module docstring.

    Call :meth:`checkpointed` after each checkpoint write and :meth:`failed`
    when the run raises.
    """

    def __init__(self, out: Path, *, resume: bool, overwrite: bool, is_main: bool = True) -> None:
        self.out = out
        self.aside: Path | None = None
        self.is_main = is_main
        self._lock = contextlib.ExitStack()
        try:
            self._prepare(resume, overwrite)
        except BaseException:
            self._lock.close()
            raise

    def close(self) -> None:
        """Release the run folder's lock (the run is over, however it ended)."""
        self._lock.close()

    def _prepare(self, resume: bool, overwrite: bool) -> None:
        out, is_main = self.out, self.is_main
        if resume and not out.exists():
            check_resumable(out)  # refused before anything is made (the lock's folder)
        if is_main:
            if out.exists() and not out.is_dir():
                raise OutputExistsError(out, "it is a file; give a folder for the run")
            # one run at a time in a folder: a second one fails here, naming the first
            self._lock.enter_context(output_lock(out))
            self._repair_killed_overwrite()
            for name in RUN_FILES:
                remove_stale_temps(out / name)
            if not resume:
                self._restart_unfinished()
        if resume:
            check_resumable(out)
            return
        existing = [n for n in RUN_FILES if (out / n).exists()] if out.is_dir() else []
        if not is_main and _unfinished(out):
            existing = []  # rank 0 starts it over (_restart_unfinished)
        if existing and not overwrite:
            raise OutputExistsError(
                out,
                f"it holds a run ({', '.join(existing)}); pass --resume to continue it or "
                "--overwrite to start again",
            )
        if overwrite and out.is_dir() and any(out.iterdir()) and not _is_run_folder(out):
            raise OutputExistsError(
                out,
                f"it is a folder aerialct did not make (no {MARKER} file and files that are not "
                "a run's); --overwrite replaces only aerialct's runs: choose another --out",
            )
        if not is_main:
            return
        if overwrite and existing:
            self.aside = out.with_name(f"{out.name}{OLD_MARK}-{os.getpid()}")
            os.replace(out, self.aside)
            log.info("moved the old run aside to %s until the new run checkpoints", self.aside)
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "train")

    def _restart_unfinished(self) -> None:
        """A run of ours stopped before its first checkpoint left only its first files
        (config.yaml, maybe metrics and plots): nothing to resume and nothing to lose, so
        a new run starts over it (the README's promise). Only aerialct's own run files go."""
        out = self.out
        if not _unfinished(out):
            return
        left = [p for p in out.iterdir() if p.name in RUN_FILES or p.name.startswith(EVENTS)]
        if not left:
            return
        for p in left:
            remove_path(p)
        log.warning(
            "%s: the run there stopped before its first checkpoint (%s left); starting it again",
            out,
            ", ".join(sorted(p.name for p in left)),
        )

    def checkpointed(self) -> None:
        """The new run has a checkpoint: the old run moved aside is no longer needed."""
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            log.info("removed the old run %s", self.aside)
            self.aside = None

    def failed(self) -> None:
        """The run failed: before its first checkpoint, put the old run back."""
        if self.aside is None or not self.is_main:
            return
        shutil.rmtree(self.out, ignore_errors=True)
        os.replace(self.aside, self.out)
        log.warning("the new run failed before its first checkpoint; the old run is back in %s",
                    self.out)  # fmt: skip
        self.aside = None

    def _repair_killed_overwrite(self) -> None:
        """An ``--overwrite`` killed outright left ``<run>.aerialct-old-<pid>``: finish its job."""
        out = self.out
        if not out.parent.is_dir():
            return
        pattern = re.compile(re.escape(out.name + OLD_MARK) + r"-(\d+)$")
        for old in out.parent.glob(f"{out.name}{OLD_MARK}-*"):
            m = pattern.match(old.name)
            if not m or pid_alive(int(m.group(1))):
                continue
            if out.is_dir() and any((out / c).exists() for c in CHECKPOINTS):
                shutil.rmtree(old, ignore_errors=True)
                log.warning("removed %s, the old run an interrupted --overwrite replaced", old)
            elif out.exists() and not (out / MARKER).is_file():
                log.warning(
                    "%s: an interrupted --overwrite left the old run in %s, but %s is not the "
                    "run that replaced it; move one of them yourself",
                    out,
                    old,
                    out,
                )
            else:
                if out.exists():  # the new run (it holds the marker) that never checkpointed
                    shutil.rmtree(out, ignore_errors=True)
                os.replace(old, out)
                log.warning(
                    "%s: an interrupted --overwrite never checkpointed; the old run is back", out
                )
