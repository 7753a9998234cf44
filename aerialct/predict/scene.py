"""Predict one scene: :func:`predict_scene`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aerialct.geo.inputs import source_path
from aerialct.predict.catalog import scene_job
from aerialct.predict.checks import aoi_frame
from aerialct.predict.job import PredictOptions, check_options, run_job
from aerialct.predict.plan import DEFAULT_BLOCK_SHAPE, BlockShape
from aerialct.predict.results import BundleLike, SceneResult
from aerialct.progress import ProgressFn


def predict_scene(
    bundle: BundleLike,
    scene: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    overlap: float = 0.25,
    batch_size: int = 8,
    probabilities: bool = False,
    tta: str | None = None,
    device: str | None = None,
    creation_options: dict[str, str] | None = None,
    overwrite: bool = False,
    allow_no_crs: bool = False,
    resample_to_training_gsd: bool = False,
    bands: Sequence[int] | None = None,
    quicklook: bool = False,
    overview_resampling: str = "MODE",
    aoi: Any = None,
    skip_existing: bool = False,
    block_shape: BlockShape = DEFAULT_BLOCK_SHAPE,
    progress: ProgressFn | None = None,
) -> SceneResult:
    """Predict one scene into the class raster ``out_path`` (uint8 COG; see :mod:`aerialct.predict`).

    With ``probabilities`` a K-band uint8 raster (255 = 1.0) is written beside it
    as ``<stem>_probabilities.tif`` (``<stem>`` from ``out_path`` minus a
    ``_classes`` suffix); with ``quicklook`` a PNG thumbnail ``<stem>_quicklook.png``.
    ``tta="flips"`` averages the four horizontal/vertical flips (4x the compute).
    ``aoi`` (a polygon file or the frame of :func:`aerialct.geo.vector.read_aoi`, any
    CRS) limits the work to windows that touch it; pixels outside it are nodata.
    A VRT is predicted as one scene (the whole mosaic).

    A large scene is computed in blocks kept in ``.aerialct-state`` beside the output
    (:mod:`aerialct.predict.state`): a run that is killed resumes from its last finished
    block when called again with the same arguments.
    Raises :class:`InputError` / :class:`RasterError` / :class:`OutputExistsError`.
    """
    opts = PredictOptions(
        overlap=overlap,
        batch_size=batch_size,
        probabilities=probabilities,
        tta=tta,
        device=device,
        creation_options=creation_options,
        overwrite=overwrite,
        allow_no_crs=allow_no_crs,
        resample_to_training_gsd=resample_to_training_gsd,
        bands=bands,
        quicklook=quicklook,
        overview_resampling=overview_resampling,
        aoi=aoi_frame(aoi),
        skip_existing=skip_existing,
        block_shape=block_shape,
    )
    check_options(bundle, opts)
    out = Path(out_path)
    stem = out.stem.removesuffix("_classes")

    def paths(_: str) -> tuple[Path, Path | None, Path | None]:
        prob = out.with_name(f"{stem}_probabilities.tif") if probabilities else None
        return out, prob, out.with_name(f"{stem}_quicklook.png") if quicklook else None

    job = scene_job(source_path(scene))
    result = run_job(bundle, job, paths, opts, progress=progress)
    (rec,) = result.outputs
    if rec.status == "failed" and rec.exception is not None:
        raise rec.exception
    rec.source = os.fspath(scene)  # as given: a URL or /vsi path keeps its //
    rec.seconds = result.seconds
    rec.pixels_per_second = rec.width * rec.height / max(rec.seconds, 1e-9)
    return rec
