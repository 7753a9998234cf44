"""The typer application and its global options.

Command modules register themselves with ``@app.command()``; they import only
the standard library, typer and :mod:`aerialct.cli.console` at module level and
import torch, rasterio, geopandas inside the command body so that
``aerialct --help`` stays instant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from aerialct import __version__

if TYPE_CHECKING:
    from typer._click import Context  # typer carries its own click; the base class takes this

PIPELINE = (
    "demo",
    "synth",
    "tile",
    "pack",
    "weights",
    "train",
    "info",
    "export",
    "predict",
    "vectorize",
    "evaluate",
)
"""The verbs in the order ``aerialct --help`` lists them: the demo (the whole chain in one
command) first, then the pipeline: make data, cut chips, pack them, fetch pretrained weights,
train, inspect and export the checkpoint, predict, vectorize, evaluate."""


class PipelineOrder(TyperGroup):
    """A command group that lists its commands in :data:`PIPELINE` order.

    typer lists commands in the order they were registered, which is the order
    ``cli/main.py`` imports the command modules: alphabetical, as the import sorter keeps it.
    """

    def list_commands(self, ctx: Context) -> list[str]:
        """The registered verbs in pipeline order; any verb not in PIPELINE last, by name."""
        rank = {name: i for i, name in enumerate(PIPELINE)}
        return sorted(super().list_commands(ctx), key=lambda n: (rank.get(n, len(rank)), n))


@dataclass
class GlobalState:
    """Global options, set by the app's callback and read by the error boundary."""

    verbose: bool = False
    quiet: bool = False
    own_process: bool = False
    """True when the ``aerialct`` command runs (``main``), not an in-process ``run`` call."""


state = GlobalState()

app = typer.Typer(
    name="aerialct",
    cls=PipelineOrder,
    help="Mapping from aerial imagery: tile, train (CT / MS-CS contrast), predict, vectorize, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aerialct {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="More log output; tracebacks on errors.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")
    ] = False,
    log_file: Annotated[
        str | None,
        typer.Option(
            "--log-file",
            metavar="FILE",
            help="Also append the log lines, with times, to FILE (cron, schedulers).",
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            metavar="text|json",
            help="Log lines as text, or as one JSON object per line (stderr and --log-file).",
        ),
    ] = "text",
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """aerialct: from orthophotos to building layers.

    Global options may also follow the command (aerialct predict ... -q).
    Exit status: 0 success, 1 error, 2 usage error, 3 partial failure in a batch.
    """
    state.verbose = verbose
    state.quiet = quiet
    from aerialct.cli.console import LOG_FORMATS, setup_logging

    if log_format not in LOG_FORMATS:
        raise typer.BadParameter(f"{log_format!r}: use text or json", param_hint="--log-format")
    try:
        setup_logging(verbose=verbose, quiet=quiet, log_file=log_file, log_format=log_format)
    except OSError as e:
        raise typer.BadParameter(
            f"{log_file}: cannot be opened for appending ({e.strerror})", param_hint="--log-file"
        ) from None


GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose")
"""Global options without a value that may also follow the command."""
GLOBAL_VALUED = ("--log-file", "--log-format")
"""Global options with a value that may also follow the command."""


def hoist_global_options(argv: list[str]) -> list[str]:
    """``argv`` with the global options that follow the command moved before it.

    ``aerialct predict ... -q`` then means ``aerialct -q predict ...``, as users of
    other tools expect. Arguments after ``--`` are left alone.
    """
    commands = set(PIPELINE)
    verb = next((i for i, a in enumerate(argv) if a in commands), None)
    if verb is None:
        return list(argv)
    head, tail = list(argv[:verb]), []
    rest = argv[verb + 1 :]
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            tail.extend(rest[i:])
            break
        if a in GLOBAL_FLAGS:
            head.append(a)
        elif a in GLOBAL_VALUED and i + 1 < len(rest):
            head.extend(rest[i : i + 2])
            i += 1
        elif a.split("=", 1)[0] in GLOBAL_VALUED and "=" in a:
            head.append(a)
        else:
            tail.append(a)
        i += 1
    return [*head, argv[verb], *tail]


def invoked_verb(argv: list[str]) -> str | None:
    """The verb ``argv`` runs (global options before it skipped, with their values), or None:
    no verb, or a help option before it (the top-level help lists every verb)."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help", "--"):
            return None
        if a in GLOBAL_VALUED:
            i += 2
            continue
        if not a.startswith("-"):
            return a if a in PIPELINE else None
        i += 1
    return None


@contextlib.contextmanager
def only_verb(verb: str | None) -> Iterator[None]:
    """The app with only ``verb``'s command registered, for one run.

    typer builds the click command of every verb on each run (signatures, type hints,
    parameters: 0.02 CPU s, paid by every process of a shell loop); a run needs one.
    Usage errors and the verb's help are the same; with no verb, all of them stay.
    """
    commands, groups = app.registered_commands, app.registered_groups
    if verb is not None:
        keep = [c for c in commands if _command_name(c) == verb]
        group = [
            g for g in groups if verb in (g.name, g.typer_instance and g.typer_instance.info.name)
        ]
        if keep or group:
            app.registered_commands, app.registered_groups = keep, group
    try:
        yield
    finally:
        app.registered_commands, app.registered_groups = commands, groups


def _command_name(info: typer.models.CommandInfo) -> str:
    """The name a registered command answers to: the one it was given, else typer's own
    name for its function."""
    return info.name or typer.main.get_command_name(getattr(info.callback, "__name__", ""))
