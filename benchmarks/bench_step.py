"""One training step (forward + backward + AdamW step, grad clip 1.0) per model preset and
contrastive scheme, side by side: time and peak memory.

    python benchmarks/bench_step.py                 # CPU, reduced size (128x128, batch 2)
    python benchmarks/bench_step.py --quick         # CPU, fewer repetitions
    python benchmarks/bench_step.py --device cuda --size 512 --batch 8 --amp bf16

Presets are the CT paper's three models: DCSwin (Swin embed 64, depths 2-2-8-2 + DCSwin
decoder), UNetFormer (same Swin + UNetFormer decoder), PoolFormer (PoolFormer-S12 + DCSwin
decoder); schemes: none, CT-CL (``ct-cl``), MS/CS (``mscs``), each contrast also in the
released-code mode (``... released``). Goals (issue 3): CT adds at most 10% step time and
peak memory over none, MS/CS at most 20%.

Timing: ``--warmup`` untimed steps, then the median of ``--iters`` timed steps (CUDA:
synchronised). On the CPU the process CPU time of each step is reported too (one torch
thread, so it is the compute cost whatever else the machine runs), and the goal verdicts
use it. Memory: CUDA ``torch.cuda.max_memory_allocated`` over the timed steps
(params, grads, AdamW state and activations); CPU: each configuration runs in a fresh
subprocess and reports its peak RSS above the RSS right after imports (the same tensors,
plus allocator slack). Prints a markdown section and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = {
    "DCSwin": ("swin_ct", "dcswin"),
    "UNetFormer": ("swin_ct", "unetformer"),
    "PoolFormer": ("poolformer_s12", "dcswin"),
}
MODES: dict[str, dict[str, str]] = {
    "none": {"contrast": "none"},
    "CT-CL": {"contrast": "ct-cl"},
    "MS/CS": {"contrast": "mscs"},
    # the authors' released code's behaviour (loss.ct_mode / loss.mscs_mode: released)
    "CT-CL released": {"contrast": "ct-cl", "ct_mode": "released"},
    "MS/CS released": {"contrast": "mscs", "mscs_mode": "released"},
}
GOALS = {"CT-CL": 1.10, "MS/CS": 1.20, "CT-CL released": 1.10, "MS/CS released": 1.20}
NUM_CLASSES = 6


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def synthetic_batch(batch: int, size: int, device, seed: int = 0):
    """Normalised images and blocky label masks (6 classes, some ignore), like aerial chips."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)
    coarse = torch.randint(0, NUM_CLASSES, (batch, 1, 16, 16), generator=g).float()
    masks = F.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    masks[:, :, : max(1, size // 64)] = 255  # an ignore strip (eroded boundary style)
    return images.to(device), masks.to(device)


def run_one(preset: str, mode: str, args) -> dict:
    """Build, warm up and time one configuration in this process."""
    import torch

    from aerialct.engine.task import SegmentationTask
    from aerialct.losses import LossConfig
    from aerialct.models import ModelConfig, build_model

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(1)  # CPU time per step = compute cost, comparable across runs
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    base_rss = _rss_mb()
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    backbone, decoder = PRESETS[preset]
    model = build_model(
        ModelConfig(backbone=backbone, decoder=decoder, img_size=args.size), NUM_CLASSES
    )
    task = SegmentationTask(model, LossConfig(**MODES[mode]), NUM_CLASSES).to(device)  # type: ignore[arg-type]
    task.train()
    if args.channels_last:
        task = task.to(memory_format=torch.channels_last)
    if args.compile:  # what train.compile=true does in the engine
        task.model.forward_with_features = torch.compile(model.forward_with_features)
    opt = torch.optim.AdamW(task.parameters(), lr=8e-5, weight_decay=0.01)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    images, masks = synthetic_batch(args.batch, args.size, device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    terms: dict[str, float] = {}

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = task(images, masks)
        scaler.scale(out["loss"]).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(task.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        for k in ("ct", "ms", "cs"):
            if k in out:
                terms[k] = float(out[k])

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for _ in range(args.iters):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    params = sum(p.numel() for p in task.model.parameters()) / 1e6
    heads = sum(p.numel() for p in task.heads.parameters()) / 1e6
    return {
        "preset": preset,
        "mode": mode,
        "ms": statistics.median(times) * 1000,
        "ms_min": min(times) * 1000,
        "cpu_ms": statistics.median(cpu_times) * 1000,
        "peak_mb": peak,
        "params_m": params,
        "heads_m": heads,
        "terms": terms,
    }


def run_isolated(preset: str, mode: str, args) -> dict:
    """CPU: one subprocess per configuration so peak RSS is its own."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        f"{preset}|{mode}",
        "--device",
        args.device,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--amp",
        args.amp,
        "--warmup",
        str(args.warmup),
        "--iters",
        str(args.iters),
        "--tf32" if args.tf32 else "--no-tf32",
        *(["--channels-last"] if args.channels_last else []),
        *(["--compile"] if args.compile else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"preset": preset, "mode": mode, "error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def render(rows: list[dict], args, elapsed: float) -> str:
    import torch

    dev = args.device
    if dev.startswith("cuda"):
        gpu = torch.cuda.get_device_name(torch.device(dev))
        machine = f"{gpu}; host {platform.machine()}, {os.cpu_count()} CPUs"
        mem_label = "peak CUDA MiB (max_memory_allocated)"
    else:
        machine = (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
            "torch threads 1 (one subprocess per configuration)"
        )
        mem_label = "peak RSS MiB above baseline"
    on_cpu = not dev.startswith("cuda")
    lines = [
        "## Training step: time and peak memory per preset and contrastive scheme",
        "",
        f"Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}  ",
        f"Machine: {platform.system()} {platform.release()}, {machine}; Python "
        f"{platform.python_version()}, torch {torch.__version__}  ",
        f"Setting: device {dev}, input {args.size}x{args.size}, batch {args.batch}, "
        f"amp {args.amp}, TF32 {'on' if args.tf32 else 'off'}, "
        f"channels_last {'on' if args.channels_last else 'off'}, "
        f"torch.compile of the model {'on' if args.compile else 'off'}, {NUM_CLASSES} classes, "
        "AdamW + grad clip 1.0; "
        f"{args.warmup} warm-up step(s), median of {args.iters} timed step(s)"
        + (" (quick mode)" if args.quick else "")
        + f"; run took {elapsed:.0f} s.",
        "",
        f"| preset | contrast | step ms (median) | x none | {mem_label} | x none | "
        "model / heads params (M) | contrastive terms |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    if on_cpu:  # process CPU time (one torch thread): robust to other load on the machine
        lines[-2] = lines[-2].replace(
            "| step ms (median) | x none |",
            "| step ms (median) | x none | CPU ms (median) | x none |",
        )
        lines[-1] = "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    base = {r["preset"]: r for r in rows if r["mode"] == "none" and "error" not in r}
    verdicts = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['mode']} | error: {r['error']} | | | | | |")
            continue
        b = base.get(r["preset"])
        tr = r["ms"] / b["ms"] if b else float("nan")
        mr = r["peak_mb"] / b["peak_mb"] if b and b["peak_mb"] > 0 else float("nan")
        terms = ", ".join(f"{k}={v:.3f}" for k, v in r["terms"].items()) or "-"
        cpu = ""
        if on_cpu:
            cr = r["cpu_ms"] / b["cpu_ms"] if b else float("nan")
            cpu = f" {r['cpu_ms']:.1f} | {cr:.2f} |"
            tr = cr  # the goal verdict uses the CPU time on a shared machine
        lines.append(
            f"| {r['preset']} | {r['mode']} | {r['ms']:.1f} | "
            f"{r['ms'] / b['ms'] if b else float('nan'):.2f} |{cpu} {r['peak_mb']:.0f} | "
            f"{mr:.2f} | {r['params_m']:.2f} / {r['heads_m']:.2f} | {terms} |"
        )
        if r["mode"] in GOALS and b:
            goal = GOALS[r["mode"]]
            ok = tr <= goal and mr <= goal
            verdicts.append(
                f"- {r['preset']} {r['mode']}: time x{tr:.2f}, memory x{mr:.2f} "
                f"(goal <= x{goal:.2f}): {'meets' if ok else 'OVER'}"
            )
    lines += ["", "Ratios against the goals:", "", *verdicts, ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=None, help="input size (cpu 128, cuda 512)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (cpu 2, cuda 8)")
    ap.add_argument("--amp", choices=["none", "bf16", "fp16"], default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    ap.add_argument(
        "--tf32",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="allow TF32 for the float32 matmuls (loss heads, similarities); default: on for cuda",
    )
    ap.add_argument("--channels-last", action="store_true", help="model and input channels_last")
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile the model forward (train.compile)"
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    args.size = args.size or (512 if cuda else 128)
    args.batch = args.batch or (8 if cuda else 2)
    args.amp = args.amp or ("bf16" if cuda else "none")
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.iters = args.iters or ((10 if cuda else 5) if not args.quick else 3)
    args.tf32 = cuda if args.tf32 is None else args.tf32

    if args.child:
        preset, mode = args.child.split("|")
        print(json.dumps(run_one(preset, mode, args)))
        return

    import logging

    import torch

    logging.getLogger("aerialct").setLevel(logging.WARNING)
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda given but torch sees no CUDA device")
    t0 = time.perf_counter()
    rows = []
    for preset in args.presets:
        for mode in args.modes:
            if cuda:
                try:
                    r = run_one(preset, mode, args)
                except torch.OutOfMemoryError as e:
                    r = {"preset": preset, "mode": mode, "error": f"out of memory ({e})"[:120]}
                    torch.cuda.empty_cache()
            else:
                r = run_isolated(preset, mode, args)
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    text = render(rows, args, time.perf_counter() - t0)
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / ("step_cuda.md" if cuda else "step.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
