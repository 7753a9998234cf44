"""Worker processes (and threads) that never outlive their parent, and process-wide memory
settings.

``tile`` spreads row bands over a process pool. Three promises hold for it
(README, "What aerialct promises about your files"):

- a failure, Ctrl-C or SIGTERM in the parent stops the workers at once
  (``Pool.terminate``) before the temporary output is removed, so no worker
  can write into a folder that is being cleaned up;
- workers ignore SIGINT (the parent decides) and take SIGTERM's default action;
- a worker dies with its parent even when the parent is killed with SIGKILL:
  Linux's parent-death signal where there is one, plus a watchdog thread that
  polls the parent's pid everywhere else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1


_held = 0
_pending: list[int] = []


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back for the body; one that arrived meanwhile is raised after.

    The CLI turns both signals into :class:`~aerialct.errors.Terminated`, raised wherever
    the main thread is (aerialct.cli.main, through :func:`terminate`). Starting or
    stopping a thread must not be cut in half by it: ``Thread.start`` interrupted while
    it waits for the new thread leaves a thread that no ``with`` block will stop, reading
    a dataset the unwinding then closes (a crash, not exit 143), and so does a ``join``
    interrupted before the thread ended. Held in the main thread only (where Python runs
    signal handlers); nests.
    """
    global _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending:
            from aerialct.errors import Terminated

            signum = _pending[0]
            _pending.clear()
            raise Terminated(signum)


def terminate(signum: int) -> None:
    """What a SIGTERM/SIGINT handler does: raise :class:`~aerialct.errors.Terminated`, or,
    inside :func:`signals_held`, note the signal for the end of the hold."""
    if _held:
        _pending.append(signum)
        return
    from aerialct.errors import Terminated

    raise Terminated(signum)


def worker_signals(*_: Any) -> None:
    """In a worker: SIGINT is the parent's to handle, SIGTERM ends the worker at once.

    Forked workers would otherwise inherit the CLI's handlers, which unwind the
    parent's clean-up code (also usable as a DataLoader ``worker_init_fn``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _die_with_parent(parent: int) -> None:
    """Make this worker process exit when ``parent`` does (see the module docstring)."""
    worker_signals()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="aerialct-parent-watchdog", daemon=True).start()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def run_in_workers(
    fn: Callable[[J], R], items: Sequence[tuple[Any, J]], workers: int
) -> Iterator[tuple[Any, J, R]]:
    """Run ``fn(job)`` for each ``(key, job)`` in up to ``workers`` processes.

    Yields ``(key, job, result)`` as results complete (in any order). The first
    exception in a worker is re-raised here (a worker that died is reported as
    BrokenProcessPool); then, and on any exception or signal in the caller, every
    worker is stopped before this generator exits.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # fork: workers need no re-import of the caller's __main__ (scripts, notebooks)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(items)),
        mp_context=mp.get_context(method),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )
    ok = False
    try:
        futures = {pool.submit(fn, job): (key, job) for key, job in items}
        pending = set(futures)
        while pending:
            # each result as it comes (tile records a finished band at once, for a resume)
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                key, job = futures[f]
                yield key, job, f.result()
        ok = True
    finally:
        if not ok:
            _stop(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _stop(pool: Any) -> None:
    """Cancel what has not started and kill the running workers (Python < 3.14 has no
    public call for this; ``_processes`` is the executor's own table of them)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() clears it
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.kill()
    for proc in procs:  # gone before the caller removes what they were writing into
        with contextlib.suppress(Exception):
            proc.join(timeout=10)


def reduce_heap_fragmentation(threshold: int = 1 << 20) -> bool:
    """Ask glibc to serve allocations of ``threshold`` bytes and more with mmap.

    glibc raises its mmap threshold after large blocks are freed, so the window
    rows and strips that streaming allocates again and again (tens of MB on wide
    scenes) end up in heap arenas that are never returned: peak RSS then drifts
    up by about twice the width-dependent memory. A fixed threshold stops the
    drift. Process-wide, so the CLI calls it, not :func:`predict_scene`; returns
    False where there is no glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_MMAP_THRESHOLD = -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
