"""Streaming scene prediction: memory, overhead and (on a GPU) throughput.

CPU mode (default), each measurement in a fresh process (peak RSS = ru_maxrss):

* memory: ``aerialct.predict.predict_scene`` on a small and a large synthetic
  scene with a tiny model (a 1x1 convolution, so the pipeline, not the model, is
  measured), side by side with a plain whole-scene implementation (read the
  whole scene, sliding windows into a full-scene probability array, argmax,
  write), which is what most segmentation scripts do. Goal: streaming peak RSS
  of the large scene within 1.2x of the small one.
* overhead: the default model preset (DCSwin: Swin embed 64, depths 2-2-8-2,
  512 px chips, random init) on a DEFLATE-compressed scene; time outside the
  model forward (read, decode, blend, argmax, write, COG) as a share of the
  total. Goal: under 10%.

GPU mode (``--device cuda``): for each paper preset (dcswin, unetformer,
poolformer; random init), windows/s and km^2/hour at 5 cm with bf16 autocast
through the whole pipeline, the model alone at the same batch size, FLOPs per
window (torch's FlopCounterMode) and the share of the GPU's bf16 peak reached.

    python benchmarks/bench_predict.py                  # 4000^2 .. 16000^2, overhead on 1536^2
    python benchmarks/bench_predict.py --quick          # 2000^2 .. 8000^2, overhead on 1024^2
    python benchmarks/bench_predict.py --device cuda    # GPU throughput (writes predict_gpu.md)
    python benchmarks/bench_predict.py --monai [--size 4096] [--repeat 3]   # vs MONAI (CPU)

``--monai``: a tiny-cpu model trained on one synthetic town (0.5 m) predicts another
(``--size`` px, with labels) with ``aerialct predict`` as typed and with MONAI's
``sliding_window_inference`` on the whole scene (``benchmarks/monai_peer.py``: same
checkpoint, normalisation, window, batch and overlap, Gaussian blending), each a fresh
process, alternating, medians of wall time, CPU time and peak memory (GNU time), and the
mean IoU of each prediction against the labels. Writes ``results/predict_monai.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GSD = 0.05  # metres per pixel, Potsdam's


# ---------------------------------------------------------------------------
# Synthetic scenes, written block row by block row (never the whole scene in memory)


def make_scene(path: Path, size: int, compress: str | None = None, seed: int = 0) -> Path:
    """A size x size 3-band uint8 GeoTIFF: a 512^2 texture (16 px patches plus noise,
    so classes come out in patches as on real scenes) tiled over the scene."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (3, 32, 32)).repeat(16, axis=1).repeat(16, axis=2)
    tile = np.clip(coarse + rng.integers(-12, 13, (3, 512, 512)), 0, 255).astype(np.uint8)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(368000.0, 5807000.0, GSD, GSD),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "photometric": "RGB",
    }
    if compress:
        profile["compress"] = compress
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as ds:
        reps = -(-size // 512)
        row = np.tile(tile, (1, 1, reps))[:, :, :size]  # (3, 512, size)
        for y in range(0, size, 512):
            h = min(512, size - y)
            ds.write(row[:, :h], window=Window(0, y, size, h))
    tmp.rename(path)
    return path


# ---------------------------------------------------------------------------
# Models


def tiny_bundle(num_classes: int = 6, chip: int = 512):
    """A 1x1 convolution as the model: measures the pipeline, not the network."""
    import torch

    from aerialct.classes import POTSDAM
    from aerialct.predict.bundle import InferenceBundle

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, num_classes, 1).eval()
    return InferenceBundle(
        model=model,
        classes=POTSDAM,
        mean=(128.0,) * 3,
        std=(64.0,) * 3,
        in_chans=3,
        chip_size=chip,
        gsd=GSD,
    )


def preset_bundle(config: str, device: str = "cpu"):
    """A random-init model of a paper preset from configs/<config>.yaml."""
    import torch

    from aerialct.classes import POTSDAM
    from aerialct.config import load_config
    from aerialct.models import build_model
    from aerialct.predict.bundle import InferenceBundle

    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / f"{config}.yaml", [])
    model = build_model(cfg.model, num_classes=len(POTSDAM), in_chans=3).eval().to(device)
    return InferenceBundle(
        model=model,
        classes=POTSDAM,
        mean=(120.0, 115.0, 105.0),
        std=(55.0, 50.0, 50.0),
        in_chans=3,
        chip_size=cfg.model.img_size,
        gsd=GSD,
        config=cfg,
    )


# ---------------------------------------------------------------------------
# The peer: whole-scene prediction


def whole_scene_predict(bundle, scene: Path, out: Path, overlap: float = 0.25, batch: int = 8):
    """Read everything, predict sliding windows into a full (K, H, W) array, argmax, write."""
    import rasterio
    import torch

    from aerialct.geo.grid import stride_for, window_starts
    from aerialct.predict import blend_weights

    with rasterio.open(scene) as ds:
        img = ds.read()  # (C, H, W): the whole scene
        profile = ds.profile
    _c, h, w = img.shape
    size = bundle.chip_size
    stride = stride_for(size, overlap)
    acc = np.zeros((len(bundle.classes), h, w), np.float32)  # the whole-scene accumulator
    weight = torch.from_numpy(blend_weights(size))
    wins = [
        (y, x)
        for y in window_starts(h, size, stride, even=True)
        for x in window_starts(w, size, stride, even=True)
    ]
    with torch.inference_mode():
        for i in range(0, len(wins), batch):
            part = wins[i : i + batch]
            x = torch.from_numpy(np.stack([img[:, y : y + size, x : x + size] for y, x in part]))
            p = (torch.softmax(bundle.model(bundle.normalize(x)), 1) * weight).numpy()
            for (y, x0), pb in zip(part, p, strict=True):
                acc[:, y : y + size, x0 : x0 + size] += pb
    cls = acc.argmax(0).astype(np.uint8)
    profile.update(count=1, dtype="uint8", nodata=255, compress="deflate", photometric="MINISBLACK")
    with rasterio.open(out, "w", **profile) as ds:
        ds.write(cls, 1)


# ---------------------------------------------------------------------------
# Child processes: one measurement each, JSON on stdout


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from aerialct.predict import predict_scene, reduce_heap_fragmentation

    if args.impl == "stream":
        reduce_heap_fragmentation()  # as `aerialct predict` does
    scene, out = Path(args.scene), Path(args.out)
    bundle = tiny_bundle() if args.model == "tiny" else preset_bundle(args.model, args.device)
    base = rss_mb()
    t0 = time.perf_counter()
    forward = float("nan")
    windows = 0
    if args.impl == "stream":
        r = predict_scene(
            bundle, scene, out, overwrite=True, device=args.device, batch_size=args.batch_size
        )
        forward, windows = r.forward_seconds, r.windows
    else:
        whole_scene_predict(bundle, scene, out, batch=args.batch_size)
    total = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rss_mb": rss_mb(),
                "base_mb": base,
                "seconds": total,
                "forward": forward,
                "windows": windows,
            }
        )
    )


def run_child(
    impl: str, model: str, scene: Path, out: Path, batch: int = 8, device: str = "cpu"
) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--impl",
        impl,
        "--model",
        model,
        "--scene",
        str(scene),
        "--out",
        str(out),
        "--batch-size",
        str(batch),
        "--device",
        device,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {
            "error": (proc.stderr.strip().splitlines() or ["killed"])[-1],
            "returncode": proc.returncode,
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Reports


def header(title: str, mode: str) -> list[str]:
    return [
        f"## {title}",
        "",
        f"Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}. "
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} logical "
        f"CPUs (shared with other jobs), Python {platform.python_version()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset' if mode == 'monai' else '1')}"
        f". Mode: {mode}.",
        "",
    ]


def whole_scene_gb(size: int, bands: int = 3, classes: int = 6) -> float:
    """Memory the whole-scene peer needs: image, float32 accumulator, int64 argmax, uint8 ids."""
    return size * size * (bands + 4 * classes + 8 + 1) / 1e9


def cpu_report(quick: bool, work: Path, peer_max_gb: float) -> str:
    sizes = (2000, 4000, 8000) if quick else (4000, 8000, 16000)
    small, large = sizes[0], sizes[-1]
    ov_size = 1024 if quick else 1536
    lines = header("predict: memory and overhead (CPU)", "quick" if quick else "full")

    res: dict[tuple[str, int], dict] = {}
    for size in sizes:
        scene = make_scene(work / f"scene_{size}.tif", size)
        for impl in ("stream", "whole"):
            if impl == "whole" and whole_scene_gb(size) > peer_max_gb:
                res[(impl, size)] = {"skipped": whole_scene_gb(size)}
                continue
            res[(impl, size)] = run_child(impl, "tiny", scene, work / f"out_{impl}_{size}.tif")
            print(impl, size, res[(impl, size)], file=sys.stderr, flush=True)
        (work / f"scene_{size}.tif").unlink()
    lines += [
        "### Peak memory, tiny model (1x1 conv), 512 px windows, 25% overlap, batch 8",
        "",
        "| implementation | scene (px) | peak RSS (MB) | RSS after imports (MB) | seconds |",
        "|---|---|---|---|---|",
    ]
    for impl, name in (
        ("stream", "aerialct predict_scene (streaming)"),
        ("whole", "whole-scene (read all, full accumulator)"),
    ):
        for size in sizes:
            r = res[(impl, size)]
            if "skipped" in r:
                lines.append(
                    f"| {name} | {size}² | not run: needs ~{r['skipped']:.1f} GB "
                    f"(> --peer-max-gb {peer_max_gb:g} on this shared machine) | | |"
                )
            elif "error" in r:
                lines.append(f"| {name} | {size}² | failed: {r['error'][:80]} | | |")
            else:
                lines.append(
                    f"| {name} | {size}² | {r['rss_mb']:.0f} | {r['base_mb']:.0f} | "
                    f"{r['seconds']:.1f} |"
                )
    lines.append("")
    s_small, s_large = res[("stream", small)], res[("stream", large)]
    if "rss_mb" in s_small and "rss_mb" in s_large:
        ratio = s_large["rss_mb"] / s_small["rss_mb"]
        above = (s_large["rss_mb"] - s_large["base_mb"]) / (s_small["rss_mb"] - s_small["base_mb"])
        lines.append(
            f"Streaming: peak RSS {large}² / {small}² = **{ratio:.2f}x** for "
            f"{(large / small) ** 2:.0f}x the pixels (goal <= 1.2x: "
            f"{'met' if ratio <= 1.2 else 'NOT met'}); above the imports: {above:.2f}x."
        )
    for size in sizes:
        w, st = res[("whole", size)], res[("stream", size)]
        if "rss_mb" in w and "rss_mb" in st:
            lines.append(
                f"Whole-scene at {size}²: {w['rss_mb']:.0f} MB = {w['rss_mb'] / st['rss_mb']:.1f}x "
                "the streaming peak."
            )
    lines.append("")

    scene = make_scene(work / f"deflate_{ov_size}.tif", ov_size, compress="deflate", seed=1)
    r = run_child("stream", "dcswin", scene, work / "out_overhead.tif", batch=4)
    print("overhead", r, file=sys.stderr, flush=True)
    lines += [
        f"### Overhead outside the model forward, default preset (DCSwin, Swin embed 64, "
        f"2-2-8-2), {ov_size}² DEFLATE scene, batch 4",
        "",
    ]
    if "error" in r:
        lines.append(f"failed: {r['error']}")
    else:
        share = 1 - r["forward"] / r["seconds"]
        lines += [
            "| windows | total s | model forward s | outside forward s | overhead share |",
            "|---|---|---|---|---|",
            f"| {r['windows']} | {r['seconds']:.1f} | {r['forward']:.1f} | "
            f"{r['seconds'] - r['forward']:.2f} | **{100 * share:.1f}%** |",
            "",
            f'Goal under 10%: {"met" if share < 0.10 else "NOT met"}. "Total" is the whole '
            "predict_scene call: open, read and decode, normalise, softmax, weighting and "
            "accumulation, argmax, GeoTIFF part file, COG with overviews, rename.",
        ]
    lines.append("")
    return "\n".join(lines)


def gpu_report(work: Path, presets: list[str], size: int, batch: int, peak: float | None) -> str:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from aerialct.predict import predict_scene

    name = torch.cuda.get_device_name(0)
    if peak is None:
        peak = 989.0 if "H100" in name or "H200" in name else float("nan")
    lines = header("predict: GPU throughput", f"{name}, bf16 autocast, batch {batch}")
    scene = make_scene(work / f"gpu_{size}.tif", size, compress="deflate", seed=2)
    warm = make_scene(work / "gpu_warm.tif", 1024, compress="deflate", seed=3)
    km2 = (size * GSD / 1000) ** 2
    lines += [
        f"Scene {size}² px at {GSD * 100:.0f} cm = {km2:.3f} km², DEFLATE-compressed, "
        f"random-init models. Peak bf16 used for the share: {peak:.0f} TFLOP/s (dense).",
        "",
        "| preset | windows | total s | windows/s | km²/h | sliding-window loop s | loop windows/s "
        "| loop km²/h | model-only windows/s | GFLOP/window | TFLOP/s (loop) | share of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for preset in presets:
        bundle = preset_bundle(preset, "cuda")
        s = bundle.chip_size
        x = torch.randn(1, 3, s, s, device="cuda")
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            bundle.model(x)
        gflop = fc.get_total_flops() / 1e9
        xb = torch.randn(batch, 3, s, s, device="cuda")
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(3):
                bundle.model(xb)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            n = 20
            for _ in range(n):
                bundle.model(xb)
            torch.cuda.synchronize()
        model_wps = n * batch / (time.perf_counter() - t0)
        predict_scene(
            bundle, warm, work / "warm_out.tif", overwrite=True, device="cuda", batch_size=batch
        )
        r = predict_scene(
            bundle,
            scene,
            work / f"gpu_out_{preset}.tif",
            overwrite=True,
            device="cuda",
            batch_size=batch,
        )
        wps = r.windows / r.seconds
        loop_wps = r.windows / r.grid_seconds
        tflops = gflop * loop_wps / 1000
        lines.append(
            f"| {preset} | {r.windows} | {r.seconds:.1f} | {wps:.0f} | {km2 / r.seconds * 3600:.0f}"
            f" | {r.grid_seconds:.1f} | {loop_wps:.0f} | {km2 / r.grid_seconds * 3600:.0f}"
            f" | {model_wps:.0f} | {gflop:.1f} | {tflops:.1f} | {100 * tflops / peak:.1f}% |"
        )
        print(preset, r.to_dict(), file=sys.stderr, flush=True)
        del bundle
        torch.cuda.empty_cache()
    lines += [
        "",
        "Total: the whole predict_scene call (open, read, decode, upload, forward, blend and "
        "argmax on the GPU, download, GeoTIFF part file, COG with overviews, rename). Loop: "
        "the sliding-window part alone (everything but the COG conversion). Model-only: "
        "the forward on a resident batch in a loop. FLOPs (torch FlopCounterMode) count a "
        "multiply-add as 2.",
        "",
    ]
    return "\n".join(lines)


def _miou(pred: Path, labels: Path) -> float:
    """Mean IoU of a class raster against the labels (clutter excluded, as in training)."""
    import rasterio

    from aerialct.classes import POTSDAM
    from aerialct.evaluate.metrics import scores_from_confusion

    k = len(POTSDAM)
    with rasterio.open(pred) as p, rasterio.open(labels) as r:
        a, b = p.read(1).astype(np.int64), r.read(1).astype(np.int64)
    ok = (b < k) & (a < k)
    cm = np.bincount(b[ok] * k + a[ok], minlength=k * k).reshape(k, k)
    return float(scores_from_confusion(cm, POTSDAM.names).mean_iou)


def monai_report(work: Path, size: int, repeat: int, epochs: int) -> str:
    """aerialct predict vs MONAI's sliding_window_inference, alternating; a markdown section."""
    from measure import Series, alternate, quote

    from aerialct.config import load_config, resolve_config_path
    from aerialct.data.synth import synth_scene
    from aerialct.engine.train import train
    from aerialct.tile import tile_scenes

    town = synth_scene(work / "town.tif", work / "town_labels.tif", size=1024, gsd=0.5, seed=0)
    tile_scenes([town.image], work / "chips", labels=[town.labels], size=64, val_fraction=0.2)
    cfg = load_config(resolve_config_path("tiny-cpu"), [f"train.epochs={epochs}"])
    ckpt = Path(train(cfg, work / "chips", work / "run").best_checkpoint or work / "run/last.pt")
    scene = synth_scene(work / "scene.tif", work / "scene_labels.tif", size=size, gsd=0.5, seed=1)
    script = Path(sys.executable).with_name("aerialct")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "aerialct"]
    ours = Series("aerialct predict", quote([*cmd, "--quiet", "predict", str(ckpt),
                  str(scene.image), "--out", str(work / "ours"), "--overwrite"]))  # fmt: skip
    peer_out = work / "monai" / "scene_classes.tif"
    peer_out.parent.mkdir(exist_ok=True)
    peer = Series("MONAI sliding_window_inference", quote([sys.executable,
                  str(Path(__file__).with_name("monai_peer.py")), str(ckpt), str(scene.image),
                  str(peer_out)]))  # fmt: skip
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as an installed package has it
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "aerialct-bench-pyc"))
    alternate([peer, ours], repeat, before={peer.name: f"rm -f {peer_out}"}, env=env)
    m_ours = _miou(work / "ours" / "scene_classes.tif", Path(scene.labels))
    m_peer = _miou(peer_out, Path(scene.labels))
    lines = [
        *header("predict vs MONAI's sliding_window_inference (CPU, tiny-cpu)", "monai"),
        f"Command: `python benchmarks/bench_predict.py --monai --size {size} --repeat {repeat}`. "
        f"Model: tiny-cpu trained {epochs} epochs on a synthetic 1024² town at 0.5 m; scene: "
        f"another town, {size}² px at 0.5 m, with labels. Both: windows of "
        f"{cfg.model.img_size} px, overlap 0.25, batch 8, torch threads as the machine gives "
        f"them; each a fresh process (interpreter, imports, model load included); one warm-up "
        f"round, then {repeat} alternating rounds, medians.",
        "",
        "| implementation | wall s | CPU s | peak RSS MB | mean IoU (5 classes) | all wall s |",
        "|---|---:|---:|---:|---:|---|",
        f"| `aerialct predict` (streaming) | {ours.median('wall'):.1f} | {ours.median('cpu'):.1f}"
        f" | {ours.median('peak_mb'):.0f} | {m_ours:.4f} | {ours.values('wall', 1)} |",
        f"| MONAI `sliding_window_inference`, whole scene in memory (Gaussian blending) |"
        f" {peer.median('wall'):.1f} | {peer.median('cpu'):.1f} | {peer.median('peak_mb'):.0f} |"
        f" {m_peer:.4f} | {peer.values('wall', 1)} |",
        "",
        f"**aerialct: {peer.median('wall') / ours.median('wall'):.2f}x faster (wall), "
        f"{peer.median('cpu') / ours.median('cpu'):.2f}x less CPU, "
        f"{peer.median('peak_mb') / ours.median('peak_mb'):.2f}x less memory; mean IoU "
        f"{m_ours:.4f} vs {m_peer:.4f}.**",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--monai", action="store_true", help="vs MONAI sliding_window_inference")
    ap.add_argument("--size", type=int, default=4096, help="--monai: scene side in px")
    ap.add_argument("--repeat", type=int, default=3, help="--monai: alternating rounds")
    ap.add_argument("--epochs", type=int, default=8, help="--monai: training epochs")
    ap.add_argument("--quick", action="store_true", help="smaller scenes for a shared CPU")
    ap.add_argument("--device", default="cpu", help="cpu (memory + overhead) or cuda (throughput)")
    ap.add_argument("--workdir", type=Path, default=None, help="where scenes are written (temp)")
    ap.add_argument("--gpu-size", type=int, default=10240, help="GPU scene side in pixels")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--presets", default="dcswin,unetformer,poolformer")
    ap.add_argument("--peak-tflops", type=float, default=None, help="GPU dense bf16 peak")
    ap.add_argument(
        "--peer-max-gb", type=float, default=3.0, help="skip whole-scene runs needing more"
    )
    ap.add_argument("--output", type=Path, default=None, help="markdown file to write")
    # child-process mode
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="stream", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="tiny", help=argparse.SUPPRESS)
    ap.add_argument("--scene", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_predict_", dir=args.workdir) as tmp:
        work = Path(tmp)
        if args.monai:
            try:
                import monai  # noqa: F401
            except ImportError:
                print("bench_predict.py --monai: MONAI is not installed (pip install monai; a "
                      "benchmark dependency, not aerialct's); skipped")  # fmt: skip
                return
            text = monai_report(work, args.size, args.repeat, args.epochs)
            out = args.output or RESULTS / "predict_monai.md"
        elif args.device.startswith("cuda"):
            text = gpu_report(
                work, args.presets.split(","), args.gpu_size, args.batch_size, args.peak_tflops
            )
            out = args.output or RESULTS / "predict_gpu.md"
        else:
            text = cpu_report(args.quick, work, args.peer_max_gb)
            out = args.output or RESULTS / "predict.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
