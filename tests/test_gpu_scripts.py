"""The GPU measurement scripts (benchmarks/gpu_evidence.py, bench_engine.py, gpu_run.sh) and
train.compile, run on the CPU at a tiny size so they are known to work before a GPU is lent."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"},
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_summary_rule_and_markdown():
    import gpu_evidence as ev

    def row(scheme, seed, miou, building):
        return dict(model="m", scheme=scheme, seed=seed, miou=miou, building=building,
                    step_ms=10.0 if scheme == "none" else 12.0, images_per_s=800.0,
                    peak_gib=1.0, steps=4, epochs=1, batch=8, amp="bf16", wall_s=1.0)  # fmt: skip

    rows = [
        row("none", 0, 0.50, 0.60), row("none", 1, 0.52, 0.62), row("none", 2, 0.51, 0.61),
        row("ct-cl", 0, 0.60, 0.61), row("ct-cl", 1, 0.61, 0.63), row("ct-cl", 2, 0.62, 0.60),
    ]  # fmt: skip
    s = {r["scheme"]: r for r in ev.summarise(rows)}
    assert s["none"]["miou"] == pytest.approx(0.51) and s["none"]["miou_std"] == pytest.approx(0.01)
    ct = s["ct-cl"]
    assert ct["miou_delta"] == pytest.approx(0.10)
    assert ct["miou_se2"] == pytest.approx(2 * math.sqrt(0.01**2 / 3 + 0.01**2 / 3))
    assert ct["miou_beats"] is True and ct["building_beats"] is False  # +0.0033 within noise
    assert ct["step_ratio"] == pytest.approx(1.2)

    class Args:
        device, steps, batch, lr, compile = "cpu", 4, 8, 5e-4, False

    info = dict(chips={"train": 3}, chip_size=64, gsd=0.5, n_train=3, n_val=1)
    text = ev.markdown(Args, rows, info, stopped=False)
    assert "| m | ct-cl | 3 | 0.6100 ± 0.0100 |" in text
    assert "beyond seed noise: m ct-cl (miou)." in text
    one_seed = ev.markdown(Args, [rows[0], rows[3]], info, stopped=True)
    assert "not enough seeds" in one_seed and "Stopped by its time budget" in one_seed


@pytest.mark.slow
def test_gpu_evidence_end_to_end_on_cpu(tmp_path):
    """make-data (synth, tile, pack, archive) then run, with bf16 autocast as on the GPU."""
    run_script("benchmarks/gpu_evidence.py", "make-data", "--out", str(tmp_path / "d"),
               "--size", "256", "--gsd", "0.5", "--chip", "64")  # fmt: skip
    archive = tmp_path / "d" / "city.tar.gz"
    assert archive.is_file() and not (tmp_path / "d" / "work").exists()
    run_script("benchmarks/gpu_evidence.py", "run", "--data", str(archive), "--device", "cpu",
               "--out", str(tmp_path / "r"), "--models", "tiny", "--schemes", "none,ct-cl",
               "--seeds", "0,1", "--steps", "2", "--batch", "4", "--workers", "1",
               "--set", "train.amp=bf16")  # fmt: skip
    result = json.loads((tmp_path / "r" / "evidence_gpu.json").read_text())
    runs = result["runs"]
    assert [(r["scheme"], r["seed"]) for r in runs] == [
        ("none", 0),
        ("ct-cl", 0),
        ("none", 1),
        ("ct-cl", 1),
    ]
    assert all(r["steps"] == 2 and 0 <= r["miou"] <= 1 and r["amp"] == "bf16" for r in runs)
    assert result["info"]["n_train"] == 12
    text = (tmp_path / "r" / "evidence_gpu.md").read_text()
    assert "| tiny | ct-cl | 2 |" in text and "**Conclusion:**" in text
    # run folders (checkpoints) are removed after each run
    assert not any((tmp_path / "r" / "work" / "runs").iterdir())


@pytest.mark.slow
def test_bench_engine_on_a_packed_archive(tmp_path):
    """The GPU form of bench_engine (--packed, no rasterio needed), on the CPU."""
    from train_helpers import tiled_synth

    from aerialct.data.packed import pack_chips

    packed = pack_chips(tiled_synth(tmp_path / "city"), tmp_path / "p").out
    run_script("benchmarks/bench_engine.py", "--packed", str(packed), "--epochs", "2",
               "--rounds", "1", "--set", "train.batch_size=4", "--work", str(tmp_path / "w"),
               "--out-dir", str(tmp_path), "--name", "eng")  # fmt: skip
    text = (tmp_path / "eng.md").read_text()
    assert (
        "| bare loop, resident tensors |" in text and "Engine on packed chips / bare loop" in text
    )


def test_gpu_run_script_parses():
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    subprocess.run(["bash", "-n", str(BENCH / "gpu_run.sh")], check=True)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="torch.compile (inductor) needs a C compiler on the CPU",
)
def test_train_compile_on_cpu(tmp_path):
    """train.compile=true: the compiled forward trains, validates and saves a plain state dict."""
    import torch
    from train_helpers import tiled_synth

    from aerialct.config import load_config
    from aerialct.engine.train import train
    from aerialct.predict.bundle import load_inference_model

    chips = tiled_synth(tmp_path / "city")
    cfg = load_config(
        ROOT / "configs" / "tiny-cpu.yaml",
        ["train.compile=true", "train.max_steps=2", "train.batch_size=4", "data.stats_chips=4"],
    )
    res = train(cfg, chips, tmp_path / "run")
    assert res.steps == 2 and math.isfinite(res.final["train_loss"])
    bundle = load_inference_model(res.best_checkpoint)  # no _orig_mod. prefixes
    with torch.no_grad():
        assert bundle.model(torch.zeros(1, 3, 64, 64)).shape == (1, 6, 64, 64)


@pytest.mark.slow
def test_bench_step_channels_last_on_cpu(tmp_path):
    """bench_step --channels-last (a part of gpu_run.sh) at a tiny size."""
    run_script("benchmarks/bench_step.py", "--size", "64", "--batch", "1", "--presets",
               "PoolFormer", "--modes", "none", "CT-CL", "--channels-last", "--iters", "1",
               "--warmup", "0", "--out", str(tmp_path / "s.md"))  # fmt: skip
    text = (tmp_path / "s.md").read_text()
    assert "channels_last on" in text and "| PoolFormer | CT-CL |" in text
