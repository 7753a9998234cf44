"""`aerialct pack`: a chips folder -> one memory-mapped array of chips plus a small index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import Json, Overwrite


@app.command()
def pack(
    chips: Annotated[
        Path, typer.Argument(help="Chips folder written by `aerialct tile` (index.gpkg).")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Packed folder (default: CHIPS.packed beside CHIPS)."),
    ] = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Pack chips into one memory-mapped array + a small index (no GDAL to read).

    `aerialct train --data PACKED` reads it as it reads the chips folder, with the
    same results for the same seed.

    Examples:

    \b
      aerialct pack chips --out chips.packed
      aerialct pack chips --json
    """
    from aerialct.data.packed import pack_chips

    with console.progress("packing") as progress:
        result = pack_chips(chips, out, overwrite=overwrite, progress=progress)
    if json_out:
        console.print_json(result)
        return
    render(result)


def render(result) -> None:
    """The table `pack` and `tile --pack` print for a PackResult."""
    console.print_table(
        f"{result.chips} chips of {result.chip_size} px ({result.bands} x {result.dtype}) packed "
        f"into {result.out} ({result.bytes / 2**20:.1f} MiB, {result.seconds:.1f} s)",
        ["split", "chips"],
        [[k, v] for k, v in result.splits.items()],
    )
