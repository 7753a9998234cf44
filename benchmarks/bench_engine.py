"""Training engine throughput: `aerialct train` on packed chips vs a bare loop, side by side.

The peer is the least a training loop can do: the same model, task (loss + CT/MS-CS heads),
AdamW parameter groups and gradient clipping, on the training chips already normalised and
resident as one tensor, batches drawn by index, no augmentation, no data loader, no metrics,
no host sync. The engine runs as a user runs it (`train()` on a packed folder from
`aerialct pack`, its preset's data loader, augmentation, per-step loss bookkeeping).
Both report training images/s per epoch (the engine's own ``images_per_s`` column, which
excludes validation and checkpoint writing); the first epoch of each is a warm-up and left
out. Runs alternate (bare, engine, bare, engine, ...) so that load from other jobs on a shared
machine falls on both. Goal (issue 15): engine >= 0.95x the bare loop on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/bench_engine.py   # CPU, tiny-cpu, 48 training chips of 64 px
    python benchmarks/bench_engine.py --quick              # 2 rounds of 3 epochs
    python benchmarks/bench_engine.py --device cuda --preset dcswin --chip 512 --city-size 4096 \\
        --gsd 0.1 --set train.batch_size=16 --name engine_gpu

Writes ``benchmarks/results/<name>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


class StepClock:
    """Wall and CPU time stamps after every optimiser step, tagged with the epoch.

    Used as the engine's progress callback (called after each step) and by the bare loop,
    so both are timed the same way. Step times are differences between consecutive stamps
    of the same epoch: per-epoch work (data loader start, validation, checkpoints) falls
    between epochs and is left out; the epoch rates below include it.
    """

    def __init__(self) -> None:
        self.stamps: list[tuple[str | None, float, float]] = []

    def __call__(self, advance: int = 1, *, total=None, description: str | None = None) -> None:
        if advance > 0:
            epoch = (
                description.split()[1] if description and description.startswith("epoch") else None
            )
            self.stamps.append((epoch, time.perf_counter(), time.process_time()))

    def step_times(self, skip_first_epoch: bool = True) -> tuple[list[float], list[float]]:
        """(wall s, CPU s) per step, first epoch left out."""
        epochs = [e for e, _, _ in self.stamps if e is not None]
        first = epochs[0] if epochs else None
        wall, cpu = [], []
        for (e0, t0, c0), (e1, t1, c1) in zip(self.stamps, self.stamps[1:], strict=False):
            if e0 is None or e0 != e1 or (skip_first_epoch and e0 == first):
                continue
            wall.append(t1 - t0)
            cpu.append(c1 - c0)
        return wall, cpu

    def epoch_times(self) -> tuple[list[float], list[float]]:
        """(wall s, CPU s) of whole epochs: from the last step of one epoch to the last step of
        the next, so each span holds one epoch's steps and the previous epoch's end (validation,
        checkpoint, metrics, plots). The span from the first epoch's end is included; the run's
        final epoch end (after its last step) is not."""
        last: dict[str, tuple[float, float]] = {}
        for e, t, c in self.stamps:
            if e is not None:
                last[e] = (t, c)
        ends = list(last.values())
        pairs = list(itertools.pairwise(ends))
        return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs]


def bare_loop(
    cfg, splits, device, epochs: int, clock: StepClock, save_dir: Path | None = None
) -> tuple[list[float], list[float]]:
    """Images/s per epoch of the minimal loop over resident tensors (same model, loss, optimiser),
    and the seconds of each whole epoch: its steps, then what a minimal script does per epoch,
    a validation pass over the resident validation chips (confusion matrix) and a
    ``torch.save`` of the model and optimiser into ``save_dir``."""
    import torch

    from aerialct.data.transforms import Normalize
    from aerialct.engine.run import amp_setup, seed_everything
    from aerialct.engine.task import SegmentationTask
    from aerialct.models import build_model

    tc = cfg.train
    k = len(splits.classes)
    if device.type == "cuda":  # as train() sets it
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    norm = Normalize(*splits.band_stats(cfg.data.stats_chips))
    ds = splits.dataset("train", norm, None, k)
    images = torch.stack([ds[i][0] for i in range(len(ds))]).to(device)
    masks = torch.stack([ds[i][1] for i in range(len(ds))]).to(device)
    seed_everything(tc.seed)
    model = build_model(cfg.model, num_classes=k, in_chans=splits.in_chans)
    task = SegmentationTask(model, cfg.loss, num_classes=k).to(device)
    task.train()
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": tc.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=tc.lr,
    )
    amp_dtype, _ = amp_setup(tc.amp, device)
    bs = tc.batch_size
    steps = len(ds) // bs
    vds = splits.dataset("val", norm, None, k) if splits.val else None
    val = None
    if vds is not None:
        val = (
            torch.stack([vds[i][0] for i in range(len(vds))]).to(device),
            torch.stack([vds[i][1] for i in range(len(vds))]).to(device),
        )
    rates, whole = [], []
    for epoch in range(epochs):
        order = torch.randperm(len(ds), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for s in range(steps):
            idx = order[s * bs : (s + 1) * bs]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = task(images[idx], masks[idx])
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            clock(1, description=f"epoch {epoch + 1}/{epochs}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(steps * bs / (time.perf_counter() - t0))
        if val is not None:
            _bare_validate(task.model, val, k, tc.eval_batch_size or bs, amp_dtype, device)
        if save_dir is not None:
            torch.save({"model": task.state_dict(), "optimizer": opt.state_dict()},
                       save_dir / "bare.pt")  # fmt: skip
        whole.append(time.perf_counter() - t0)
    return rates, whole


def _bare_validate(model, val, k: int, bs: int, amp_dtype, device) -> None:
    """A validation pass: logits, argmax and a confusion matrix over the resident val chips."""
    import torch

    images, masks = val
    cm = torch.zeros(k * k, dtype=torch.float64, device=device)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), bs):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images[i : i + bs])
            y = masks[i : i + bs]
            ok = y != 255
            pred = logits.float().argmax(1)
            cm += torch.bincount(y[ok] * k + pred[ok], minlength=k * k).double()
    model.train()


def engine_run(
    cfg, data: Path, run: Path, device: str, clock: StepClock | None = None
) -> tuple[list[float], list[float]]:
    """(images/s per epoch, wall s per epoch incl. validation and checkpoints) of train()."""
    import csv

    from aerialct.engine.train import train

    train(cfg, data, run, device=device, overwrite=True, progress=clock)

    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ips = [float(r["images_per_s"]) for r in rows]
    el = [float(r["elapsed_s"]) for r in rows]
    wall = [b - a for a, b in zip([0.0, *el[:-1]], el, strict=True)]
    return ips, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny-cpu")
    ap.add_argument("--city-size", type=int, default=512)
    ap.add_argument("--gsd", type=float, default=0.5)
    ap.add_argument("--chip", type=int, default=None, help="chip size (default: preset img_size)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run (first is warm-up)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare/engine rounds")
    ap.add_argument("--set", action="append", default=[], help="extra config override")
    ap.add_argument("--no-folder", action="store_true", help="skip the GeoTIFF-folder engine run")
    ap.add_argument(
        "--packed",
        type=Path,
        default=None,
        help="use this packed folder (or gpu_evidence.py's city.tar.gz) instead of synthesising "
        "a city; needs no rasterio (the GPU machine)",
    )
    ap.add_argument("--out-dir", type=Path, default=HERE / "results", help="where <name>.md goes")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", default=str(ROOT / "bench-out" / "engine"))
    ap.add_argument("--name", default="engine")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.rounds = 3, 2

    import torch

    from aerialct.config import load_config, resolve_config_path
    from aerialct.data.dataset import open_chip_splits
    from aerialct.engine.distributed import resolve_device

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    overrides = [f"train.epochs={args.epochs}", *args.set]
    cfg = load_config(resolve_config_path(args.preset), overrides)
    if args.packed is not None:
        from gpu_evidence import open_data

        packed_dir = open_data(args.packed, work)
        args.no_folder = True
        source = f"packed chips from {args.packed}"
    else:
        from aerialct.data.packed import pack_chips
        from aerialct.data.synth import synth_scene
        from aerialct.tile import tile_scenes

        chip = args.chip or getattr(cfg.model, "img_size", 64)
        city = synth_scene(
            work / "city.tif", work / "city_labels.tif", size=args.city_size, gsd=args.gsd, seed=0
        )
        tiled = tile_scenes(
            [city.image], work / "chips", labels=[city.labels], size=chip, val_fraction=0.25, seed=0
        )
        packed_dir = pack_chips(work / "chips", work / "chips.packed").out
        source = (
            f"synthetic city {args.city_size}² px at {args.gsd} m, tiled into {tiled.chips} chips"
            f" of {chip} px and packed"
        )
    device = resolve_device(args.device)
    splits = open_chip_splits(packed_dir, cfg.data)
    chip = splits.chip_size

    forms = (
        {"engine": packed_dir}
        if args.no_folder
        else {"engine": packed_dir, "folder": work / "chips"}
    )
    rates: dict[str, list[float]] = {"bare": [], **{f: [] for f in forms}}
    steps_of: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in rates}
    whole: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in rates}

    def add(name: str, clock: StepClock) -> None:
        w, c = clock.step_times()
        steps_of[name][0].extend(w)
        steps_of[name][1].extend(c)
        w, c = clock.epoch_times()
        whole[name][0].extend(w)
        whole[name][1].extend(c)

    for r in range(args.rounds):  # bare, packed, folder, bare, packed, folder, ...
        cb = StepClock()
        b, _ = bare_loop(cfg, splits, device, args.epochs, cb, save_dir=work)
        add("bare", cb)
        rates["bare"] += b[1:]
        for name, data in forms.items():
            ce = StepClock()
            e, _ = engine_run(cfg, data, work / f"run-{name}{r}", args.device, ce)
            add(name, ce)
            rates[name] += e[1:]
        print(f"round {r}: { ({k: v[-1] for k, v in rates.items()}) }", file=sys.stderr, flush=True)
    bs = cfg.train.batch_size

    def per_step(name: str) -> tuple[float, float, float]:
        """(images/s from the median wall step, median wall ms, median CPU ms)."""
        w, c = steps_of[name]
        mw = statistics.median(w)
        return bs / mw, 1000 * mw, 1000 * statistics.median(c)

    med = {n: statistics.median(v) for n, v in rates.items()}
    med_whole = {n: (statistics.median(w), statistics.median(c)) for n, (w, c) in whole.items()}
    sb = per_step("bare")
    n_train = len(splits.train)
    steps = n_train // cfg.train.batch_size
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    label = {
        "bare": "bare loop, resident tensors",
        "engine": "`aerialct train`, packed chips",
        "folder": "`aerialct train`, GeoTIFF chips folder (default: chips held in memory)",
    }
    omp = (
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} "
        if "OMP_NUM_THREADS" in os.environ
        else ""
    )
    lines = [
        f"## Training engine vs a bare loop (`bench_engine.py`, {args.device}, {args.preset})",
        "",
        f"Date: {when}. Machine: {gpu or platform.processor() or platform.machine()}, "
        f"os.cpu_count() = {os.cpu_count()}, torch {torch.__version__}, torch threads "
        f"{torch.get_num_threads()}, commit `{commit()}`. Command: `{omp}python "
        f"benchmarks/bench_engine.py{' --quick' if args.quick else ''}`.",
        f"Data: {source}; {chip} px chips, {n_train} training and {len(splits.val)} validation"
        f" chips, batch {cfg.train.batch_size} ({steps} steps per epoch), loss"
        f" `{cfg.loss.contrast}`, data.num_workers {cfg.data.num_workers}, amp `{cfg.train.amp}`."
        f" {args.rounds} alternating rounds (bare, then each engine form) of {args.epochs} epochs"
        f" each; the first epoch of each run is left out; medians of {len(rates['bare'])} epochs"
        " per row.",
        "",
        "| loop | step ms | step ratio | CPU ms per step | CPU ratio | epoch images/s (median,"
        " min-max) | epoch ratio | whole epoch s (CPU s) | whole-epoch ratio (CPU) |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    bw, bc = med_whole["bare"]
    for name in rates:
        st = per_step(name)
        ww, wc = med_whole[name]
        lines.append(
            f"| {label[name]} | {st[1]:.1f} | **{st[0] / sb[0]:.2f}** | {st[2]:.1f} |"
            f" {sb[2] / st[2]:.2f} | {med[name]:.1f} ({min(rates[name]):.1f}-"
            f"{max(rates[name]):.1f}) | **{med[name] / med['bare']:.2f}** | {ww:.2f} ({wc:.2f}) |"
            f" **{bw / ww:.2f}** ({bc / wc:.2f}) |"
        )
    lines += [
        "",
        "Step: between consecutive optimiser steps of one epoch (medians are robust to bursts of"
        " load from other jobs). Epoch images/s: the engine's `images_per_s` column (its training"
        " part: data loader start, steps, the last loss read-back); the bare loop's steps."
        " Whole epoch: from the last step of one epoch to the last step of the next (medians;"
        " wall and, in brackets, this process's CPU time, which load inflates far less), so it"
        " holds an epoch's steps and everything the previous epoch did after its steps: for the"
        " engine validation, last.pt (and best.pt), metrics.csv, scalars and plots (within their"
        " time budget); for the bare loop a validation pass over the resident validation chips"
        " (confusion matrix) and a `torch.save` of model and optimiser. Goal: >= 0.95x.",
    ]
    text = "\n".join(lines) + "\n"
    out = args.out_dir / f"{args.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
