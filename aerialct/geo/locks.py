"""Output locks: one writer at a time for every output two processes could write.

A production night runs many aerialct processes at once: array jobs that append to one
GeoPackage, a retry started while the first run still trains, two predicts given the same
``--out``. Every writer of an output therefore holds an exclusive lock on a small file
beside it, ``<output>.aerialct-lock``, for as long as it writes:

- the lock is a ``flock`` on that file (NFS: Linux maps it to a POSIX lock), so the
  kernel releases it when its holder ends, however it ends;
- the file records the holder (pid, host, start time, command), so the second writer can
  say who it waits for, or name the holder when it gives up;
- a clean release removes the file; a file that is still there when the lock is taken
  was left by a holder that died (SIGKILL, power loss), and its take-over is logged;
- the same process may take a lock it already holds (nested writes of one output).

:func:`output_lock` waits (appending writers: each adds to the output in turn) or fails
at once with :class:`LockedError` (any other writer: a second copy of a run or a
prediction is a mistake to report, not a queue to join).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from aerialct.errors import LockedError

LOCK_SUFFIX = ".aerialct-lock"
"""A lock file is the output's name plus this suffix, in the output's folder."""

log = logging.getLogger("aerialct")

_held: dict[str, int] = {}
_held_guard = threading.Lock()


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the output ``path`` (a file or a folder): a sibling of it."""
    p = Path(os.path.abspath(path))
    return p.with_name(p.name + LOCK_SUFFIX)


def read_holder(lock: Path) -> dict:
    """What a lock file says about its holder (``{}`` when empty or unreadable)."""
    try:
        doc = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def describe_holder(holder: dict) -> str:
    """``pid 123 on host h (aerialct vectorize, since 2026-01-01 10:00:00)``."""
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    details = [str(v) for v in (holder.get("command"), holder.get("since")) if v]
    if details:
        text += f" ({', since '.join(details)})"
    return text


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, *, wait: bool = False) -> Iterator[Path]:
    """Hold the lock of the output ``path`` for the body; yields the lock file's path.

    ``wait``: block until the holder is done (logged once, naming it); otherwise raise
    :class:`LockedError` naming the holder. Re-entrant within one process.
    """
    lock = lock_path(path)
    key = str(lock)
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield lock
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, Path(path), wait)
    with _held_guard:
        _held[key] = 1
    try:
        yield lock
    finally:
        with _held_guard:
            del _held[key]
        _release(lock, fd)


def _acquire(lock: Path, output: Path, wait: bool) -> int:
    """Open, lock and claim ``lock``; the locked descriptor."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform (Windows): the lock file only names us
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        _claim(fd, lock, output)
        return fd
    told = False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                holder = describe_holder(read_holder(lock))
                if not wait:
                    raise LockedError(output, holder) from None
                if not told:
                    log.warning("%s: another aerialct (%s) is writing it; waiting for it to "
                                "finish", output, holder)  # fmt: skip
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)  # a signal still interrupts the wait
            if not _same_file(fd, lock):  # the holder removed it as we opened it: again
                os.close(fd)
                continue
            _claim(fd, lock, output)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise


def _same_file(fd: int, lock: Path) -> bool:
    try:
        st = os.stat(lock)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _claim(fd: int, lock: Path, output: Path) -> None:
    """Log the take-over of a lock whose holder died; write this process in."""
    size = os.fstat(fd).st_size
    if size:
        old = read_holder(lock)
        if old.get("pid") != os.getpid() or old.get("host") != socket.gethostname():
            log.warning(
                "%s: took over the lock of %s, which ended without releasing it",
                output,
                describe_holder(old),
            )
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["aerialct", *[a for a in sys.argv[1:] if a[:1] != "-"][:1]]),
    }
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, unnamed
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


def _release(lock: Path, fd: int) -> None:
    """Remove the lock file while still holding it (the next writer sees a clean start)."""
    try:
        if _same_file(fd, lock):
            lock.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)
