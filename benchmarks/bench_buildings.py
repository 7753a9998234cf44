"""Buildings-only, 16-bit, single-band: the public target of issue 11.

Synthesises a sparse town (about 5% building pixels) as a uint16 panchromatic
scene with GeoJSON footprints, tiles it with ``--burn building --classes
buildings`` (128 px chips, stride 96), trains the ``tiny-cpu`` preset with the
buildings recipe (class weights from the index counts, a focal term, rare-chip
oversampling, the full-resolution refinement head), predicts a separate held-out
scene and scores its building IoU against the held-out footprints (the reference
rasterised onto the prediction grid). Writes ``benchmarks/results/buildings.md``.

    python benchmarks/bench_buildings.py            # ~6 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

OVERRIDES = [
    "loss.class_weights=auto",
    "loss.focal_weight=1.0",
    "data.oversample_rare=2.0",
    "model.refine=16",
]
CHIP, STRIDE, HELD_OUT = 128, 96, 1024


def run(work: Path, epochs: int = 45, size: int = 1536, overrides: list[str] | None = None) -> dict:
    """The whole buildings-only pipeline in ``work``; returns the held-out scores."""
    import pyogrio

    from aerialct.config import load_config, resolve_config_path
    from aerialct.data.synth import synth_scene
    from aerialct.engine.train import train
    from aerialct.evaluate import evaluate
    from aerialct.predict import predict_scene
    from aerialct.predict.bundle import load_inference_model
    from aerialct.tile import tile_scenes

    work.mkdir(parents=True, exist_ok=True)
    common = dict(gsd=0.5, dtype="uint16", bands=1, classes="buildings", built_up=0.1)
    t0 = time.perf_counter()
    city = synth_scene(work / "city.tif", size=size, seed=0,
                       buildings=work / "city.geojson", overwrite=True, **common)  # fmt: skip
    held = synth_scene(work / "heldout.tif", size=HELD_OUT, seed=1,
                       buildings=work / "heldout.geojson", overwrite=True, **common)  # fmt: skip
    tiled = tile_scenes([city.image], work / "chips", labels_vector=city.buildings,
                        burn="building", classes="buildings", size=CHIP, stride=STRIDE,
                        overwrite=True)  # fmt: skip
    cfg = load_config(resolve_config_path("tiny-cpu"), [f"train.epochs={epochs}",
                      f"model.img_size={CHIP}", *(overrides or OVERRIDES)])  # fmt: skip
    t1 = time.perf_counter()
    result = train(cfg, work / "chips", work / "run", overwrite=True)
    t_train = time.perf_counter() - t1
    bundle = load_inference_model(result.best_checkpoint, device="cpu")
    out = work / "pred" / "heldout_classes.tif"
    predict_scene(bundle, held.image, out, overwrite=True)
    scores = evaluate(out, held.buildings).scores
    held_frame = pyogrio.read_dataframe(held.buildings)
    return {
        "building_share": tiled.class_pixels["building"] / sum(tiled.class_pixels.values()),
        "heldout_share": held.class_fractions["building"],
        "building_iou": scores.per_class["building"]["iou"],
        "mean_iou": scores.mean_iou,
        "train_s": t_train,
        "total_s": time.perf_counter() - t0,
        "epochs": epochs,
        "size": size,
        "heldout_buildings": len(held_frame),
        "chips": tiled.chips,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--epochs", type=int, default=45)
    ap.add_argument("--size", type=int, default=1536, help="training town size in px")
    ap.add_argument("--quick", action="store_true", help="2 epochs on a 256 px town (a run check)")
    ap.add_argument("--work", default=str(HERE.parent / "bench-out" / "buildings"))
    ap.add_argument(
        "--set", action="append", default=[], help="config override (replaces the defaults)"
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if args.quick:
        args.epochs, args.size = 2, 256
    cpu0 = time.process_time()
    if args.set:
        OVERRIDES[:] = args.set
    r = run(Path(args.work), args.epochs, args.size)
    r["cpu_s"] = time.process_time() - cpu0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE.parent).stdout.strip()  # fmt: skip
    text = (
        "## Buildings-only, 16-bit, single band (issue 11 target)\n\n"
        f"{dt.date.today().isoformat()}, {platform.machine()} CPU ({os.cpu_count()} cores, "
        f"2 threads, shared), commit {commit}. `python benchmarks/bench_buildings.py`.\n\n"
        "Synthetic uint16 panchromatic town at 0.5 m (`synth --dtype uint16 --bands 1 --classes "
        f"buildings --built-up 0.1`), a {r['size']} px training town; GeoJSON footprints burnt "
        f"with `tile --burn building --classes buildings --size {CHIP} --stride {STRIDE}`; "
        f"tiny-cpu, {r['epochs']} epochs, `{' '.join(OVERRIDES)}`; scored on a separate "
        f"{HELD_OUT} px held-out scene ({r['heldout_buildings']} buildings) against its "
        "footprints.\n\n"
        "| building px (train / held-out) | chips | held-out building IoU | mean IoU "
        "| train wall s | total wall s | total CPU s |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {r['building_share']:.1%} / {r['heldout_share']:.1%} | {r['chips']} | "
        f"{r['building_iou']:.3f} | {r['mean_iou']:.3f} | {r['train_s']:.0f} | "
        f"{r['total_s']:.0f} | {r['cpu_s']:.0f} |\n"
    )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "buildings.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
