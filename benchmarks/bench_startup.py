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
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GDAL_POLYGONIZE = shutil.which("gdal_polygonize.py") or "/usr/bin/gdal_polygonize.py"


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


def timed(cmds: list[list[str]]) -> float:
    t0 = time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="10 files")
    args = ap.parse_args()
    n = 10 if args.quick else args.files
    aerialct = [sys.executable, "-m", "aerialct", "-q", "vectorize"]
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
        t_loop = timed(loop_cmds)
        has_gdal = Path(GDAL_POLYGONIZE).exists()
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
        t_gdal = timed(gdal_cmds) if has_gdal else float("nan")
        t_batch = timed([[*aerialct, str(src), "-o", str(root / "batch")]])
        made = len(list((root / "batch").glob("*.gpkg")))
        assert made == n, f"batch wrote {made} of {n} files"
    per = {k: v / n for k, v in (("loop", t_loop), ("gdal", t_gdal), ("batch", t_batch))}
    lines = [
        "## Start-up: many small files",
        "",
        f"{dt.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {n} class rasters of 64x64 px -> GeoPackage each "
        "(`benchmarks/bench_startup.py`).",
        "",
        "| way | per file | vs gdal_polygonize.py |",
        "|---|---:|---:|",
    ]
    for key, label in (
        ("loop", "`aerialct vectorize f.tif` in a shell loop"),
        ("gdal", "`gdal_polygonize.py f.tif` in a shell loop"),
        ("batch", "`aerialct vectorize DIR -o OUT/` (one process)"),
    ):
        ratio = per["gdal"] / per[key] if has_gdal else float("nan")
        lines.append(f"| {label} | {per[key] * 1000:.0f} ms | {ratio:.2f}x |")
    lines += [
        "",
        "Ratios > 1: faster than GDAL's utility. The loop pays the start-up of Python, typer "
        "(which imports pydantic), rasterio and pyogrio for every file (the command already "
        "skips pyogrio's pandas imports); one process for all files pays it once.",
        "",
    ]
    out = HERE / "results" / "startup.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
