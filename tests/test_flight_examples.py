"""A whole flight on a Slurm array and on Kubernetes indexed Jobs, run as local processes.

The cluster is stood in for: the Slurm and Kubernetes variables are set by hand and the
array tasks (pods) run as concurrent local processes on a synthetic city cut into tiles.
`sbatch` and `kubectl` are stand-ins that record how the scripts call them.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest
import yaml
from catalog_helpers import city_classes, cut
from test_examples import EXAMPLES, _env

SLURM = EXAMPLES / "flight_slurm.sh"
EVERY_CLASS = ["--class", "0", "--class", "1", "--class", "2", "--class", "3", "--class", "4"]
"""An untrained model's classes are arbitrary: vectorise them all, so seams are crossed."""


@pytest.fixture(scope="module")
def flight(tmp_path_factory) -> Path:
    """A 256 x 192 px synthetic town at 0.25 m cut into two adjacent tiles."""
    from aerialct.data.synth import synth_scene

    d = tmp_path_factory.mktemp("flight")
    synth_scene(d / "city.tif", size=(192, 256), gsd=0.25, seed=1)
    cut(d / "city.tif", d / "flight", [0, 192], [0, 128, 256])
    return d / "flight"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from train_helpers import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def stand_in(bin_dir: Path, name: str, log: Path, reply: str = "") -> None:
    """An executable ``name`` that appends its arguments to ``log`` and prints ``reply``."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{log}"\n{reply}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_tasks(commands: list[list[str]], envs: list[dict[str, str]]) -> None:
    """Start every task at once, as an array job does; each must succeed."""
    procs = [
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env)
        )
        for cmd, env in zip(commands, envs, strict=True)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def one_process(pred: Path, out: Path, *args: str) -> None:
    from aerialct.cli.main import run

    assert run(["vectorize", str(pred), "--out", str(out), *args]) == 0


def same_file(a: Path, b: Path) -> None:
    fa, fb = pyogrio.read_dataframe(a), pyogrio.read_dataframe(b)
    assert len(fa) > 0 and fa.drop(columns="geometry").equals(fb.drop(columns="geometry"))
    assert fa.geometry.geom_equals_exact(fb.geometry, 0).all()


def test_slurm_script_submits_two_arrays(tmp_path):
    out, checkpoint = tmp_path / "out", tmp_path / "run" / "best.pt"
    log = tmp_path / "sbatch.log"
    stand_in(tmp_path / "bin", "sbatch", log, reply=f'echo "$((4000 + $(wc -l < "{log}")));c1"')
    path = f"{tmp_path / 'bin'}{os.pathsep}{_env()['PATH']}"
    r = subprocess.run(["bash", str(SLURM), str(checkpoint), "flight/*.tif", str(out), "2"],
                       capture_output=True, text=True, env=_env(PATH=path))  # fmt: skip
    assert r.returncode == 0, r.stderr
    predict_call, vectorize_call = log.read_text().splitlines()
    assert "--array=0-1" in predict_call and "--gres=gpu:1" in predict_call
    assert f"step predict {checkpoint} flight/*.tif {out}" in predict_call
    assert "--array=0-1" in vectorize_call and "--dependency=afterok:4001" in vectorize_call
    assert f"step vectorize {checkpoint} flight/*.tif {out}" in vectorize_call
    assert "predict: job 4001, vectorize: job 4002" in r.stdout
    r = subprocess.run(["bash", str(SLURM), str(checkpoint), "f/*.tif", str(out), "0"],
                       capture_output=True, text=True, env=_env(PATH=path))  # fmt: skip
    assert r.returncode == 2 and "TASKS 0" in r.stderr


def slurm_tasks(step: str, checkpoint: Path, flight: str, out: Path, tasks: int, **extra) -> None:
    """The array's tasks of ``step``, as concurrent local processes with Slurm's variables."""
    cmd = ["bash", str(SLURM), "step", step, str(checkpoint), flight, str(out)]
    run_tasks([cmd] * tasks, [
        {"SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_COUNT": str(tasks), **extra}
        for k in range(tasks)
    ])  # fmt: skip


def test_slurm_vectorize_tasks_as_local_processes(tmp_path):
    """Three vectorize tasks at once on predictions of a cut town: one map, as one process."""
    out = tmp_path / "out"
    city = city_classes(tmp_path / "city.tif", size=384, seed=2)
    cut(city, out / "pred", [0, 128, 256, 384], [0, 192, 384], "_classes")
    slurm_tasks("vectorize", tmp_path / "unused.pt", "unused", out, 3)
    assert not Path(f"{out}/buildings.gpkg.parts").exists()
    one_process(out / "pred", tmp_path / "one.gpkg")
    same_file(tmp_path / "one.gpkg", out / "buildings.gpkg")


@pytest.mark.slow
def test_slurm_predict_then_vectorize_tasks_as_local_processes(flight, checkpoint, tmp_path):
    out = tmp_path / "out"
    extra = {"PREDICT_ARGS": "--device cpu", "VECTORIZE_ARGS": " ".join(EVERY_CLASS)}
    for step in ("predict", "vectorize"):
        slurm_tasks(step, checkpoint, f"{flight}/*.tif", out, 2, **extra)
    tiles = sorted(p.stem for p in flight.glob("*.tif"))
    assert sorted(p.name for p in (out / "pred").glob("*_classes.tif")) == [
        f"{t}_classes.tif" for t in tiles
    ]
    assert not Path(f"{out}/buildings.gpkg.parts").exists()
    one_process(out / "pred", tmp_path / "one.gpkg", *EVERY_CLASS)
    same_file(tmp_path / "one.gpkg", out / "buildings.gpkg")


def _jobs() -> dict[str, dict]:
    docs = list(yaml.safe_load_all((EXAMPLES / "flight_k8s.yaml").read_text()))
    return {d["metadata"]["labels"]["aerialct-step"]: d for d in docs}


def test_kubernetes_manifest_is_two_consistent_indexed_jobs():
    jobs = _jobs()
    assert sorted(jobs) == ["predict", "vectorize"]
    for step, job in jobs.items():
        spec = job["spec"]
        container = spec["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert spec["completionMode"] == "Indexed"
        assert int(env["AERIALCT_SHARD_COUNT"]) == spec["completions"] == spec["parallelism"]
        assert container["command"][:2] == ["aerialct", step]
        assert spec["template"]["metadata"]["labels"]["aerialct-step"] == step
    gpu = jobs["predict"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == 1


def test_kubernetes_script_waits_for_predict_before_vectorize(tmp_path):
    log = tmp_path / "kubectl.log"
    stand_in(tmp_path / "bin", "kubectl", log)
    path = f"{tmp_path / 'bin'}{os.pathsep}{_env()['PATH']}"
    r = subprocess.run(["bash", str(EXAMPLES / "flight_k8s.sh")], capture_output=True,
                       text=True, env=_env(PATH=path))  # fmt: skip
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["apply", "wait", "apply", "wait"]
    assert "aerialct-step=predict" in calls[0] and calls[1].endswith("job/aerialct-predict")
    assert "aerialct-step=vectorize" in calls[2] and calls[3].endswith("job/aerialct-vectorize")


def test_kubernetes_vectorize_pods(tmp_path, monkeypatch):
    """Each pod of the vectorize Job, its JOB_COMPLETION_INDEX and AERIALCT_SHARD_COUNT set
    (in this process, one after the other: the Slurm test runs real concurrent processes);
    the last to finish joins, and the file equals one process's."""
    from aerialct.cli.main import run

    data = tmp_path / "data"
    city = city_classes(tmp_path / "city.tif", size=384, seed=2)
    cut(city, data / "out" / "pred", [0, 128, 256, 384], [0, 192, 384], "_classes")
    job = _jobs()["vectorize"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = [a.replace("/data", str(data)) for a in container["command"][1:]]
    for e in container["env"]:
        monkeypatch.setenv(e["name"], e["value"])
    for k in range(job["spec"]["completions"]):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(k))
        assert run(args) == 0
        assert (data / "out" / "buildings.gpkg").exists() == (k == job["spec"]["completions"] - 1)
    assert not (data / "out" / "buildings.gpkg.parts").exists()
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    one_process(data / "out" / "pred", tmp_path / "one.gpkg")
    same_file(tmp_path / "one.gpkg", data / "out" / "buildings.gpkg")


@pytest.mark.slow
def test_kubernetes_predict_pods_as_local_processes(flight, checkpoint, tmp_path):
    """Each pod of the predict Job, as a local process, predicts its share of the tiles:
    together, every tile once."""
    data = tmp_path / "data"
    (data / "run").mkdir(parents=True)
    os.symlink(checkpoint, data / "run" / "best.pt")
    os.symlink(flight, data / "flight")
    job = _jobs()["predict"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    cmd = [a.replace("/data", str(data)) for a in container["command"]]
    cmd[0:1] = [sys.executable, "-m", "aerialct"]
    count = job["spec"]["completions"]
    env = {e["name"]: e["value"] for e in container["env"]}
    run_tasks([[*cmd, "--device", "cpu"]] * count,
              [env | {"JOB_COMPLETION_INDEX": str(k)} for k in range(count)])  # fmt: skip
    assert len(list((data / "out" / "pred").glob("*_classes.tif"))) == 2
