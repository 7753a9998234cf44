"""The progress callback that library functions accept.

A library function that takes time accepts ``progress: ProgressFn | None``
and calls it as ``progress(advance, total=..., description=...)``: ``total``
(re)sets the number of steps, ``advance`` counts finished steps. The CLI passes
a function that drives a rich progress bar on stderr; tests pass nothing.
"""

from __future__ import annotations

from typing import Protocol


class ProgressFn(Protocol):
    """``progress(advance, total=..., description=...)``: see the module docstring."""

    def __call__(
        self, advance: int = 1, *, total: int | None = None, description: str | None = None
    ) -> None: ...


def null_progress(
    advance: int = 1, *, total: int | None = None, description: str | None = None
) -> None:
    """A progress callback that does nothing."""


def as_progress(progress: ProgressFn | None) -> ProgressFn:
    """``progress`` itself, or :func:`null_progress` when it is None."""
    return progress if progress is not None else null_progress
