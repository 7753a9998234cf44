"""Entry point and the one error boundary of the CLI.

Exit codes (CONTRACTS.md, "Exit codes and messages"): 0 success, 1 error (one line on stderr, a
traceback only with --verbose), 2 usage error, 3 partial failure in a batch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

# numpy and scipy start an OpenBLAS thread pool when they load, one thread per core: 0.1 CPU s
# at start-up and more while its threads spin, in every process (a shell loop over thousands of
# files pays it per file). No aerialct command multiplies matrices with numpy (torch brings
# its own BLAS and threads), so one thread, unless the user chose otherwise. Set before any
# import of numpy: the pool is sized once, when OpenBLAS loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer

from aerialct.cli import (  # noqa: F401  (each module registers its command)
    demo,
    evaluate,
    export,
    info,
    pack,
    predict,
    synth,
    tile,
    train,
    vectorize,
    weights,
)
from aerialct.cli.app import app, hoist_global_options, invoked_verb, only_verb, state

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
INTERRUPTED = "{}; outputs under their final names are complete, temporary files were removed"

if TYPE_CHECKING:  # the class typer vendors today, so the checker knows UsageError.show()
    from typer._click.exceptions import UsageError as _UsageError
else:  # typer may carry its own copy of click; take the exception class from typer itself
    _UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main(argv: list[str] | None = None) -> None:
    """The ``aerialct`` command: run the CLI and exit with its status."""
    state.own_process = True
    code = run(argv)
    _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """End the process without tearing the interpreter down, once the work is done.

    Every output is closed, checked and renamed into place before ``run`` returns; what
    is left is freeing every module and object and unloading GDAL (0.1-0.25 CPU s, a
    per-process cost a shell loop pays per file). Exit handlers still run and the
    standard streams are flushed; with another thread still running, or a stream that
    cannot be flushed (a closed pipe), the normal exit runs instead.
    """
    import atexit
    import threading

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None or threading.active_count() > 1:
        return
    try:
        run_exit_handlers()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        return
    os._exit(code)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit status instead of exiting."""
    from aerialct.cli import console
    from aerialct.errors import AerialctError, PartialFailure, Terminated

    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        with _signals_unwind(), only_verb(invoked_verb(args)):
            rv = app(args=args, prog_name="aerialct", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except _UsageError as e:
        e.show()
        return EXIT_USAGE
    except typer.Abort:
        console.error("aborted")
        return EXIT_ERROR
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:  # typer's --show-completion / --install-completion exit directly
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_ERROR)
    except PartialFailure as e:
        console.error(str(e))
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        console.error(INTERRUPTED.format("interrupted"))
        return EXIT_SIGINT
    except Terminated as e:
        if e.signum == signal.SIGINT:
            console.error(INTERRUPTED.format("interrupted"))
            return EXIT_SIGINT
        console.error(INTERRUPTED.format("terminated"))
        return EXIT_SIGTERM
    except (AerialctError, OSError, ValueError) as e:
        if state.verbose:
            console.traceback()
        console.error(_one_line(e))
        return EXIT_ERROR
    except Exception as e:  # the boundary: anything else is a bug, still one line
        if state.verbose:
            console.traceback()
        console.error(
            f"internal error: {type(e).__name__}: {_one_line(e)} (run with --verbose for the traceback)"
        )
        return EXIT_ERROR


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into :class:`Terminated`, so every ``with`` block cleans up.

    Not KeyboardInterrupt: typer would swallow that into a bare exit status. An ignored
    SIGINT (``nohup``, a shell's background job) stays ignored.
    """
    from aerialct.workers import terminate

    def handler(signum: int, frame: object) -> None:
        # a second signal must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        terminate(signum)  # raises Terminated, at once or where a thread start/stop ends

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) and e.filename:
        return f"{e.filename}: no space left on device; free space there and run again"
    if isinstance(e, OSError) and e.errno is not None and e.filename and e.strerror:
        return f"{e.filename}: {e.strerror.lower()}"
    text = str(e).strip() or type(e).__name__
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: keep the error line
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())
