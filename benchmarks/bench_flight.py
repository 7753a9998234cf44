"""A flight as one map: a catalog of tiles predicted and vectorised by concurrent shards.

    python benchmarks/bench_flight.py                  # 20 x 20 = 400 tiles of 128 px
    python benchmarks/bench_flight.py --quick          # 6 x 6 tiles
    python benchmarks/bench_flight.py --device cuda    # the predict steps on a GPU

A synthetic town (`aerialct synth`, 0.25 m) is cut into exactly adjacent tiles, as an
agency delivers a flight. Every step is the command line a user runs:

1. one process: ``aerialct predict CKPT 'flight/*.tif' --out pred``, then
   ``aerialct vectorize pred --out buildings.gpkg``;
2. the mosaic whole (the uncut town, one raster): predict and vectorize it, the
   reference for the cost of halos and joins;
3. ``--shards`` concurrent processes (``--shard K/N``) predicting, SIGKILLed once a
   share of the tiles is done, then run again (``--resume-flag``, default
   ``--skip-existing``) to the end; then the same for ``vectorize`` (the last shard
   joins the parts). The class rasters must equal the one-process run's pixel for pixel,
   and the buildings file must equal its file (``source`` compared by file name).

The model is an untrained tiny-cpu checkpoint (its classes are arbitrary), so every
class is vectorised: polygons cover the whole map and cross every seam, the worst case
for the join. Each process's wall and CPU time come from ``os.wait4``; tiles/s per
process is tiles done / that process's wall time. Writes
``benchmarks/results/flight.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aerialct.shards import Shard, shard_items

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "flight.md"
GSD = 0.25


@dataclass
class Run:
    """One process: what it ran, its wall and CPU seconds, its exit status."""

    args: list[str]
    wall: float
    cpu: float
    code: int


def aerialct(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "aerialct", "--quiet", *args]


def start(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, float]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    p = subprocess.Popen(aerialct(args), env=full, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    return p, time.perf_counter()


def finish(p: subprocess.Popen, t0: float, args: list[str], check: bool = True) -> Run:
    """Wait for ``p`` (its own rusage: user + system CPU of it and its threads)."""
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode() if p.stderr else ""
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({p.returncode}): {err[-2000:]}")
    return Run(args, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, p.returncode)


def run(args: list[str]) -> Run:
    p, t0 = start(args)
    return finish(p, t0, args)


def concurrent(jobs: list[list[str]], kill_when=None) -> list[Run]:
    """Start every job at once; with ``kill_when``, SIGKILL them all once it holds."""
    started = [(start(a), a) for a in jobs]
    if kill_when is not None:
        while not kill_when() and any(p.poll() is None for (p, _), _ in started):
            time.sleep(0.05)
        for (p, _), _ in started:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    return [finish(p, t0, a, check=kill_when is None) for (p, t0), a in started]


# --------------------------------------------------------------------------- data


def make_flight(work: Path, n: int, tile: int) -> tuple[Path, list[Path]]:
    """The town (n * tile px square) and its n x n tiles in work/flight."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from aerialct.data.synth import synth_scene

    town = work / "town" / "town.tif"
    town.parent.mkdir(parents=True)
    synth_scene(town, size=n * tile, gsd=GSD, seed=11)
    (work / "flight").mkdir()
    tiles = []
    with rasterio.open(town) as ds:
        for i in range(n):
            for j in range(n):
                win = Window(j * tile, i * tile, tile, tile)
                prof = ds.profile | {"width": tile, "height": tile,
                                     "transform": window_transform(win, ds.transform)}  # fmt: skip
                path = work / "flight" / f"t_r{i:02d}_c{j:02d}.tif"
                with rasterio.open(path, "w", **prof) as dst:
                    dst.write(ds.read(window=win))
                tiles.append(path)
    return town, tiles


def make_checkpoint(path: Path) -> Path:
    import torch

    from aerialct.classes import POTSDAM
    from aerialct.config import load_config, resolve_config_path
    from aerialct.engine.checkpoint import make_checkpoint as make
    from aerialct.engine.checkpoint import save_checkpoint
    from aerialct.models import build_model

    torch.manual_seed(0)
    cfg = load_config(resolve_config_path("tiny-cpu"))
    model = build_model(cfg.model, num_classes=len(POTSDAM), in_chans=3)
    ck = make(config=cfg, classes=POTSDAM, mean=(120.0,) * 3, std=(50.0,) * 3, in_chans=3,
              chip_size=64, model_state=model.state_dict(), gsd=GSD)  # fmt: skip
    return save_checkpoint(path, ck)


# --------------------------------------------------------------------------- checks


def same_rasters(a: Path, b: Path) -> tuple[int, int]:
    """(class rasters compared, how many differ) between two predict folders."""
    import rasterio

    names = sorted(p.name for p in a.glob("*_classes.tif"))
    assert names == sorted(p.name for p in b.glob("*_classes.tif")), "different outputs"
    differ = 0
    for name in names:
        with rasterio.open(a / name) as x, rasterio.open(b / name) as y:
            differ += not np.array_equal(x.read(), y.read())
    return len(names), differ


def class_ratio(folder: Path) -> float:
    """Raw class pixels (one byte each) per byte of the class rasters predict wrote."""
    import rasterio

    px = size = 0
    for path in folder.glob("*_classes.tif"):
        with rasterio.open(path) as ds:
            px += ds.width * ds.height
        size += path.stat().st_size
    return px / size


def same_buildings(a: Path, b: Path) -> bool:
    import pyogrio

    fa, fb = pyogrio.read_dataframe(a), pyogrio.read_dataframe(b)
    for f in (fa, fb):
        f["source"] = [Path(s).name for s in f["source"]]
    return bool(
        len(fa) == len(fb)
        and fa.drop(columns="geometry").equals(fb.drop(columns="geometry"))
        and fa.geometry.geom_equals_exact(fb.geometry, 0).all()
    )


def polygons_like(a: Path, b: Path) -> str:
    """How two buildings files compare as polygon sets (any order, normalised)."""
    import pyogrio
    import shapely

    ga = np.sort(shapely.to_wkb(shapely.normalize(pyogrio.read_dataframe(a).geometry.values)))
    gb = np.sort(shapely.to_wkb(shapely.normalize(pyogrio.read_dataframe(b).geometry.values)))
    if len(ga) == len(gb) and (ga == gb).all():
        return f"identical ({len(ga)} polygons)"
    return f"{len(gb)} polygons vs {len(ga)}: not identical"


# --------------------------------------------------------------------------- steps


def one_process(ckpt: Path, work: Path, device: str, classes: list[str]) -> dict[str, Run]:
    flight = f"{work / 'flight'}/*.tif"
    return {
        "predict": run(["predict", str(ckpt), flight, "--out", str(work / "one_pred"),
                        "--device", device]),
        "vectorize": run(["vectorize", str(work / "one_pred"), "--out",
                          str(work / "one.gpkg"), *classes]),
    }  # fmt: skip


def whole(ckpt: Path, town: Path, work: Path, device: str, classes: list[str]) -> dict[str, Run]:
    return {
        "predict": run(["predict", str(ckpt), str(town), "--out", str(work / "whole_pred"),
                        "--device", device]),
        "vectorize": run(["vectorize", str(work / "whole_pred" / "town_classes.tif"), "--out",
                          str(work / "whole.gpkg"), *classes]),
    }  # fmt: skip


def sharded(ckpt: Path, work: Path, args: argparse.Namespace, classes: list[str]) -> dict:
    n, pred = args.shards, work / "shard_pred"
    flight = f"{work / 'flight'}/*.tif"
    tiles = len(list((work / "flight").glob("*.tif")))
    predict = [["predict", str(ckpt), flight, "--out", str(pred), "--device", args.device,
                "--shard", f"{k}/{n}"] for k in range(1, n + 1)]  # fmt: skip
    goal = max(1, int(tiles * args.kill_at))
    killed = concurrent(predict, kill_when=lambda: len(list(pred.glob("*_classes.tif"))) >= goal)
    kept = {p.name.removesuffix("_classes.tif") for p in pred.glob("*_classes.tif")}
    done_at_kill = len(kept)
    names = sorted(p.stem for p in (work / "flight").glob("*.tif"))
    left = [len(set(shard_items(names, Shard(k, n))) - kept) for k in range(1, n + 1)]
    resume = [a + ([args.resume_flag] if args.resume_flag else []) for a in predict]
    t0 = time.perf_counter()
    resumed = concurrent(resume)
    predict_wall = time.perf_counter() - t0
    out = work / "shard.gpkg"
    vec = [["vectorize", str(pred), "--out", str(out), *classes, "--shard", f"{k}/{n}"]
           for k in range(1, n + 1)]  # fmt: skip
    parts = Path(f"{out}.parts")
    vkilled = concurrent(vec, kill_when=lambda: len(list(parts.glob("*.json"))) >= max(1, n // 2))
    parts_at_kill = len(list(parts.glob("*.json")))
    if out.exists():  # every shard finished before the kill: the run below starts afresh
        out.unlink()
        parts_at_kill = n
    t0 = time.perf_counter()
    vresumed = concurrent(vec)
    return {
        "killed": killed, "done_at_kill": done_at_kill, "resumed": resumed, "left": left,
        "predict_wall": predict_wall, "vkilled": vkilled, "vresumed": vresumed,
        "vectorize_wall": time.perf_counter() - t0,
        "vparts_at_kill": parts_at_kill,
    }  # fmt: skip


# --------------------------------------------------------------------------- at scale


def recorded_gpu_rate() -> tuple[float, float, float]:
    """DCSwin's recorded GPU rate (results/predict_gpu.md): windows/s, km²/h, its GSD in m."""
    text = (ROOT / "benchmarks" / "results" / "predict_gpu.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| dcswin |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    return float(cells[3]), float(cells[4]), 0.05


def recorded_vectorize_rate() -> float:
    """Pixels per CPU second of `aerialct vectorize` on the 10000² building mask
    (results/vectorize.md, start-up included)."""
    text = (ROOT / "benchmarks" / "results" / "vectorize.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| aerialct vectorize"))
    cpu = float(row.strip("|").split("|")[2])
    return 10000 * 10000 / cpu


def at_scale(measured: dict[str, float], area_km2: float = 10_000, gsd: float = 0.1) -> str:
    """What ``area_km2`` at ``gsd`` means, from the recorded GPU rate and this run's ratios."""
    px = area_km2 * 1e6 / gsd**2
    window, stride = 512, 384  # DCSwin's 512 px windows at 25 % overlap
    windows = px / stride**2
    wps, km2h, rec_gsd = recorded_gpu_rate()
    gpu_h = windows / wps / 3600
    tiles = area_km2  # 1 km² tiles
    tile_px = 1000 / gsd
    vec_core_h = px / recorded_vectorize_rate() / 3600 * measured["vectorize_overhead"]
    gpus = (1, 8, 32, 64)
    lines = [
        f"### What {area_km2:,.0f} km² at {gsd * 100:.0f} cm means",
        "",
        f"- **Pixels:** {area_km2:,.0f} km² / ({gsd} m)² = {px:.2e} px; the RGB imagery is "
        f"{3 * px / 1e12:.1f} TB raw, the class rasters {px / 1e12:.1f} TB raw (uint8) and "
        f"at most about {px / measured['class_ratio'] / 1e9:,.0f} GB as written (DEFLATE COGs "
        f"with overviews; {measured['class_ratio']:.0f}:1 here, on the speckled classes of an "
        "untrained model: a trained model's smooth maps compress further), "
        f"6 probability bands {6 * px / 1e12:.0f} TB raw.",
        f"- **Tiles and outputs:** {tiles:,.0f} tiles of 1 km² ({tile_px:,.0f}² px), so "
        f"{tiles:,.0f} class rasters, one `buildings.gpkg`.",
        f"- **Windows:** DCSwin's {window} px windows at 25 % overlap step {stride} px: "
        f"{px:.2e} / {stride}² = {windows:.2e} windows (plus the last row and column of each "
        "scene).",
        f"- **GPU hours:** the recorded DCSwin rate, {wps:.0f} windows/s on one GPU (bf16, "
        f"batch 16; {km2h:.0f} km²/h at {rec_gsd * 100:.0f} cm, so "
        f"{km2h * (gsd / rec_gsd) ** 2:,.0f} km²/h at {gsd * 100:.0f} cm: the window rate is "
        f"what counts), gives {gpu_h:.1f} GPU hours: "
        + ", ".join(
            f"{gpu_h / n * 60:.0f} min on {n} GPUs"
            if gpu_h / n < 2
            else f"{gpu_h / n:.1f} h on {n} GPU{'s' if n > 1 else ''}"
            for n in gpus
        )
        + ".",
        f"- **Halos:** to give each tile the mosaic's pixels, a tile is predicted with every "
        f"window of the mosaic's grid that overlaps it, so windows across a seam run once per "
        f"tile: ({tile_px:,.0f} + {window})² / {tile_px:,.0f}² = "
        f"{((tile_px + window) / tile_px) ** 2:.2f}x the windows at 1 km² tiles (this run's "
        f"{measured['tile']} px tiles cost {measured['predict_overhead']:.2f}x the mosaic on "
        "the CPU, per-file costs included).",
        f"- **Vectorize:** {recorded_vectorize_rate() / 1e6:.0f} Mpx per CPU second on a "
        f"building mask (results/vectorize.md), times this run's catalog cost "
        f"({measured['vectorize_overhead']:.2f}x the mosaic whole, all classes): "
        f"{vec_core_h:.1f} core hours, {vec_core_h / 16 * 60:.0f} min on 16 cores.",
        "- **What limits it:** the GPU step. Vectorising the whole map costs a few core "
        "hours on CPUs that can work beside the GPUs, and its joins hold one row of windows "
        f"per shard seam. Reading {3 * px / 1e12:.0f} TB of raw imagery at 1 GB/s (a modest "
        f"shared file system) takes {3 * px / 1e9 / 3600:.1f} h, so beyond about "
        f"{max(1, round(gpu_h / (3 * px / 1e9 / 3600)))} GPUs reading such a store, not the "
        "GPUs, sets the pace (compressed imagery and faster stores move that point up). The "
        "model itself runs at 1-2 % of the GPU's peak (results/predict_gpu.md): small "
        "networks, launch- and memory-bound.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- report


def _commit() -> str:
    """The checked-out commit (with ``+`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+" if dirty else "")


def report(args, tiles: int, one: dict, wh: dict, sh: dict, checks: dict, setup: float) -> str:
    n, side = args.shards, args.tiles * args.tile
    km2 = (side * GSD / 1000) ** 2
    lines = [
        "## A flight as one map: catalog, shards, kill and resume (`bench_flight.py`)",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores (shared with "
        f"other jobs), Python {platform.python_version()}; device {args.device}. "
        f"Mode: {'quick' if args.quick else 'full'}. Setup (town, tiles, checkpoint) {setup:.0f} s.",
        f"Commit {_commit()}. Command: `python benchmarks/{Path(sys.argv[0]).name} "
        f"{' '.join(sys.argv[1:])}`.".replace(" `.", "`."),
        "",
        f"Flight: a synthetic town of {side}² px at {GSD} m ({km2:.2f} km²) cut into "
        f"{args.tiles} x {args.tiles} = {tiles} adjacent tiles of {args.tile}² px. Model: "
        "untrained tiny-cpu (64 px windows, 25% overlap); every class vectorised.",
        "",
        "| step | processes | tiles | wall s | CPU s | tiles/s per process | tiles per CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in (("predict, one process", one["predict"]),
                     ("vectorize, one process", one["vectorize"])):  # fmt: skip
        lines.append(f"| {label} | 1 | {tiles} | {r.wall:.1f} | {r.cpu:.1f} | "
                     f"{tiles / r.wall:.2f} | {tiles / r.cpu:.2f} |")  # fmt: skip
    runs, left = sh["resumed"], sh["left"]
    rates = [k / r.wall for k, r in zip(left, runs, strict=True)]
    lines.append(
        f"| predict, shards resumed after the kill | {n} concurrent | {sum(left)} left | "
        f"{sh['predict_wall']:.1f} | {sum(r.cpu for r in runs):.1f} | "
        f"{min(rates):.2f}-{max(rates):.2f} | {sum(left) / sum(r.cpu for r in runs):.2f} |"
    )
    runs = sh["vresumed"]
    rates = [tiles / n / r.wall for r in runs]
    lines.append(
        f"| vectorize, shards run again after the kill (join included) | {n} concurrent | "
        f"{tiles} | {sh['vectorize_wall']:.1f} | {sum(r.cpu for r in runs):.1f} | "
        f"{min(rates):.2f}-{max(rates):.2f} (a share of rows each) | "
        f"{tiles / sum(r.cpu for r in runs):.2f} |"
    )
    for label, r in (("predict, the mosaic whole", wh["predict"]),
                     ("vectorize, the mosaic whole", wh["vectorize"])):  # fmt: skip
        lines.append(f"| {label} | 1 | 1 raster | {r.wall:.1f} | {r.cpu:.1f} | | |")
    p_over = one["predict"].cpu / wh["predict"].cpu
    v_over = one["vectorize"].cpu / wh["vectorize"].cpu
    vs_over = sum(r.cpu for r in sh["vresumed"]) / wh["vectorize"].cpu
    lines += [
        "",
        f"Kill and resume: the {n} predict shards were SIGKILLed with {sh['done_at_kill']} of "
        f"{tiles} class rasters written, then run again (`{args.resume_flag or 'no flag'}`); "
        f"the {n} vectorize shards were SIGKILLed with {sh['vparts_at_kill']} of {n} parts "
        "written, then run again (the last joined the parts).",
        "",
        f"- class rasters, shards vs one process: {checks['rasters'][0]} compared, "
        f"{checks['rasters'][1]} differ;",
        f"- buildings, shards vs one process: {'identical file' if checks['buildings'] else 'DIFFERENT'};",
        f"- buildings, catalog vs the mosaic whole: {checks['whole']}.",
        "",
        f"Cost of the catalog against the mosaic whole (CPU seconds, start-up included): "
        f"predict {p_over:.2f}x, vectorize in one process {v_over:.2f}x, vectorize in "
        f"{n} shards with the join {vs_over:.2f}x. Each process pays its start-up (imports: "
        "torch for predict), which small tiles and many shards multiply.",
        "",
    ]
    measured = {"predict_overhead": p_over, "vectorize_overhead": v_over,
                "class_ratio": checks["class_ratio"], "tile": args.tile}  # fmt: skip
    return "\n".join(lines) + "\n" + at_scale(measured)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 x 6 tiles")
    ap.add_argument("--tiles", type=int, default=20, help="tiles per side (default 20: 400)")
    ap.add_argument("--tile", type=int, default=128, help="tile side in px")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--kill-at", type=float, default=0.4, help="share of tiles done at the kill")
    ap.add_argument("--resume-flag", default="--skip-existing",
                    help="added to the predict rerun after the kill ('' for none)")  # fmt: skip
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args()
    if args.quick:
        args.tiles = 6
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_flight_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        town, tiles = make_flight(work, args.tiles, args.tile)
        ckpt = make_checkpoint(work / "tiny.pt")
        setup = time.perf_counter() - t0
        from aerialct.classes import POTSDAM

        classes = [a for name in POTSDAM.names for a in ("--class", name)]
        one = one_process(ckpt, work, args.device, classes)
        wh = whole(ckpt, town, work, args.device, classes)
        sh = sharded(ckpt, work, args, classes)
        checks = {
            "class_ratio": class_ratio(work / "one_pred"),
            "rasters": same_rasters(work / "one_pred", work / "shard_pred"),
            "buildings": same_buildings(work / "one.gpkg", work / "shard.gpkg"),
            "whole": polygons_like(work / "whole.gpkg", work / "one.gpkg"),
        }
        text = report(args, len(tiles), one, wh, sh, checks, setup)
        print(text)
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(text)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
