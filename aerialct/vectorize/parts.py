"""Shards of a catalog's vectorisation: the parts they write and the join that makes one file.

A part (``<out>.parts/part-K-of-N.*``) holds what shard K/N of a run traced:

- ``.gpkg``: the buildings it finished, finished (map coordinates, attributes), in
  output order, with their order keys (``_k0`` .. ``_k6``: band of the map, top,
  left, -pixels, class, right, bottom in pixels);
- ``.npz``: per mosaic, the buildings still open at its first or last row of windows
  (pixel polygons as WKB, class, probability sums and minimums, source tile and
  corner), and the labels of those buildings along that first row (``top``) and last
  row (``bottom``);
- ``.json`` (written last: a part without it is unfinished): the run's fingerprint,
  the rows traced, where each band's buildings sit in the ``.gpkg`` and the tally.

The join pairs each part's ``bottom`` labels with the next part's ``top`` labels
exactly as window seams are paired (:func:`~aerialct.vectorize.merge.seam_pairs`),
merges the open buildings, finishes them, and writes all buildings band by band in
the order of the keys: the same file one process writes.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct import resume
from aerialct.progress import ProgressFn
from aerialct.vectorize.mapping import (
    CatalogOptions,
    Tally,
    add_styles,
    band_bases,
    write_empty_layers,
)
from aerialct.vectorize.merge import FIELDS, Pieces, merge_groups, seam_pairs, union_find

if TYPE_CHECKING:
    from aerialct.geo.vector import LayerStream
    from aerialct.shards import Shard
    from aerialct.vectorize.layer import Finished
    from aerialct.vectorize.mosaic import Mosaic

log = logging.getLogger("aerialct")

PART_FORMAT = "aerialct-vectorize-part"
PART_VERSION = 1
KEYS = [f"_k{i}" for i in range(7)]
_PART = re.compile(r"part-(\d+)-of-(\d+)\.json")


def part_name(shard: Shard) -> str:
    return f"part-{shard.index:04d}-of-{shard.count:04d}"


class Run:
    """One vectorisation of a catalog into ``out``, and its parts folder."""

    def __init__(
        self, out: Path, mosaics: list[Mosaic], opts: CatalogOptions, overwrite: bool
    ) -> None:
        self.out, self.mosaics, self.opts, self.overwrite = out, mosaics, opts, overwrite
        self.dir = resume.parts_dir(out)
        inputs = [p for m in mosaics for t in m.tiles for p in (t.path, t.probabilities) if p]
        settings = asdict(opts) | {"tiles": [[t.path for t in m.tiles] for m in mosaics]}
        self.key = resume.fingerprint(inputs, settings)
        self.tally = Tally()

    def complete_parts(self) -> list[dict[str, Any]] | None:
        """The headers of a complete set of this run's parts (1..N), or None."""
        if not self.dir.is_dir():
            return None
        by_count: dict[int, dict[int, dict[str, Any]]] = {}
        for path in self.dir.glob("part-*-of-*.json"):
            m = _PART.fullmatch(path.name)
            header = resume.read_json(path) if m else None
            if not isinstance(header, dict) or header.get("run") != self.key:
                continue
            if header.get("format") != PART_FORMAT or header.get("version") != PART_VERSION:
                continue
            stem = path.name.removesuffix(".json")
            if any(_size(self.dir / f"{stem}{ext}") != size
                   for ext, size in header["files"].items()):  # fmt: skip
                continue
            assert m is not None
            by_count.setdefault(int(m.group(2)), {})[int(m.group(1))] = header
        for n, found in sorted(by_count.items()):
            if len(found) == n:
                return [found[k] for k in range(1, n + 1)]
        return None

    def claim(self) -> bool:
        if resume.claim(self.dir):
            return True
        log.info("%s: another process is joining the parts", self.dir)
        return False

    def join(self, headers: list[dict[str, Any]]) -> int:
        """Write ``out`` from the parts (this process holds the claim); remove the parts."""
        try:
            _join(self, headers)
        except BaseException:
            resume.release(self.dir)
            raise
        resume.remove_path(self.dir)
        log.info("joined %d parts into %s", len(headers), self.out)
        return len(headers)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# --------------------------------------------------------------------------- writing a part


def _write_keyed(
    stream: LayerStream, name: str, done: Finished, base: int, bands: dict[str, list]
) -> None:
    """Write a finished batch with its order keys; note where each band's buildings are."""
    if not len(done.layer.geometry):
        return
    keys = done.keys.copy()
    keys[:, 0] += base
    first = stream.counts.get(name, 0) + 1
    for band in np.unique(keys[:, 0]).tolist():
        rows = np.flatnonzero(keys[:, 0] == band)
        bands[str(band)] = [name, first + int(rows[0]), len(rows)]
    layer = done.layer
    fields = dict(layer.fields) | {k: keys[:, i] for i, k in enumerate(KEYS)}
    stream.write(name, type(layer)(layer.geometry, fields, layer.crs))


def _pack(m: int, pieces: Pieces, lines: dict[str, dict[int, np.ndarray] | None]) -> dict:
    """A mosaic's open buildings and edge labels as plain arrays (no pickles)."""
    import shapely

    wkb = shapely.to_wkb(pieces.geoms) if len(pieces) else np.array([], dtype=object)
    sizes = np.array([len(b) for b in wkb], dtype=np.int64)
    out = {
        f"m{m}_wkb": np.frombuffer(b"".join(wkb), dtype=np.uint8),
        f"m{m}_wkb_sizes": sizes,
    }
    for k in FIELDS[1:]:
        out[f"m{m}_{k}"] = getattr(pieces, k)
    for side, line in lines.items():
        if line is not None:
            out[f"m{m}_{side}"] = np.stack(list(line.values())).astype(np.int64)
    return out


def _unpack(z: Any, m: int) -> tuple[Pieces, np.ndarray | None, np.ndarray | None]:
    import shapely

    sizes = z[f"m{m}_wkb_sizes"]
    buf = z[f"m{m}_wkb"].tobytes()
    ends = np.cumsum(sizes)
    wkb = [buf[e - s : e] for s, e in zip(sizes.tolist(), ends.tolist(), strict=True)]
    geoms = shapely.from_wkb(np.array(wkb, dtype=object)) if wkb else np.array([], dtype=object)
    pieces = Pieces(geoms, *(z[f"m{m}_{k}"] for k in FIELDS[1:]))
    top = z.get(f"m{m}_top", None)
    bottom = z.get(f"m{m}_bottom", None)
    return pieces, top, bottom


def write_part(
    run: Run, shard: Shard, rows: dict[int, range], progress: ProgressFn,
    failed: list[tuple[str, str]],
) -> int:  # fmt: skip
    """Trace shard K/N's rows and write its part; join every part when it is the last one.

    Returns how many parts were joined into ``out`` (0: the join is another's); ``run.tally``
    is then the whole map's, else this part's.
    """
    from aerialct.geo.vector import stream_layers

    resume.prepare(run.dir, "vectorize --shard")
    name = part_name(shard)
    resume.remove_path(run.dir / f"{name}.json")  # a rewritten part is unfinished until the end
    opts, tally = run.opts, Tally()
    bases = band_bases(run.mosaics)
    bands: dict[str, list] = {}
    arrays: dict[str, np.ndarray] = {}
    with stream_layers(run.dir / f"{name}.gpkg", overwrite=True) as stream:
        for m, r in rows.items():
            mosaic = run.mosaics[m]
            last = len(mosaic.window_rows(opts.window_size))
            with mosaic, mosaic.block_cache(opts.window_size):
                tracer = opts.tracer(mosaic, progress)
                for batch in tracer.run(r, keep_top=r.start > 0, keep_bottom=r.stop < last):
                    done = opts.finish(batch, mosaic)
                    tally.add(mosaic, done)
                    _write_keyed(stream, opts.layer_of(mosaic), done, bases[m], bands)
                tally.add_windows(mosaic, tracer)
            pieces, bottom, top = tracer.frontier.export()
            arrays |= _pack(m, pieces, {"top": top, "bottom": bottom if r.stop < last else None})
        write_empty_layers(stream, [run.mosaics[m] for m in rows] or run.mosaics[:1], opts)
    npz = resume.temp_path_for(run.dir / f"{name}.npz")
    try:
        np.savez_compressed(npz, allow_pickle=False, **arrays)
        npz.replace(run.dir / f"{name}.npz")
    except BaseException:
        resume.remove_path(npz)
        raise
    resume.write_json(run.dir / f"{name}.json", {
        "format": PART_FORMAT, "version": PART_VERSION, "run": run.key,
        "shard": [shard.index, shard.count], "rows": {str(m): [r.start, r.stop] for m, r in rows.items()},
        "bands": bands, "tally": asdict(tally),
        "files": {ext: _size(run.dir / f"{name}{ext}") for ext in (".gpkg", ".npz")},
    })  # fmt: skip
    log.info("shard %s: part written to %s", shard, run.dir / name)
    run.tally = tally
    found = run.complete_parts()
    if found is None or not run.claim():
        return 0
    run.tally = Tally()
    return run.join(found)


# --------------------------------------------------------------------------- the join


def _join_open(run: Run, m: int, parts: list[tuple[dict, Any]]) -> Finished | None:
    """Merge mosaic ``m``'s open buildings across the seams between consecutive parts."""
    mosaic = run.mosaics[m]
    members = [(h, _unpack(z, m)) for h, z in parts if str(m) in h["rows"]]
    if not members:
        return None
    diagonal = run.opts.connectivity == 8
    offset, pairs, pieces = 0, [], []
    prev_bottom: np.ndarray | None = None
    for _, (p, top, bottom) in members:
        if prev_bottom is not None and top is not None:
            shifted = np.where(top > 0, top + offset, 0)
            for a, b in zip(prev_bottom, shifted, strict=True):
                pairs.append(seam_pairs(a, b, diagonal))
        prev_bottom = np.where(bottom > 0, bottom + offset, 0) if bottom is not None else None
        pieces.append(p)
        offset += len(p)
    if offset == 0:
        return None
    allp = Pieces.concat(pieces)
    root = union_find(np.concatenate(pairs) if pairs else np.empty((0, 2), np.int64), offset)
    merged = merge_groups(allp.geoms, allp.class_ids, allp.prob_sum, allp.prob_min, allp.tiles,
                          root[1:], joined=allp)  # fmt: skip
    return run.opts.finish(merged, mosaic)


def _read_range(part: Path, layer: str, first: int, count: int) -> tuple[np.ndarray, dict]:
    import pyogrio.raw

    meta, _, wkb, values = pyogrio.raw.read(part, layer=layer, fids=np.arange(first, first + count))
    return wkb, dict(zip(meta["fields"].tolist(), values, strict=True))


def _join(run: Run, headers: list[dict[str, Any]]) -> None:
    import shapely

    from aerialct.geo.vector import stream_layers, to_multipolygons

    names = [part_name_of(h) for h in headers]
    for h in headers:
        run.tally.update(h["tally"])
    bases = band_bases(run.mosaics)
    joined: dict[int, tuple[str, np.ndarray, dict]] = {}
    with contextlib.ExitStack() as stack:
        with_npz = [(h, stack.enter_context(np.load(run.dir / f"{n}.npz")))
                    for h, n in zip(headers, names, strict=True)]  # fmt: skip
        for m, mosaic in enumerate(run.mosaics):
            done = _join_open(run, m, with_npz)
            if done is None or not len(done.layer.geometry):
                continue
            run.tally.add(mosaic, done)
            fields = dict(done.layer.fields) | {k: done.keys[:, i] for i, k in enumerate(KEYS)}
            fields["_k0"] = fields["_k0"] + bases[m]
            wkb = shapely.to_wkb(to_multipolygons(done.layer.geometry))
            layer = run.opts.layer_of(mosaic)
            for band in np.unique(fields["_k0"]).tolist():
                sel = fields["_k0"] == band
                joined[band] = (layer, wkb[sel], {k: v[sel] for k, v in fields.items()})
    everything = sorted({int(b) for h in headers for b in h["bands"]} | set(joined))
    next_id: dict[str, int] = {}
    with stream_layers(run.out, overwrite=run.overwrite) as stream:
        for band in everything:
            refs = [(n, h["bands"][str(band)]) for h, n in zip(headers, names, strict=True)
                    if str(band) in h["bands"]]  # fmt: skip
            chunks = [_read_range(run.dir / f"{n}.gpkg", *ref) for n, ref in refs]
            layer = refs[0][1][0] if refs else joined[band][0]
            if band in joined:
                chunks.append(joined[band][1:])
            _write_band(stream, layer, chunks, next_id, run.mosaics[0].crs)
        write_empty_layers(stream, run.mosaics, run.opts)
        add_styles(stream, run.mosaics, run.opts)


def part_name_of(header: dict[str, Any]) -> str:
    k, n = header["shard"]
    return f"part-{k:04d}-of-{n:04d}"


def _write_band(
    stream: LayerStream, layer: str, chunks: list[tuple[np.ndarray, dict]],
    next_id: dict[str, int], crs: Any,
) -> None:  # fmt: skip
    """One band's buildings from every source, in key order, numbered on."""
    wkb = np.concatenate([w for w, _ in chunks])
    names = [k for k in chunks[0][1] if k not in KEYS]
    fields = {k: np.concatenate([f[k] for _, f in chunks]) for k in [*names, *KEYS]}
    order = np.lexsort([fields[k] for k in reversed(KEYS)])
    start = next_id.get(layer, 0)
    out = {k: fields[k][order] for k in names}
    out["id"] = np.arange(start + 1, start + len(order) + 1, dtype=np.int64)
    next_id[layer] = start + len(order)
    stream.write_wkb(layer, wkb[order], out, crs)
