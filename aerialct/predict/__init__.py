"""Seamless, streaming, georeferenced sliding-window inference (``aerialct predict``).

How a scene is predicted
------------------------
* Windows of the training chip size ``S`` step by ``stride = round(S * (1 - overlap))``;
  the last window of a row or column is shifted inside the scene so nothing is
  padded with invented pixels. Only a scene smaller than one window along an
  axis is padded (reflect), and the padded part of the prediction is dropped.
* Every window's softmax is multiplied by a separable raised-cosine weight with a
  floor (:func:`blend_weights`), strictly positive everywhere, and summed into an
  accumulator; the class is the argmax of the sum. The probability raster is the
  sum divided by the summed weights, which are separable too and computed once.
* Windows are spread evenly along each axis (every step <= stride, the last
  window ends at the edge), so overlaps are even.
* Streaming: windows are processed row of windows by row of windows, in batches
  of ``batch_size`` windows of one row (the same batches in every process); rows
  above the next window row are final and go straight on. On the CPU only the
  overlap rows (``S - step``) are kept at full width
  (:class:`~aerialct.predict.stream.RowAccumulator`); on a GPU a full-width
  accumulator of one window's height lives in device memory
  (:class:`~aerialct.predict.stream.BandAccumulator`). Peak memory grows with the
  scene width, never with the scene height.
* Blocks: finished rows are cut into blocks (bands of window rows, and column parts
  on very wide mosaics: :mod:`~aerialct.predict.plan`) kept in a state folder beside
  the outputs (:mod:`~aerialct.predict.state`). Processes share a scene by blocks, a
  killed run resumes from its last finished block, and the result is identical to
  one uninterrupted run.
* A catalog of adjacent tiles (a folder, a glob, a VRT) is one job: its mosaic is
  predicted as one scene and cut back into one output per tile
  (:mod:`~aerialct.predict.catalog`, :mod:`~aerialct.predict.join`).
* A background thread reads and decodes the next windows (GDAL releases the GIL)
  while the model runs; weighting, accumulation and argmax run on the model's
  device, so on a GPU only uint8 windows go up and uint8 class rows come down.
* Each output is streamed from its blocks into a tiled GeoTIFF part file and
  finished as a COG with overviews (:mod:`aerialct.geo.cog`), all under a temporary
  name that is renamed when complete (:func:`aerialct.geo.outputs.atomic_output`). It
  names its source, model and options and carries a checksum of its pixels
  (:mod:`~aerialct.predict.identity`), which ``--skip-existing`` checks.

The parts, in the order a scene meets them
------------------------------------------
- :mod:`~aerialct.predict.batch`: many inputs (:func:`predict_scenes`): jobs, shares
  of blocks for shards and ranks, one job's failure recorded, not raised.
- :mod:`~aerialct.predict.catalog`: which inputs are one map (scenes and catalogs).
- :mod:`~aerialct.predict.scene`: one scene (:func:`predict_scene`).
- :mod:`~aerialct.predict.job`: one job, block by block: what to compute and write.
- :mod:`~aerialct.predict.plan`: the window grid, its canonical batches and blocks.
- :mod:`~aerialct.predict.checks`: bands, pixel size, value range, area of interest.
- :mod:`~aerialct.predict.reader`: the background reader of window rows.
- :mod:`~aerialct.predict.stream`: window weights, the model loop, the accumulators.
- :mod:`~aerialct.predict.state`: the state folder: manifest and finished blocks.
- :mod:`~aerialct.predict.join`: outputs cut from finished blocks.
- :mod:`~aerialct.predict.identity`: provenance, checksums, the completeness check.
- :mod:`~aerialct.predict.outputs`: output names, GDAL settings, the training grid.
- :mod:`~aerialct.predict.quicklook`: the PNG quick look with its legend.
- :mod:`~aerialct.predict.results`: the bundle protocol and the result records.
- :mod:`~aerialct.predict.bundle`: the model bundle from a checkpoint or an exported model
  (:func:`~aerialct.predict.bundle.load_inference_model`).
- :mod:`~aerialct.predict.device`: the device resolver (moves to
  :mod:`aerialct.engine.distributed`).
"""

from aerialct.predict.batch import predict_scenes
from aerialct.predict.catalog import Job, find_jobs
from aerialct.predict.checks import touches_aoi
from aerialct.predict.device import resolve_device, resolve_device_name
from aerialct.predict.identity import Provenance, why_incomplete
from aerialct.predict.outputs import output_paths
from aerialct.predict.plan import BlockShape
from aerialct.predict.quicklook import write_quicklook
from aerialct.predict.results import BatchResult, BundleLike, SceneResult
from aerialct.predict.scene import predict_scene
from aerialct.predict.stream import blend_weights, weight_1d, weight_sum_1d
from aerialct.workers import reduce_heap_fragmentation

__all__ = [
    "BatchResult",
    "BlockShape",
    "BundleLike",
    "Job",
    "Provenance",
    "SceneResult",
    "blend_weights",
    "find_jobs",
    "output_paths",
    "predict_scene",
    "predict_scenes",
    "reduce_heap_fragmentation",
    "resolve_device",
    "resolve_device_name",
    "touches_aoi",
    "weight_1d",
    "weight_sum_1d",
    "why_incomplete",
    "write_quicklook",
]
