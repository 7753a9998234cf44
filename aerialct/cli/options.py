"""Options shared by several commands, defined once so they read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from aerialct.shards import Shard

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


SHARD_DEFAULTS = (
    "Default: from SLURM_ARRAY_TASK_ID/COUNT, or JOB_COMPLETION_INDEX with "
    "AERIALCT_SHARD_COUNT (Kubernetes indexed Job)."
)
"""The end of every ``--shard`` help: where the share comes from when not given."""


def resolve_shard(text: str | None) -> Shard | None:
    """The share to do: ``--shard`` (a usage error when malformed), else the array job's."""
    from aerialct.cli import console
    from aerialct.errors import InputError
    from aerialct.shards import parse_shard, shard_from_env

    try:
        shard = parse_shard(text) if text is not None else None
    except InputError as e:
        raise typer.BadParameter(str(e), param_hint="--shard") from None
    if shard is None and (shard := shard_from_env()) is not None:
        console.info(f"shard {shard} from {shard.source}")
    return shard
