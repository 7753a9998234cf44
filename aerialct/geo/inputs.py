"""Inputs as users give them: files, folders, quoted globs, GDAL paths and URLs."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from aerialct.errors import InputError


def is_gdal_path(path: str | os.PathLike) -> bool:
    """True for GDAL virtual paths and URLs (``/vsicurl/...``, ``s3://...``, ``https://...``)."""
    s = os.fspath(path)
    return s.startswith("/vsi") or "://" in s


def source_path(path: str | os.PathLike) -> str | Path:
    """A raster input as GDAL should see it: GDAL paths and URLs untouched, files as Paths.

    ``Path("https://host/a.tif")`` would become ``https:/host/a.tif``; this keeps it.
    """
    return os.fspath(path) if is_gdal_path(path) else Path(path)


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
"""What a folder given as raster input contributes (``predict dir``, ``tile dir``)."""


def expand_inputs(paths: Sequence[str | os.PathLike]) -> list[str | Path]:
    """Scene inputs as users give them: files, folders, quoted globs and GDAL paths/URLs.

    A folder gives its rasters (:data:`RASTER_SUFFIXES`, sorted, not recursive); a
    pattern with ``* ? [`` that names no file is expanded as a glob (``**`` recursive);
    GDAL virtual paths and URLs pass untouched. InputError when a pattern or folder
    matches nothing.
    """
    out: list[str | Path] = []
    for item in paths:
        s = os.fspath(item)
        if is_gdal_path(s):
            out.append(s)
            continue
        p = Path(s)
        if p.is_dir():
            hits = sorted(q for q in p.iterdir() if q.suffix.lower() in RASTER_SUFFIXES)
            if not hits:
                raise InputError(f"{p}: folder holds no rasters ({', '.join(RASTER_SUFFIXES)})")
            out.extend(hits)
        elif not p.exists() and is_pattern(s):
            out.extend(glob_paths(s))
        else:
            out.append(p)
    return out


def is_pattern(path: str) -> bool:
    """True when ``path`` holds glob characters (``* ? [``)."""
    return any(ch in path for ch in "*?[")


def glob_paths(pattern: str, *, files_only: bool = False) -> list[Path]:
    """What a quoted glob matches (``**`` recursive), sorted; InputError when nothing does."""
    found = [Path(h) for h in sorted(glob.glob(pattern, recursive=True))]
    if files_only:
        found = [p for p in found if p.is_file()]
    if not found:
        raise InputError(f"{pattern}: the pattern matches no file; check the path")
    return found


_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact(text: str | os.PathLike) -> str:
    """``text`` with every URL's user information and query string removed.

    Signed URLs and credentials (``?token=...``, ``user:password@``) are how remote imagery
    is read; they must not reach a delivery, a log or a message. GDAL's option syntax
    (``/vsicurl?url=...&...``) keeps only its ``url``, itself redacted.
    """
    s = os.fspath(text)
    s = re.sub(
        r"/vsi(curl|curl_streaming)\?([^\s'\"]*)",
        lambda m: f"/vsi{m.group(1)}/" + _redact_url(dict(parse_qsl(m.group(2))).get("url", "")),
        s,
    )
    return _URL.sub(_redact_match, s)


def _redact_match(m: re.Match) -> str:
    """A URL found in text, redacted; the punctuation that ends its sentence stays
    (``https://h/a.tif?token=x: not found`` keeps its colon)."""
    url = m.group(0)
    body = url.rstrip(".,:;!)]}")
    return _redact_url(body) + url[len(body) :]


def source_name(path: str | os.PathLike) -> str:
    """How an input is recorded in outputs (layer fields, reports): a GDAL path or URL
    redacted (:func:`redact`), a file as its absolute path.

    One spelling per file, so that ``a.tif`` and ``/data/a.tif`` are known as one source.
    """
    s = os.fspath(path)
    return redact(s) if is_gdal_path(s) else os.path.abspath(s)


def source_label(path: str | os.PathLike) -> str:
    """The file name of an input, secrets removed: ``scene.tif`` for
    ``/vsicurl/https://host/scene.tif?token=...`` (tags, tables, output names)."""
    s = os.fspath(path)
    return Path(redact(s)).name if is_gdal_path(s) else Path(s).name


def same_source(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two spellings name one input: relative or absolute, through symlinks; URLs
    compared without their secrets."""
    sa, sb = os.fspath(a), os.fspath(b)
    if is_gdal_path(sa) or is_gdal_path(sb):
        return redact(sa) == redact(sb)
    return Path(sa).resolve() == Path(sb).resolve()


def suffix_of(path: str | os.PathLike) -> str:
    """The lower-case suffix of an input's file name (a URL's without its query string)."""
    return Path(source_label(path)).suffix.lower()
