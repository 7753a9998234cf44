"""What a prediction was made from, and the check that an existing output is one.

Every raster ``predict`` writes carries (tags in :mod:`aerialct.geo.tags`):

* ``AERIALCT_SOURCE``: the scene or tile it was predicted from, as a path with any
  URL's user information and query string removed (:func:`aerialct.geo.inputs.redact`);
* ``AERIALCT_PREDICTION``: a :class:`Provenance` as JSON: the source's identity (that
  path, its size in bytes and a hash of its first 64 KiB), the catalog it was
  predicted in (name, tile count, a hash of every tile's identity and place), the
  model (a hash of the checkpoint file), the area of interest (a hash of its
  geometry) and the options that change the result (overlap, test-time
  augmentation, bands, resampling);
* ``AERIALCT_CHECKSUM``: ``sha256:`` of its decoded pixels, row by row (each row: band
  after band), computed as the rows were written.

The quick look (PNG) carries the same two texts, its checksum over the decoded RGB
pixels. :func:`why_incomplete` trusts nothing it has not checked: the file opens,
holds this class table and provenance, has the expected size and bands, and every
block decodes to the pixels the checksum was written for.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aerialct.geo.inputs import is_gdal_path, redact
from aerialct.geo.tags import CHECKSUM_TAG, CLASSES_TAG, PREDICTION_TAG

HEADER_BYTES = 1 << 16
"""How much of a source file its header hash covers."""


def digest(obj: Any) -> str:
    """A short hex digest (128 bits) of ``obj`` as canonical JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def source_identity(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "header"}`` of a raster input (module doc).

    A GDAL path or URL is not read byte by byte: its header hash covers what GDAL
    reports of it (size, bands, types, CRS, transform, nodata, blocks), and its size is None.
    """
    s = os.fspath(path)
    if is_gdal_path(s):
        from aerialct.geo.io import no_georef_warning, open_raster

        with no_georef_warning(), open_raster(s) as ds:
            desc = {
                "shape": [ds.count, ds.height, ds.width],
                "dtypes": list(ds.dtypes),
                "crs": ds.crs.to_wkt() if ds.crs else None,
                "transform": list(ds.transform)[:6],
                "nodata": [repr(v) for v in ds.nodatavals],
                "blocks": [list(b) for b in ds.block_shapes],
            }
        return {"path": redact(s), "size": None, "header": digest(desc)}
    p = Path(s).resolve()
    with open(p, "rb") as f:
        head = f.read(HEADER_BYTES)
    return {
        "path": redact(str(p)),
        "size": p.stat().st_size,
        "header": hashlib.sha256(head).hexdigest()[:32],
    }


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def model_identity(bundle: Any) -> str:
    """A hash of the model: of its checkpoint file when the bundle knows it, else of its
    weights; with the normalisation, chip size and bands it feeds the model with."""
    path = getattr(bundle, "path", None)
    weights = None
    if path is not None and Path(path).is_file():
        st = Path(path).stat()
        key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FILE_HASHES:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            _FILE_HASHES[key] = h.hexdigest()[:32]
        weights = "file:" + _FILE_HASHES[key]
    else:
        weights = "weights:" + _state_dict_digest(bundle.model)
    inputs = [getattr(bundle, k, None) for k in ("mean", "std", "low", "high")]
    return digest([weights, inputs, int(bundle.chip_size), int(bundle.in_chans)])


def _state_dict_digest(model: Any) -> str:
    h = hashlib.sha256(type(model).__qualname__.encode())
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def aoi_identity(frame: Any) -> str | None:
    """A hash of an area of interest (its geometries and CRS), None without one."""
    if frame is None:
        return None
    wkb = [g.wkb_hex if g is not None else "" for g in frame.geometry]
    crs = frame.crs.to_wkt() if frame.crs is not None else None
    return digest([wkb, crs])


@dataclass(frozen=True)
class Provenance:
    """What an output was predicted from and how (module doc). Equal provenances mean
    the same pixels (for the same device kind and batch size: the last bits may differ
    between a CPU and a GPU)."""

    source: dict[str, Any]
    model: str
    options: dict[str, Any]
    aoi: str | None = None
    catalog: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Provenance:
        d = json.loads(text)
        return cls(d["source"], d["model"], d["options"], d.get("aoi"), d.get("catalog"))

    def differs(self, other: Provenance) -> str | None:
        """None when equal, else what differs in words (for a one-line message)."""
        mine, theirs = self.source, other.source
        if mine.get("path") != theirs.get("path"):
            return f"it was predicted from {theirs.get('path')}"
        if mine != theirs:
            return f"its source {mine.get('path')} has changed since (size or header)"
        if self.model != other.model:
            return "it was predicted by another model (checkpoint hash)"
        if self.aoi != other.aoi:
            return "it was predicted with another --aoi"
        if self.catalog != other.catalog:
            if other.catalog is None:
                return "it was predicted on its own, not with its neighbours in a catalog"
            if self.catalog is None:
                return f"it was predicted within the catalog {other.catalog.get('name')}"
            return f"it was predicted within another catalog ({other.catalog.get('tiles')} tiles)"
        if self.options != other.options:
            keys = sorted(
                k
                for k in {*self.options, *other.options}
                if self.options.get(k) != other.options.get(k)
            )
            return "it was predicted with other options (" + ", ".join(keys) + ")"
        return None


class Checksum:
    """sha256 of raster pixels fed row block by row block: (bands, n, width) arrays, top to bottom."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, rows: np.ndarray) -> None:
        self._h.update(np.ascontiguousarray(rows.transpose(1, 0, 2)).tobytes())

    def text(self) -> str:
        return "sha256:" + self._h.hexdigest()


def raster_checksum(ds: Any) -> str:
    """The :class:`Checksum` of an open raster's pixels, read a block row at a time.

    Raises what the read raises when a block does not decode.
    """
    from rasterio.windows import Window

    step = max(1, ds.block_shapes[0][0] if ds.block_shapes else 512)
    ck = Checksum()
    for y in range(0, ds.height, step):
        ck.update(ds.read(window=Window(0, y, ds.width, min(step, ds.height - y))))
    return ck.text()


def image_checksum(rgb: np.ndarray) -> str:
    """The checksum of an RGB image (H, W, 3) uint8, as the quick look stores it."""
    ck = Checksum()
    ck.update(np.moveaxis(rgb, -1, 0))
    return ck.text()


def why_incomplete(
    path: Path,
    want: Provenance,
    classes_json: str,
    shape: tuple[int, int, int],
) -> str | None:
    """None when ``path`` is a complete raster made as ``want`` says, of ``shape``
    (bands, height, width); otherwise why not, in words."""
    import rasterio

    from aerialct.geo.io import no_georef_warning

    try:
        with no_georef_warning(), rasterio.open(path) as ds:
            tags = ds.tags()
            if tags.get(CLASSES_TAG) is None or PREDICTION_TAG not in tags:
                return "it carries no record of an aerialct prediction"
            if json.loads(tags[CLASSES_TAG]) != json.loads(classes_json):
                return "it carries another class table"
            diff = want.differs(Provenance.from_json(tags[PREDICTION_TAG]))
            if diff:
                return diff
            if (ds.count, ds.height, ds.width) != shape:
                return (
                    f"it has {ds.count}x{ds.height}x{ds.width} px, not {'x'.join(map(str, shape))}"
                )
            try:
                got = raster_checksum(ds)
            except Exception as e:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                return f"a block does not decode ({first}): it is truncated or damaged"
            if got != tags.get(CHECKSUM_TAG):
                return "its pixels do not match the checksum written with it"
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"it does not open as a raster ({first})"
    return None


def why_quicklook_incomplete(path: Path, want: Provenance) -> str | None:
    """None when the PNG ``path`` is a complete quick look made as ``want`` says."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            texts = dict(getattr(im, "text", {}))
            im.load()
            rgb = np.asarray(im.convert("RGB"))
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"it does not decode as a PNG ({first})"
    if PREDICTION_TAG not in texts:
        return "it carries no record of an aerialct prediction"
    try:
        diff = want.differs(Provenance.from_json(texts[PREDICTION_TAG]))
    except (ValueError, KeyError) as e:
        return f"its record is unreadable ({e})"
    if diff:
        return diff
    if image_checksum(rgb) != texts.get(CHECKSUM_TAG):
        return "its pixels do not match the checksum written with it"
    return None
