"""Atomic outputs and checked raster opening.

Every file aerialct writes goes through :func:`atomic_output`: the data is
written under a temporary name in the destination folder and renamed over the
final name only when complete, so an interrupted run never leaves a half file
under the final name.
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
from typing import TYPE_CHECKING, Any

import numpy as np

from aerialct.classes import IGNORE_INDEX as IGNORE_VALUE
from aerialct.classes import POTSDAM, ClassTable
from aerialct.errors import DiskFullError, InputError, OutputExistsError, RasterError

if TYPE_CHECKING:
    import rasterio

CLASSES_TAG = "AERIALCT_CLASSES"
"""Dataset tag holding a class raster's class table as JSON (``ClassTable.to_list()``)."""

WRITER_TAG = "AERIALCT_WRITER"
"""Dataset tag naming the command that wrote a raster (every aerialct raster has an AERIALCT_ tag)."""

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
}
_KIND_WORDS = {
    "raster": "a GeoTIFF written by aerialct (it carries AERIALCT_* tags)",
    "gpkg": "a GeoPackage",
    "fgb": "a FlatGeobuf file",
    "geojson": "a GeoJSON file",
    "json": "a JSON file",
    "png": "a PNG image",
    "checkpoint": "a PyTorch checkpoint",
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
        return head[:4] in _TIFF_MAGIC and _has_aerialct_tags(path)
    if kind == "gpkg":
        return head.startswith(b"SQLite format 3\x00")
    if kind == "fgb":
        return head.startswith(b"fgb")
    if kind == "png":
        return head.startswith(b"\x89PNG")
    if kind == "checkpoint":
        return head.startswith(b"PK\x03\x04")
    if kind in ("json", "geojson"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and (kind == "json" or "features" in doc or "type" in doc)
    return True


def _has_aerialct_tags(path: Path) -> bool:
    try:
        import rasterio

        with no_georef_warning(), rasterio.open(path) as ds:
            return any(k.startswith("AERIALCT") for k in ds.tags())
    except Exception:
        return False


def check_output(
    path: str | os.PathLike,
    overwrite: bool,
    *,
    kind: str | None = None,
    inputs: Sequence[str | os.PathLike] = (),
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


def check_not_input(out: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an output path that is, or contains, one of ``inputs``."""
    o = Path(out).resolve()
    for item in inputs:
        if item is None or is_gdal_path(item):
            continue
        i = Path(item).resolve()
        if i == o or o in i.parents:
            raise InputError(
                f"{out}: this output would replace the input {item}; choose another output path"
            )


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
        _remove(cand)
        removed.append(cand)
        log.warning("removed %s, a temporary left by an interrupted earlier run", cand)
    return removed


def _remove(p: Path) -> None:
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
    elif kind in ("gpkg", "fgb", "geojson"):
        import pyogrio

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


def verify_raster(path: str | os.PathLike, *, whole: bool = True) -> None:
    """Re-open a raster and decode every block of every band.

    ``whole=False`` decodes only the last block: for the many small chips of ``tile``,
    where reading everything back costs half the tiling time. A GeoTIFF's directory
    is written last, on close, and every block write raises on failure, so a chip that
    opens and decodes its last block was written to the end.
    """
    import rasterio

    with no_georef_warning(), rasterio.open(path) as ds:
        windows = [win for _, win in ds.block_windows(1)]
        for win in windows if whole else windows[-1:]:
            ds.read(window=win)


@contextlib.contextmanager
def no_georef_warning(enabled: bool = True) -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning (labels and chips without a CRS are on purpose)."""
    if not enabled:
        yield
        return
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def gtiff_profile(
    width: int,
    height: int,
    count: int,
    dtype: str,
    crs: Any,
    transform: Any,
    nodata: float | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A GTiff creation profile; ``options`` (creation options, any case) win over the defaults."""
    prof: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    prof.update({k.lower(): v for k, v in options.items()})
    return prof


def class_tags(table: ClassTable, **extra: str) -> dict[str, str]:
    """The dataset tags that make a raster self-describing: its class table, plus ``extra``."""
    return {CLASSES_TAG: json.dumps(table.to_list()), **extra}


def tag_class_raster(ds: Any, table: ClassTable, *, band: int = 1, **extra: str) -> None:
    """Give an open class raster (ids in ``band``) its colour table and class-table tag."""
    ds.write_colormap(band, table.colormap())
    ds.update_tags(**class_tags(table, **extra))


def jsonable(obj: Any) -> Any:
    """Dataclasses, paths, numpy values and non-finite floats (-> null) as JSON-safe values."""
    import dataclasses
    import math

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    overwrite: bool = False,
    *,
    kind: str | None = None,
    inputs: Sequence[str | os.PathLike] = (),
    verify: bool = True,
    made_by: str = "",
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` once complete.

    The rules (README, "What aerialct promises about your files"):

    - :func:`check_output` refuses what must not be replaced, before and again after the work;
    - stale temporaries of this output from a killed run are removed first (and logged);
    - ``kind="folder"``: the temporary is created as a folder holding aerialct's marker;
    - after the body, the file is re-opened and read whole (:func:`verify_output`) unless
      ``verify`` is False; only then is it renamed over ``path``;
    - on any exception or signal the temporary (and GDAL's sidecars) is removed; a failure
      caused by a full disk becomes :class:`DiskFullError` naming ``path``.
    """
    final = check_output(path, overwrite, kind=kind, inputs=inputs)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
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
        _remove(tmp)
        # GDAL may leave sidecars (.aux.xml, .ovr, part files) beside the temporary.
        for side in final.parent.glob(glob.escape(tmp.name) + ".*"):
            _remove(side)
        if full and not isinstance(e, DiskFullError):
            raise DiskFullError(final) from e
        raise


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
        _remove(aside)
        return
    os.replace(tmp, final)


def open_raster(path: str | os.PathLike, *, require_crs: bool = False) -> rasterio.DatasetReader:
    """Open a raster for reading, turning rasterio's errors into one-line messages."""
    import rasterio
    from rasterio.errors import RasterioIOError

    p: Any = os.fspath(path) if is_gdal_path(path) else Path(path)  # URLs pass untouched
    if isinstance(p, Path) and not p.exists():
        raise RasterError(f"{p}: no such file; check the path")
    if isinstance(p, Path) and p.is_dir():
        raise RasterError(f"{p}: is a folder, not a raster; give a GeoTIFF file")
    env = {}
    if not isinstance(p, Path) and "GDAL_DISABLE_READDIR_ON_OPEN" not in os.environ:
        # a remote scene: no listing of its folder and probing for sidecars, one request each
        env["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    try:
        with rasterio.Env(**env):
            ds = rasterio.open(p)
    except RasterioIOError as e:
        first = str(e).splitlines()[0] if str(e) else "unreadable"
        raise RasterError(
            f"{p}: not a readable raster ({first}); give a GeoTIFF or another GDAL raster"
        ) from e
    if require_crs and ds.crs is None:
        ds.close()
        raise RasterError(
            f"{p}: has no CRS; assign one (gdal_edit.py -a_srs EPSG:XXXX {p}) or pass --allow-no-crs"
        )
    return ds


def describe_grid(ds: rasterio.DatasetReader) -> str:
    return f"{ds.width}x{ds.height} px, CRS {ds.crs}, transform {tuple(round(v, 6) for v in ds.transform[:6])}"


def grid_mismatch(
    a: rasterio.DatasetReader, b: rasterio.DatasetReader, tol: float = 1e-6
) -> str | None:
    """None when two rasters share CRS, size and transform; otherwise what differs, in words."""
    problems = []
    if (a.width, a.height) != (b.width, b.height):
        problems.append(f"size {a.width}x{a.height} vs {b.width}x{b.height}")
    if a.crs != b.crs:
        problems.append(f"CRS {a.crs} vs {b.crs}")
    if not a.transform.almost_equals(b.transform, precision=tol):
        problems.append(f"transform {tuple(a.transform[:6])} vs {tuple(b.transform[:6])}")
    return "; ".join(problems) if problems else None


def require_same_grid(
    a: rasterio.DatasetReader, b: rasterio.DatasetReader, what: str = "the first"
) -> None:
    """Raise an InputError naming both rasters and what differs unless they share a grid."""
    diff = grid_mismatch(a, b)
    if diff:
        raise InputError(
            f"{a.name} and {b.name}: grids differ ({diff}); resample {what} onto the other's "
            "grid (gdalwarp -tr/-te or rio warp --like)"
        )


def raster_class_table(
    ds: rasterio.DatasetReader, default: ClassTable | None = POTSDAM
) -> ClassTable | None:
    """The class table stored in a class raster's tag, else ``default``."""
    raw = ds.tags().get(CLASSES_TAG)
    if not raw:
        return default
    try:
        return ClassTable.from_list(json.loads(raw))
    except (ValueError, KeyError, TypeError) as e:
        raise RasterError(
            f"{ds.name}: tag {CLASSES_TAG} is not a class table ({e}); "
            "rewrite it or remove the tag to use the Potsdam classes"
        ) from e


def write_category_names(path: str | os.PathLike, table: ClassTable) -> Path:
    """Give a class raster GDAL category names, so ``gdalinfo`` and QGIS show class names.

    GeoTIFF (and COG) keep category names in GDAL's PAM sidecar ``<path>.aux.xml``
    (rasterio has no setter); it is written next to the finished raster, under a
    temporary name renamed into place, replacing a sidecar of an earlier run.
    """
    from xml.sax.saxutils import escape

    final = Path(str(path) + ".aux.xml")
    cats = "".join(f"<Category>{escape(n)}</Category>" for n in table.category_names())
    xml = (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n'
        f"    <CategoryNames>{cats}</CategoryNames>\n"
        "  </PAMRasterBand>\n</PAMDataset>\n"
    )
    tmp = final.with_name(f"{final.name}{TMP_MARK}-{os.getpid()}")
    try:
        tmp.write_text(xml)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
    return final


CLASS_RASTER = (
    "a class raster has one band of integer class ids of its class table (as `aerialct "
    "predict` writes, <scene>_classes.tif)"
)


def check_class_raster(ds: rasterio.DatasetReader, role: str = "class raster") -> None:
    """Refuse a raster that cannot be a class raster: several bands or non-integer values.

    Values are checked as they are read (:func:`check_class_values`).
    """
    if ds.count != 1:
        raise InputError(
            f"{ds.name}: has {ds.count} bands ({ds.dtypes[0]}), so it is not a {role} "
            f"(an orthophoto?); {CLASS_RASTER}"
        )
    if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
        raise InputError(
            f"{ds.name}: holds {ds.dtypes[0]} values, so it is not a {role}; {CLASS_RASTER} "
            "(convert one with gdal_translate -ot Byte)"
        )


def check_class_values(
    name: str, data: np.ndarray, table: ClassTable, nodata: float | None = None, window: Any = None
) -> None:
    """Refuse class ids outside ``table`` (ignore 255 and the raster's nodata are allowed)."""
    allowed = np.zeros(max(256, int(data.max(initial=0)) + 1), dtype=bool)
    allowed[[c.id for c in table]] = True
    allowed[IGNORE_VALUE] = True
    if nodata is not None and float(nodata).is_integer() and 0 <= nodata < len(allowed):
        allowed[int(nodata)] = True
    if data.size and (data.min() < 0 or not allowed[data].all()):
        bad = np.unique(data[(data < 0) | ~allowed[np.clip(data, 0, None)]])[:5].tolist()
        where = f" in window {_window_text(window)}" if window is not None else ""
        raise InputError(
            f"{name}: values {bad}{where} are not classes of its table "
            f"({', '.join(f'{c.id}={c.name}' for c in table)}); {CLASS_RASTER}"
        )


def _window_text(window: Any) -> str:
    return (
        f"col {int(window.col_off)}, row {int(window.row_off)}, "
        f"{int(window.width)}x{int(window.height)} px"
    )


def read_window(ds: rasterio.DatasetReader, *args: Any, **kwargs: Any) -> np.ndarray:
    """``ds.read(...)`` whose errors name the file and the window and say what to do."""
    from rasterio.errors import RasterioError

    try:
        return ds.read(*args, **kwargs)
    except RasterioError as e:
        raise read_failed(ds.name, e, kwargs.get("window")) from None


def read_failed(path: object, e: BaseException, window: Any = None) -> RasterError:
    """A RasterError for a failed read, naming the file (and window)."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "See previous exception" in first:
        first = "a block could not be decoded"
    where = f" at {_window_text(window)}" if window is not None else ""
    return RasterError(
        f"{path}: read failed{where} ({first}); the file is corrupt or truncated: re-export "
        "or re-download it (gdalinfo -checksum shows the damage)"
    )
