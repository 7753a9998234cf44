"""From scratch vs from pretrained encoder weights, on a small scene, scored on held-out towns.

No download is possible on the benchmark machine, so the "pretrained" weights are made
here the way ImageNet weights are made elsewhere: a longer run on a different task and
imagery (an RGB 6-class synthetic town, ``regnetx-cpu`` from random init). Its encoder is
written as ``model.safetensors`` in timm's own key names into a Hugging Face hub cache
laid out as the hub lays it out (``models--timm--regnetx_002.pycls_in1k/snapshots/<rev>``),
and the fine-tuning runs load it with ``model.weights=imagenet``, ``HF_HOME`` pointing at
that cache and ``HF_HUB_OFFLINE=1``: the same code path as real timm weights, first-layer
adaptation included (RGB -> 1 band).

The target task is the issue's small real scene: one 900 px, 16-bit, panchromatic scene at
0.5 m with building footprints (``tile --size 128 --stride 96 --val-fraction 0.2``), trained
with the buildings recipe, scored on separate held-out towns. Both arms train the same preset
for the same epochs (equal steps; CPU seconds reported), over several seeds.

    nice -n 19 python benchmarks/bench_pretrained.py        # ~25 CPU-minutes, 1 thread
    python benchmarks/bench_pretrained.py --quick           # a run check (~2 minutes)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PRESET = "regnetx-cpu"
REPO = "timm/regnetx_002.pycls_in1k"
RECIPE = ["loss.class_weights=auto", "loss.focal_weight=1.0", "data.oversample_rare=2.0"]
SMALL = dict(gsd=0.5, dtype="uint16", bands=1, classes="buildings", built_up=0.1)


def cpu_s() -> float:
    """CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def pretrain(work: Path, size: int, epochs: int) -> tuple[Path, float]:
    """A longer run on an RGB 6-class town; its encoder as a fake hub cache. (cache, CPU s)."""
    import timm
    import torch
    from safetensors.torch import save_file

    from aerialct.config import load_config, resolve_config_path
    from aerialct.data.synth import synth_scene
    from aerialct.engine.train import train
    from aerialct.models.backbone import _normalise_key
    from aerialct.tile import tile_scenes

    c0 = cpu_s()
    src = synth_scene(work / "source.tif", work / "source_labels.tif", size=size, seed=100,
                      gsd=0.5, overwrite=True)  # fmt: skip
    tile_scenes([src.image], work / "source_chips", labels=[src.labels], size=128,
                val_fraction=0.1, overwrite=True, workers=1)  # fmt: skip
    cfg = load_config(resolve_config_path(PRESET),
                      ["model.weights=null", f"train.epochs={epochs}", "train.lr=1e-3"])  # fmt: skip
    res = train(cfg, work / "source_chips", work / "source_run", overwrite=True)
    state = torch.load(res.last_checkpoint, map_location="cpu", weights_only=True)["model"]
    body = {
        k[len("backbone.body.") :]: v for k, v in state.items() if k.startswith("backbone.body.")
    }
    native = {}
    for k in timm.create_model("regnetx_002").state_dict():  # timm's own names, as published
        if _normalise_key(k) in body:
            native[k] = body[_normalise_key(k)].contiguous()
    snap = work / "hf" / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True, exist_ok=True)
    save_file(native, str(snap / "model.safetensors"))
    refs = snap.parent.parent / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text("0" * 40)
    return work / "hf", cpu_s() - c0


def target_data(work: Path, n_heldout: int) -> tuple[Path, list]:
    """The small scene (900 px, uint16, 1 band) tiled for training, and held-out towns."""
    from aerialct.data.synth import synth_scene
    from aerialct.tile import tile_scenes

    small = synth_scene(work / "small.tif", size=900, seed=7, buildings=work / "small.geojson",
                        overwrite=True, **SMALL)  # fmt: skip
    tile_scenes([small.image], work / "small_chips", labels_vector=small.buildings,
                burn="building", classes="buildings", size=128, stride=96, val_fraction=0.2,
                overwrite=True, workers=1)  # fmt: skip
    held = [
        synth_scene(work / f"heldout{i}.tif", size=1024, seed=200 + i,
                    buildings=work / f"heldout{i}.geojson", overwrite=True, **SMALL)
        for i in range(n_heldout)
    ]  # fmt: skip
    return work / "small_chips", held


def finetune(work: Path, chips: Path, held: list, weights: str, seed: int, epochs: int) -> dict:
    """One arm: train on the small scene, predict and score every held-out town."""
    import torch

    from aerialct.config import load_config, resolve_config_path
    from aerialct.engine.train import train
    from aerialct.evaluate import evaluate
    from aerialct.predict import predict_scene
    from aerialct.predict.bundle import load_inference_model

    name = f"{'scratch' if weights == 'null' else 'pretrained'}_s{seed}"
    cfg = load_config(resolve_config_path(PRESET), [f"model.weights={weights}",
                      f"train.epochs={epochs}", f"train.seed={seed}", *RECIPE])  # fmt: skip
    c0, t0 = cpu_s(), time.perf_counter()
    res = train(cfg, chips, work / name, overwrite=True)
    train_cpu, train_wall = cpu_s() - c0, time.perf_counter() - t0
    ck = torch.load(res.best_checkpoint, map_location="cpu", weights_only=True)
    bundle = load_inference_model(res.best_checkpoint, device="cpu")
    ious = []
    for i, h in enumerate(held):
        out = work / f"{name}_pred" / f"heldout{i}_classes.tif"
        predict_scene(bundle, h.image, out, overwrite=True)
        ious.append(evaluate(out, h.buildings).scores.per_class["building"]["iou"])
    return {"arm": name, "seed": seed, "ious": ious, "iou": statistics.mean(ious),
            "train_cpu_s": train_cpu, "train_wall_s": train_wall,
            "encoder_weights": ck.get("encoder_weights")}  # fmt: skip


def report(rows: list[dict], meta: dict) -> str:
    """The RESULTS.md section."""
    arms = {"scratch": [r for r in rows if r["arm"].startswith("scratch")],
            "pretrained": [r for r in rows if r["arm"].startswith("pretrained")]}  # fmt: skip
    w = next((r["encoder_weights"] for r in arms["pretrained"] if r["encoder_weights"]), {}) or {}
    lines = [
        "## Starting from pretrained encoder weights vs from scratch (`bench_pretrained.py`, CPU)",
        "",
        f"{meta['date']}, {platform.machine()} CPU ({os.cpu_count()} cores, 1 thread, shared, "
        f"nice 19), commit {meta['commit']}. `nice -n 19 python benchmarks/bench_pretrained.py`.",
        "",
        f"Source task (stands in for ImageNet, which cannot be downloaded here): `{PRESET}` from "
        f"random init for {meta['pre_epochs']} epochs on a {meta['pre_size']} px RGB 6-class "
        f"synthetic town ({meta['pre_cpu_s'] / 60:.1f} CPU-min), its encoder written as "
        f"`model.safetensors` into a Hugging Face cache in the hub's layout ({REPO}). Target: "
        "one 900 px uint16 panchromatic buildings scene at 0.5 m (about 5% building pixels), "
        "`tile --size 128 --stride 96 --val-fraction 0.2`, "
        f"`{PRESET}` with `{' '.join(RECIPE)}`, {meta['epochs']} epochs; the pretrained arm "
        "with `model.weights=imagenet`, `HF_HUB_OFFLINE=1` and `HF_HOME` at that cache (loaded "
        f"{w.get('loaded')}/{w.get('total')} tensors, {w.get('adapted')}). Scored on "
        f"{meta['n_heldout']} held-out 1024 px towns (building IoU, mean over towns).",
        "",
        "| start | seed | held-out building IoU per town | mean | train CPU s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{v:.3f}" for v in r["ious"])
        lines.append(f"| {r['arm'].split('_')[0]} | {r['seed']} | {per} | {r['iou']:.3f} | "
                     f"{r['train_cpu_s']:.0f} |")  # fmt: skip
    means = {k: statistics.mean(r["iou"] for r in v) for k, v in arms.items() if v}
    cpu = {k: statistics.mean(r["train_cpu_s"] for r in v) for k, v in arms.items() if v}
    lines += [
        "",
        "| start | mean held-out building IoU over seeds | mean train CPU s |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {means[k]:.3f} | {cpu[k]:.0f} |" for k in means]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs (both arms)")
    ap.add_argument("--pre-epochs", type=int, default=40)
    ap.add_argument("--pre-size", type=int, default=1536)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--heldout", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a run check at tiny sizes")
    ap.add_argument("--work", default=str(HERE.parent / "bench-out" / "pretrained"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.quick:
        args.epochs, args.pre_epochs, args.pre_size, args.seeds, args.heldout = 1, 1, 384, 1, 1
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    hf, pre_cpu = pretrain(work, args.pre_size, args.pre_epochs)
    os.environ["HF_HOME"] = str(hf)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("HF_HUB_CACHE", None)
    os.environ.pop("AERIALCT_WEIGHTS_DIR", None)
    chips, held = target_data(work, args.heldout)
    rows = []
    for seed in range(args.seeds):
        for weights in ("null", "imagenet"):
            rows.append(finetune(work, chips, held, weights, seed, args.epochs))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "encoder_weights"}),
                  flush=True)  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE.parent).stdout.strip()  # fmt: skip
    meta = dict(date=dt.date.today().isoformat(), commit=commit, epochs=args.epochs,
                pre_epochs=args.pre_epochs, pre_size=args.pre_size, pre_cpu_s=pre_cpu,
                n_heldout=args.heldout)  # fmt: skip
    text = report(rows, meta)
    (HERE / "results").mkdir(exist_ok=True)
    name = "pretrained_quick.md" if args.quick else "pretrained.md"
    (HERE / "results" / name).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
