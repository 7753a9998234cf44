"""Per-file start-up: ``aerialct vectorize`` in a shell loop vs ``gdal_polygonize.py``, and
many files in one ``aerialct vectorize`` process.

Production scripts loop over files; a verb's start-up is then paid per file. Three
ways to polygonise N tiny (64x64) class rasters into GeoPackages, timed side by side
in one run:

- ``loop``: ``aerialct vectorize f.tif -o f.gpkg`` once per file (a process each);
- ``gdal``: ``gdal_polygonize.py f.tif -f GPKG f.gpkg`` once per file;
- ``batch``: ``aerialct vectorize DIR -o OUT/`` once (one process, one file per raster).

Writes ``benchmarks/results/startup.md``. Usage: ``python benchmarks/bench_startup.py [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GDAL_POLYGONIZE = shutil.which("gdal_polygonize.py") or "/usr/bin/gdal_polygonize.py"
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "aerialct-bench-pyc"))
"""Bytecode cached, as an installed package has it."""


def make_rasters(folder: Path, n: int) -> list[Path]:
    import rasterio

    from aerialct.classes import POTSDAM
    from aerialct.geo.tags import CLASSES_TAG

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        a = np.zeros((64, 64), np.uint8)
        for _ in range(5):
            r, c = rng.integers(0, 56, 2)
            a[r : r + 6, c : c + 8] = 1
        p = folder / f"t{i:04d}_classes.tif"
        with rasterio.open(
            p, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8",
            crs="EPSG:32633", transform=rasterio.Affine(0.5, 0, 368000 + 32 * i, 0, -0.5, 5808000),
        ) as ds:  # fmt: skip
            ds.write(a, 1)
            ds.update_tags(**{CLASSES_TAG: json.dumps(POTSDAM.to_list())})
        paths.append(p)
    return paths


def timed(cmds: list[list[str]]) -> tuple[float, float]:
    """Wall and CPU seconds (this process's waited-for children) of running ``cmds`` in turn."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, check=True, capture_output=True, env=ENV)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return time.perf_counter() - t0, cpu


def alternating(a: list[list[str]], b: list[list[str]]) -> tuple[tuple[float, float], ...]:
    """(wall, CPU) totals of ``a`` and ``b``, run file by file in turn (a1, b1, a2, b2, ...)
    so that load from other jobs falls on both."""
    ta, tb = [0.0, 0.0], [0.0, 0.0]
    for ca, cb in zip(a, b, strict=True):
        for cmd, tot in ((ca, ta), (cb, tb)):
            w, c = timed([cmd])
            tot[0] += w
            tot[1] += c
    return (ta[0], ta[1]), (tb[0], tb[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="10 files")
    args = ap.parse_args()
    n = 10 if args.quick else args.files
    script = Path(sys.executable).with_name("aerialct")  # the command as typed
    aerialct = [str(script) if script.exists() else sys.executable, *([] if script.exists()
                else ["-m", "aerialct"]), "-q", "vectorize"]  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        src = root / "src"
        src.mkdir()
        paths = make_rasters(src, n)
        for sub in ("loop", "gdal", "batch"):
            (root / sub).mkdir()
        loop_cmds = [
            [*aerialct, str(p), "-o", str(root / "loop" / f"{p.stem}.gpkg")] for p in paths
        ]
        gdal_cmds = [
            [
                GDAL_POLYGONIZE,
                "-q",
                "-8",
                str(p),
                "-f",
                "GPKG",
                str(root / "gdal" / f"{p.stem}.gpkg"),
            ]
            for p in paths
        ]
        timed(loop_cmds[:1] + gdal_cmds[:1])  # warm-up: page cache, bytecode
        for f in [*(root / "loop").iterdir(), *(root / "gdal").iterdir()]:
            f.unlink()
        t_loop, t_gdal = alternating(loop_cmds, gdal_cmds)
        t_batch = timed([[*aerialct, str(src), "-o", str(root / "batch")]])
        made = len(list((root / "batch").glob("*.gpkg")))
        assert made == n, f"batch wrote {made} of {n} files"
    per = {k: (v[0] / n, v[1] / n) for k, v in (("loop", t_loop), ("gdal", t_gdal),
                                                   ("batch", t_batch))}  # fmt: skip
    lines = [
        "## Start-up: many small files",
        "",
        f"{dt.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {n} class rasters of 64x64 px -> GeoPackage each "
        "(`benchmarks/bench_startup.py`).",
        "",
        "| way | wall per file | CPU per file | vs gdal_polygonize.py (wall, CPU) |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (
        ("loop", "`aerialct vectorize f.tif` in a shell loop"),
        ("gdal", "`gdal_polygonize.py f.tif` in a shell loop"),
        ("batch", "`aerialct vectorize DIR -o OUT/` (one process)"),
    ):
        w, c = per[key]
        lines.append(
            f"| {label} | {w * 1000:.0f} ms | {c * 1000:.0f} ms | "
            f"{per['gdal'][0] / w:.2f}x, {per['gdal'][1] / c:.2f}x |"
        )
    lines += [
        "",
        "Ratios > 1: faster than GDAL's utility. The loop runs the two tools file by file in "
        "turn (one warm-up first) and pays the start-up of Python, typer, rich, numpy, "
        "rasterio and shapely for every file (pyogrio is loaded only for "
        "formats and appends the GeoPackage writer leaves to it); one process for all files "
        "pays it once. Command: `python benchmarks/bench_startup.py`.",
        "",
    ]
    out = HERE / "results" / "startup.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
