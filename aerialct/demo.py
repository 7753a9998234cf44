"""The whole pipeline on a synthetic city, in one call: ``aerialct demo``.

Synthesise a training city and a held-out district, tile the city, train the
tiny preset with CT on the CPU (or a GPU), predict the held-out scene, vectorise
its buildings and evaluate pixels and buildings against the exact reference.
Every output opens in QGIS as it is: COG class raster with a colour table,
GeoPackages with the CRS of the scene.

The synthetic scenes are drawn at a coarser ground sampling distance than
Potsdam (0.5 m by default) so that a 64 px chip holds enough of a building for
the tiny model to learn within minutes on two cores.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aerialct.errors import InputError
from aerialct.geo.io import FOLDER, check_output, write_marker
from aerialct.progress import ProgressFn, as_progress

log = logging.getLogger("aerialct")


@dataclass
class DemoResult:
    out: Path
    scene: Path
    reference_labels: Path
    reference_buildings: Path
    chips: Path
    run: Path
    checkpoint: Path
    classes_raster: Path
    probabilities: Path | None
    quicklook: Path | None
    buildings: Path
    review: Path
    pixel_report: Path
    building_report: Path
    building_iou: float
    mean_iou: float
    per_class_iou: dict[str, float]
    building_precision: float
    building_recall: float
    building_f1: float
    predicted_buildings: int
    reference_buildings_count: int
    train_seconds: float
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)


def run_demo(
    out: str | Path = "demo-run",
    *,
    config: str | Path = "tiny-cpu",
    city_size: int = 1024,
    heldout_size: int = 512,
    gsd: float = 0.5,
    chip_size: int | None = None,
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    overrides: tuple[str, ...] | list[str] = (),
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> DemoResult:
    """Run synth -> tile -> train -> predict -> vectorize -> evaluate into ``out``.

    ``config`` is a preset name from ``configs/`` or a YAML path; ``chip_size``
    defaults to the preset's ``model.img_size`` (or 64); ``epochs`` overrides
    ``train.epochs``. Refuses an existing ``out`` unless ``overwrite``.
    """
    from aerialct.config import load_config, resolve_config_path
    from aerialct.data.synth import synth_scene
    from aerialct.engine.checkpoint import load_inference_model
    from aerialct.engine.train import train
    from aerialct.evaluate import evaluate
    from aerialct.inference import predict_scene, resolve_device_name
    from aerialct.tile import tile_scenes
    from aerialct.vectorize import vectorize

    prog = as_progress(progress)
    out = Path(out)
    # an existing folder is replaced only when aerialct made it (it holds the marker)
    check_output(out, overwrite, kind=FOLDER)
    if out.exists() and any(out.iterdir()):
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "demo")
    t0 = time.perf_counter()
    steps: dict[str, float] = {}

    def step(name: str, t: float) -> None:
        steps[name] = round(time.perf_counter() - t, 2)
        prog(1, description=f"demo: {name} done")

    prog(0, total=6, description="demo: synthesising the city")
    overrides = list(overrides)
    if epochs is not None:
        overrides.append(f"train.epochs={int(epochs)}")
    cfg = load_config(resolve_config_path(config), overrides)
    size = chip_size or getattr(cfg.model, "img_size", None) or 64

    data = out / "data"
    t = time.perf_counter()
    city = synth_scene(
        data / "city.tif", data / "city_labels.tif", size=city_size, seed=seed, gsd=gsd
    )
    heldout = synth_scene(
        data / "heldout.tif",
        data / "heldout_labels.tif",
        size=heldout_size,
        seed=seed + 1000,
        gsd=gsd,
        origin=(368000.0 + city_size * gsd + 100.0, 5808000.0),
        buildings=data / "heldout_buildings.gpkg",
    )
    step("synth", t)

    t = time.perf_counter()
    prog(0, description="demo: tiling")
    chips = out / "chips"
    tile_scenes(
        [city.image],
        chips,
        labels=[city.labels],
        size=size,
        stride=size,
        val_fraction=0.25,
        seed=seed,
        workers=2,
    )
    step("tile", t)

    t = time.perf_counter()
    prog(0, description="demo: training (tiny preset, CT)")
    run_dir = out / "run"
    trained = train(cfg, chips, run_dir, device=device)
    step("train", t)
    checkpoint = Path(trained.best_checkpoint or trained.last_checkpoint)

    t = time.perf_counter()
    prog(0, description="demo: predicting the held-out district")
    dev = resolve_device_name(device)
    bundle = load_inference_model(checkpoint, device=dev)
    pred_dir = out / "prediction"
    pred = predict_scene(
        bundle,
        heldout.image,
        pred_dir / "heldout_classes.tif",
        probabilities=True,
        quicklook=True,
        device=dev,
    )
    if pred.status != "ok" or pred.output is None:
        raise InputError(f"{heldout.image}: prediction failed ({pred.error})")
    step("predict", t)

    t = time.perf_counter()
    prog(0, description="demo: vectorising buildings")
    buildings = out / "buildings.gpkg"
    vectorize(
        pred.output,
        buildings,
        classes=("building",),
        min_area=4.0,
        fill_holes=4.0,
        simplify=0.25,
        probabilities=pred.probabilities,
    )
    step("vectorize", t)

    t = time.perf_counter()
    prog(0, description="demo: evaluating")
    pixel_report = out / "report_pixels.json"
    building_report = out / "report_buildings.json"
    review = out / "review.gpkg"
    pix: Any = evaluate(pred.output, heldout.labels, report=pixel_report)
    bld: Any = evaluate(buildings, heldout.buildings, review=review, report=building_report)
    step("evaluate", t)

    per_class = {name: float(v["iou"]) for name, v in pix.scores.per_class.items()}
    return DemoResult(
        out=out,
        scene=heldout.image,
        reference_labels=Path(heldout.labels),
        reference_buildings=Path(heldout.buildings),
        chips=chips,
        run=run_dir,
        checkpoint=checkpoint,
        classes_raster=pred.output,
        probabilities=pred.probabilities,
        quicklook=pred.quicklook,
        buildings=buildings,
        review=review,
        pixel_report=pixel_report,
        building_report=building_report,
        building_iou=per_class.get("building", float("nan")),
        mean_iou=float(pix.scores.mean_iou),
        per_class_iou=per_class,
        building_precision=float(bld.precision),
        building_recall=float(bld.recall),
        building_f1=float(bld.f1),
        predicted_buildings=int(bld.predicted),
        reference_buildings_count=int(bld.reference_count),
        train_seconds=steps["train"],
        seconds=round(time.perf_counter() - t0, 2),
        steps=steps,
    )
