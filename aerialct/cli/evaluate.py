"""`aerialct evaluate`: pixel scores (rasters) or building scores (polygons)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aerialct.cli import console
from aerialct.cli.app import app
from aerialct.cli.options import Json, Overwrite, Stac

Prediction = Annotated[
    str,
    typer.Argument(
        help="Predicted class raster, polygon file (.gpkg ...), or a folder or quoted glob of them."
    ),
]
Reference = Annotated[
    str | None,
    typer.Argument(
        help="Reference label raster or polygon file, or a folder or quoted glob of them "
        "(matched to the predictions by file name)."
    ),
]
Index = Annotated[
    Path | None,
    typer.Option(
        "--index",
        help="Chips dataset (folder or its index.gpkg): score PREDICTION (a folder) "
        "against the chip masks of --split.",
    ),
]
Split = Annotated[
    str,
    typer.Option("--split", help="Split of the chips dataset with --index; 'all' for every split."),
]
Exclude = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        help="Class left out of mean IoU/F1 (repeatable). Default: clutter. "
        "'none' keeps every class.",
    ),
]
IouThreshold = Annotated[
    float,
    typer.Option(
        "--iou-threshold", min=0.0, max=1.0, help="Building match threshold (IoU >= this, > 0)."
    ),
]
PredLayer = Annotated[
    str | None, typer.Option("--pred-layer", help="Layer of the predicted polygons.")
]
RefLayer = Annotated[
    str | None, typer.Option("--ref-layer", help="Layer of the reference polygons.")
]
Review = Annotated[
    Path | None,
    typer.Option("--review", help="GeoPackage with tp, fp, fn layers for QGIS (buildings)."),
]
Report = Annotated[
    Path | None, typer.Option("--report", help="Write the result as JSON to this file.")
]
ScoreField = Annotated[
    str,
    typer.Option(
        "--score-field",
        help="Polygon confidence attribute for building AP (vectorize --probabilities).",
    ),
]
Burn = Annotated[
    str,
    typer.Option(
        "--burn",
        help="A polygon REFERENCE for a class raster: the class its polygons are "
        "(the rest is background).",
    ),
]


@app.command()
def evaluate(
    prediction: Prediction,
    reference: Reference = None,
    index: Index = None,
    split: Split = "test",
    exclude: Exclude = None,
    iou_threshold: IouThreshold = 0.5,
    pred_layer: PredLayer = None,
    ref_layer: RefLayer = None,
    review: Review = None,
    report: Report = None,
    score_field: ScoreField = "mean_confidence",
    burn: Burn = "building",
    stac: Stac = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
) -> None:
    """Score predictions against references: pixel IoU/F1 for rasters, building F1 for polygons.

    Polygons with a confidence attribute (vectorize --probabilities) also get
    COCO-style AP@0.5 and AP@[.5:.95]; layers with a `class` attribute on both
    sides are matched class by class. The scores are added to the predictions' STAC
    Items (the <stem>.stac.json beside them, and those of the catalogue --stac DIR).

    Examples:

    \b
      aerialct evaluate pred/scene_classes.tif labels.tif --report pixels.json
      aerialct evaluate buildings.gpkg reference.gpkg --review review.gpkg
      aerialct evaluate preds/ --index chips --split test
    """
    from aerialct.evaluate import evaluate as run_evaluate

    if iou_threshold == 0:  # the option has min 0 and max 1; the interval is open at 0
        raise typer.BadParameter("must be in (0, 1]", param_hint="--iou-threshold")
    if index is not None and reference is not None:
        raise typer.BadParameter("give REFERENCE or --index, not both", param_hint="--index")
    if index is None and reference is None:
        raise typer.BadParameter(
            "missing REFERENCE (or --index CHIPS for a folder of chip predictions)",
            param_hint="REFERENCE",
        )
    excluded = None
    if exclude:
        excluded = [] if [e.lower() for e in exclude] == ["none"] else list(exclude)
    with console.progress("evaluating") as progress:
        result = run_evaluate(
            prediction,
            reference,
            index=index,
            split=None if split == "all" else split,
            exclude=excluded,
            iou_threshold=iou_threshold,
            pred_layer=pred_layer,
            ref_layer=ref_layer,
            review=review,
            report=report,
            overwrite=overwrite,
            progress=progress,
            score_field=score_field,
            burn=burn,
        )
    from aerialct.stac import record_scores

    scored = record_scores(result.to_dict(), stac)
    if json_out:
        console.print_json(result.to_dict())  # the same object as the --report file
    elif result.kind == "building":
        _building_table(result)
    else:
        _pixel_table(result)
    if report is not None:
        console.info(f"report written to {report}")
    if scored:
        console.info(f"scores added to the STAC Items {', '.join(str(p) for p in scored)}")


def _pixel_table(result) -> None:
    s = result.scores
    rows = []
    for name in s.classes:
        d = s.per_class[name]
        mark = " (excluded)" if name in s.excluded else ""
        rows.append([f"{name}{mark}", d["iou"], d["precision"], d["recall"], d["f1"], d["support"]])
    console.print_table(
        f"pixel scores over {len(result.pairs)} pair(s), {s.pixels} pixels",
        ["class", "IoU", "precision", "recall", "F1", "ref pixels"],
        rows,
    )
    console.print_table(
        None,
        ["mean IoU", "mean F1", "overall accuracy", "unpredicted pixels"],
        [[s.mean_iou, s.mean_f1, s.overall_accuracy, result.unpredicted]],
    )
    names = s.classes
    console.print_table(
        "confusion matrix (rows = reference, columns = prediction)",
        ["", *names],
        [[names[i], *row] for i, row in enumerate(s.confusion)],
    )
    if result.missing:
        console.warn(f"{len(result.missing)} reference(s) without a prediction were skipped")


def _building_table(result) -> None:
    from aerialct.geo.inputs import source_label

    cols = ["predicted", "reference", "TP", "FP", "FN", "precision", "recall", "F1", "mean IoU"]
    if result.files:
        console.print_table(
            "buildings per file",
            ["file", *cols],
            [
                [source_label(f["reference"]), *(f[k] for k in (
                    "predicted", "reference_count", "true_positives", "false_positives",
                    "false_negatives", "precision", "recall", "f1", "mean_iou"))]
                for f in result.files
            ],
        )  # fmt: skip
    console.print_table(
        f"buildings, one-to-one at IoU >= {result.iou_threshold}"
        + (f", pooled over {len(result.files)} files" if result.files else ""),
        cols,
        [
            [
                result.predicted,
                result.reference_count,
                result.true_positives,
                result.false_positives,
                result.false_negatives,
                result.precision,
                result.recall,
                result.f1,
                result.mean_iou,
            ]
        ],
    )
    if result.ap is not None:
        per = result.ap_per_class
        rows = [[name, d["ap50"], d["ap75"], d["ap"], d["predicted"], d["reference"]]
                for name, d in per.items()]  # fmt: skip
        if len(per) > 1:
            rows.append(["mean over classes", result.ap50, result.ap75, result.ap, "", ""])
        console.print_table(
            f"average precision from {result.score_field} (COCO, 101 recall points)"
            + (", class-aware" if result.class_aware else ""),
            ["class", "AP@0.5", "AP@0.75", "AP@[.5:.95]", "predicted", "reference"],
            rows,
        )
    if result.reprojected:
        console.warn(f"the prediction was reprojected to the reference CRS ({result.crs})")
    if result.review:
        console.info(f"review layers tp, fp, fn written to {result.review}")
