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

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aerialct.errors import InputError
from aerialct.geo.outputs import FOLDER, check_output, write_marker
from aerialct.progress import ProgressFn, as_progress

log = logging.getLogger("aerialct")


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote and how well the model did on the held-out district."""

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
    from aerialct.engine.train import train

    prog = as_progress(progress)
    out = Path(out)
    from aerialct.geo.locks import output_lock

    with output_lock(out):  # a second demo into this folder fails, naming this one
        _fresh_folder(out, overwrite)
        t0 = time.perf_counter()
        steps = _Steps(prog)

        prog(0, total=6, description="demo: synthesising the city")
        overrides = list(overrides)
        if epochs is not None:
            overrides.append(f"train.epochs={int(epochs)}")
        cfg = load_config(resolve_config_path(config), overrides)
        size = chip_size or getattr(cfg.model, "img_size", None) or 64
        data = _DemoData.under(out / "data")

        with steps("synth"):
            _synth(data, city_size=city_size, heldout_size=heldout_size, gsd=gsd, seed=seed)
        with steps("tile", "demo: tiling"):
            chips = _tile(data, out / "chips", size=size, seed=seed)
        with steps("train", "demo: training (tiny preset, CT)"):
            run_dir = out / "run"
            trained = train(cfg, chips, run_dir, device=device)
        checkpoint = Path(trained.best_checkpoint or trained.last_checkpoint)
        with steps("predict", "demo: predicting the held-out district"):
            pred = _predict(checkpoint, data.heldout, out / "prediction", device)
        with steps("vectorize", "demo: vectorising buildings"):
            buildings = _vectorize(pred, out / "buildings.gpkg")
        with steps("evaluate", "demo: evaluating"):
            scores = _evaluate(pred.output, buildings, data, out)

        return DemoResult(
            out=out,
            scene=data.heldout,
            reference_labels=data.heldout_labels,
            reference_buildings=data.heldout_buildings,
            chips=chips,
            run=run_dir,
            checkpoint=checkpoint,
            classes_raster=pred.output,
            probabilities=pred.probabilities,
            quicklook=pred.quicklook,
            buildings=buildings,
            review=scores.review,
            pixel_report=scores.pixel_report,
            building_report=scores.building_report,
            building_iou=scores.per_class_iou.get("building", float("nan")),
            mean_iou=scores.mean_iou,
            per_class_iou=scores.per_class_iou,
            building_precision=scores.precision,
            building_recall=scores.recall,
            building_f1=scores.f1,
            predicted_buildings=scores.predicted,
            reference_buildings_count=scores.reference_count,
            train_seconds=steps.seconds["train"],
            seconds=round(time.perf_counter() - t0, 2),
            steps=steps.seconds,
        )


class _Steps:
    """Times the demo's steps and advances the progress bar after each."""

    def __init__(self, prog: ProgressFn) -> None:
        self.prog = prog
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, description: str | None = None) -> Iterator[None]:
        t = time.perf_counter()
        if description is not None:
            self.prog(0, description=description)
        yield
        self.seconds[name] = round(time.perf_counter() - t, 2)
        self.prog(1, description=f"demo: {name} done")


def _fresh_folder(out: Path, overwrite: bool) -> None:
    """Make ``out`` empty and marked as the demo's; an existing folder only if aerialct made it."""
    check_output(out, overwrite, kind=FOLDER)
    if out.exists() and any(out.iterdir()):
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "demo")


@dataclass(frozen=True)
class _DemoData:
    """Where the synthetic training city and the held-out district go."""

    city: Path
    city_labels: Path
    heldout: Path
    heldout_labels: Path
    heldout_buildings: Path

    @classmethod
    def under(cls, folder: Path) -> _DemoData:
        """The demo's file names in ``folder``."""
        return cls(
            city=folder / "city.tif",
            city_labels=folder / "city_labels.tif",
            heldout=folder / "heldout.tif",
            heldout_labels=folder / "heldout_labels.tif",
            heldout_buildings=folder / "heldout_buildings.gpkg",
        )


def _synth(data: _DemoData, *, city_size: int, heldout_size: int, gsd: float, seed: int) -> None:
    """A training city and, east of it, a held-out district with its exact footprints."""
    from aerialct.data.synth import DEFAULT_ORIGIN, synth_scene

    synth_scene(data.city, data.city_labels, size=city_size, seed=seed, gsd=gsd)
    synth_scene(
        data.heldout,
        data.heldout_labels,
        size=heldout_size,
        seed=seed + 1000,
        gsd=gsd,
        origin=(DEFAULT_ORIGIN[0] + city_size * gsd + 100.0, DEFAULT_ORIGIN[1]),
        buildings=data.heldout_buildings,
    )


def _tile(data: _DemoData, chips: Path, *, size: int, seed: int) -> Path:
    """Cut the city into non-overlapping chips, a quarter of them for validation."""
    from aerialct.tile import tile_scenes

    tile_scenes(
        [data.city],
        chips,
        labels=[data.city_labels],
        size=size,
        stride=size,
        val_fraction=0.25,
        seed=seed,
    )
    return chips


def _predict(checkpoint: Path, scene: Path, folder: Path, device: str) -> _Prediction:
    """Classes, probabilities and a quick look of the held-out district."""
    from aerialct.predict import predict_scene, resolve_device_name
    from aerialct.predict.bundle import load_inference_model

    dev = resolve_device_name(device)
    bundle = load_inference_model(checkpoint, device=dev)
    pred = predict_scene(
        bundle,
        scene,
        folder / "heldout_classes.tif",
        probabilities=True,
        quicklook=True,
        device=dev,
    )
    if pred.status != "ok" or pred.output is None:
        raise InputError(f"{scene}: prediction failed ({pred.error})")
    from aerialct.stac import deliver_predictions

    deliver_predictions([pred], bundle)  # heldout.stac.json beside the outputs
    return _Prediction(pred.output, pred.probabilities, pred.quicklook)


@dataclass
class _Prediction:
    output: Path
    probabilities: Path | None
    quicklook: Path | None


def _vectorize(pred: _Prediction, buildings: Path) -> Path:
    """Building polygons of the predicted classes, with the mean confidence of each."""
    from aerialct.stac import deliver_vectors
    from aerialct.vectorize import vectorize

    result = vectorize(
        pred.output,
        buildings,
        classes=("building",),
        min_area=4.0,
        fill_holes=4.0,
        simplify=0.25,
        probabilities=pred.probabilities,
    )
    deliver_vectors([result])  # buildings.stac.json
    return buildings


@dataclass
class _Scores:
    pixel_report: Path
    building_report: Path
    review: Path
    per_class_iou: dict[str, float]
    mean_iou: float
    precision: float
    recall: float
    f1: float
    predicted: int
    reference_count: int


def _evaluate(classes: Path, buildings: Path, data: _DemoData, out: Path) -> _Scores:
    """Pixel scores of the class raster and building scores of the polygons, with reports."""
    from aerialct.evaluate import evaluate

    pixel_report = out / "report_pixels.json"
    building_report = out / "report_buildings.json"
    review = out / "review.gpkg"
    pix: Any = evaluate(classes, data.heldout_labels, report=pixel_report)
    bld: Any = evaluate(buildings, data.heldout_buildings, review=review, report=building_report)
    from aerialct.stac import record_scores

    record_scores(pix.to_dict())  # the scores join the outputs' STAC Items
    record_scores(bld.to_dict())
    return _Scores(
        pixel_report=pixel_report,
        building_report=building_report,
        review=review,
        per_class_iou={name: float(v["iou"]) for name, v in pix.scores.per_class.items()},
        mean_iou=float(pix.scores.mean_iou),
        precision=float(bld.precision),
        recall=float(bld.recall),
        f1=float(bld.f1),
        predicted=int(bld.predicted),
        reference_count=int(bld.reference_count),
    )
