"""Evidence at paper scale: does CT or MS/CS beat the baseline beyond seed noise?

Trains DCSwin and UNetFormer x {none, CT-CL, CT-InfoNCE, MS/CS, CT-CL+MS/CS} x seeds with
`aerialct.engine.train.train` on a packed synthetic city (spatially blocked validation), and
reports per model and scheme the mean +- std over seeds of validation mIoU and building IoU,
the step time, images/s and peak GPU memory, and the difference to the baseline with a
plain rule: a scheme "beats the baseline beyond seed noise" when its mean exceeds the
baseline's by more than twice the standard error of the difference
(2 * sqrt(s_a^2/n_a + s_b^2/n_b)).

Two steps, because the GPU machine has no rasterio/pyogrio (packed chips need
neither)::

    # 1. here, on the CPU: synthesise, tile, pack, archive (fits the 64 MiB transfer)
    python benchmarks/gpu_evidence.py make-data --out bench-out/gpu-data
    # 2. on the GPU machine (torch, timm, numpy, scipy, matplotlib, yaml only)
    python benchmarks/gpu_evidence.py run --data bench-out/gpu-data/city.tar.gz \\
        --device cuda --out "$OUT" --budget-s 330

Runs go seed by seed (every model and scheme for seed 0, then seed 1, ...), and the
markdown and JSON results are rewritten after every run, so a run stopped by its budget
or a time limit still leaves complete, comparable rows. Test on the CPU at a tiny size::

    python benchmarks/gpu_evidence.py make-data --out /tmp/ev --size 256 --gsd 0.5 --chip 64
    python benchmarks/gpu_evidence.py run --data /tmp/ev/city.tar.gz --device cpu --out /tmp/ev \\
        --models tiny --seeds 0,1 --steps 2 --batch 4 --schemes none,ct-cl
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

SCHEMES = ("none", "ct-cl", "ct-infonce", "mscs", "ct-cl+mscs")
MODELS = {"dcswin": "dcswin", "unetformer": "unetformer", "poolformer": "poolformer"}
MODELS_TINY = {"tiny": "tiny-cpu"}


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- data


def make_data(args) -> Path:
    """Synthesise a city, tile it (spatially blocked val), pack it and archive the packed folder."""
    from aerialct.data.packed import pack_chips
    from aerialct.data.synth import synth_scene
    from aerialct.tile import tile_scenes

    out = Path(args.out)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    city = synth_scene(
        work / "city.tif", work / "city_labels.tif", size=args.size, gsd=args.gsd, seed=args.seed
    )
    tiled = tile_scenes(
        [city.image],
        work / "chips",
        labels=[city.labels],
        size=args.chip,
        stride=args.chip,
        val_fraction=args.val_fraction,
        val_block=2 * args.chip,
        seed=args.seed,
        workers=min(2, os.cpu_count() or 1),
    )
    packed = pack_chips(work / "chips", work / "city.packed")
    archive = out / "city.tar.gz"
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        tar.add(packed.out, arcname="city.packed")
    tmp.replace(archive)
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"{archive}: {archive.stat().st_size / 2**20:.1f} MiB; {tiled.chips} chips of {args.chip} px "
        f"({tiled.splits}), city {args.size}^2 at {args.gsd} m, {time.perf_counter() - t:.0f} s",
        file=sys.stderr,
    )
    return archive


def open_data(path: Path, work: Path) -> Path:
    """A packed folder, extracting an archive from make-data into ``work`` first."""
    if path.is_dir():
        return path
    dest = work / "data"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(path) as tar:
        tar.extractall(dest, filter="data")
    return dest / "city.packed"


# --------------------------------------------------------------------------- runs


def overrides_for(args, scheme: str, seed: int, n_train: int) -> list[str]:
    steps_per_epoch = max(1, n_train // args.batch)
    epochs = max(1, math.ceil(args.steps / steps_per_epoch))
    return [
        f"loss.contrast={scheme}",
        f"train.seed={seed}",
        f"train.batch_size={args.batch}",
        f"train.lr={args.lr}",
        f"train.epochs={epochs}",
        f"train.max_steps={args.steps}",
        f"train.warmup_steps={max(1, args.steps // 10)}",
        "train.checkpoint_every=0",
        f"train.val_every={epochs}",  # validate once, at the end
        f"train.save_every={epochs}",  # last.pt and plots once, at the end
        f"train.compile={'true' if args.compile else 'false'}",
        f"data.num_workers={args.workers}",
        *args.set,
    ]


def run_all(args) -> list[dict]:
    import torch

    from aerialct.config import DataConfig, load_config, resolve_config_path
    from aerialct.data.dataset import open_chip_splits
    from aerialct.engine.train import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or (out / "work"))
    data = open_data(Path(args.data), work)
    splits = open_chip_splits(data, DataConfig())
    n_train = len(splits.train)
    models = [m for m in args.models.split(",") if m]
    schemes = [s for s in args.schemes.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    known = {**MODELS, **MODELS_TINY}
    for m in models:
        if m not in known:
            raise SystemExit(f"unknown model {m!r}; choose from {', '.join(known)}")
    cuda = args.device.startswith("cuda")
    rows: list[dict] = []
    started = time.perf_counter()
    info = {
        "data": str(args.data),
        "chips": splits.meta.get("splits"),
        "chip_size": splits.chip_size,
        "gsd": splits.gsd,
        "n_train": n_train,
        "n_val": len(splits.val),
    }
    for seed in seeds:
        for model in models:
            for scheme in schemes:
                if args.budget_s and time.perf_counter() - started > args.budget_s:
                    print(f"budget of {args.budget_s} s reached; stopping", file=sys.stderr)
                    write_results(args, rows, info, stopped=True)
                    return rows
                cfg = load_config(
                    resolve_config_path(known[model]), overrides_for(args, scheme, seed, n_train)
                )
                run = work / "runs" / f"{model}-{scheme.replace('+', '_')}-{seed}"
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                res = train(cfg, data, run, device=args.device, overwrite=True)
                wall = time.perf_counter() - t
                peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
                f = res.final
                ips = steady_images_per_s(run / "metrics.csv", res.images_per_s)
                rows.append(
                    {
                        "model": model,
                        "scheme": scheme,
                        "seed": seed,
                        "steps": res.steps,
                        "epochs": res.epochs,
                        "batch": cfg.train.batch_size,
                        "amp": cfg.train.amp,
                        "miou": f.get("val_miou"),
                        "building": f.get("iou_building"),
                        "images_per_s": ips,
                        "step_ms": 1000 * cfg.train.batch_size / ips if ips else None,
                        "wall_s": wall,
                        "peak_gib": peak,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                shutil.rmtree(run, ignore_errors=True)  # ~170 MB of checkpoints per paper run
                write_results(args, rows, info, stopped=False)
    return rows


def steady_images_per_s(metrics: Path, overall: float) -> float:
    """Median training images/s over epochs after the first (warm-up, autotuning, compiling)."""
    import csv

    with open(metrics, newline="") as f:
        ips = [float(r["images_per_s"]) for r in csv.DictReader(f)]
    return statistics.median(ips[1:]) if len(ips) > 1 else overall


# --------------------------------------------------------------------------- report


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else math.nan


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (model, scheme): mean/std over seeds and the comparison with 'none'."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["scheme"]), []).append(r)
    out = []
    for (model, scheme), rs in groups.items():
        s = {"model": model, "scheme": scheme, "n": len(rs)}
        for key in ("miou", "building", "step_ms", "images_per_s", "peak_gib"):
            s[key], s[key + "_std"] = mean_std([r[key] for r in rs])
        out.append(s)
    base = {s["model"]: s for s in out if s["scheme"] == "none"}
    for s in out:
        b = base.get(s["model"])
        for key in ("miou", "building"):
            s[key + "_delta"], s[key + "_beats"] = math.nan, None
            if b is None or s is b or s["n"] < 2 or b["n"] < 2:
                continue
            se = math.sqrt(s[key + "_std"] ** 2 / s["n"] + b[key + "_std"] ** 2 / b["n"])
            s[key + "_delta"] = s[key] - b[key]
            s[key + "_se2"] = 2 * se
            s[key + "_beats"] = bool(s[key + "_delta"] > 2 * se)
        if b is not None and b["step_ms"] and s["step_ms"]:
            s["step_ratio"] = s["step_ms"] / b["step_ms"]
    return out


def markdown(args, rows: list[dict], info: dict, stopped: bool) -> str:
    import torch

    summary = summarise(rows)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def pm(s, key, fmt="{:.4f}"):
        m, sd = s[key], s[key + "_std"]
        if m is None or not math.isfinite(m):
            return "-"
        return fmt.format(m) + ("" if not math.isfinite(sd) else " ± " + fmt.format(sd))

    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"## Evidence: CT and MS/CS against the baseline (`gpu_evidence.py`, {args.device})",
        "",
        f"Date: {when}. Device: {gpu or platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, commit `{commit()}`.",
        f"Data: packed synthetic city ({info['chips']} chips of {info['chip_size']} px at "
        f"{info['gsd']} m; {info['n_train']} training chips, {info['n_val']} spatially blocked "
        f"validation chips). Each run: {args.steps} optimiser steps of batch {args.batch}, "
        f"lr {args.lr} (warm-up {max(1, args.steps // 10)} steps, cosine), random init, "
        f"augmentation of the preset, compile {'on' if args.compile else 'off'}; seeds "
        f"{', '.join(map(str, seeds))}; validation once at the end. Step time and images/s: "
        "median over the epochs after the first."
        + (" **Stopped by its time budget: the last seed may be incomplete.**" if stopped else ""),
        "",
        "| model | scheme | seeds | val mIoU | val building IoU | Δ mIoU (2 SE) | Δ building (2 SE)"
        " | step ms | × none | images/s | peak GiB |",
        "| --- | --- | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]

    def delta(s, key):
        d = s.get(key + "_delta", math.nan)
        if d is None or not math.isfinite(d):
            return "-"
        mark = " **beats**" if s[key + "_beats"] else ""
        return f"{d:+.4f} ({s[key + '_se2']:.4f}){mark}"

    for s in summary:
        ratio = s.get("step_ratio")
        lines.append(
            f"| {s['model']} | {s['scheme']} | {s['n']} | {pm(s, 'miou')} | {pm(s, 'building')} |"
            f" {delta(s, 'miou')} | {delta(s, 'building')} | {pm(s, 'step_ms', '{:.1f}')} |"
            f" {'-' if ratio is None else f'{ratio:.2f}'} | {pm(s, 'images_per_s', '{:.0f}')} |"
            f" {pm(s, 'peak_gib', '{:.2f}')} |"
        )
    winners = [
        f"{s['model']} {s['scheme']} ({key})"
        for s in summary
        for key in ("miou", "building")
        if s.get(key + "_beats")
    ]
    compared = any(s.get("miou_se2") is not None for s in summary)
    lines += [
        "",
        "Rule: a scheme beats the baseline when mean(scheme) − mean(none) > 2·sqrt(s²/n + s²/n)"
        " over seeds (about a 95% one-sided margin).",
        "**Conclusion:** "
        + (
            "not enough seeds to compare."
            if not compared
            else (
                "beyond seed noise: " + ", ".join(winners) + "."
                if winners
                else "no scheme beats the baseline beyond seed noise at this scale (a null result)."
            )
        ),
    ]
    return "\n".join(lines) + "\n"


def write_results(args, rows: list[dict], info: dict, stopped: bool) -> None:
    out = Path(args.out)
    text = markdown(args, rows, info, stopped)
    for path, body in (
        (out / f"{args.name}.md", text),
        (out / f"{args.name}.json", json.dumps({"info": info, "runs": rows}, indent=2)),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(body)
        tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-data", help="synthesise, tile, pack and archive a city (CPU, GDAL)")
    mk.add_argument("--out", required=True)
    mk.add_argument("--size", type=int, default=4608, help="city side in px")
    mk.add_argument("--gsd", type=float, default=0.1)
    mk.add_argument("--chip", type=int, default=512)
    mk.add_argument("--val-fraction", type=float, default=0.25)
    mk.add_argument("--seed", type=int, default=0)
    rn = sub.add_parser("run", help="train every model x scheme x seed on a packed city")
    rn.add_argument("--data", required=True, help="packed folder or make-data's city.tar.gz")
    rn.add_argument("--out", required=True, help="where <name>.md and <name>.json go")
    rn.add_argument("--work", default=None, help="run folders (default OUT/work)")
    rn.add_argument("--device", default="cuda")
    rn.add_argument("--models", default="dcswin,unetformer")
    rn.add_argument("--schemes", default=",".join(SCHEMES))
    rn.add_argument("--seeds", default="0,1,2")
    rn.add_argument("--steps", type=int, default=48, help="optimiser steps per run")
    rn.add_argument("--batch", type=int, default=8)
    rn.add_argument("--lr", type=float, default=5e-4, help="short runs from scratch: higher lr")
    rn.add_argument("--workers", type=int, default=min(3, os.cpu_count() or 1))
    rn.add_argument("--compile", action="store_true", help="train.compile=true")
    rn.add_argument("--budget-s", type=float, default=0, help="start no run after this (0: none)")
    rn.add_argument("--set", action="append", default=[], help="extra config override")
    rn.add_argument("--name", default="evidence_gpu")
    args = ap.parse_args(argv)
    if args.cmd == "make-data":
        make_data(args)
        return
    rows = run_all(args)
    print(Path(args.out, f"{args.name}.md").read_text() if rows else "no runs")


if __name__ == "__main__":
    main()
