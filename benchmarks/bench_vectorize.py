"""Polygonise a building mask: ``aerialct vectorize`` vs ``gdal_polygonize.py``.

A synthetic class raster (rectangles and L-shapes, some touching, some with
courtyards; background is nodata so GDAL polygonises the building class only)
is written as a tiled, compressed GeoTIFF; both tools turn it into a GeoPackage
in the same run, each as a fresh process (interpreter start-up included for
both). Simplification is off; polygon count and total area must agree.

    python benchmarks/bench_vectorize.py            # 10000 x 10000 pixels
    python benchmarks/bench_vectorize.py --quick    # 3000 x 3000 pixels
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

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "vectorize.md"
GDAL_POLYGONIZE = shutil.which("gdal_polygonize.py") or "/usr/bin/gdal_polygonize.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def make_mask(size: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Buildings (class 1) on nodata (255): about one building per 12000 pixels."""
    rng = np.random.default_rng(seed)
    mask = np.full((size, size), 255, dtype=np.uint8)
    n = size * size // 12000
    for _ in range(n):
        h, w = rng.integers(8, 70, size=2)
        r, c = rng.integers(0, size - h), rng.integers(0, size - w)
        mask[r : r + h, c : c + w] = 1
        kind = rng.random()
        if kind < 0.35:  # L-shape: a wing on one side
            wh, ww = rng.integers(6, 40, size=2)
            rr = min(r + h, size - wh)
            mask[rr : rr + wh, c : c + ww] = 1
        elif kind < 0.45 and h > 20 and w > 20:  # courtyard
            mask[r + 6 : r + h - 6, c + 6 : c + w - 6] = 255
    return mask, n


def write_mask(path: Path, mask: np.ndarray) -> None:
    import rasterio
    from rasterio.transform import from_origin

    from aerialct.classes import POTSDAM

    profile = {
        "driver": "GTiff",
        "width": mask.shape[1],
        "height": mask.shape[0],
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(368000.0, 5808000.0, 0.05, 0.05),
        "nodata": 255,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(mask, 1)
        ds.update_tags(AERIALCT_CLASSES=json.dumps(POTSDAM.to_list()))


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def summarise(path: Path) -> tuple[int, float, int]:
    """Feature count, total area and invalid-geometry count of the first layer."""
    import pyogrio
    import shapely

    frame = pyogrio.read_dataframe(path)
    geoms = np.asarray(frame.geometry.values)
    return len(frame), float(shapely.area(geoms).sum()), int((~shapely.is_valid(geoms)).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3000 x 3000 instead of 10000 x 10000")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the best is reported")
    ap.add_argument("--connectivity", type=int, choices=(4, 8), default=8)
    ap.add_argument("--window-size", type=int, default=2048)
    args = ap.parse_args()
    size = args.size or (3000 if args.quick else 10000)

    work = Path(tempfile.mkdtemp(prefix="bench_vectorize_"))
    try:
        mask, n_drawn = make_mask(size)
        tif = work / "mask.tif"
        write_mask(tif, mask)
        building_px = int((mask == 1).sum())
        del mask

        env = dict(os.environ, OMP_NUM_THREADS="1")
        ours_cmd = [
            sys.executable,
            "-m",
            "aerialct",
            "--quiet",
            "vectorize",
            str(tif),
            "--out",
            str(work / "ours.gpkg"),
            "--connectivity",
            str(args.connectivity),
            "--window-size",
            str(args.window_size),
            "--overwrite",
        ]
        gdal_out = work / "gdal.gpkg"
        gdal_cmd = [SYSTEM_PYTHON, GDAL_POLYGONIZE, "-q"]
        if args.connectivity == 8:
            gdal_cmd.append("-8")
        gdal_cmd += [str(tif), "-f", "GPKG", str(gdal_out), "buildings", "DN"]

        ours_runs, gdal_runs = [], []
        for _ in range(args.repeat):
            gdal_out.unlink(missing_ok=True)
            gdal_runs.append(timed(gdal_cmd, env))
            ours_runs.append(timed(ours_cmd, env))
        ours_t, ours_cpu = [r[0] for r in ours_runs], [r[1] for r in ours_runs]
        gdal_t, gdal_cpu = [r[0] for r in gdal_runs], [r[1] for r in gdal_runs]
        ours_n, ours_area, ours_invalid = summarise(work / "ours.gpkg")
        gdal_n, gdal_area, gdal_invalid = summarise(gdal_out)
        pixel_area = 0.05 * 0.05
        best_ours, best_gdal = min(ours_t), min(gdal_t)
        ratio = best_gdal / best_ours
        cpu_ratio = min(gdal_cpu) / min(ours_cpu)

        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        machine = (
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores "
            f"(shared with other jobs), Python {platform.python_version()}"
        )
        lines = [
            "## Vectorize: building mask -> GeoPackage",
            "",
            f"Date: {now}. Machine: {machine}.",
            f"Mode: {'quick' if args.quick else 'full'}; raster {size} x {size} px (uint8, "
            f"tiled 512, deflate), {n_drawn} drawn shapes, {building_px} building pixels, "
            f"{args.connectivity}-connectivity, simplification off, best of {args.repeat} "
            f"run(s) each, each a fresh process (start-up included), OMP_NUM_THREADS=1.",
            "",
            "| tool | wall s | CPU s | polygons | total area (m²) | area / pixel area | invalid |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| aerialct vectorize (window {args.window_size}) | {best_ours:.2f} | "
            f"{min(ours_cpu):.2f} | {ours_n} | "
            f"{ours_area:.2f} | {ours_area / pixel_area:.0f} | {ours_invalid} |",
            f"| gdal_polygonize.py {'-8 ' if args.connectivity == 8 else ''}-f GPKG | "
            f"{best_gdal:.2f} | {min(gdal_cpu):.2f} | {gdal_n} | {gdal_area:.2f} | "
            f"{gdal_area / pixel_area:.0f} | {gdal_invalid} |",
            "",
            f"Ratio (gdal seconds / aerialct seconds, wall): **{ratio:.2f}**; CPU-time ratio: "
            f"**{cpu_ratio:.2f}** (goal >= 1.0). "
            f"Polygon count equal: **{ours_n == gdal_n}**; total area equal: "
            f"**{abs(ours_area - gdal_area) <= 1e-6 * max(gdal_area, 1.0)}**; "
            f"building pixels x pixel area = {building_px * pixel_area:.2f}.",
            f"All runs, wall seconds: aerialct {[round(t, 2) for t in ours_t]}, "
            f"gdal {[round(t, 2) for t in gdal_t]}; CPU seconds: aerialct "
            f"{[round(t, 2) for t in ours_cpu]}, gdal {[round(t, 2) for t in gdal_cpu]}.",
            "Invalid = polygons GEOS reports invalid (GDAL writes 8-connected pinches as "
            "self-touching rings; aerialct writes them as valid MultiPolygons).",
            "",
        ]
        text = "\n".join(lines)
        print(text)
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
