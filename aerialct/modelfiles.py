"""What tells aerialct's exported model files apart, by content, not by name.

An exported model (``aerialct export``) carries aerialct's metadata: an ONNX model in
its ``metadata_props`` (``aerialct_format`` = :data:`METADATA_FORMAT`), a TorchScript
archive in its extra file :data:`EXTRA_FILE`. :mod:`aerialct.export` writes and reads
them; :mod:`aerialct.geo.outputs` asks here what ``--overwrite`` may replace. This
module imports nothing of aerialct, so both can use it.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path

METADATA_FORMAT = "aerialct-export"
EXTRA_FILE = "aerialct.json"

__all__ = ["EXTRA_FILE", "METADATA_FORMAT", "is_exported_onnx", "is_torchscript"]


def is_torchscript(path: str | os.PathLike) -> bool:
    """True for a TorchScript archive written by ``aerialct export --format torchscript``."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(p) as z:
        return any(n.endswith(f"/extra/{EXTRA_FILE}") for n in z.namelist())
    return False


def is_exported_onnx(path: str | os.PathLike) -> bool:
    """True for an ONNX model written by ``aerialct export`` (it carries aerialct's metadata)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not protobuf, or not a model: onnx raises its own types
        return False
    return any(p.key == "aerialct_format" and p.value == METADATA_FORMAT
               for p in model.metadata_props)  # fmt: skip
