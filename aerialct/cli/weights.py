"""`aerialct weights fetch`: pretrained encoder weights into a folder to copy to air-gapped machines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import Json

weights_app = typer.Typer(
    name="weights",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(weights_app)


@weights_app.callback()
def weights() -> None:
    """Pretrained encoder weights for machines without internet.

    model.weights takes imagenet, timm:<model>.<tag>, an https URL with
    #sha256=<hex>, or a local file. Training looks in AERIALCT_WEIGHTS_DIR, then
    the Hugging Face cache (HF_HOME), then downloads unless HF_HUB_OFFLINE=1.

    Examples:

    \b
      aerialct weights fetch timm:resnet18.a1_in1k --out weights
      aerialct weights fetch unetformer-r18 regnetx-cpu --out weights
      AERIALCT_WEIGHTS_DIR=weights aerialct train --config regnetx-cpu ...
    """


@weights_app.command()
def fetch(
    names: Annotated[
        list[str],
        typer.Argument(
            metavar="NAME...",
            help="timm:<model>.<tag>, a timm pretrained name, https://...#sha256=<hex>, "
            "or a config preset whose model.weights names weights.",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to fill (new, or one this command made).")
    ],
    json_out: Json = False,
) -> None:
    """Download weights (or copy them from the cache) into a folder to copy.

    On the machine without internet, set AERIALCT_WEIGHTS_DIR to the copied folder,
    or give a file inside it as model.weights.

    Examples:

    \b
      aerialct weights fetch timm:resnet18.fb_swsl_ig1b_ft_in1k --out weights
      aerialct weights fetch dcswin-swint --out weights --json
    """
    from aerialct.models.weights import fetch_weights

    with console.progress("weights") as progress:
        result = fetch_weights(names, out, progress=progress)
    if json_out:
        console.print_json(result)
        return
    _render(result)


def _render(result: Any) -> None:
    console.print_table(
        f"weights in {result.out}",
        ["name", "file", "MB", "sha256", "from"],
        [
            [w.name, w.file, f"{w.bytes / 1e6:.1f}", w.sha256[:16] + "...", w.found_in]
            for w in result.weights
        ],
    )
    console.info(
        f"copy {result.out} to the machine that trains, and there set "
        f"{result.env_var}=<the copied folder>"
    )
