"""Predict one scene: :func:`predict_scene`."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aerialct.classes import IGNORE_INDEX
from aerialct.errors import InputError
from aerialct.geo.classraster import write_class_sidecars
from aerialct.geo.cog import cog_options, finish_cog
from aerialct.geo.grid import stride_for
from aerialct.geo.inputs import source_path
from aerialct.geo.io import no_georef_warning, open_raster
from aerialct.geo.outputs import atomic_output, check_output
from aerialct.predict.checks import (
    aoi_for,
    check_gsd,
    check_resample,
    check_value_range,
    data_bands,
    scene_gsd,
)
from aerialct.predict.device import resolve_device
from aerialct.predict.outputs import (
    class_histogram,
    gdal_env,
    part_name,
    part_profile,
    tag_class_part,
    tag_prob_part,
    training_grid_vrt,
    warp_back,
)
from aerialct.predict.quicklook import write_quicklook
from aerialct.predict.results import BundleLike, SceneResult
from aerialct.predict.stream import GridStats, predict_grid
from aerialct.progress import ProgressFn, as_progress
from aerialct.stac import model_tags

log = logging.getLogger("aerialct")

TTA_MODES = (None, "flips")


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
    progress: ProgressFn | None = None,
) -> SceneResult:
    """Predict one scene into the class raster ``out_path`` (uint8 COG; see :mod:`aerialct.predict`).

    With ``probabilities`` a K-band uint8 raster (255 = 1.0) is written beside it
    as ``<stem>_probabilities.tif`` (``<stem>`` from ``out_path`` minus a
    ``_classes`` suffix); with ``quicklook`` a PNG thumbnail ``<stem>_quicklook.png``.
    ``tta="flips"`` averages the four horizontal/vertical flips (4x the compute).
    ``aoi`` (a polygon file or the frame of :func:`aerialct.geo.vector.read_aoi`, any
    CRS) limits the work to windows that touch it; pixels outside it are nodata.
    Raises :class:`InputError` / :class:`RasterError` / :class:`OutputExistsError`.
    """
    t_start = time.perf_counter()
    source = source_path(scene)  # a URL or /vsi path is opened as given
    given = os.fspath(scene)
    scene, out_path = Path(scene), Path(out_path)
    stride = _check_options(bundle, overlap, batch_size, tta)
    prob_path, ql_path = _outputs(scene, out_path, probabilities, quicklook, overwrite)
    co = cog_options(creation_options, overview_resampling)
    co_prob = cog_options(creation_options, "AVERAGE")

    dev = resolve_device(device, bundle.model)
    if dev.type == "cuda":  # the CPU cores are free to compress while the GPU works
        for opts in (co, co_prob):
            opts.setdefault("NUM_THREADS", "ALL_CPUS")
    bundle.model.to(dev)
    bundle.model.eval()
    result = SceneResult(scene=scene, source=given, device=str(dev))

    with contextlib.ExitStack() as stack:
        ds = stack.enter_context(open_raster(source, require_crs=not allow_no_crs))
        stack.enter_context(no_georef_warning(ds.crs is None))
        stack.enter_context(gdal_env(ds, int(bundle.chip_size), dev.type == "cuda"))
        chosen = data_bands(ds, bands, int(bundle.in_chans), scene)
        check_value_range(ds, chosen, bundle, scene)
        result.width, result.height = ds.width, ds.height
        result.gsd = scene_gsd(ds)
        src = _prediction_grid(stack, ds, bundle, result, resample_to_training_gsd)
        aoi_geom = aoi_for(aoi, src, scene)
        tmp_cls = stack.enter_context(atomic_output(out_path, overwrite))
        tmp_prob = stack.enter_context(atomic_output(prob_path, overwrite)) if prob_path else None
        parts = _Parts(tmp_cls, tmp_prob)
        stats = _stream_parts(
            bundle,
            src,
            chosen,
            parts,
            scene,
            result,
            stride=stride,
            batch_size=batch_size,
            tta=tta,
            device=dev,
            progress=as_progress(progress),
            aoi=aoi_geom,
        )
        if result.resampled:
            parts.warp_back(ds)
            stats.hist, stats.nodata = class_histogram(parts.cls)
        parts.finish(co, co_prob)
        if ql_path is not None:
            _quicklook(bundle, ds, chosen, tmp_cls, ql_path, scene, overwrite)
            result.quicklook = ql_path

    write_class_sidecars(out_path, bundle.classes)  # gdalinfo / QGIS show the class names
    result.output, result.probabilities = out_path, prob_path
    result.windows, result.forward_seconds = stats.windows, stats.forward_seconds
    result.nodata_pixels = stats.nodata
    result.class_pixels = {name: int(stats.hist[i]) for i, name in enumerate(bundle.classes.names)}
    result.seconds = time.perf_counter() - t_start
    result.pixels_per_second = result.width * result.height / max(result.seconds, 1e-9)
    return result


def _check_options(bundle: BundleLike, overlap: float, batch_size: int, tta: str | None) -> int:
    """Refuse bad options before any file is touched; the window stride for ``overlap``.

    The library's one check of ``overlap`` (the CLI checks it as the option is parsed).
    """
    if tta not in TTA_MODES:
        raise InputError(f"--tta {tta}: unknown; use 'flips' or leave it out")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    return stride_for(int(bundle.chip_size), overlap)


def _outputs(
    scene: Path, out_path: Path, probabilities: bool, quicklook: bool, overwrite: bool
) -> tuple[Path | None, Path | None]:
    """The probability raster and quick-look paths beside ``out_path`` (None when not asked
    for), after checking that every output may be written."""
    stem = out_path.stem.removesuffix("_classes")
    prob_path = out_path.with_name(f"{stem}_probabilities.tif") if probabilities else None
    ql_path = out_path.with_name(f"{stem}_quicklook.png") if quicklook else None
    for p in (out_path, prob_path, ql_path):
        if p is not None:
            check_output(p, overwrite, inputs=[scene])
    return prob_path, ql_path


def _prediction_grid(
    stack: contextlib.ExitStack, ds: Any, bundle: BundleLike, result: SceneResult, resample: bool
) -> Any:
    """The grid to predict on: ``ds`` itself, or a VRT at the training pixel size.

    The VRT is used when ``resample`` is asked for and the scene's pixel size is far
    from the training one (``result.resampled`` then says so); without ``resample``
    a far pixel size is only warned about.
    """
    scene = result.scene
    if not (resample and bundle.gsd):
        msg = check_gsd(result.gsd, bundle.gsd, scene)
        if msg:
            log.warning(msg)
        return ds
    if result.gsd is None:
        raise InputError(
            f"{scene}: cannot resample to the training pixel size without a projected, "
            "north-up CRS; warp it first (gdalwarp -t_srs EPSG:XXXX -tr ...)"
        )
    if check_gsd(result.gsd, bundle.gsd, scene) is None:
        return ds
    check_resample(result.gsd, float(bundle.gsd), ds, scene)
    vrt = stack.enter_context(training_grid_vrt(ds, float(bundle.gsd)))
    result.resampled = True
    log.info("%s: predicting at the training pixel size %g", scene.name, bundle.gsd)
    return vrt


class _Parts:
    """The part files of one scene, named after the outputs' temporaries (see :func:`part_name`)."""

    def __init__(self, tmp_cls: Path, tmp_prob: Path | None) -> None:
        self.tmp_cls, self.tmp_prob = tmp_cls, tmp_prob
        self.cls = part_name(tmp_cls, "part")
        self.prob = part_name(tmp_prob, "part") if tmp_prob else None

    def warp_back(self, like: Any) -> None:
        """Bring the parts from the training grid back onto the scene's grid ``like``."""
        back = part_name(self.tmp_cls, "grid")
        warp_back(self.cls, like, back, IGNORE_INDEX, categorical=True)
        self.cls = back
        if self.prob is not None and self.tmp_prob is not None:
            back_p = part_name(self.tmp_prob, "grid")
            warp_back(self.prob, like, back_p, None, categorical=False)
            self.prob = back_p

    def finish(self, co: dict[str, str], co_prob: dict[str, str]) -> None:
        """Finish the parts as COGs into the outputs' temporaries (``co``: creation options)."""
        finish_cog(self.cls, self.tmp_cls, co)
        if self.prob is not None and self.tmp_prob is not None:
            finish_cog(self.prob, self.tmp_prob, co_prob)


def _stream_parts(
    bundle: BundleLike,
    src: Any,
    bands: list[int],
    parts: _Parts,
    scene: Path,
    result: SceneResult,
    **grid: Any,
) -> GridStats:
    """Open and tag the part files and stream the predicted grid into them.

    ``result.grid_seconds`` is the time from the first window to the closed parts;
    ``grid`` goes to :func:`predict_grid`.
    """
    import rasterio

    with contextlib.ExitStack() as files:
        cls_ds = files.enter_context(
            rasterio.open(parts.cls, "w", **part_profile(src, 1, IGNORE_INDEX))
        )
        tag_class_part(cls_ds, bundle.classes, scene)
        cls_ds.update_tags(**model_tags(bundle))  # which model made it (aerialct.stac)
        prob_ds = None
        if parts.prob is not None:
            prob_ds = files.enter_context(
                rasterio.open(parts.prob, "w", **part_profile(src, len(bundle.classes), None))
            )
            tag_prob_part(prob_ds, bundle.classes, scene)
        t_grid = time.perf_counter()
        stats = predict_grid(bundle, src, bands, cls_ds, prob_ds, label=scene.name, **grid)
    result.grid_seconds = time.perf_counter() - t_grid
    return stats


def _quicklook(
    bundle: BundleLike,
    ds: Any,
    bands: list[int],
    classes: Path,
    out: Path,
    scene: Path,
    overwrite: bool,
) -> None:
    """Write the quick look of ``ds`` with the class raster ``classes`` over it to ``out``.

    Titled with the scene's name and the checkpoint's, when the bundle knows it.
    """
    with atomic_output(out, overwrite) as tmp_ql:
        ckpt = getattr(bundle, "path", None)
        title = scene.name + (f" · {Path(ckpt).name}" if ckpt else "")
        write_quicklook(ds, bands, classes, tmp_ql, bundle.classes, title=title)
