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
* Streaming: windows are processed row of windows by row of windows; rows above
  the next window row are final and go straight to the output. On the CPU only
  the overlap rows (``S - step``) are kept at full width
  (:class:`~aerialct.predict.stream.RowAccumulator`); on a GPU a full-width
  ``S + stride`` accumulator lives in device memory
  (:class:`~aerialct.predict.stream.BandAccumulator`). Peak memory grows with the
  scene width, never with the scene height.
* A background thread reads and decodes the next windows (GDAL releases the GIL)
  while the model runs; weighting, accumulation and argmax run on the model's
  device, so on a GPU only uint8 windows go up and uint8 class rows come down.
* The class raster is streamed into a tiled GeoTIFF part file and finished as a
  COG with overviews (:mod:`aerialct.geo.cog`), all under a temporary name that is
  renamed when complete (:func:`aerialct.geo.outputs.atomic_output`).

The parts, in the order a scene meets them
------------------------------------------
- :mod:`~aerialct.predict.batch`: many scenes (:func:`predict_scenes`): shards,
  ``--skip-existing``, one scene's failure recorded, not raised.
- :mod:`~aerialct.predict.scene`: one scene (:func:`predict_scene`).
- :mod:`~aerialct.predict.checks`: bands, pixel size, value range, area of interest.
- :mod:`~aerialct.predict.reader`: the background reader of window rows.
- :mod:`~aerialct.predict.stream`: window weights, the model loop, the accumulators.
- :mod:`~aerialct.predict.outputs`: output names, part files, resampling back.
- :mod:`~aerialct.predict.quicklook`: the PNG quick look with its legend.
- :mod:`~aerialct.predict.results`: the bundle protocol and the result records.
- :mod:`~aerialct.predict.bundle`: the model bundle from a checkpoint or an exported model
  (:func:`~aerialct.predict.bundle.load_inference_model`).
- :mod:`~aerialct.predict.device`: the device resolver (moves to
  :mod:`aerialct.engine.distributed`).
"""

from aerialct.predict.batch import predict_scenes
from aerialct.predict.checks import touches_aoi
from aerialct.predict.device import resolve_device, resolve_device_name
from aerialct.predict.outputs import complete_output, output_paths
from aerialct.predict.quicklook import write_quicklook
from aerialct.predict.results import BatchResult, BundleLike, SceneResult
from aerialct.predict.scene import predict_scene
from aerialct.predict.stream import (
    blend_weights,
    reduce_heap_fragmentation,
    weight_1d,
    weight_sum_1d,
)

__all__ = [
    "BatchResult",
    "BundleLike",
    "SceneResult",
    "blend_weights",
    "complete_output",
    "output_paths",
    "predict_scene",
    "predict_scenes",
    "reduce_heap_fragmentation",
    "resolve_device",
    "resolve_device_name",
    "touches_aoi",
    "weight_1d",
    "weight_sum_1d",
    "write_quicklook",
]
