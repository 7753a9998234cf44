"""Options shared by several commands, defined once so they read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
CreationOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--co",
        metavar="NAME=VALUE",
        help="GDAL creation option for output rasters (repeatable), e.g. --co COMPRESS=ZSTD.",
    ),
]
Stac = Annotated[
    Path | None,
    typer.Option(
        "--stac",
        metavar="DIR",
        help="Add the outputs' STAC Items to the catalogue DIR/catalog.json (a delivery), "
        "instead of a <stem>.stac.json beside each output.",
    ),
]
Device = Annotated[
    str, typer.Option("--device", help="cpu, cuda, cuda:N or auto (a GPU when there is one).")
]


def parse_creation_options(items: list[str] | None) -> dict[str, str]:
    """``["COMPRESS=ZSTD", "BLOCKSIZE=512"]`` -> dict; bad items are a usage error."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--co")
        k, v = item.split("=", 1)
        out[k.strip().upper()] = v.strip()
    return out
