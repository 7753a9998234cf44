"""The typer application and its global options.

Command modules register themselves with ``@app.command()``; they import only
the standard library, typer and :mod:`aerialct.cli.console` at module level and
import torch, rasterio, geopandas inside the command body so that
``aerialct --help`` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from aerialct import __version__


@dataclass
class GlobalState:
    verbose: bool = False
    quiet: bool = False
    own_process: bool = False
    """True when the ``aerialct`` command runs (``main``), not an in-process ``run`` call."""


state = GlobalState()

app = typer.Typer(
    name="aerialct",
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
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """aerialct: from orthophotos to building layers.

    Exit status: 0 success, 1 error, 2 usage error, 3 partial failure in a batch.
    """
    state.verbose = verbose
    state.quiet = quiet
    from aerialct.cli.console import setup_logging

    setup_logging(verbose=verbose, quiet=quiet)
