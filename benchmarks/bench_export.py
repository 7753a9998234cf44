"""Exported models: file sizes, and predict throughput with torch vs onnxruntime on the CPU.

For each preset (random init), a checkpoint with the training state ``train``
writes (model, CT projection heads, AdamW moments after one step, RNG states) is
exported to a slim ``.pt`` and to ONNX. The same synthetic scene is then
predicted by ``aerialct.predict.predict_scene`` with the torch checkpoint and
with the ONNX model (onnxruntime, CPU provider, as many intra-op threads as
torch uses), alternating, best of two runs each; the class rasters are compared.

    python benchmarks/bench_export.py            # tiny-cpu and dcswin on a 768^2 scene
    python benchmarks/bench_export.py --quick    # 512^2 scenes
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_predict import make_scene  # noqa: E402


def training_checkpoint(preset: str, path: Path) -> Path:
    """A checkpoint with everything `train` stores, for a random-init model of ``preset``."""
    import torch

    from aerialct.classes import POTSDAM
    from aerialct.config import load_config
    from aerialct.engine.checkpoint import make_checkpoint, save_checkpoint
    from aerialct.engine.task import SegmentationTask
    from aerialct.models import build_model

    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml", ["loss.contrast=ct-cl"])
    model = build_model(cfg.model, num_classes=len(POTSDAM), in_chans=3)
    task = SegmentationTask(model, cfg.loss, num_classes=len(POTSDAM))
    opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
    for p in task.parameters():  # one optimiser step fills both AdamW moments
        p.grad = torch.zeros_like(p)
    opt.step()
    ck = make_checkpoint(
        config=cfg,
        classes=POTSDAM,
        mean=(120.0, 115.0, 105.0),
        std=(55.0, 50.0, 50.0),
        in_chans=3,
        chip_size=cfg.model.img_size,
        gsd=0.05,
        model_state=model.state_dict(),
        heads_state=task.heads.state_dict(),
        optimizer=opt.state_dict(),
        scheduler={"last_epoch": 1},
        step=1,
        epoch=1,
        rng={"torch": torch.get_rng_state()},
    )
    return save_checkpoint(path, ck)


def predict_once(model_path: Path, scene: Path, out: Path) -> tuple[float, float, int]:
    from aerialct.predict import predict_scene
    from aerialct.predict.bundle import load_inference_model

    bundle = load_inference_model(model_path, device="cpu")
    t0 = time.perf_counter()
    r = predict_scene(bundle, scene, out, overwrite=True, device="cpu", batch_size=8)
    return time.perf_counter() - t0, r.forward_seconds, r.windows


def classes(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1)


def bench(preset: str, size: int, work: Path) -> list[str]:
    from aerialct.export import export_model

    ck = training_checkpoint(preset, work / f"{preset}.pt")
    slim = export_model(ck, work / f"{preset}_slim.pt", "pt", overwrite=True)
    onnx = export_model(ck, work / f"{preset}.onnx", "onnx", overwrite=True)
    scene = make_scene(work / f"scene_{size}.tif", size)
    runs: dict[str, list[tuple[float, float, int]]] = {"torch": [], "onnxruntime": []}
    for _ in range(2):
        runs["torch"].append(predict_once(ck, scene, work / "torch_classes.tif"))
        runs["onnxruntime"].append(predict_once(onnx.output, scene, work / "onnx_classes.tif"))
    same = float((classes(work / "torch_classes.tif") == classes(work / "onnx_classes.tif")).mean())
    best = {k: min(v) for k, v in runs.items()}
    lines = [
        f"### {preset} ({slim.parameters / 1e6:.2f} M parameters, {slim.chip_size} px windows), "
        f"{size}x{size} scene",
        "",
        "| file | MB | share of the training checkpoint |",
        "|---|---:|---:|",
        f"| training checkpoint (model, CT heads, AdamW, RNG) | {slim.source_bytes / 1e6:.2f} | 100% |",
        f"| `export --format pt` | {slim.output_bytes / 1e6:.2f} | {slim.size_ratio:.1%} |",
        f"| `export --format onnx` | {onnx.output_bytes / 1e6:.2f} | {onnx.size_ratio:.1%} |",
        "",
        f"ONNX export: {onnx.seconds:.1f} s; largest logit difference from torch on a random "
        f"batch: {onnx.max_abs_diff:.1e}.",
        "",
        "| predict on the CPU | seconds (best of 2) | windows/s | model forward s | Mpx/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (sec, fwd, windows) in best.items():
        lines.append(
            f"| {name} | {sec:.2f} | {windows / sec:.1f} | {fwd:.2f} | {size * size / sec / 1e6:.3f} |"
        )
    ratio = best["torch"][0] / best["onnxruntime"][0]
    lines += [
        "",
        f"**Ratio** (torch time / onnxruntime time): **{ratio:.2f}**; identical class pixels: "
        f"{same:.4%}.",
        "",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads for torch and onnxruntime alike (default 1: on a shared 2-core "
        "machine, spinning thread pools of two runtimes make 2-thread timings noise)",
    )
    args = ap.parse_args()
    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)  # OnnxRunner takes the same count

    size = 512 if args.quick else 768
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()  # fmt: skip
    except OSError:
        commit = "unknown"
    lines = [
        "## Exported models: `aerialct export` sizes, torch vs onnxruntime predict (CPU)",
        "",
        f"Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}. Commit {commit}. "
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs (shared with other jobs), "
        f"Python {platform.python_version()}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s), onnxruntime {onnxruntime.__version__} (CPU provider, "
        f"same thread count). Mode: {'quick' if args.quick else 'full'}. Random-init models; "
        "the same scene and windows (overlap 0.25, batch 8) on both sides.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="aerialct-bench-export-") as tmp:
        for preset in ("tiny-cpu", "dcswin"):
            lines += bench(preset, size, Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "export.md"
    out.write_text("\n".join(lines).rstrip() + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
