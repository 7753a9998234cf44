"""Pretrained encoder weights by name, offline caches and the fetch folder (issue 23).

No test touches the network: every socket connection and name lookup is refused
(``no_network``), the hub is a local cache in the hub's own layout
(``models--timm--<name>/snapshots/<rev>/model.safetensors`` + ``refs/main``), and the
downloads go through patched downloaders that copy local files.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models._manipulate import adapt_input_conv
from train_helpers import tiled_synth

from aerialct.config import load_config
from aerialct.engine.train import train
from aerialct.errors import ConfigError, InputError
from aerialct.models import ModelConfig, build_model
from aerialct.models import weights as W
from aerialct.models.backbone import _normalise_key

ARCH, TAG = "test_convnext", "r160_in1k"
NAME = f"timm:{ARCH}.{TAG}"
REV = "0123456789abcdef0123456789abcdef01234567"
TRAIN = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
FAST = ["train.batch_size=4", "train.warmup_steps=2", "data.stats_chips=8", "train.epochs=1"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Refuse every connection and name lookup; point every cache at empty folders."""

    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable (tests run offline)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", W.ENV_DIR):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def hub_cache(root: Path, arch: str = ARCH, tag: str = TAG) -> Path:
    """Weights of ``arch`` written as the hub caches them; returns the snapshot file."""
    torch.manual_seed(1)
    state = {k: v.contiguous() for k, v in timm.create_model(arch).state_dict().items()}
    repo = root / "hub" / f"models--timm--{arch}.{tag}"
    snap = repo / "snapshots" / REV / "model.safetensors"
    snap.parent.mkdir(parents=True)
    save_file(state, str(snap))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    return snap


def file_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_body_equals(model, src: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> int:
    """Every backbone tensor equals the file's tensor of the same (timm) name."""
    body = model.backbone.body.state_dict()
    n = 0
    for k, v in src.items():
        nk = _normalise_key(k)
        if nk in body and nk not in skip:
            assert torch.equal(body[nk], v), k
            n += 1
    assert n == len(body) - len(skip)
    return n


# --------------------------------------------------------------------------- names


def test_imagenet_is_timms_default_tag_loaded_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = hub_cache(tmp_path / "hf")
    model = build_model(ModelConfig(backbone=ARCH, weights="imagenet", img_size=64), 2)
    assert assert_body_equals(model, file_tensors(snap)) == 97
    rec = model.weights_report.record()
    assert rec == {
        "given": "imagenet", "name": NAME, "source": f"https://huggingface.co/timm/{ARCH}.{TAG}",
        "file": str(snap), "sha256": sha(snap), "found_in": "Hugging Face cache",
        "loaded": 97, "total": 97, "adapted": None,
    }  # fmt: skip
    # the explicit tag and the tag-less name are the same weights
    for given in (NAME, f"timm:{ARCH}"):
        assert W.parse_weights(given).name == NAME


@pytest.mark.parametrize("bands", [1, 4])
def test_other_band_counts_adapt_the_first_conv_as_timm_does(tmp_path, monkeypatch, bands):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = file_tensors(hub_cache(tmp_path / "hf"))
    model = build_model(ModelConfig(backbone=ARCH, weights=NAME, img_size=64), 2, in_chans=bands)
    rgb = src["stem.0.weight"]  # (O, 3, k, k)
    got = model.backbone.body.state_dict()["stem_0.weight"]
    assert got.shape[1] == bands and torch.equal(got, adapt_input_conv(bands, rgb))
    # timm's rule: one band sums R, G and B; four repeat R, G, B, R scaled by 3/4
    want = rgb.sum(1, keepdim=True) if bands == 1 else torch.cat([rgb, rgb[:, :1]], 1) * 0.75
    assert torch.allclose(got, want)
    assert model.weights_report.adapted == f"stem.0: 3 -> {bands} bands"
    assert_body_equals(model, src, skip=("stem_0.weight",))


def test_presets_without_public_weights_say_so():
    with pytest.raises(ConfigError) as e:
        build_model(ModelConfig(backbone="swin_ct", weights="imagenet", img_size=64), 2)
    assert str(e.value) == (
        "model.weights imagenet: the CT paper's Swin (embed 64, depths 2-2-8-2, heads 2-4-8-16) "
        "has no public pretrained weights; train it from random init (model.weights: null), or "
        "start from backbone swin_tiny_patch4_window7_224 (preset dcswin-swint) with "
        "model.weights: imagenet"
    )
    with pytest.raises(ConfigError, match="tiny_cnn is a test-sized encoder"):
        W.parse_weights("imagenet", "tiny_cnn")
    with pytest.raises(ConfigError, match=r"no pretrained weights named 'test_convnext.nope'"):
        W.parse_weights("timm:test_convnext.nope")
    with pytest.raises(InputError, match=r"or name timm's weights: timm:resnet18.a1_in1k"):
        build_model(ModelConfig(backbone="resnet18", weights="resnet18.a1_in1k"), 2)


def _readme_preset_rows() -> dict[str, str]:
    """The README's preset table: first cell (preset names) -> last cell (what it starts from)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| (`[^|]*) \| [^|]* \| ([^|]*) \|$", text, flags=re.M)
    assert rows, "README: the preset table is missing"
    return dict(rows)


PRESETS = sorted(p.stem for p in TRAIN.parent.glob("*.yaml") if p.stem != "paper-base")
"""Every preset in configs/ (paper-base only holds the paper presets' shared settings)."""


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_says_which_weights_it_starts_from(preset):
    """configs/ and the README table agree: the weights each preset names, or random init."""
    cfg = load_config(TRAIN.parent / f"{preset}.yaml")
    rows = _readme_preset_rows()
    family = preset.split("-")[0]
    row = next((v for k, v in rows.items() if f"`{preset}`" in k), None)
    if row is None:  # a variant: the row of its family (`dcswin`, ... and their variants)
        row = next(v for k, v in rows.items() if f"`{family}`" in k and "variants" in k)
    if cfg.model.weights is None:
        assert row.startswith("random init"), (preset, row)
        return
    spec = W.parse_weights(cfg.model.weights, cfg.model.backbone, cfg.model.backbone_kwargs)
    assert spec.kind == "timm" and f"`{spec.name}`" in row, (preset, spec.name, row)


def test_a_url_needs_its_sha256():
    with pytest.raises(ConfigError) as e:
        W.parse_weights("https://example.org/w/enc.pth")
    assert str(e.value) == (
        "model.weights 'https://example.org/w/enc.pth': a URL needs the file's SHA-256: write "
        "https://example.org/w/enc.pth#sha256=<64 hex digits> (sha256sum FILE prints it)"
    )
    with pytest.raises(ConfigError, match="plain http is refused"):
        W.parse_weights("http://example.org/enc.pth#sha256=" + "0" * 64)
    spec = W.parse_weights("https://example.org/w/enc.pth#sha256=" + "AB" * 32)
    assert spec.sha256 == "ab" * 32 and spec.folder_file == "url/enc-abababab.pth"


# --------------------------------------------------------------------------- offline


def test_offline_without_a_copy_is_one_exact_line(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf" / "hub"
    with pytest.raises(W.WeightsUnavailable) as e:
        W.resolve_weights("imagenet", "resnet18")
    assert str(e.value) == (
        "weights timm:resnet18.a1_in1k (model.weights imagenet) are not on this machine: "
        f"searched the Hugging Face cache {cache}; the hub is offline (HF_HUB_OFFLINE=1). "
        "On a connected machine run `aerialct weights fetch timm:resnet18.a1_in1k --out "
        "weights`, copy the weights folder here and set AERIALCT_WEIGHTS_DIR to it"
    )
    monkeypatch.setenv(W.ENV_DIR, str(tmp_path / "copied"))
    with pytest.raises(W.WeightsUnavailable) as e:
        W.resolve_weights(NAME)
    assert str(e.value).startswith(
        f"weights {NAME} are not on this machine: searched AERIALCT_WEIGHTS_DIR "
        f"{tmp_path / 'copied'} and the Hugging Face cache {cache}; the hub is offline"
    )
    # the CLI: exit 1, one line on stderr, no traceback, before any training
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model:\n  backbone: {ARCH}\n  weights: imagenet\n")
    r = cli("train", "--config", cfg, "--data", tmp_path / "nochips", "--out", tmp_path / "run")
    assert r.code == 1 and not (tmp_path / "run").exists()
    assert r.err.strip() == (
        f"error: weights {NAME} (model.weights imagenet) are not on this machine: searched "
        f"AERIALCT_WEIGHTS_DIR {tmp_path / 'copied'} and the Hugging Face cache {cache}; the hub "
        f"is offline (HF_HUB_OFFLINE=1). On a connected machine run `aerialct weights fetch "
        f"{NAME} --out weights`, copy the weights folder here and set AERIALCT_WEIGHTS_DIR to it"
    )


def test_an_unreachable_hub_fails_fast_with_one_line(monkeypatch):
    """No HF_HUB_OFFLINE: one quick connection attempt, then the one line."""
    t0 = time.perf_counter()
    with pytest.raises(W.WeightsUnavailable) as e:
        W.resolve_weights(NAME)
    assert time.perf_counter() - t0 < 2
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"weights {NAME} are not on this machine")
    assert "the hub cannot be reached (huggingface.co:443: OSError: [Errno 101] Network is " in msg
    assert msg.endswith(f"run `aerialct weights fetch {NAME} --out weights`, copy the weights "
                        "folder here and set AERIALCT_WEIGHTS_DIR to it")  # fmt: skip
    # past the probe, huggingface_hub's own failure is the same one line (its retries skipped)
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(W, "probe", lambda *a, **k: None)
    monkeypatch.setattr(hub_http.time, "sleep", lambda s: None)
    with pytest.raises(W.WeightsUnavailable) as e:
        W.resolve_weights(NAME)
    assert "\n" not in str(e.value) and "the hub cannot be reached (LocalEntryNotFoundError" in str(
        e.value
    )


# --------------------------------------------------------------------------- downloads


def fake_hub_download(src: Path, calls: list):
    """A downloader that 'downloads' ``src`` into the hub cache, reporting like the hub."""

    def download(repo_id, filename, *, revision, tqdm_class):
        calls.append((repo_id, filename))
        snap = hub_cache_path(repo_id, filename)
        snap.parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm_class(total=src.stat().st_size, initial=0, desc=filename, unit="B")
        shutil.copyfile(src, snap)
        bar.update(src.stat().st_size // 2)
        bar.update(src.stat().st_size - src.stat().st_size // 2)
        bar.close()
        refs = snap.parents[2] / "refs"
        refs.mkdir(exist_ok=True)
        (refs / "main").write_text(REV)
        return str(snap)

    return download


def hub_cache_path(repo_id: str, filename: str) -> Path:
    repo = W.hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    return repo / "snapshots" / REV / filename


def test_download_goes_through_the_hub_cache_with_progress(tmp_path, monkeypatch):
    src = hub_cache(tmp_path / "elsewhere")
    calls: list = []
    monkeypatch.setattr(W, "probe", lambda *a, **k: None)
    monkeypatch.setattr(W, "hub_download", fake_hub_download(src, calls))
    seen = {"done": 0, "total": None, "desc": None}

    def progress(advance=1, *, total=None, description=None):
        seen["done"] += advance
        seen["total"] = total or seen["total"]
        seen["desc"] = description or seen["desc"]

    got = W.resolve_weights("imagenet", ARCH, progress=progress)
    assert calls == [(f"timm/{ARCH}.{TAG}", "model.safetensors")]
    assert got.found_in == "downloaded" and got.sha256 == sha(src)
    assert seen == {"done": src.stat().st_size, "total": src.stat().st_size,
                    "desc": f"downloading {NAME}"}  # fmt: skip
    # the second time it is in the cache: no download
    again = W.resolve_weights(NAME)
    assert again.found_in == "Hugging Face cache" and len(calls) == 1


def test_url_weights_are_checked_and_cached_by_hash(tmp_path, monkeypatch):
    src = tmp_path / "enc.pth"
    torch.save(timm.create_model(ARCH).state_dict(), src)
    digest = sha(src)
    url = f"https://example.org/models/enc.pth#sha256={digest}"
    calls = []

    def fake_get(u, dest, progress):
        calls.append(u)
        shutil.copyfile(src, dest)

    monkeypatch.setattr(W, "probe", lambda *a, **k: None)
    monkeypatch.setattr(W, "url_download", fake_get)
    got = W.resolve_weights(url)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / f"enc-{digest[:8]}.pth"
    assert (
        got.file == cached
        and got.sha256 == digest
        and calls == ["https://example.org/models/enc.pth"]
    )
    assert W.resolve_weights(url).found_in == "torch hub cache" and len(calls) == 1
    model = build_model(ModelConfig(backbone=ARCH, weights=url, img_size=64), 2)
    assert model.weights_report.record()["source"] == "https://example.org/models/enc.pth"
    bad = "https://example.org/models/other.pth#sha256=" + "0" * 64
    with pytest.raises(InputError, match="the file served has sha256"):
        W.resolve_weights(bad)
    assert not list(cached.parent.glob("other*"))  # nothing unverified kept


# --------------------------------------------------------------------------- air-gapped


def test_fetch_folder_is_used_on_an_air_gapped_machine(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = hub_cache(tmp_path / "hf")
    out = tmp_path / "weights"
    r = cli("weights", "fetch", NAME, "--out", out, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    rel = f"timm/{ARCH}.{TAG}/model.safetensors"
    assert [(w["name"], w["file"], w["sha256"]) for w in doc["weights"]] == [(NAME, rel, sha(snap))]
    man = json.loads((out / "weights.json").read_text())
    assert man["format"] == "aerialct-weights" and man["weights"][0]["file"] == rel
    # a rerun keeps the copy
    assert json.loads(cli("weights", "fetch", NAME, "-o", out, "--json").out)["weights"][0][
        "found_in"] == "already there"  # fmt: skip

    # the cluster: no hub cache, the copied folder
    copied = tmp_path / "cluster" / "w"
    shutil.copytree(out, copied)
    shutil.rmtree(tmp_path / "hf")
    monkeypatch.setenv(W.ENV_DIR, str(copied))
    model = build_model(ModelConfig(backbone=ARCH, weights="imagenet", img_size=64), 2)
    assert model.weights_report.record()["found_in"] == W.ENV_DIR
    assert_body_equals(model, file_tensors(copied / rel))
    # or a file inside the folder, named by the manifest
    monkeypatch.delenv(W.ENV_DIR)
    model = build_model(ModelConfig(backbone=ARCH, weights=str(copied / rel), img_size=64), 2)
    assert model.weights_report.record()["name"] == NAME
    # a damaged copy is refused by its hash
    data = bytearray((copied / rel).read_bytes())
    data[-1] ^= 0xFF
    (copied / rel).write_bytes(bytes(data))
    with pytest.raises(InputError, match="the copy is damaged"):
        build_model(ModelConfig(backbone=ARCH, weights=str(copied / rel), img_size=64), 2)
    with pytest.raises(InputError, match=r"model.weights is a folder; set AERIALCT_WEIGHTS_DIR"):
        build_model(ModelConfig(backbone=ARCH, weights=str(copied), img_size=64), 2)


def test_fetch_takes_configs_and_refuses_foreign_folders(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_cache(tmp_path / "hf")
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(f"model:\n  backbone: {ARCH}\n  weights: imagenet\n")
    r = cli("weights", "fetch", cfg, "--out", tmp_path / "w")
    assert r.code == 0, r.err
    assert "AERIALCT_WEIGHTS_DIR=<the copied folder>" in r.err
    assert (tmp_path / "w" / "timm" / f"{ARCH}.{TAG}" / "model.safetensors").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = cli("weights", "fetch", NAME, "--out", foreign)
    assert r.code == 1 and "a folder without weights.json" in r.err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    r = cli("weights", "fetch", "tiny-cpu", "--out", tmp_path / "w")
    assert r.code == 1 and "trains from random init" in r.err
    r = cli("weights", "fetch", "timm:resnet18.a1_in1k", "--out", tmp_path / "w2")
    assert r.code == 1 and "aerialct weights fetch timm:resnet18.a1_in1k" in r.err
    assert len(r.err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_records_the_encoder_weights_and_info_shows_them(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = hub_cache(tmp_path / "hf")
    chips = tiled_synth(tmp_path / "city", size=128)
    cfg = load_config(TRAIN, [*FAST, f"model.backbone={ARCH}", "model.backbone_kwargs={}",
                              "model.weights=imagenet"])  # fmt: skip
    train(cfg, chips, tmp_path / "run")
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    rec = ck["encoder_weights"]
    assert rec["name"] == NAME and rec["sha256"] == sha(snap) and rec["file"] == str(snap)
    r = cli("info", tmp_path / "run" / "last.pt")
    assert r.code == 0 and "encoder weights" in r.out and NAME in r.out
    assert json.loads(cli("info", tmp_path / "run" / "last.pt", "--json").out)[
        "encoder_weights"]["name"] == NAME  # fmt: skip
    # a resumed run keeps the record and never looks the weights up again
    shutil.rmtree(tmp_path / "hf")
    more = load_config(tmp_path / "run" / "config.yaml", ["train.epochs=2"])
    train(more, chips, tmp_path / "run", resume=True)
    ck2 = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck2["encoder_weights"] == rec and ck2["epoch"] == 2
    # random init is recorded as such
    scratch = load_config(TRAIN, FAST)
    train(scratch, chips, tmp_path / "scratch")
    assert (
        torch.load(tmp_path / "scratch" / "last.pt", weights_only=True)["encoder_weights"] is None
    )
    assert "random init" in cli("info", tmp_path / "scratch" / "last.pt").out
