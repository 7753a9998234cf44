"""pyogrio, imported only when a vector file needs it, and without pandas from the CLI.

pyogrio loads a second GDAL library (about 50 MB and 0.15 CPU s per process) and, when
they are installed, geopandas and pandas (about half a second more). The ``aerialct``
command asks for the lean import (:func:`lean_pyogrio_when_needed`); library callers get
pyogrio as it is.
"""

from __future__ import annotations

from typing import Any

_NOT_ON_THIS_PATH = ("geopandas", "pandas", "pyarrow")
_lean = False


def import_pyogrio_lean() -> None:
    """Import pyogrio without the pandas stack it would pull in (a CLI start-up saving).

    pyogrio imports geopandas and pandas when they are installed, although its raw
    array API, which ``write_layers`` uses, needs neither; that costs about half a
    second per process, paid per file by shell loops. Only the ``aerialct`` command
    calls this (or :func:`lean_pyogrio_when_needed`), in a process of its own;
    afterwards pyogrio's DataFrame functions are unavailable in that process, so a
    library caller never should.
    """
    import importlib.abc
    import sys

    if "pyogrio" in sys.modules or any(m in sys.modules for m in _NOT_ON_THIS_PATH):
        return
    # pyogrio also probes for pyproj (0.2 s), which its array API does not use either
    skipped = {*_NOT_ON_THIS_PATH, "pyproj"}

    class _Skip(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
            if name.split(".")[0] in skipped:
                raise ImportError(f"{name} is not needed on this path")
            return None

    skip = _Skip()
    sys.meta_path.insert(0, skip)
    try:
        import pyogrio.raw  # noqa: F401
    finally:
        sys.meta_path.remove(skip)


def lean_pyogrio_when_needed() -> None:
    """Import pyogrio the lean way (:func:`import_pyogrio_lean`) if and when a write needs it.

    A GeoPackage of plain layers is written without pyogrio (:mod:`aerialct.geo.gpkg`),
    so a command that may never need it should not load it (a second GDAL library:
    about 50 MB and 0.15 CPU s). CLI only, like :func:`import_pyogrio_lean`.
    """
    global _lean
    _lean = True


def pyogrio_api() -> Any:
    """pyogrio with its array API, imported the lean way when the CLI asked for it."""
    if _lean:
        import_pyogrio_lean()
    import pyogrio
    import pyogrio.raw

    return pyogrio
