"""`aerialct export`: a checkpoint -> a deployable model (ONNX, TorchScript or a slim .pt)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import Json, Overwrite


@app.command()
def export(
    checkpoint: Annotated[
        str, typer.Argument(help="A best.pt / last.pt written by `aerialct train`.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The exported model file.")],
    format: Annotated[
        Literal["onnx", "torchscript", "pt"],
        typer.Option(
            "--format",
            "-f",
            case_sensitive=False,
            help="onnx (onnxruntime), torchscript, or pt (slim checkpoint without training state).",
        ),
    ] = "onnx",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 17,
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Export the inference model, without projection heads or optimiser state.

    Classes, band mean/std, chip size and GSD travel in the file's metadata, so
    `aerialct predict` takes the exported file in place of the checkpoint (ONNX
    runs on the CPU through onnxruntime).

    Examples:

    \b
      aerialct export runs/x/best.pt --format onnx --out model.onnx
      aerialct export runs/x/best.pt --format pt --out model.pt
      aerialct predict model.onnx scene.tif --out pred
    """
    from aerialct.export import export_model

    result = export_model(checkpoint, out, format, overwrite=overwrite, opset=opset)
    if json_out:
        console.print_json(result.to_dict())
        return
    rows = [
        ("output", f"{result.output} ({result.format})"),
        (
            "size",
            f"{result.output_bytes / 1e6:.2f} MB, {result.size_ratio:.1%} of the checkpoint "
            f"({result.source_bytes / 1e6:.2f} MB)",
        ),
        ("model", f"{result.parameters:,} parameters, {result.chip_size} px windows"),
        ("classes", ", ".join(result.classes)),
    ]
    if result.max_abs_diff is not None:
        rows.append(("check", f"max |logit difference| vs torch: {result.max_abs_diff:.2e}"))
    console.print_table(None, ["", "value"], rows)
