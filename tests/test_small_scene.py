"""Defaults that train on one small real scene (issue 23): tile refuses or advises, train says.

The scene is the issue's: 900 px, 16-bit, one band, 0.5 m, building footprints as GeoJSON.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from aerialct.config import load_config
from aerialct.data.synth import synth_scene
from aerialct.errors import InputError
from aerialct.tile import tile_scenes

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
RECIPE = (
    "rare classes in the training pixels (building {share}): train with the buildings recipe "
    "(README, 'Your own classes'): --set loss.class_weights=auto --set loss.focal_weight=1.0 "
    "--set data.oversample_rare=2.0 --set model.refine=16"
)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    r = synth_scene(d / "scene.tif", size=900, seed=3, gsd=0.5, dtype="uint16", bands=1,
                    classes="buildings", built_up=0.1, buildings=d / "footprints.geojson")  # fmt: skip
    return r


def vector(scene, out, **kw):
    r = scene
    return tile_scenes([r.image], out, labels_vector=r.buildings, burn="building",
                       classes="buildings", workers=1, **kw)  # fmt: skip


def test_default_window_on_a_small_scene_is_refused_with_a_grid_that_trains(scene, tmp_path, cli):
    r = scene
    with pytest.raises(InputError) as e:
        vector(scene, tmp_path / "chips")
    assert str(e.value) == (
        f"{r.image}: 900x900 px in the default 512 px windows gives 4 training chips and no "
        "validation chips, too few to train on (at least 32, and a validation split); pass "
        "--size 128 --stride 96 --val-fraction 0.2 (about 84 training and 16 validation chips), "
        "or --size 512 to cut these chips anyway"
    )
    assert not (tmp_path / "chips").exists()
    # the suggested options give what they promise, and the report names the recipe
    res = vector(scene, tmp_path / "chips", size=128, stride=96, val_fraction=0.2)
    assert (res.splits["train"], res.splits["val"]) == (84, 16)
    share = res.split_shares["train"]["building"]
    assert 0.02 < share < 0.1
    assert res.advice == [RECIPE.format(share=f"{share:.1%}")]
    # the CLI prints the refusal as its one error line
    out = cli("tile", r.image, "--labels-vector", r.buildings, "--burn", "building",
              "--classes", "buildings", "--out", tmp_path / "cli")  # fmt: skip
    assert out.code == 1 and out.err.strip() == f"error: {e.value}"


def test_a_chosen_window_is_kept_and_the_report_says_what_to_pass(scene, tmp_path, cli):
    r = scene
    res = vector(scene, tmp_path / "a", size=512)
    assert res.chips == 4
    assert res.advice[0] == (
        "4 training chips and no validation chips (512 px windows): too few to train on; "
        "--size 128 --stride 96 --val-fraction 0.2 gives about 84 training and 16 validation chips"
    )
    res = vector(scene, tmp_path / "b", size=128)
    assert (res.splits["train"], res.splits["val"]) == (64, 0)
    assert res.advice[0] == (
        "no validation chips: best.pt will follow the last epoch; pass --val-fraction 0.2 "
        "(about 12 chips)"
    )
    out = cli("tile", r.image, "--labels-vector", r.buildings, "--burn", "building", "--classes",
              "buildings", "--out", tmp_path / "c", "--size", "128", "--json")  # fmt: skip
    assert out.code == 0 and json.loads(out.out)["advice"] == res.advice
    # chips for one split only, and unlabelled chips, are never refused nor advised
    assert vector(scene, tmp_path / "d", split="test").advice == []
    assert tile_scenes([r.image], tmp_path / "e", workers=1).chips == 4


def test_train_says_when_it_trains_at_another_chip_size(scene, tmp_path, caplog):
    from aerialct.data.dataset import open_chip_splits
    from aerialct.engine.run import _fit_to_chips

    chips = vector(scene, tmp_path / "chips", size=128, stride=96, val_fraction=0.2).out
    cfg = load_config(TINY)
    splits = open_chip_splits(chips, cfg.data)
    with caplog.at_level(logging.WARNING, logger="aerialct"):
        fitted = _fit_to_chips(cfg, splits)
    assert fitted.model.img_size == 128
    assert (
        f"config tiny-cpu is set for 64 px chips (model.img_size) but the chips in {chips} are "
        "128 px: training at 128 px; tile with --size 64 to train at 64 px, or pass "
        "--set model.img_size=128 to confirm"
    ) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aerialct"):
        _fit_to_chips(load_config(TINY, ["model.img_size=128"]), splits)
    assert "model.img_size" not in caplog.text
