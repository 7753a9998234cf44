"""Outputs: atomic writes, the output rules, aerialct's markers and temporaries.

Every file aerialct writes goes through :func:`atomic_output`: the data is
written under a temporary name in the destination folder and renamed over the
final name only when complete, so an interrupted run never leaves a half file
under the final name. :func:`check_output` holds the rules of what may be
replaced (README, "What aerialct promises about your files").
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from aerialct.errors import AerialctError, DiskFullError, InputError, OutputExistsError
from aerialct.geo.inputs import is_gdal_path
from aerialct.geo.io import no_georef_warning, verify_raster
from aerialct.geo.locks import output_lock
from aerialct.geo.tags import TAG_PREFIX
from aerialct.modelfiles import is_exported_onnx, is_torchscript

TMP_MARK = ".aerialct-tmp"
"""Every temporary file or folder aerialct writes carries this in its name."""


MARKER = ".aerialct"
"""A file inside every folder aerialct makes; ``--overwrite`` replaces only such folders."""


LEGACY_MARKERS = (".aerialct-demo",)


FOLDER = "folder"
"""``kind`` of a folder output (chips, a Potsdam-like tree, a run, the demo)."""


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


_SUFFIX_KINDS = {
    ".tif": "raster",
    ".tiff": "raster",
    ".gpkg": "gpkg",
    ".fgb": "fgb",
    ".geojson": "geojson",
    ".json": "json",
    ".png": "png",
    ".pt": "checkpoint",
    ".onnx": "onnx",
}


_KIND_WORDS = {
    "raster": "a GeoTIFF written by aerialct (it carries AERIALCT_* tags)",
    "gpkg": "a GeoPackage",
    "fgb": "a FlatGeobuf file",
    "geojson": "a GeoJSON file",
    "json": "a JSON file",
    "png": "a PNG image",
    "checkpoint": "a PyTorch checkpoint",
    "onnx": "an ONNX model exported by aerialct",
    "torchscript": "a TorchScript model exported by aerialct",
}


_FULL_BELOW = 1 << 20
"""A failed write with less free space than this beside it is reported as a full disk."""


log = logging.getLogger("aerialct")


def kind_of(path: str | os.PathLike) -> str | None:
    """The output kind a file path implies by its suffix (None: any regular file)."""
    return _SUFFIX_KINDS.get(Path(path).suffix.lower())


def is_aerialct_folder(path: Path) -> bool:
    """True when ``path`` is a folder that aerialct made (it holds the marker file)."""
    return path.is_dir() and any((path / m).is_file() for m in (MARKER, *LEGACY_MARKERS))


def write_marker(folder: Path, what: str) -> None:
    """Mark ``folder`` as made by aerialct (``what``: the command), so --overwrite may replace it."""
    from aerialct import __version__

    (folder / MARKER).write_text(
        json.dumps({"made_by": f"aerialct {what}", "version": __version__}) + "\n"
    )


def file_is_kind(path: Path, kind: str) -> bool:
    """Whether the existing file ``path`` is of ``kind`` (by content, not by name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    if kind == "raster":
        return head[:4] in _TIFF_MAGIC and has_aerialct_tags(path)
    if kind == "gpkg":
        return head.startswith(b"SQLite format 3\x00")
    if kind == "fgb":
        return head.startswith(b"fgb")
    if kind == "png":
        return head.startswith(b"\x89PNG")
    if kind == "checkpoint":
        return head.startswith(b"PK\x03\x04")
    if kind == "onnx":
        return is_exported_onnx(path)
    if kind == "torchscript":
        return is_torchscript(path)
    if kind in ("json", "geojson"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and (kind == "json" or "features" in doc or "type" in doc)
    return True


def has_aerialct_tags(path: Path) -> bool:
    try:
        import rasterio

        with no_georef_warning(), rasterio.open(path) as ds:
            return any(k.startswith(TAG_PREFIX) for k in ds.tags())
    except Exception:
        return False


def check_output(
    path: str | os.PathLike,
    overwrite: bool,
    *,
    kind: str | None = None,
    inputs: Sequence[str | os.PathLike | None] = (),
) -> Path:
    """Refuse an output that must not be written; return the path.

    - an existing output without ``overwrite``;
    - with ``overwrite``, an existing folder without aerialct's marker (``kind="folder"``),
      or an existing file that is not of the kind this output is (see :func:`kind_of`);
    - an output that is, or contains, one of ``inputs``.
    """
    p = Path(path)
    if not p.name or p.resolve() == Path(p.anchor):
        p = p.resolve()
    check_not_input(p, inputs)
    if not (p.exists() or p.is_symlink()):
        return p
    if not overwrite:
        raise OutputExistsError(p)
    if kind == FOLDER:
        if p.is_symlink() or not p.is_dir():
            raise OutputExistsError(
                p, "it is not a folder; --overwrite replaces only a folder aerialct made"
            )
        if not is_aerialct_folder(p) and any(p.iterdir()):
            raise OutputExistsError(
                p,
                f"it is a folder aerialct did not make (no {MARKER} file in it); --overwrite "
                "replaces only aerialct's own folders: choose another output or empty it yourself",
            )
        return p
    if p.is_dir():
        raise OutputExistsError(
            p, "it is a folder; --overwrite replaces only a file of the kind this command writes"
        )
    want = kind or kind_of(p)
    if want and not file_is_kind(p, want):
        raise OutputExistsError(
            p,
            f"it is not {_KIND_WORDS.get(want, want)}; --overwrite replaces only a file of the "
            "kind this command writes: choose another output or move it yourself",
        )
    return p


def check_not_input(
    out: str | os.PathLike,
    inputs: Sequence[str | os.PathLike | None],
    fix: str = "would replace the input {item}; choose another output path",
) -> None:
    """Refuse an output path that is, or contains, one of ``inputs`` (``fix``: the message
    after the output's name, ``{item}`` the input)."""
    o = Path(out).resolve()
    for item in inputs:
        if item is None or is_gdal_path(item):
            continue
        i = Path(item).resolve()
        if i == o or o in i.parents:
            raise InputError(f"{out}: this output " + fix.format(item=item))


def temp_path_for(path: str | os.PathLike) -> Path:
    """A temporary sibling of ``path`` that keeps its suffix (drivers look at it).

    The name holds this process's id, so a later run can tell a stale temporary
    (its writer is gone) from one that another live process is writing.
    """
    p = Path(path)
    return p.with_name(f"{p.stem}{TMP_MARK}-{os.getpid()}-{uuid.uuid4().hex[:8]}{p.suffix}")


def _writer_alive(name: str) -> bool:
    m = re.search(re.escape(TMP_MARK) + r"-(\d+)-[0-9a-f]{8}", name)
    if not m:
        return False  # an older or foreign naming: nobody owns it any more
    return pid_alive(int(m.group(1)))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (owned by anyone)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``path`` left by an earlier run that was killed; return them.

    Only names that carry aerialct's temporary mark for this very output, and whose
    writing process is gone, are removed. Each one is logged.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        return []
    removed = []
    for cand in parent.glob(f"{glob.escape(p.stem)}{TMP_MARK}-*"):
        if _writer_alive(cand.name):
            continue
        remove_path(cand)
        removed.append(cand)
        log.warning("removed %s, a temporary left by an interrupted earlier run", cand)
    return removed


def remove_path(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def disk_full(error: BaseException, where: Path) -> bool:
    """Whether ``error`` (or its causes) comes from a full disk at ``where``."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e).lower()
        if "no space left" in text or "disk is full" in text or "disk full" in text:
            return True
        e = e.__cause__ or e.__context__
    try:
        st = os.statvfs(where)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _FULL_BELOW


def verify_output(path: Path, kind: str | None) -> None:
    """Re-open a freshly written output and read it whole; raise if it is damaged.

    This is what catches writes that failed late (GDAL flushes and compresses
    blocks on close, SQLite commits on close, a full disk truncates silently).
    """
    if not path.exists():
        raise OSError(errno.ENOENT, "nothing was written", str(path))
    if path.is_dir():
        return
    if kind == "raster":
        verify_raster(path)
    elif kind == "gpkg":
        from aerialct.geo.gpkg import check_gpkg

        check_gpkg(path)  # SQLite reads every page; no second GDAL library loaded for it
    elif kind in ("fgb", "geojson"):
        from aerialct.geo.ogr import pyogrio_api

        pyogrio = pyogrio_api()
        for name, _ in pyogrio.list_layers(path):
            pyogrio.read_info(path, layer=name)
    elif kind == "json":
        json.loads(path.read_text())
    elif kind == "png":
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    elif kind == "checkpoint":
        import zipfile

        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        if bad is not None:
            raise OSError(errno.EIO, f"member {bad} is damaged", str(path))


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    overwrite: bool = False,
    *,
    kind: str | None = None,
    inputs: Sequence[str | os.PathLike | None] = (),
    verify: bool = True,
    made_by: str = "",
    wait: bool = False,
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` once complete.

    The rules (README, "What aerialct promises about your files"):

    - :func:`check_output` refuses what must not be replaced, before and again after the work;
    - the output's lock (:func:`aerialct.geo.locks.output_lock`) is held from the start to
      the rename: a second writer of the same output fails naming this one, or with
      ``wait`` waits for it;
    - stale temporaries of this output from a killed run are removed first (and logged);
    - ``kind="folder"``: the temporary is created as a folder holding aerialct's marker;
    - after the body, the file is re-opened and read whole (:func:`verify_output`) unless
      ``verify`` is False; only then is it renamed over ``path``;
    - on any exception or signal the temporary (and GDAL's sidecars) is removed; a failure
      caused by a full disk becomes :class:`DiskFullError` naming ``path``.
    """
    final = check_output(path, overwrite, kind=kind, inputs=inputs)
    final.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        with _disk_full_as_error(final):
            held.enter_context(output_lock(final, wait=wait))
            check_output(final, overwrite, kind=kind)  # another writer may have finished it
            remove_stale_temps(final)
        with _written(final, kind, verify, made_by, overwrite) as tmp:
            yield tmp


@contextlib.contextmanager
def _disk_full_as_error(final: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:  # the lock file or a stale temporary: not aerialct's own refusals
        if not isinstance(e, AerialctError) and disk_full(e, final.parent):
            raise DiskFullError(final) from e
        raise


@contextlib.contextmanager
def _written(
    final: Path, kind: str | None, verify: bool, made_by: str, overwrite: bool
) -> Iterator[Path]:
    """The body of :func:`atomic_output`, under the output's lock."""
    want = kind or kind_of(final)
    tmp = temp_path_for(final)
    try:
        if kind == FOLDER:
            tmp.mkdir()
            write_marker(tmp, made_by or "output")
        yield tmp
        if verify:
            verify_output(tmp, want)
        elif not tmp.exists():
            raise OSError(errno.ENOENT, "nothing was written", str(tmp))
        check_output(final, overwrite, kind=kind)
        _replace(tmp, final)
    except BaseException as e:
        full = isinstance(e, Exception) and disk_full(e, final.parent)
        remove_path(tmp)
        # GDAL may leave sidecars (.aux.xml, .ovr, part files) beside the temporary.
        for side in final.parent.glob(glob.escape(tmp.name) + ".*"):
            remove_path(side)
        if full and not isinstance(e, DiskFullError):
            raise DiskFullError(final) from e
        raise


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename a finished output ``tmp`` (file or folder) over ``final``, which the caller
    has checked with :func:`check_output`."""
    _replace(tmp, final)


def _replace(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` over ``final``; an old folder is moved aside first and removed after."""
    if final.is_dir() and not final.is_symlink():  # os.replace cannot replace a folder
        aside = temp_path_for(final)
        os.replace(final, aside)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(aside, final)
            raise
        remove_path(aside)
        return
    os.replace(tmp, final)
