"""Polygonise a building mask: ``aerialct vectorize`` vs ``gdal_polygonize.py``.

A synthetic class raster (rectangles and L-shapes, some touching, some with
courtyards; background is nodata so GDAL polygonises the building class only)
is written as a tiled, compressed GeoTIFF; both tools turn it into a GeoPackage
in the same run, each as a fresh process (interpreter start-up included for
both). Simplification is off; polygon count and total area must agree.

    python benchmarks/bench_vectorize.py            # 10000 x 10000 pixels
    python benchmarks/bench_vectorize.py --quick    # 3000 x 3000 pixels
    python benchmarks/bench_vectorize.py --class-raster [--sizes 6000,10000] [--repeat 5]

``--class-raster`` is the comparison of issue 24: a synthetic town's 6-class raster (``aerialct
synth`` at 0.5 m, DEFLATE, 256 px tiles) polygonised by ``aerialct vectorize`` (its buildings),
against ``gdal_polygonize.py -8`` on the building mask of the same raster (buildings 1, all else
nodata), in alternating runs, medians; wall time, CPU time and peak memory from the kernel
(``benchmarks/measure.py``). Writes ``results/vectorize_classes.md``.
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

    frame = pyogrio.read_dataframe(path, layer=0)  # the data layer (before layer_styles)
    geoms = np.asarray(frame.geometry.values)
    return len(frame), float(shapely.area(geoms).sum()), int((~shapely.is_valid(geoms)).sum())


def building_mask(labels: Path, out: Path) -> None:
    """The building mask GDAL polygonises: class 1 -> 1, everything else -> nodata 255."""
    import rasterio

    with rasterio.open(labels) as src:
        profile = src.profile
        a = src.read(1)
    profile.update(nodata=255)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.where(a == 1, 1, 255).astype(np.uint8), 1)


def class_raster_section(size: int, repeat: int, work: Path) -> list[str]:
    """One size of the class-raster comparison: table rows and the ratio lines."""
    from measure import Series, alternate, quote, typed

    from aerialct.data.synth import synth_scene

    labels = work / f"town_{size}_labels.tif"
    if not labels.exists():
        synth_scene(work / f"town_{size}.tif", labels, size=size, gsd=0.5, seed=0)
    mask = work / f"town_{size}_buildings.tif"
    if not mask.exists():
        building_mask(labels, mask)
    ours_out, gdal_out = work / f"ours_{size}.gpkg", work / f"gdal_{size}.gpkg"
    aerialct = Path(sys.executable).with_name("aerialct")
    cmd = [str(aerialct)] if aerialct.exists() else [sys.executable, "-m", "aerialct"]
    ours = Series("aerialct vectorize", quote([*cmd, "--quiet", "vectorize", str(labels),
                                               "--out", str(ours_out)]))  # fmt: skip
    gdal = Series("gdal_polygonize.py -8", quote([GDAL_POLYGONIZE, "-q", "-8", str(mask), "-f",
                                                  "GPKG", str(gdal_out), "buildings", "DN"]))  # fmt: skip
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as an installed package has it
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "aerialct-bench-pyc"))
    before = {ours.name: f"rm -f {ours_out}", gdal.name: f"rm -f {gdal_out}"}
    alternate([gdal, ours], repeat, before=before, env=env)
    n_o, area_o, _ = summarise(ours_out)
    n_g, area_g, _ = summarise(gdal_out)
    same = n_o == n_g and abs(area_o - area_g) <= 1e-6 * max(area_g, 1.0)
    rows = [
        f"| {size}² | `{sr.name}` | {sr.median('wall'):.2f} | {sr.median('cpu'):.2f} | "
        f"{sr.median('peak_mb'):.0f} | {sr.values('wall')} | {sr.values('cpu')} |"
        for sr in (gdal, ours)
    ]
    ratio = (
        f"- {size}²: {n_o} buildings on both sides (equal total area: {same}); gdal / aerialct: "
        f"wall **{gdal.median('wall') / ours.median('wall'):.2f}x**, CPU "
        f"**{gdal.median('cpu') / ours.median('cpu'):.2f}x**; aerialct's peak memory "
        f"**{ours.median('peak_mb') / gdal.median('peak_mb'):.2f}x** GDAL's (goals: >= 1.0x, "
        "<= 1.3x). Commands: "
        f"`{typed(gdal.command, work)}`, `{typed(ours.command, work)}`."
    )
    if not same:
        raise SystemExit(f"{size}: polygons differ: {n_o} vs {n_g}, area {area_o} vs {area_g}")
    return [*rows, ratio]


def class_raster_main(args: argparse.Namespace) -> None:
    from measure import commit

    sizes = [int(v) for v in args.sizes.split(",")]
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_vectorize_classes_"))
    work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    rows, ratios = [], []
    try:
        for size in sizes:
            r = class_raster_section(size, args.repeat, work)
            rows += r[:-1]
            ratios.append(r[-1])
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Vectorize: a class raster's buildings, `aerialct vectorize` vs `gdal_polygonize.py -8`",
        "",
        f"Date: {now}. Commit `{commit()}`. Machine: {platform.machine()}, os.cpu_count() = "
        f"{os.cpu_count()}, shared with other jobs: load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; Python {platform.python_version()}. "
        f"Command: `python benchmarks/bench_vectorize.py --class-raster --sizes {args.sizes} "
        f"--repeat {args.repeat}`.",
        "",
        "Synthetic towns (`aerialct synth`, 0.5 m, seed 0; 6-class uint8 rasters, DEFLATE, 256 px "
        "tiles). aerialct polygonises the building class of the class raster (defaults: "
        "8-connectivity, windows of 1536 px); GDAL polygonises the building mask made from it. "
        f"One warm-up round, then {args.repeat} alternating rounds; medians.",
        "",
        "| raster | command | wall s | CPU s | peak RSS MB | all wall s | all CPU s |",
        "|---|---|---:|---:|---:|---|---|",
        *rows,
        "",
        *ratios,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = RESULT.with_name("vectorize_classes.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3000 x 3000 instead of 10000 x 10000")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the best is reported")
    ap.add_argument("--connectivity", type=int, choices=(4, 8), default=8)
    ap.add_argument("--window-size", type=int, default=2048)
    ap.add_argument("--class-raster", action="store_true", help="issue 24's comparison")
    ap.add_argument("--sizes", default="6000,10000", help="--class-raster: raster sizes")
    ap.add_argument("--keep", type=Path, default=None, help="--class-raster: reuse this folder")
    args = ap.parse_args()
    if args.class_raster:
        args.repeat = args.repeat if args.repeat > 1 else 5
        class_raster_main(args)
        return
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
