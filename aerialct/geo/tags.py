"""The ``AERIALCT_*`` dataset tags: every spelling in one place.

Every raster aerialct writes carries at least one of these tags; ``--overwrite``
replaces a GeoTIFF only when it does (:func:`aerialct.geo.outputs.file_is_kind`).
"""

from __future__ import annotations

TAG_PREFIX = "AERIALCT_"
"""What every aerialct dataset tag starts with."""

CLASSES_TAG = "AERIALCT_CLASSES"
"""A class raster's class table as JSON (``ClassTable.to_list()``)."""

WRITER_TAG = "AERIALCT_WRITER"
"""The command that wrote a raster."""

SOURCE_TAG = "AERIALCT_SOURCE"
"""The scene or tile a predicted raster was made from: its path (a URL without user
information or query string)."""

PROB_SCALE_TAG = "AERIALCT_PROB_SCALE"
"""A probability raster's scale: its uint8 values are probability x scale."""

PREDICTION_TAG = "AERIALCT_PREDICTION"
"""How a predicted raster (or quick look) was made, as JSON: the identity of its source
(redacted path, size, header hash), its catalog, the model's hash, the area of interest's
hash and the options that change the result (:class:`aerialct.predict.identity.Provenance`)."""

CHECKSUM_TAG = "AERIALCT_CHECKSUM"
"""``sha256:<hex>`` of a predicted raster's decoded pixels, row by row, each row band after
band (of a quick look: its RGB pixels), written when the raster was finished."""

BAND_CLASS_PREFIX = "CLASS_"
"""Band metadata (not a dataset tag) of a class raster: ``CLASS_<id>=<name>`` per class, kept
inside the GeoTIFF so the names survive without the ``.aux.xml`` sidecar."""

MODEL_TAG = "AERIALCT_MODEL"
"""The model that predicted a raster, as JSON: checkpoint name, sha256, preset, weights."""
