"""The only module that imports rich: logging, progress bars, tables, JSON output.

Results go to stdout (``--json`` or a table); logs and progress go to stderr.
Progress bars are drawn only when stderr is a terminal and ``--quiet`` is off.
When stderr is not a terminal (cron, a scheduler, a pipe) every log line is one plain,
unwrapped line (``info: ...``, ``warning: ...``); ``--log-format json`` makes each one a
JSON object, and ``--log-file FILE`` appends the same lines, with times, to FILE.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

_quiet = False
_plain: logging.Handler | None = None
"""The handler of plain (or JSON) stderr lines, when stderr is not a terminal or JSON is asked."""
_file: logging.Handler | None = None
"""The ``--log-file`` handler, when one is open."""

LOG_FORMATS = ("text", "json")


class PlainFormatter(logging.Formatter):
    """``warning: message`` (``with_time``: an ISO time first), one line whatever the message."""

    def __init__(self, with_time: bool = False) -> None:
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        text = _one_line(record)
        line = f"{record.levelname.lower()}: {text}"
        return f"{_iso_time(record.created)} {line}" if self.with_time else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        doc = {
            "time": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _one_line(record),
        }
        return json.dumps(doc, ensure_ascii=False)


def _one_line(record: logging.LogRecord) -> str:
    """The record's message on one line, URL secrets removed."""
    return _safe(" ".join(record.getMessage().split()))


def _iso_time(created: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def setup_logging(
    verbose: bool = False,
    quiet: bool = False,
    log_file: str | None = None,
    log_format: str = "text",
) -> None:
    """Send the library's ``aerialct`` logger to stderr (and ``log_file``).

    On a terminal the lines are drawn by rich; elsewhere, and with ``log_format="json"``,
    they are plain lines (:class:`PlainFormatter`) or JSON lines (:class:`JsonFormatter`).
    """
    global _quiet, _plain, _file
    _quiet = quiet
    if log_format not in LOG_FORMATS:
        raise ValueError(f"--log-format {log_format}: use text or json")
    logger = logging.getLogger("aerialct")
    for old in logger.handlers:
        if old is _file:
            old.close()
    logger.handlers.clear()
    handler: logging.Handler
    if stderr.is_terminal and log_format == "text":
        from rich.logging import RichHandler

        handler = RichHandler(
            console=stderr, show_time=False, show_path=verbose, markup=False, rich_tracebacks=False
        )
        handler.setFormatter(_Redacting("%(message)s"))
        _plain = None
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
        _plain = handler
    logger.addHandler(handler)
    _file = None
    if log_file:
        _file = logging.FileHandler(log_file, encoding="utf-8")
        _file.setFormatter(
            JsonFormatter() if log_format == "json" else PlainFormatter(with_time=True)
        )
        logger.addHandler(_file)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    # GDAL's own chatter (rasterio logs every CPLError) reaches the user as aerialct's one-line
    # errors; the raw lines ("_tiffWriteProc: No space left on device") only with --verbose.
    gdal = logging.getLogger("rasterio")
    gdal.handlers.clear()
    gdal.addHandler(handler if verbose else logging.NullHandler())
    gdal.propagate = False
    import warnings

    if quiet:  # the libraries' own warnings (torch, rasterio, ...) are not the user's business
        warnings.simplefilter("ignore")
    if not getattr(warnings.formatwarning, "redacts", False):  # GDAL's warnings name the URL
        plain = warnings.formatwarning

        def formatwarning(*args: Any, **kwargs: Any) -> str:
            return _safe(plain(*args, **kwargs))

        formatwarning.redacts = True  # type: ignore[attr-defined]
        warnings.formatwarning = formatwarning


class _Redacting(logging.Formatter):
    """Log lines without the secrets of URLs (query strings, user:password@)."""

    def format(self, record: logging.LogRecord) -> str:
        from aerialct.geo.inputs import redact

        return redact(super().format(record))


def show_progress() -> bool:
    """True when progress bars are drawn: stderr is a terminal and ``--quiet`` is off."""
    return not _quiet and stderr.is_terminal


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Any]:
    """Yield a :class:`aerialct.progress.ProgressFn` that drives a bar on stderr (or nothing)."""
    if not show_progress():

        def silent(
            advance: int = 1, *, total: int | None = None, description: str | None = None
        ) -> None:
            return None

        yield silent
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total)

        def update(
            advance: int = 1, *, total: int | None = None, description: str | None = None
        ) -> None:
            kw: dict[str, Any] = {}
            if total is not None:
                kw["total"] = total
            if description is not None:
                kw["description"] = description
            bar.update(task, advance=advance, **kw)

        yield update


def print_json(obj: Any) -> None:
    """Write ``obj`` to stdout as indented JSON (the ``--json`` output of every verb), URL
    secrets removed wherever they are quoted."""
    from aerialct.render import json_text  # numpy stays out of `aerialct --help`

    sys.stdout.write(_safe(json_text(obj)))  # errors quote URLs: none keeps its secrets
    sys.stdout.flush()


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    to_stderr: bool = False,
) -> None:
    """A table of ``rows`` under ``columns`` on stdout (or stderr); floats as 0.1234."""
    table = Table(title=None if title is None else _safe(title), show_lines=False)
    for c in columns:
        table.add_column(str(c), overflow="fold")
    for r in rows:
        table.add_row(*[fmt(v) for v in r])
    (stderr if to_stderr else stdout).print(table)


def fmt(v: Any) -> str:
    """A table cell: floats with four decimals (``nan`` as is), anything else as ``str``
    (URLs without their secrets)."""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return _safe(str(v))


def _safe(text: str) -> str:
    """``text`` without the secrets of the URLs in it (every line the CLI prints)."""
    if "://" not in text and "/vsi" not in text:
        return text
    from aerialct.geo.inputs import redact

    return redact(text)


def _record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("aerialct.cli", level, "", 0, message, None, None)


def _to_file(level: int, message: str) -> None:
    if _file is not None:
        _file.handle(_record(level, message))


def info(message: str) -> None:
    """A line for the human reader on stderr (quiet hides it); also in ``--log-file``."""
    message = _safe(message)
    _to_file(logging.INFO, message)
    if _quiet:
        return
    if _plain is not None and isinstance(_plain.formatter, JsonFormatter):
        _plain.handle(_record(logging.INFO, message))
    else:
        stderr.print(message, markup=False, highlight=False)


def warn(message: str) -> None:
    """A ``warning:`` line on stderr (shown even with ``--quiet``); also in ``--log-file``."""
    message = _safe(message)
    _to_file(logging.WARNING, message)
    if _plain is not None:
        _plain.handle(_record(logging.WARNING, message))
    else:
        stderr.print(f"warning: {message}", markup=False, highlight=False, style="yellow")


def traceback() -> None:
    """The traceback of the exception being handled (``--verbose``), URL secrets removed."""
    import traceback as tb

    sys.stderr.write(_safe(tb.format_exc()))
    sys.stderr.flush()


def error(message: str) -> None:
    """The one ``error:`` line the CLI prints before a non-zero exit; also in ``--log-file``."""
    message = _safe(message)
    _to_file(logging.ERROR, message)
    if _plain is not None:
        _plain.handle(_record(logging.ERROR, message))
    else:
        stderr.print(
            f"error: {message}", markup=False, highlight=False, style="bold red", soft_wrap=True
        )
