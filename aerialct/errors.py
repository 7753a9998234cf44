"""Errors raised by the library.

Every message names the offending file or value and says how to fix it, in one
line, because the CLI prints ``str(error)`` as is. Library errors also inherit a
builtin (ValueError, OSError, FileExistsError) so callers can catch them the
usual way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath
from typing import NamedTuple


class AerialctError(Exception):
    """Base class of every error aerialct raises on purpose."""


class InputError(AerialctError, ValueError):
    """A user-supplied value, option or file content is wrong."""


class ConfigError(InputError):
    """A configuration file or override is invalid."""


class RasterError(AerialctError, OSError):
    """A raster cannot be opened, read or does not meet a requirement."""


class VectorError(AerialctError, OSError):
    """A vector file cannot be read or written."""


class OutputExistsError(AerialctError, FileExistsError):
    """An output exists and ``overwrite`` was not given."""

    def __init__(self, path: object, hint: str = "pass --overwrite to replace it") -> None:
        super().__init__(f"{path}: output exists; {hint}")
        self.path = path


class CheckpointError(AerialctError, ValueError):
    """A checkpoint is unreadable or does not match what it is used with."""


class TrainingError(AerialctError, RuntimeError):
    """Training had to stop (NaN loss, out of memory, ...)."""


class PartialFailure(AerialctError):
    """A batch finished but some items failed; ``result`` holds the whole outcome.

    The CLI exits with status 3 on it after rendering ``result``.
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class ItemFailure(NamedTuple):
    """One failed item of a batch: its name (a path), its one-line error, the exception."""

    name: str
    error: str
    exception: BaseException | None = None


def raise_for_failures(
    total: int, failures: Sequence[ItemFailure], noun: str, result: object = None
) -> None:
    """The failure policy of a batch of ``total`` items (``noun``: "scenes", "rasters").

    Returns when nothing failed. When every item failed: a batch of one re-raises
    that item's own error (when it is known), a larger one raises one AerialctError
    naming the first failure (exit 1). When some failed: PartialFailure (exit 3)
    listing them, carrying ``result`` (the whole outcome) for the CLI to render.
    """
    if not failures:
        return
    if len(failures) >= total:
        first = failures[0]
        if total == 1 and first.exception is not None:
            raise first.exception
        raise AerialctError(
            f"all {len(failures)} {noun} failed; first: {first.name}: {first.error}"
        )
    raise PartialFailure(
        f"{len(failures)} of {total} {noun} failed: "
        + ", ".join(PurePath(f.name).name for f in failures),
        result,
    )


class DiskFullError(AerialctError, OSError):
    """An output could not be written because its disk is full; nothing was left behind."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"{path}: no space left on device; free space there (or choose another output) "
            "and run again"
        )
        self.path = path


class LockedError(AerialctError, OSError):
    """Another process holds the lock of an output (:mod:`aerialct.geo.locks`)."""

    def __init__(self, path: object, holder: str) -> None:
        super().__init__(
            f"{path}: another aerialct ({holder}) is writing this output; wait for it to "
            "finish, or choose another output"
        )
        self.path = path
        self.holder = holder


class Terminated(BaseException):
    """SIGTERM or SIGINT arrived: unwinds like KeyboardInterrupt so that temporaries are removed.

    The library lets it pass (``except Exception`` does not catch it); the CLI exits
    with 128 + ``signum``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum
