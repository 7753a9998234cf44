"""Entry point and the one error boundary of the CLI.

Exit codes (DESIGN section 9): 0 success, 1 error (one line on stderr, a
traceback only with --verbose), 2 usage error, 3 partial failure in a batch.
"""

from __future__ import annotations

import sys

import typer

from aerialct.cli import (  # noqa: F401  (each module registers its command)
    demo,
    evaluate,
    info,
    pack,
    predict,
    synth,
    tile,
    train,
    vectorize,
)
from aerialct.cli.app import app, state

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

# typer may carry its own copy of click; take the exception classes from typer itself.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit status instead of exiting."""
    from aerialct.cli import console
    from aerialct.errors import AerialctError, PartialFailure

    try:
        rv = app(args=argv, prog_name="aerialct", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except _UsageError as e:
        e.show()
        return EXIT_USAGE
    except typer.Abort:
        console.error("aborted")
        return EXIT_ERROR
    except typer.Exit as e:
        return e.exit_code
    except PartialFailure as e:
        console.error(str(e))
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        console.error(
            "interrupted; outputs under their final names are complete, temporary files were removed"
        )
        return 130
    except (AerialctError, OSError, ValueError) as e:
        if state.verbose:
            console.stderr.print_exception()
        console.error(_one_line(e))
        return EXIT_ERROR
    except Exception as e:  # the boundary: anything else is a bug, still one line
        if state.verbose:
            console.stderr.print_exception()
        console.error(
            f"internal error: {type(e).__name__}: {_one_line(e)} (run with --verbose for the traceback)"
        )
        return EXIT_ERROR


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())
