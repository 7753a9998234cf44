"""Does contrast help? Paired seeds, held-out towns, 95% intervals (tiny-cpu on the CPU).

For each seed ``i`` the study synthesises a training town (seed ``i``) and a separate
held-out town (seed ``1000 + i``), tiles the training town, trains tiny-cpu with every
scheme on the same chips and the same training seed, predicts the held-out town and
scores it. Two tasks:

- ``town``: the six-class synthetic town (RGB, 0.5 m, 64 px chips); scores: held-out
  mean IoU (the class table's mean, clutter excluded) and building IoU;
- ``buildings``: the buildings-only 16-bit panchromatic town of ``bench_buildings.py``
  (uint16, one band, about 5% building pixels, footprints burnt with ``--burn
  building``) with its recipe (class weights, focal term, rare-chip oversampling,
  refinement head); score: held-out building IoU against the footprints.

Differences are paired by seed (same towns, chips and training seed for every
scheme): the table gives mean +- std over seeds, the mean paired difference against
``none`` with a 95% t-interval over seeds, and the cost in CPU-seconds (train, predict
and score of one run, measured in its own process: load from other jobs inflates it
little). Each run's row is appended to ``<work>/runs.jsonl`` as it finishes, so a killed
study resumes where it stopped. Writes ``benchmarks/results/contrast.md``.

    python benchmarks/bench_contrast.py                    # 5 seeds x 5 schemes x 2 tasks
    # about 16,000 CPU-seconds (2 h on 2 idle cores): tiny-cpu's baseline needs ~50 epochs of
    # these towns to plateau (25 epochs left it 0.08 mIoU short), and MS/CS costs 2.3x
    python benchmarks/bench_contrast.py --seeds 20 --jobs 16    # more power on a bigger machine
    # a smaller town study (5 seeds x 3 schemes, ~200 steps per run: short of the plateau)
    python benchmarks/bench_contrast.py --tasks town --town-size 512 --held-out-size 384 \
        --schemes none,ct-cl,mscs --epochs-town 30 --plateau-seeds 0
    python benchmarks/bench_contrast.py --quick            # 2 seeds, 2 epochs, tiny towns: a run check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SCHEMES = ("none", "ct-cl", "ct-infonce", "mscs", "ct-cl+mscs")
BUILDINGS_RECIPE = [
    "loss.class_weights=auto",
    "loss.focal_weight=1.0",
    "data.oversample_rare=2.0",
    "model.refine=16",
]


@dataclass(frozen=True)
class Task:
    """One learning problem: how its towns are made and tiled, and how long it trains."""

    name: str
    size: int
    """Training town, px per side."""
    held_out: int
    """Held-out town, px per side."""
    chip: int
    stride: int
    epochs: int
    synth: dict = field(default_factory=dict)
    overrides: tuple[str, ...] = ()


def tasks(
    quick: bool, epochs_town: int, epochs_buildings: int, town_size: int = 768, held_out: int = 512
) -> dict[str, Task]:
    """The two tasks at the study's sizes (``quick``: a run check, nothing to conclude)."""
    town = Task("town", town_size, held_out, 64, 64, epochs_town, {"gsd": 0.5})
    build = Task(
        "buildings", 768, 768, 64, 64, epochs_buildings,
        {"gsd": 0.5, "dtype": "uint16", "bands": 1, "classes": "buildings", "built_up": 0.1},
        tuple(BUILDINGS_RECIPE),
    )  # fmt: skip
    if quick:
        town = Task("town", 256, 256, 64, 64, 2, town.synth)
        build = Task("buildings", 384, 256, 64, 64, 2, build.synth, build.overrides)
    return {t.name: t for t in (town, build)}


def prepare(task: Task, seed: int, work: Path) -> dict[str, str]:
    """Training chips and the held-out scene of one (task, seed), made once for all schemes."""
    from aerialct.data.synth import synth_scene
    from aerialct.tile import tile_scenes

    d = work / "data" / f"{task.name}-{task.size}-{task.held_out}-{task.chip}-{task.stride}-{seed}"
    done = d / "ready.json"
    if done.exists():
        return json.loads(done.read_text())
    d.mkdir(parents=True, exist_ok=True)
    footprints = task.synth.get("classes") == "buildings"
    kw = dict(task.synth, overwrite=True)
    train_town = synth_scene(
        d / "town.tif", None if footprints else d / "town_labels.tif", size=task.size,
        seed=seed, buildings=d / "town.geojson" if footprints else None, **kw,
    )  # fmt: skip
    held = synth_scene(
        d / "heldout.tif", None if footprints else d / "heldout_labels.tif", size=task.held_out,
        seed=1000 + seed, buildings=d / "heldout.geojson" if footprints else None, **kw,
    )  # fmt: skip
    if footprints:
        tile_scenes([train_town.image], d / "chips", labels_vector=train_town.buildings,
                    burn="building", classes="buildings", size=task.chip, stride=task.stride,
                    val_fraction=0.2, seed=seed, workers=1, overwrite=True)  # fmt: skip
        reference = str(held.buildings)
    else:
        tile_scenes([train_town.image], d / "chips", labels=[train_town.labels], size=task.chip,
                    stride=task.stride, val_fraction=0.2, seed=seed, workers=1,
                    overwrite=True)  # fmt: skip
        reference = str(held.labels)
    paths = {"chips": str(d / "chips"), "held_out": str(held.image), "reference": reference}
    done.write_text(json.dumps(paths))
    return paths


LONGER = "none@2x"
"""The plateau check: the baseline trained for twice the epochs."""


def one_run(args: tuple[Task, str, int, dict[str, str], str]) -> dict:
    """Train one scheme on one seed's chips, predict and score the held-out town (own process)."""
    task, scheme, seed, paths, work = args
    contrast, epochs = ("none", 2 * task.epochs) if scheme == LONGER else (scheme, task.epochs)
    import torch

    torch.set_num_threads(1)
    from aerialct.config import load_config, resolve_config_path
    from aerialct.engine.train import train
    from aerialct.evaluate import evaluate
    from aerialct.predict import predict_scene
    from aerialct.predict.bundle import load_inference_model

    c0, t0 = time.process_time(), time.perf_counter()
    run_dir = Path(work) / "runs" / f"{task.name}-{scheme}-{seed}"
    cfg = load_config(
        resolve_config_path("tiny-cpu"),
        [f"loss.contrast={contrast}", f"train.seed={seed}", f"train.epochs={epochs}",
         f"model.img_size={task.chip}", f"train.save_every={epochs}",
         f"train.val_every={max(1, epochs // 10)}", *task.overrides],
    )  # fmt: skip
    res = train(cfg, paths["chips"], run_dir, device="cpu", overwrite=True)
    bundle = load_inference_model(res.last_checkpoint, device="cpu")
    pred = run_dir / "heldout_classes.tif"
    predict_scene(bundle, paths["held_out"], pred, overwrite=True)
    scores = evaluate(pred, paths["reference"]).scores
    return {
        "task": task.name,
        "scheme": scheme,
        "seed": seed,
        "epochs": res.epochs,
        "building_iou": scores.per_class["building"]["iou"],
        "mean_iou": scores.mean_iou,
        "plateau_gain": plateau_gain(run_dir / "metrics.csv"),
        "cpu_s": time.process_time() - c0,
        "wall_s": time.perf_counter() - t0,
    }


def plateau_gain(metrics_csv: Path) -> float | None:
    """In-town validation mIoU of the last epoch minus that at three quarters of the run."""
    import csv

    with open(metrics_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_miou")]
    if len(rows) < 4:
        return None
    return float(rows[-1]["val_miou"]) - float(rows[(3 * len(rows)) // 4 - 1]["val_miou"])


def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided 95% t-interval over seeds."""
    from scipy import stats

    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


def summarise(rows: list[dict], schemes: list[str], task: str, metric: str) -> list[str]:
    """Table lines of one task and metric: mean +- std, paired difference, CPU cost."""
    by = {(r["scheme"], r["seed"]): r for r in rows if r["task"] == task}
    seeds = sorted({s for (_, s) in by})
    base = {s: by[("none", s)] for s in seeds if ("none", s) in by}
    base_cpu = statistics.fmean(r["cpu_s"] for r in base.values()) if base else math.nan
    out = []
    for scheme in schemes:
        got = [by[(scheme, s)] for s in seeds if (scheme, s) in by]
        if not got:
            continue
        vals = [r[metric] for r in got]
        sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
        cpu = statistics.fmean(r["cpu_s"] for r in got)
        if scheme == "none":
            diff = "(baseline)"
        else:
            paired = [by[(scheme, s)][metric] - base[s][metric] for s in seeds
                      if (scheme, s) in by and s in base]  # fmt: skip
            m, lo, hi = t_interval(paired)
            sign = "**" if lo > 0 or hi < 0 else ""
            diff = f"{sign}{m:+.4f} [{lo:+.4f}, {hi:+.4f}]{sign}"
        out.append(
            f"| {task} | {metric} | {scheme} | {len(vals)} | {statistics.fmean(vals):.4f} ± {sd:.4f}"
            f" | {diff} | {cpu:.0f} | {cpu / base_cpu:.2f} |"
        )
    return out


def report(rows: list[dict], schemes: list[str], tasks_: dict[str, Task], argv: str) -> str:
    """The results section (``results/contrast.md``)."""
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE.parent).stdout.strip()  # fmt: skip
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "## Does contrast help? Paired seeds on held-out towns (`bench_contrast.py`, CPU, tiny-cpu)",
        "",
        f"{dt.date.today().isoformat()}, {platform.machine()} ({os.cpu_count()} cores, shared, "
        f"one thread per run), torch {torch.__version__}, commit {commit or 'unknown'}. `{argv}`.",
        "",
        f"Seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}): seed i trains on a town of seed i and is "
        "scored on a separate held-out town of seed 1000 + i; every scheme sees the same chips "
        "and training seed. Scores on the held-out town, after the last epoch.",
    ]
    for t in tasks_.values():
        lines.append(
            f"- `{t.name}`: {t.size} px training town, {t.held_out} px held-out town, "
            f"{t.chip} px chips (stride {t.stride}), {t.epochs} epochs"
            + (f", `{' '.join(t.overrides)}`" if t.overrides else "")
            + f"; synth {', '.join(f'{k}={v}' for k, v in t.synth.items())}."
        )
    lines += [
        "",
        "Δ vs none: mean paired difference over seeds [95% t-interval]; **bold** when the "
        "interval excludes 0. CPU s: one run (train, predict, score), mean over seeds.",
        "",
        "| task | score | scheme | seeds | mean ± std | Δ vs none [95% CI] | CPU s | CPU × none |",
        "| --- | --- | --- | ---: | --- | --- | ---: | ---: |",
    ]
    for t in tasks_:
        for metric in ("mean_iou", "building_iou") if t == "town" else ("building_iou",):
            lines += summarise(rows, schemes, t, metric)
    lines += ["", *plateau_lines(rows, tasks_)]
    return "\n".join(lines) + "\n"


def plateau_lines(rows: list[dict], tasks_: dict[str, Task]) -> list[str]:
    """Has the baseline plateaued? Twice the epochs against the study's, paired by seed."""
    out = []
    for t in tasks_:
        by = {(r["scheme"], r["seed"]): r for r in rows if r["task"] == t}
        seeds = [s for (scheme, s) in by if scheme == LONGER and ("none", s) in by]
        metric = "mean_iou" if t == "town" else "building_iou"
        if len(seeds) >= 2:
            m, lo, hi = t_interval(
                [by[(LONGER, s)][metric] - by[("none", s)][metric] for s in seeds]
            )
            out.append(
                f"Plateau check, `{t}`: the baseline with twice the epochs ({2 * tasks_[t].epochs}) "
                f"changes held-out {metric} by {m:+.4f} [{lo:+.4f}, {hi:+.4f}] over seeds "
                f"{', '.join(map(str, sorted(seeds)))}."
            )
        gains = [r["plateau_gain"] for r in by.values() if r["scheme"] == "none"
                 and r["plateau_gain"] is not None]  # fmt: skip
        if gains:
            out.append(
                f"In-town validation mIoU of the `{t}` baseline over its last quarter of epochs: "
                f"{statistics.fmean(gains):+.4f} on average ({min(gains):+.4f} to {max(gains):+.4f})."
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="seeds per scheme (paired across schemes)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--tasks", default="town,buildings")
    ap.add_argument("--epochs-town", type=int, default=50)
    ap.add_argument("--epochs-buildings", type=int, default=50)
    ap.add_argument("--town-size", type=int, default=768, help="town task: training town, px")
    ap.add_argument("--held-out-size", type=int, default=512, help="town task: held-out town, px")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="runs at once, one thread each")  # fmt: skip
    ap.add_argument("--plateau-seeds", type=int, default=3,
                    help="seeds on which the baseline also trains for twice the epochs")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="2 seeds, 2 epochs, tiny towns")
    ap.add_argument("--work", default=str(HERE.parent / "bench-out" / "contrast"))
    ap.add_argument("--name", default="contrast", help="results/<name>.md")
    args = ap.parse_args()
    if args.quick:
        args.seeds = min(args.seeds, 2)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    all_tasks = tasks(
        args.quick, args.epochs_town, args.epochs_buildings, args.town_size, args.held_out_size
    )
    chosen = {k: all_tasks[k] for k in args.tasks.split(",") if k}
    schemes = [s for s in args.schemes.split(",") if s]
    if "none" not in schemes:
        schemes.insert(0, "none")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    log = work / "runs.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def key(task: Task, scheme: str, seed: int) -> str:
        return json.dumps([asdict(task), scheme, seed])

    done = {r["key"] for r in rows}
    todo = []
    for seed in seeds:
        for task in chosen.values():
            paths = prepare(task, seed, work)
            longer = [LONGER] if seed < args.first_seed + args.plateau_seeds else []
            todo += [(task, s, seed, paths, str(work)) for s in [*schemes, *longer]
                     if key(task, s, seed) not in done]  # fmt: skip
    print(f"{len(todo)} runs to do, {len(rows)} done", file=sys.stderr, flush=True)
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(one_run, todo):
            task = chosen[row["task"]]
            row["key"] = key(task, row["scheme"], row["seed"])
            rows.append(row)
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), file=sys.stderr, flush=True)
    keys = {key(t, s, seed) for t in chosen.values() for s in [*schemes, LONGER] for seed in seeds}
    mine = [r for r in rows if r["key"] in keys]
    argv = "python benchmarks/bench_contrast.py " + " ".join(sys.argv[1:])
    text = report(mine, schemes, chosen, argv.strip())
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
