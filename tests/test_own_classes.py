"""Issue 11: any class table, any imagery, labels and references the way people have them.

The README section "Your own classes" is run here command by command on a synthetic
16-bit single-band scene with GeoJSON footprints; the other tests pin each rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from gdal_helpers import gdal_category_names
from http_helpers import serve

from aerialct.classes import BUILDINGS, POTSDAM, load_class_table, resolve_class_table
from aerialct.data.synth import synth_scene
from aerialct.losses.imbalance import class_weights_from_counts, focal_loss, rare_chip_weights
from aerialct.losses.segmentation import soft_cross_entropy
from aerialct.tile import tile_scenes

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_commands() -> list[str]:
    text = README.read_text()
    section = text.split("## Your own classes", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.startswith("aerialct ")]


@pytest.fixture(scope="module")
def scene16(tmp_path_factory):
    """A 16-bit single-band buildings-only town with GeoJSON footprints (~5% buildings)."""
    d = tmp_path_factory.mktemp("own")
    r = synth_scene(d / "scene.tif", d / "labels" / "scene_labels.tif", size=256, seed=3,
                    gsd=0.5, dtype="uint16", bands=1, classes="buildings", built_up=0.15,
                    buildings=d / "footprints.geojson")  # fmt: skip
    return d, r


# --------------------------------------------------------------------------- README


def _offline_hub_with(root: Path, arch: str, tag: str) -> None:
    """A Hugging Face cache holding (random) weights of ``arch``, as the hub lays it out."""
    import timm
    from safetensors.torch import save_file

    repo = root / "hub" / f"models--timm--{arch}.{tag}"
    (repo / "snapshots" / "0" / "model.safetensors").parent.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in timm.create_model(arch).state_dict().items()}
    save_file(state, str(repo / "snapshots" / "0" / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0")


def test_readme_your_own_classes_runs_as_written(cli, scene16, monkeypatch, tmp_path):
    d, synth = scene16
    commands = _readme_commands()
    assert [c.split()[1] for c in commands] == [
        "tile", "train", "predict", "vectorize", "evaluate", "evaluate",
    ]  # fmt: skip
    # the preset starts from ImageNet weights: here from an offline cache, never the network
    _offline_hub_with(tmp_path / "hf", "regnetx_002", "pycls_in1k")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "AERIALCT_WEIGHTS_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(d)
    results = []
    for line in commands:
        r = cli(*line.split()[1:], "--json") if "train" not in line else cli(*line.split()[1:])
        assert r.code == 0, (line, r.err)
        results.append(r)
    chips = json.loads((d / "chips" / "dataset.json").read_text())
    assert chips["classes"] == BUILDINGS.to_list() and chips["dtype"] == "uint16"
    stats = chips["band_stats"]
    assert stats["low"][0] > 255 and stats["high"][0] > stats["low"][0]  # 16-bit values
    ckpt = torch.load(d / "run" / "best.pt", weights_only=True, map_location="cpu")
    assert ckpt["classes"] == BUILDINGS.to_list()
    assert ckpt["encoder_weights"]["name"] == "timm:regnetx_002.pycls_in1k"
    assert ckpt["encoder_weights"]["adapted"] == "stem.conv: 3 -> 1 bands"
    assert ckpt["normalization"]["low"] == pytest.approx(stats["low"])
    pred = d / "pred" / "scene_classes.tif"
    with rasterio.open(pred) as ds:
        assert json.loads(ds.tags()["AERIALCT_CLASSES"]) == BUILDINGS.to_list()
        assert ds.colormap(1)[1][:3] == BUILDINGS.classes[1].color
        ids = ds.read(1)
    assert set(np.unique(ids).tolist()) <= {0, 1}
    assert gdal_category_names(pred)[:2] == ["background", "building"]
    pixel = json.loads(results[-1].out)
    assert set(pixel["per_class"]) == {"background", "building"}
    # class weights and the focal term trade background precision for building recall: judge
    # the buildings, against the 0.13 IoU of calling every pixel a building
    building = pixel["per_class"]["building"]
    assert building["iou"] > 0.25 and building["recall"] > 0.6, pixel
    buildings = json.loads(results[-2].out)
    assert buildings["reference_count"] == synth.n_buildings


# --------------------------------------------------------------------------- class tables


def test_builtin_and_yaml_tables(tmp_path):
    assert resolve_class_table("potsdam") is POTSDAM
    assert resolve_class_table("Buildings") is BUILDINGS
    assert BUILDINGS.names == ["background", "building"] and BUILDINGS.background == 0
    assert POTSDAM.background is None
    y = tmp_path / "t.yaml"
    y.write_text(
        "ignore: 0\nclasses:\n"
        "  - {id: 0, name: road, color: '#808080'}\n"
        "  - {id: 1, name: roof, color: [200, 0, 0]}\n"
        "  - {id: 2, name: shed, color: [0, 0, 200], exclude_from_mean: true}\n"
    )
    with pytest.raises(ValueError, match="ignore value 0"):
        load_class_table(y)
    y.write_text(y.read_text().replace("ignore: 0", "ignore: 9"))
    t = resolve_class_table(y)
    assert t.names == ["road", "roof", "shed"] and t.ignore == 9
    assert t.classes[0].color == (128, 128, 128) and t.excluded_from_mean == ["shed"]
    assert type(t).from_list(t.to_list()) == t
    y.write_text("classes:\n  - {id: 0, name: a, color: [1, 2]}\n")
    with pytest.raises(ValueError, match="is not \\[r, g, b\\]"):
        load_class_table(y)
    with pytest.raises(ValueError, match="unknown class table 'nope'"):
        resolve_class_table("nope")


def test_tile_yaml_table_ignore_value_and_class_raster(cli, tmp_path):
    from affine import Affine

    img = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    lab = np.zeros((64, 64), np.uint8)
    lab[:, 32:] = 1
    lab[:8] = 9  # the table's "no label" value
    t = Affine(0.5, 0, 0, 0, -0.5, 0)
    prof = dict(driver="GTiff", width=64, height=64, crs="EPSG:32633", transform=t)
    with rasterio.open(tmp_path / "a.tif", "w", count=3, dtype="uint8", **prof) as ds:
        ds.write(img)
    with rasterio.open(tmp_path / "l.tif", "w", count=1, dtype="uint8", **prof) as ds:
        ds.write(lab, 1)
    y = tmp_path / "t.yaml"
    y.write_text("ignore: 9\nclasses:\n  - {id: 0, name: road, color: [1, 1, 1]}\n"
                 "  - {id: 1, name: roof, color: [2, 2, 2]}\n")  # fmt: skip
    r = cli("tile", tmp_path / "a.tif", "--labels", tmp_path / "l.tif", "--classes", y,
            "--out", tmp_path / "c", "--size", "64", "--json")  # fmt: skip
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["class_pixels"] == {"road": 32 * 56, "roof": 32 * 56, "ignore": 8 * 64}
    assert res["split_shares"]["train"]["ignore"] == pytest.approx(0.125)
    r = cli("tile", tmp_path / "a.tif", "--labels", tmp_path / "l.tif", "--classes", "nope",
            "--out", tmp_path / "d")  # fmt: skip
    assert r.code == 1 and "unknown class table 'nope'" in r.err


# --------------------------------------------------------------------------- vector labels


def _polys(tmp_path, values):
    import geopandas as gpd
    from shapely.geometry import box

    frame = gpd.GeoDataFrame(
        {"building": values},
        geometry=[box(0, -8, 8, 0), box(16, -8, 24, 0)],
        crs="EPSG:32633",
    )
    frame.to_file(tmp_path / "osm.geojson", driver="GeoJSON")
    return tmp_path / "osm.geojson"


def _image(tmp_path):
    from affine import Affine

    with rasterio.open(tmp_path / "img.tif", "w", driver="GTiff", width=64, height=32, count=1,
                       dtype="uint16", crs="EPSG:32633", transform=Affine(0.5, 0, 0, 0, -0.5, 0),
                       ) as ds:  # fmt: skip
        ds.write(np.full((1, 32, 64), 1000, np.uint16))
    return tmp_path / "img.tif"


def test_burn_class_map_and_background_default(tmp_path):
    img = _image(tmp_path)
    vec = _polys(tmp_path, ["yes", "house"])
    # --burn: every polygon a building; uncovered pixels are the table's background
    r = tile_scenes([img], tmp_path / "a", labels_vector=vec, burn="building",
                    classes="buildings", size=32)  # fmt: skip
    assert r.class_pixels == {"background": 2048 - 512, "building": 512, "ignore": 0}
    # OSM's building=yes is not a class name: refused with the fix, then mapped
    with pytest.raises(Exception, match="--class-map yes=CLASS"):
        tile_scenes([img], tmp_path / "b", labels_vector=vec, class_field="building",
                    classes="buildings", size=32)  # fmt: skip
    r = tile_scenes([img], tmp_path / "b", labels_vector=vec, class_field="building",
                    class_map={"yes": "building", "house": "building"}, classes="buildings",
                    size=32)  # fmt: skip
    assert r.class_pixels["building"] == 512
    # Potsdam has no background class: uncovered pixels stay ignore, as before
    r = tile_scenes([img], tmp_path / "c", labels_vector=vec, burn="building", size=32)
    assert r.class_pixels["ignore"] == 2048 - 512 and r.class_pixels["building"] == 512
    with pytest.raises(Exception, match="--burn CLASS"):
        tile_scenes([img], tmp_path / "d", labels_vector=vec, classes="buildings", size=32)
    with pytest.raises(Exception, match="--burn 'roof'"):
        tile_scenes([img], tmp_path / "d", labels_vector=vec, burn="roof", classes="buildings")


def test_one_sided_split_is_warned(tmp_path):
    img = _image(tmp_path)
    vec = _polys(tmp_path, ["yes", "yes"])
    r = tile_scenes([img], tmp_path / "a", labels_vector=vec, burn="building",
                    classes="buildings", size=32, background="ignore")  # fmt: skip
    assert r.split_shares["train"]["ignore"] == 0.75
    r = tile_scenes([img], tmp_path / "b", labels_vector=vec, burn="background",
                    classes="buildings", size=32)  # fmt: skip
    assert any("100.0% of the label pixels are background" in w for w in r.warnings)


# --------------------------------------------------------------------------- imagery


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_band_stats_robust_over_valid_pixels(tmp_path, dtype):
    from affine import Affine

    rng = np.random.default_rng(0)
    data = rng.normal(100, 10, (2, 64, 64)).astype(dtype if dtype != "uint8" else "float32")
    data = np.clip(data, 0, 250).astype(dtype)
    data[:, 0, 0] = 250 if dtype == "uint8" else 30000  # one hot pixel: not the range
    data[:, 32:, :] = 0  # nodata: not counted
    prof = dict(driver="GTiff", width=64, height=64, count=2, dtype=dtype, nodata=0,
                crs="EPSG:32633", transform=Affine(1, 0, 500, 0, -1, 900))  # fmt: skip
    with rasterio.open(tmp_path / "a.tif", "w", **prof) as ds:
        ds.write(data)
    r = tile_scenes([tmp_path / "a.tif"], tmp_path / "c", size=32, nodata_threshold=1.0)
    s = r.band_stats
    assert s["dtype"] == dtype and len(s["low"]) == 2
    for b in range(2):
        assert 60 < s["low"][b] < 100 < s["high"][b] < 140
        assert s["mean"][b] == pytest.approx(100, abs=2) and s["std"][b] == pytest.approx(
            10, rel=0.2
        )


def test_synth_imagery_options(cli, tmp_path):
    r = cli("synth", tmp_path / "s", "--size", "128", "--gsd", "0.5", "--dtype", "uint16",
            "--bands", "1", "--classes", "buildings", "--buildings", "--buildings-format",
            "geojson", "--json")  # fmt: skip
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert set(res["class_fractions"]) == {"background", "building"}
    with rasterio.open(res["image"]) as ds:
        assert (ds.count, ds.dtypes[0]) == (1, "uint16") and ds.read().max() > 255
    with rasterio.open(res["labels"]) as ds:
        assert set(np.unique(ds.read(1)).tolist()) <= {0, 1}
    assert gdal_category_names(res["labels"])[:2] == ["background", "building"]
    assert res["buildings"].endswith(".geojson")
    r = cli("synth", tmp_path / "t", "--size", "64", "--bands", "4", "--dtype", "float32")
    assert r.code == 0, r.err
    with rasterio.open(tmp_path / "t" / "scene.tif") as ds:
        assert (ds.count, ds.dtypes[0]) == (4, "float32")
    r = cli("synth", tmp_path / "u", "--size", "64", "--dtype", "uint32")
    assert r.code == 2 and "'--dtype'" in r.err and "'uint32' is not one of" in r.err


def test_normalisation_is_identical_at_train_and_predict():
    from aerialct.data.transforms import Normalize
    from aerialct.predict.bundle import InferenceBundle

    x = torch.tensor([[[[100.0, 5000.0, 70000.0]]]])  # (1, 1, 1, 3)
    n = Normalize([4000.0], [1000.0], [1000.0], [9000.0])
    b = InferenceBundle(torch.nn.Identity(), BUILDINGS, (4000.0,), (1000.0,), 1, 64,
                        low=(1000.0,), high=(9000.0,))  # fmt: skip
    want = torch.tensor([[[[-3.0, 1.0, 5.0]]]])
    assert torch.equal(n(x[0])[None], want) and torch.equal(b.normalize(x), want)


# --------------------------------------------------------------------------- imbalance


def test_class_weights_focal_and_rare_chips():
    w = class_weights_from_counts([9900, 100, 0])
    assert w[0] / w[1] == pytest.approx((100 / 9900) ** 0.5) and w[2] == 1.0
    assert w[:2].mean() == pytest.approx(1.0)
    counts = np.array([[100, 0], [90, 10], [100, 0], [95, 5]])
    assert rare_chip_weights(counts, 0.1, 3.0).tolist() == [1.0, 3.0, 1.0, 3.0]
    logits = torch.tensor([[[[2.0]], [[0.0]]]])  # (1, 2, 1, 1)
    target = torch.tensor([[[0]]])
    p = torch.softmax(logits[0, :, 0, 0], 0)[0]
    assert focal_loss(logits, target, 2.0).item() == pytest.approx(
        float(-((1 - p) ** 2) * torch.log(p)), rel=1e-5
    )
    assert focal_loss(logits, torch.tensor([[[255]]]), 2.0).item() == 0.0
    # weighted CE = weighted mean over pixels
    logits = torch.randn(1, 2, 2, 2)
    target = torch.tensor([[[0, 1], [1, 255]]])
    wt = torch.tensor([1.0, 3.0])
    logp = torch.log_softmax(logits, 1)[0]
    picks = [(0, 0, 0), (1, 0, 1), (1, 1, 0)]
    num = sum(-wt[c] * logp[c, i, j] for c, i, j in picks)
    got = soft_cross_entropy(logits, target, smoothing=0.0, weight=wt)
    assert got.item() == pytest.approx(float(num / 7.0), rel=1e-5)


def test_train_with_imbalance_keys(tmp_path, scene16):
    from aerialct.config import load_config, resolve_config_path
    from aerialct.engine.train import train

    _, synth = scene16
    tile_scenes([synth.image], tmp_path / "chips", labels_vector=synth.buildings, burn="building",
                classes="buildings", size=64)  # fmt: skip
    cfg = load_config(resolve_config_path("tiny-cpu"), [
        "train.epochs=1", "loss.class_weights=auto", "loss.focal_weight=1.0",
        "data.oversample_rare=3.0", "loss.contrast=none",
    ])  # fmt: skip
    res = train(cfg, tmp_path / "chips", tmp_path / "run")
    assert Path(res.best_checkpoint).exists()
    bad = load_config(resolve_config_path("tiny-cpu"), ["loss.class_weight_values=[1.0]"])
    with pytest.raises(Exception, match="give 2 non-negative weights"):
        train(bad, tmp_path / "chips", tmp_path / "run2")


# --------------------------------------------------------------------------- inputs


@pytest.fixture
def http_root(tmp_path):
    with serve(tmp_path) as url:
        yield tmp_path, url


def test_predict_remote_cog_folder_and_glob(cli, http_root, monkeypatch):
    from predict_helpers import oracle_bundle, random_image, write_scene

    from aerialct.cli import predict as predict_cli

    root, url = http_root
    img = root / "remote.tif"
    write_scene(img, random_image(40, 50), tiled="YES", blockxsize="16", blockysize="16")
    monkeypatch.setattr(predict_cli, "_load_bundle", lambda *a: oracle_bundle(16))
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "10")
    for i, src in enumerate((f"{url}/remote.tif", f"/vsicurl/{url}/remote.tif")):
        out = root / f"out{i}"
        r = cli("predict", "ckpt.pt", src, "--out", out)
        assert r.code == 0, r.err
        with rasterio.open(out / "remote_classes.tif") as ds, rasterio.open(img) as local:
            assert ds.transform == local.transform and ds.read(1).shape == (40, 50)
    (root / "scenes").mkdir()
    for n in ("a", "b"):
        write_scene(root / "scenes" / f"{n}.tif", random_image(20, 20))
    r = cli("predict", "ckpt.pt", root / "scenes", "--out", root / "p1")
    assert r.code == 0, r.err
    assert sorted(p.name for p in (root / "p1").glob("*.tif")) == ["a_classes.tif", "b_classes.tif"]
    r = cli("predict", "ckpt.pt", str(root / "scenes" / "*.tif"), "--out", root / "p2")
    assert r.code == 0 and len(list((root / "p2").glob("*.tif"))) == 2
    r = cli("predict", "ckpt.pt", str(root / "nothing" / "*.tif"), "--out", root / "p3")
    assert r.code == 1 and "matches no file" in r.err


def test_evaluate_pixels_against_polygons(cli, scene16, tmp_path):
    import geopandas as gpd
    from rasterio import features

    from aerialct.geo.tags import CLASSES_TAG

    _, synth = scene16
    # a prediction that is exactly the footprints burnt on the scene grid scores IoU 1
    frame = gpd.read_file(synth.buildings)
    with rasterio.open(synth.labels) as lab:
        prof, transform, shape = lab.profile, lab.transform, lab.shape
    burnt = features.rasterize([(g, 1) for g in frame.geometry], out_shape=shape,
                               transform=transform, fill=0, dtype="uint8")  # fmt: skip
    with rasterio.open(tmp_path / "exact.tif", "w", **prof) as ds:
        ds.write(burnt, 1)
        ds.update_tags(**{CLASSES_TAG: json.dumps(BUILDINGS.to_list())})
    r = cli("evaluate", tmp_path / "exact.tif", synth.buildings, "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["per_class"]["building"]["iou"] == 1.0 and res["overall_accuracy"] == 1.0
    assert res["pairs"][0]["reference"] == str(synth.buildings)
    # the synthetic labels (trees overhang some roofs) agree closely
    r = cli("evaluate", synth.labels, synth.buildings, "--json")
    assert r.code == 0 and json.loads(r.out)["per_class"]["building"]["iou"] > 0.9
    r = cli("evaluate", synth.labels, synth.buildings, "--burn", "roof")
    assert r.code == 1 and "'roof'" in r.err


def test_evaluate_building_folders_pooled_and_per_file(cli, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()

    def write(path, boxes):
        gpd.GeoDataFrame(geometry=[box(*b) for b in boxes], crs="EPSG:32633").to_file(path)

    write(tmp_path / "ref" / "a.gpkg", [(0, 0, 10, 10), (20, 0, 30, 10)])
    write(tmp_path / "ref" / "b.geojson", [(0, 0, 10, 10)])
    write(tmp_path / "ref" / "c.gpkg", [(0, 0, 10, 10)])  # no prediction: listed as missing
    write(tmp_path / "pred" / "a_buildings.gpkg", [(0, 0, 10, 10)])  # 1 TP, 1 FN
    write(tmp_path / "pred" / "b.gpkg", [(0, 0, 10, 9), (50, 50, 60, 60)])  # 1 TP, 1 FP
    r = cli("evaluate", tmp_path / "pred", tmp_path / "ref", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    # c's building, which nobody mapped, is missed: a false negative of the pooled scores
    assert (res["true_positives"], res["false_positives"], res["false_negatives"]) == (2, 1, 2)
    assert res["f1"] == pytest.approx(2 * 2 / (3 + 4))
    assert res["mean_iou"] == pytest.approx((1.0 + 0.9) / 2)
    assert [Path(f["reference"]).name for f in res["files"]] == ["a.gpkg", "b.geojson"]
    assert [f["f1"] for f in res["files"]] == pytest.approx([2 / 3, 2 / 3])
    assert [Path(m).name for m in res["missing"]] == ["c.gpkg"]
    r = cli("evaluate", tmp_path / "pred", tmp_path / "ref")
    assert r.code == 0 and "per file" in r.out and "pooled over 2 files" in r.out
    # several files named by quoted globs: the same pooled score, c.gpkg left out of the set
    r = cli("evaluate", str(tmp_path / "pred" / "*.gpkg"), str(tmp_path / "ref" / "[ab].*"),
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert (res["true_positives"], res["false_positives"], res["false_negatives"]) == (2, 1, 1)
    assert [Path(f["reference"]).name for f in res["files"]] == ["a.gpkg", "b.geojson"]
    assert res["missing"] == []
    r = cli("evaluate", str(tmp_path / "pred" / "*.shp"), tmp_path / "ref")
    assert r.code == 1 and "matches no file" in r.err
    r = cli("evaluate", str(tmp_path / "pred" / "*.gpkg"), tmp_path / "ref" / "a.gpkg")
    assert r.code == 1 and "one is a folder or pattern" in r.err


def test_synth_labels_are_not_taken_by_predict_globs(cli, tmp_path):
    from aerialct.geo.inputs import expand_inputs

    r = cli("synth", tmp_path / "d", "--size", "64", "--gsd", "0.5")
    assert r.code == 0, r.err
    assert (tmp_path / "d" / "labels" / "scene_labels.tif").is_file()
    assert expand_inputs([str(tmp_path / "d" / "*.tif")]) == [tmp_path / "d" / "scene.tif"]
    assert expand_inputs([tmp_path / "d"]) == [tmp_path / "d" / "scene.tif"]


def _bench_buildings():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_buildings

    return bench_buildings


def test_readme_buildings_recipe_is_the_benchmarked_one():
    """The recipe the README gives is the one bench_buildings (and the slow test) measure."""
    import inspect

    bench = _bench_buildings()
    text = README.read_text()
    recipe = text[text.index("**The buildings recipe") :]
    recipe = recipe[: recipe.index("```", recipe.index("```bash") + 7)]
    assert f"--size {bench.CHIP} --stride {bench.STRIDE}" in recipe
    epochs = inspect.signature(bench.run).parameters["epochs"].default
    for setting in [f"train.epochs={epochs}", f"model.img_size={bench.CHIP}", *bench.OVERRIDES]:
        assert f"--set {setting}" in recipe, setting


@pytest.mark.slow
def test_public_target_buildings_16bit_single_band(tmp_path):
    """tiny-cpu reaches held-out building IoU >= 0.5 on a ~5% buildings uint16 panchromatic town."""
    r = _bench_buildings().run(tmp_path)
    assert 0.03 < r["building_share"] < 0.08
    assert r["building_iou"] >= 0.5, r


def test_table_exclusions_reach_the_scores(cli, tmp_path):
    from affine import Affine

    from aerialct.classes import ClassInfo, ClassTable
    from aerialct.geo.tags import CLASSES_TAG

    table = ClassTable((ClassInfo(0, "a", (1, 1, 1)), ClassInfo(1, "b", (2, 2, 2)),
                        ClassInfo(2, "shed", (3, 3, 3), exclude_from_mean=True)))  # fmt: skip
    ids = np.tile(np.array([0, 1, 2, 2], np.uint8), (8, 2))
    for name in ("p.tif", "r.tif"):
        with rasterio.open(tmp_path / name, "w", driver="GTiff", width=8, height=8, count=1,
                           dtype="uint8", crs="EPSG:32633",
                           transform=Affine(1, 0, 0, 0, -1, 0)) as ds:  # fmt: skip
            ds.write(ids, 1)
            ds.update_tags(**{CLASSES_TAG: json.dumps(table.to_list())})
    r = cli("evaluate", tmp_path / "p.tif", tmp_path / "r.tif", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["excluded"] == ["shed"]


def test_s3_url_and_remote_tile_read_through_gdal(cli, http_root, monkeypatch):
    """``s3://`` reaches GDAL's /vsis3/ untouched (here pointed at a local server), and tile's
    worker processes read a remote scene too."""
    from predict_helpers import oracle_bundle, random_image, write_scene

    from aerialct.cli import predict as predict_cli

    root, url = http_root
    (root / "bucket").mkdir()
    img = root / "bucket" / "scene.tif"
    write_scene(img, random_image(40, 50), tiled="YES", blockxsize="16", blockysize="16")
    monkeypatch.setattr(predict_cli, "_load_bundle", lambda *a: oracle_bundle(16))
    for key, value in {
        "AWS_S3_ENDPOINT": url.removeprefix("http://"),
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_NO_SIGN_REQUEST": "YES",
        "GDAL_HTTP_TIMEOUT": "10",
    }.items():
        monkeypatch.setenv(key, value)
    r = cli("predict", "ckpt.pt", "s3://bucket/scene.tif", "--out", root / "p")
    assert r.code == 0, r.err
    with rasterio.open(root / "p" / "scene_classes.tif") as ds, rasterio.open(img) as local:
        assert ds.transform == local.transform and ds.read(1).shape == (40, 50)
    r = cli("tile", f"{url}/bucket/scene.tif", "--size", "16", "--workers", "2",
            "--out", root / "chips")  # fmt: skip
    assert r.code == 0, r.err
    assert (
        len(list((root / "chips").rglob("images/*.tif"))) == 3 * 4
    )  # rows 0,16,24; cols 0,16,32,34
    with rasterio.open(next((root / "chips").rglob("images/*.tif"))) as chip:
        assert chip.count == 3 and chip.width == 16
