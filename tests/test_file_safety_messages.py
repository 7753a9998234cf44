"""Every message names the file and the fix; a run folder is always reusable.

README, "What aerialct promises about your files", rules 1 (a run stopped before its
first checkpoint is started over) and 5: user mistakes get one line, never an
"internal error" or a library's own text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safety_helpers import SETS, TINY, error_lines, flat, json_out, tiny_checkpoint

from aerialct.geo.outputs import MARKER


def one_line(r, code: int = 1) -> str:
    assert r.code == code, (r.code, r.out, r.err)
    if code == 2:
        return flat(r.err)
    (line,) = error_lines(r.err)
    assert "internal error" not in line, line
    return line


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    from aerialct.export import export_model

    d = tmp_path_factory.mktemp("exported")
    ckpt = tiny_checkpoint(d / "best.pt")
    out = {"pt": ckpt}
    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.ts")):
        out[fmt] = Path(export_model(ckpt, d / name, fmt, check=False).output)
    return out


def test_export_and_info_messages(cli, tmp_path, exported):
    line = one_line(cli("export", exported["onnx"], "-o", tmp_path / "x.onnx"))
    assert "m.onnx: is an ONNX model exported by aerialct, not a checkpoint" in line
    line = one_line(cli("export", exported["torchscript"], "-f", "pt", "-o", tmp_path / "x.pt"))
    assert "is a TorchScript model" in line
    for opset in (5, 99):
        line = one_line(cli("export", exported["pt"], "--opset", opset, "-o", tmp_path / "x.onnx"))
        assert f"--opset {opset}: this torch exports opsets 11.." in line
    assert not (tmp_path / "x.onnx").exists()
    for fmt in ("onnx", "torchscript"):
        r = cli("info", exported[fmt])
        assert r.code == 0 and "weights only" not in (r.err + r.out).lower(), r.err
        info = json_out(cli("info", exported[fmt], "--json"))
        assert info["format"] == fmt and info["classes"][1] == "building"
    line = one_line(cli("info", "/vsicurl/https://user:pw@host/m.pt?sig=abc"))
    assert "https://host/m.pt: models are read from local files" in line and "pw" not in line


def test_a_run_stopped_before_its_first_checkpoint_is_started_again(cli, tmp_path):
    from train_helpers import synth_chips

    chips = synth_chips(tmp_path / "chips", size=64, n_side=2, val_every=2)
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text("{}")
    (run / "config.yaml").write_text("name: the first try\n")  # SIGTERM before a checkpoint
    (run / "metrics.csv").write_text("epoch\n")
    (run / "notes.txt").write_text("mine")
    line = one_line(cli("train", "--data", chips, "-o", run, "--resume"))
    assert "nothing to resume" in line and "start without --resume" in line
    r = cli("train", "--config", TINY, "--data", chips, "-o", run, *SETS)
    assert r.code == 0, r.err
    assert "stopped before its first checkpoint" in flat(r.err) and "starting it again" in flat(
        r.err
    )
    assert (run / "best.pt").exists() and (run / "notes.txt").read_text() == "mine"
    # --resume on a folder that does not exist: no run there, not "config.yaml not found"
    line = one_line(cli("train", "--data", chips, "-o", tmp_path / "nowhere", "--resume"))
    assert "nowhere: no run exists there" in line and "config.yaml" not in line


def test_training_messages_for_broken_class_tables(cli, tmp_path):
    from train_helpers import synth_chips

    chips = synth_chips(tmp_path / "chips", size=64, n_side=2, val_every=2)
    meta = json.loads((chips / "dataset.json").read_text())
    (chips / "dataset.json").write_text(json.dumps({**meta, "classes": []}))
    line = one_line(cli("train", "--config", TINY, "--data", chips, "-o", tmp_path / "r", *SETS))
    assert "chips: corrupt chips dataset" in line and "at least one class" in line
    one = [{"id": 0, "name": "building", "color": [1, 2, 3]}]
    (chips / "dataset.json").write_text(json.dumps({**meta, "classes": one}))
    line = one_line(cli("train", "--config", TINY, "--data", chips, "-o", tmp_path / "r", *SETS))
    assert "1 class(es) (building)" in line and "at least two" in line


def test_class_names_with_spaces_or_case_twins_are_refused_where_they_enter(cli, tmp_path):
    from synth_helpers import write_raster

    img = write_raster(tmp_path / "a.tif", np.zeros((3, 32, 32), np.uint8))
    lab = write_raster(tmp_path / "l.tif", np.zeros((32, 32), np.uint8))
    table = [{"id": 0, "name": "flat roof", "color": [1, 1, 1]}]
    import rasterio

    with rasterio.open(lab, "r+") as ds:
        ds.update_tags(AERIALCT_CLASSES=json.dumps(table))
    line = one_line(cli("tile", img, "--labels", lab, "-o", tmp_path / "c"))
    assert "l.tif" in line and "'flat roof' holds a space" in line and "'flat_roof'" in line


def test_aoi_that_misses_a_scene_says_so(cli, tmp_path, monkeypatch):
    import geopandas as gpd
    from predict_helpers import oracle_bundle, random_image, write_scene
    from shapely.geometry import box

    import aerialct.cli.predict as cli_predict

    monkeypatch.setattr(cli_predict, "_load_bundle", lambda ckpt, device: oracle_bundle(32))
    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(40, 40, seed=1))
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").to_file(tmp_path / "far.gpkg")
    r = cli("predict", "x.pt", scene, "--out", tmp_path / "p", "--aoi", tmp_path / "far.gpkg")
    assert r.code == 0, r.err
    assert "skipped: outside --aoi, nothing written (s.tif)" in flat(r.err)
    assert "complete outputs exist" not in r.err
