"""Tiling benchmark: `aerialct tile` vs `gdal_translate -srcwin` per chip, same grid and compression.

    python benchmarks/bench_tile.py [--quick] [--size 6000] [--workers 2] [--keep DIR]
    python benchmarks/bench_tile.py --resize-only     # the resize section alone (seconds)
    python benchmarks/bench_tile.py --retile [--repeat 5]   # vs gdal_retile.py (issue 24's job)

Makes a synthetic scene (RGB + class-id labels, DEFLATE, 256 px tiles), then cuts it
into 512 px chips with stride 512 (last row/column shifted inside) both ways:

* aerialct: the ``aerialct tile`` command (a fresh Python process, imports included) with
  1 and ``--workers`` worker processes (image + mask chips + index);
* GDAL: one ``gdal_translate -srcwin`` process per chip for the image and one for the
  labels, run sequentially and with ``--workers`` processes in parallel.

Both write DEFLATE-compressed GeoTIFF chips (``-co COMPRESS=DEFLATE`` / creation options).
For context it also measures the disk's raw read throughput (the image file read once,
cold-ish and warm) and one full GDAL decode of the scene. Prints a markdown section and
writes it to ``benchmarks/results/tile.md``.

``--retile`` is the comparison a user makes with GDAL's own tiler: the same 6000² DEFLATE
RGB scene into 144 uncompressed 512 px chips, images only, ``gdal_retile.py -ps 512 512``
against ``aerialct tile`` (default workers), both as typed, in alternating runs (medians;
wall time, CPU time and peak memory from the kernel). It also profiles one in-process
``aerialct tile -j 1`` run (one process, the default for uncompressed chips on up to 7 CPUs)
and writes where its CPU time goes (start-up, decoding, writing chips, the read-back, band
statistics, the index). Writes ``results/tile_retile.md``.

A second section times the chip resize of the CT protocol (500 -> 512 px, 3 bands, uint8
and uint16): aerialct's ``resize_bilinear`` against ``scipy.ndimage.zoom(order=1,
grid_mode=True, mode="nearest")``, the same sampling, in one run (timeit, best of 7).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from aerialct.data import potsdam as pots
from aerialct.data.synth import synth_scene
from aerialct.geo.grid import window_starts
from aerialct.tile import resize_bilinear
from aerialct.workers import usable_cpus

GDAL_TRANSLATE = shutil.which("gdal_translate") or "/usr/bin/gdal_translate"
GDAL_RETILE = shutil.which("gdal_retile.py") or "/usr/bin/gdal_retile.py"
CHIP = 512


def read_bytes(path: Path) -> float:
    t = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass
    return time.perf_counter() - t


def gdal_version() -> str:
    out = subprocess.run([GDAL_TRANSLATE, "--version"], capture_output=True, text=True)
    return f"{GDAL_TRANSLATE} is {out.stdout.strip().split(',')[0]}"


def drop_cache(path: Path) -> bool:
    """Ask the kernel to forget the file's pages (works without root via fadvise)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        return True
    except (AttributeError, OSError):
        return False


def gdal_cut(jobs: list[list[str]], workers: int) -> float:
    def run(cmd: list[str]) -> None:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    t = time.perf_counter()
    if workers == 1:
        for cmd in jobs:
            run(cmd)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, jobs))
    return time.perf_counter() - t


def run_both(
    work: Path, img: Path, lab: Path, rows: list[int], cols: list[int], compress: str,
    workers: int, size: int,
) -> dict[str, float]:  # fmt: skip
    """Cut the same windows with GDAL (1 and ``workers`` processes) and aerialct; check pixels."""
    results: dict[str, float] = {}
    for w in sorted({1, workers}):
        gd = work / f"gdal_{compress}_{w}"
        shutil.rmtree(gd, ignore_errors=True)
        (gd / "images").mkdir(parents=True)
        (gd / "masks").mkdir()
        jobs = []
        for r in rows:
            for c in cols:
                for src, sub in ((img, "images"), (lab, "masks")):
                    jobs.append(
                        [GDAL_TRANSLATE, "-q", "-of", "GTiff", "-co", f"COMPRESS={compress}",
                         "-srcwin", str(c), str(r), str(CHIP), str(CHIP), str(src),
                         str(gd / sub / f"scene_r{r}_c{c}.tif")]
                    )  # fmt: skip
        results[f"gdal_translate -srcwin, {w} process{'es' if w > 1 else ''}"] = gdal_cut(jobs, w)
    for w in sorted({1, workers}):
        out = work / f"aerialct_{compress}_{w}"
        cmd = [sys.executable, "-m", "aerialct", "--quiet", "tile", str(img), "--labels", str(lab),
               "--out", str(out), "--size", str(CHIP), "--stride", str(CHIP), "--workers", str(w),
               "--co", f"COMPRESS={compress}", "--overwrite", "--json"]  # fmt: skip
        t = time.perf_counter()
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results[f"aerialct tile, {w} worker{'s' if w > 1 else ''}"] = time.perf_counter() - t
        assert json.loads(done.stdout)["chips"] == len(rows) * len(cols)
    # the two cut the same pixels
    a_dir, g_dir = work / f"aerialct_{compress}_{workers}", work / f"gdal_{compress}_{workers}"
    for r, c in [(rows[0], cols[0]), (rows[-1], cols[-1]), (rows[len(rows) // 2], cols[1])]:
        name = f"scene_{size}_r{r}_c{c}.tif"
        with (
            rasterio.open(a_dir / "train/images" / name) as a,
            rasterio.open(g_dir / "images" / f"scene_r{r}_c{c}.tif") as g,
        ):
            assert np.array_equal(a.read(), g.read()) and a.transform == g.transform
            assert a.compression == g.compression
        with (
            rasterio.open(a_dir / "train/masks" / name) as a,
            rasterio.open(g_dir / "masks" / f"scene_r{r}_c{c}.tif") as g,
            rasterio.open(lab) as src,
        ):
            assert np.array_equal(a.read(1), g.read(1))
            assert np.array_equal(a.read(1), src.read(1, window=Window(c, r, CHIP, CHIP)))
    for w in sorted({1, workers}):  # keep disk use low
        shutil.rmtree(work / f"gdal_{compress}_{w}", ignore_errors=True)
        shutil.rmtree(work / f"aerialct_{compress}_{w}", ignore_errors=True)
    return results


def zoom_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """The peer: scipy.ndimage.zoom with the same sampling, rounded back to the dtype."""
    from scipy import ndimage

    h, w = img.shape[-2:]
    out = ndimage.zoom(
        img.astype(np.float32),
        (1, out_h / h, out_w / w),
        order=1,
        grid_mode=True,
        mode="nearest",
    )
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        np.rint(out, out=out)
        np.clip(out, info.min, info.max, out=out)
    return out.astype(img.dtype)


def resize_section() -> list[str]:
    """Time resize_bilinear vs scipy.ndimage.zoom on 3 x 500 x 500 -> 512 (uint8, uint16)."""
    import timeit

    import scipy

    n_in, n_out = pots.CROP_SIZE, pots.RESIZE_TO
    lines = [
        f"## Chip resize: `resize_bilinear` vs `scipy.ndimage.zoom` ({n_in} -> {n_out} px)",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; numpy {np.__version__}, scipy "
        f"{scipy.__version__}. One 3-band window of random values, best of 7 x 5 calls each, "
        "both in this process. Same sampling (pixel-centre aligned bilinear, edges clamped); "
        "the largest difference between the two results is shown.",
        "",
        "| dtype | aerialct ms | scipy.ndimage.zoom ms | ratio (scipy / aerialct) | max diff (DN) |",
        "|---|---:|---:|---:|---:|",
    ]
    rng = np.random.default_rng(0)
    for dtype in ("uint8", "uint16"):
        img = rng.integers(0, np.iinfo(dtype).max, (3, n_in, n_in), endpoint=True).astype(dtype)
        ours = min(
            timeit.repeat(lambda a=img: resize_bilinear(a, n_out, n_out), number=5, repeat=7)
        )
        peer = min(timeit.repeat(lambda a=img: zoom_resize(a, n_out, n_out), number=5, repeat=7))
        diff = np.abs(
            resize_bilinear(img, n_out, n_out).astype(np.int64)
            - zoom_resize(img, n_out, n_out).astype(np.int64)
        ).max()
        lines.append(
            f"| {dtype} | {ours / 5 * 1e3:.1f} | {peer / 5 * 1e3:.1f} | {peer / ours:.2f} | {diff} |"
        )
    return [*lines, ""]


# the in-process profile of one `aerialct tile` run (one process): CPU seconds per phase
_PROFILE = r"""
import json, sys, time
T = {}
def timed(mod, name, key):
    f = getattr(mod, name)
    def w(*a, **k):
        t = time.process_time()
        try:
            return f(*a, **k)
        finally:
            T[key] = T.get(key, 0.0) + time.process_time() - t
    setattr(mod, name, w)
import aerialct.cli.main as M
import aerialct.data.index as I
import aerialct.geo.io as GIO
import aerialct.tile as TILE
import aerialct.tile.run as R
import aerialct.tile.worker as W
import aerialct.tile.writer as WR
timed(W, "_read_band", "decoding the scene")
timed(W, "sample_pixels", "band statistics")
timed(R, "_band_stats", "band statistics")
timed(WR.ChipWriter, "write", "writing chips (read-back included)")
timed(WR, "_read_back", "read-back check")
timed(GIO, "verify_raster", "read-back check")
timed(R, "write_chips", "index.gpkg and dataset.json")
timed(TILE, "tile_scenes", "tile_scenes")
M.state.own_process = True
code = M.run(sys.argv[1:])
T["process"] = time.process_time()
print(json.dumps(T), file=sys.stderr)
"""


def _aerialct_command() -> list[str]:
    """``aerialct`` as a user types it (the installed script), else ``python -m aerialct``."""
    script = Path(sys.executable).with_name("aerialct")
    return [str(script)] if script.exists() else [sys.executable, "-m", "aerialct"]


def _bench_env() -> dict[str, str]:
    """The environment of timed commands: bytecode cached (as an installed package has it,
    even where PYTHONDONTWRITEBYTECODE is set for development)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "aerialct-bench-pyc"))
    return env


def profile_tile(img: Path, out: Path) -> dict[str, float]:
    """CPU seconds per phase of one in-process ``aerialct tile`` run (see _PROFILE): ``-j 1``,
    the default here, one process anywhere."""
    shutil.rmtree(out, ignore_errors=True)
    args = ["--quiet", "tile", str(img), "--out", str(out), "--size", str(CHIP), "--co",
            "COMPRESS=NONE", "-j", "1"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _PROFILE, *args], capture_output=True,
                          text=True, check=True, env=_bench_env())  # fmt: skip
    t = json.loads(done.stderr.strip().splitlines()[-1])
    write = t.pop("writing chips (read-back included)") - t["read-back check"]
    t["writing chips"] = write
    inside = t.pop("tile_scenes")
    total = t.pop("process")
    t["start-up (interpreter, imports, arguments; before tile_scenes)"] = total - inside
    named = sum(v for k, v in t.items() if not k.startswith("start-up"))
    t["other (checks, grid, output folder, result; in tile_scenes)"] = inside - named
    t["total"] = total
    return t


def retile_section(args: argparse.Namespace) -> list[str]:
    """``aerialct tile`` vs ``gdal_retile.py`` on the issue's job, alternating; a markdown section."""
    from measure import Series, alternate, commit, quote, typed

    load0 = os.getloadavg()[0]
    size = args.size or 6000
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_retile_"))
    work.mkdir(parents=True, exist_ok=True)
    img, lab = work / f"scene_{size}.tif", work / f"scene_{size}_labels.tif"
    if not img.exists():
        synth_scene(img, lab, size=size, seed=0)
    gd, ad = work / "retile", work / "chips"
    gdal = Series("gdal_retile.py", quote([GDAL_RETILE, "-ps", str(CHIP), str(CHIP),
                                           "-targetDir", str(gd), str(img)]))  # fmt: skip
    ours = Series("aerialct tile", quote([*_aerialct_command(), "--quiet", "tile", str(img),
                  "--out", str(ad), "--size", str(CHIP), "--co", "COMPRESS=NONE"]))  # fmt: skip
    before = {gdal.name: f"rm -rf {gd} && mkdir {gd}", ours.name: f"rm -rf {ad}"}
    alternate([gdal, ours], args.repeat, before=before, env=_bench_env())
    n_g, n_a = len(list(gd.glob("*.tif"))), len(list((ad / "train" / "images").glob("*.tif")))
    retiled = {}  # gdal_retile.py names tiles <stem>_<row>_<col> from 1, zero-padded
    for f in gd.glob("*.tif"):
        r, c = f.stem.rsplit("_", 2)[1:]
        retiled[(int(r) - 1, int(c) - 1)] = f
    last = size // CHIP - 1  # full tiles only: the grids agree there
    with rasterio.open(img) as ds:
        for i, j in ((0, 0), (1, min(2, last)), (last - 1, last)):
            r, c = i * CHIP, j * CHIP
            with rasterio.open(retiled[(i, j)]) as g, \
                    rasterio.open(ad / "train" / "images" / f"{img.stem}_r{r}_c{c}.tif") as a:  # fmt: skip
                want = ds.read(window=Window(c, r, CHIP, CHIP))
                assert np.array_equal(g.read(), want) and np.array_equal(a.read(), want)
    t = time.perf_counter()
    with rasterio.open(img) as ds:
        ds.read()
    decode = time.perf_counter() - t
    prof = profile_tile(img, work / "profiled")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    wall = gdal.median("wall") / ours.median("wall")
    cpu = gdal.median("cpu") / ours.median("cpu")
    lines = [
        "## Tiling: `aerialct tile` vs `gdal_retile.py` (uncompressed chips, images only)",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Commit `{commit()}`. Machine: "
        f"{platform.machine()}, os.cpu_count() = {os.cpu_count()}, shared with other jobs: load "
        f"average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
        f"{gdal_version()}; rasterio's GDAL {rasterio.__gdal_version__}; Python "
        f"{platform.python_version()}. Command: `python benchmarks/bench_tile.py --retile "
        f"--repeat {args.repeat}`.",
        "",
        f"Scene: synthetic {size}² RGB uint8, DEFLATE, 256 px tiles. Both cut it into "
        f"{n_a} chips of {CHIP} px (gdal_retile.py: {n_g} tiles, its last row and column "
        f"narrower; aerialct shifts them inside the scene), uncompressed GeoTIFF, images only. "
        f"aerialct also writes index.gpkg and dataset.json (band statistics). One warm-up round, "
        f"then {args.repeat} alternating rounds; medians. Three chips compared pixel by pixel "
        "with the scene: identical on both sides.",
        "",
        "| command | wall s (median) | CPU s (median) | peak RSS MB | all wall s | all CPU s |",
        "|---|---:|---:|---:|---|---|",
    ]
    for sr in (gdal, ours):
        lines.append(
            f"| `{typed(sr.command, work)}` | {sr.median('wall'):.2f} | {sr.median('cpu'):.2f} | "
            f"{sr.median('peak_mb'):.0f} | {sr.values('wall')} | {sr.values('cpu')} |"
        )
    lines += [
        "",
        f"**Ratio (gdal_retile.py / aerialct tile): wall {wall:.2f}x, CPU {cpu:.2f}x** (goal >= "
        f"1.0). One full decode of the scene in this process: {decode:.2f} s.",
        "",
        f"Where one in-process `aerialct tile` run (one process; its bands decoded on GDAL's "
        f"threads, {usable_cpus()} here) spends its CPU time, all threads together "
        f"({prof['total']:.2f} CPU s):",
        "",
        "| phase | CPU s | share |",
        "|---|---:|---:|",
    ]
    for k, v in sorted(prof.items(), key=lambda kv: -kv[1]):
        if k != "total":
            lines.append(f"| {k} | {v:.3f} | {v / prof['total']:.0%} |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 3000x3000 scene instead of 6000")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--compress", nargs="+", default=["DEFLATE", "NONE"], help="chip compressions to run"
    )
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (and reuse)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tile.md")
    ap.add_argument(
        "--resize-only", action="store_true", help="print the resize section only (no file)"
    )
    ap.add_argument("--retile", action="store_true", help="aerialct tile vs gdal_retile.py")
    ap.add_argument("--repeat", type=int, default=5, help="--retile: alternating rounds")
    args = ap.parse_args()
    if args.retile:
        text = "\n".join(retile_section(args))
        print(text)
        out = Path(__file__).parent / "results" / "tile_retile.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        return
    if args.resize_only:
        print("\n".join(resize_section()))
        return
    size = args.size or (3000 if args.quick else 6000)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_tile_"))
    work.mkdir(parents=True, exist_ok=True)
    img, lab = work / f"scene_{size}.tif", work / f"scene_{size}_labels.tif"
    t_synth = None
    if not img.exists():
        t = time.perf_counter()
        synth_scene(img, lab, size=size, seed=0)
        t_synth = time.perf_counter() - t
    raw_mb = (size * size * 3) / 1e6
    file_mb = (img.stat().st_size + lab.stat().st_size) / 1e6

    # disk / decode context
    cold = drop_cache(img)
    t_cold = read_bytes(img)
    t_warm = read_bytes(img)
    t = time.perf_counter()
    with rasterio.open(img) as ds:
        ds.read()
    t_decode = time.perf_counter() - t

    rows, cols = window_starts(size, CHIP, CHIP), window_starts(size, CHIP, CHIP)
    n = len(rows) * len(cols)
    tables: dict[str, dict[str, float]] = {}
    for compress in args.compress:
        tables[compress] = run_both(work, img, lab, rows, cols, compress, args.workers, size)
    plural = "es" if args.workers > 1 else ""
    gdal_key = f"gdal_translate -srcwin, {args.workers} process{plural}"
    ours_key = f"aerialct tile, {args.workers} worker{'s' if args.workers > 1 else ''}"
    lines = [
        "## Tiling: `aerialct tile` vs `gdal_translate -srcwin`",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {platform.platform()}, "
        f"{platform.processor() or platform.machine()}, os.cpu_count() = {os.cpu_count()} "
        "(shared with other jobs while measuring; timings are single runs).",
        f"Mode: {'quick' if args.quick else 'full'}; aerialct reads/writes through rasterio's "
        f"GDAL {rasterio.__gdal_version__}; {gdal_version()}; Python {platform.python_version()}.",
        "",
        f"Scene: synthetic {size}x{size} RGB uint8 + 1-band class-id labels "
        f"(`aerialct synth`, DEFLATE, 256 px tiles; {file_mb:.1f} MB on disk, "
        f"{raw_mb:.0f} MB of raw image pixels"
        + (f"; synthesised in {t_synth:.1f} s" if t_synth else "")
        + f"). Chip grid: {CHIP} px, stride {CHIP}, last row/column shifted inside: "
        f"{len(rows)}x{len(cols)} = {n} windows, each cut from the image and the labels "
        f"({2 * n} chip files).",
        "",
    ]
    for compress, results in tables.items():
        ours, gdal_same = results[ours_key], results[gdal_key]
        best_gdal = min(v for k, v in results.items() if k.startswith("gdal"))
        lines += [
            f"### COMPRESS={compress} (both sides)",
            "",
            "| method | seconds | chip files/s | ratio (GDAL time / this) |",
            "|---|---:|---:|---:|",
        ]
        for k, v in results.items():
            lines.append(f"| {k} | {v:.2f} | {2 * n / v:.0f} | {gdal_same / v:.2f} |")
        lines += [
            "",
            f"**Ratio** (gdal_translate with {args.workers} processes / aerialct with "
            f"{args.workers} workers): **{gdal_same / ours:.2f}**; against the fastest GDAL "
            f"run: {best_gdal / ours:.2f} (goal >= 1.0). aerialct = {ours / t_decode:.1f}x "
            "one full decode of the image.",
            "",
        ]
    lines += [
        "Context, same scene:",
        "",
        f"- raw read of the image file ({img.stat().st_size / 1e6:.1f} MB): "
        f"{'after posix_fadvise(DONTNEED)' if cold else 'page cache not dropped'} "
        f"{t_cold:.3f} s ({img.stat().st_size / 1e6 / t_cold:.0f} MB/s); warm "
        f"{t_warm:.3f} s ({img.stat().st_size / 1e6 / t_warm:.0f} MB/s);",
        f"- one full GDAL decode of the image (rasterio `read()`): {t_decode:.2f} s "
        f"({raw_mb / t_decode:.0f} MB/s of pixels);",
        "- beyond one decode of the image, aerialct's time goes to decoding the labels, "
        "compressing (DEFLATE) and writing 2 files per window, and the index.",
        "",
        "Both sides are timed as command lines (aerialct: `python -m aerialct tile ...`, "
        "interpreter start-up and imports included). "
        "aerialct also writes `index.gpkg` (footprints, per-class pixel counts) and "
        "`dataset.json`, and checks the grids; GDAL's runs write only the chips. Three chip "
        "pairs were compared pixel by pixel (identical, same transform).",
        "",
        *resize_section(),
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
