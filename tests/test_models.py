"""Backbone adapter contract over timm families, decoders, presets, input sizes, local weights."""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from aerialct.errors import ConfigError, InputError
from aerialct.models import BackboneAdapter, ModelConfig, build_model
from aerialct.models.backbone import PRESETS

FAMILIES = {
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=4),
    ),
    "poolformer": ("poolformer_s12", {}),
    "convnext": ("convnext_atto", dict(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1))),
    "resnet": ("resnet10t", {}),  # 5 levels incl. the stride-2 stem: the adapter takes the last 4
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_adapter_contract_matches_real_outputs(family):
    name, kwargs = FAMILIES[family]
    bb = BackboneAdapter(name, img_size=64, kwargs=kwargs)
    assert bb.reductions == [4, 8, 16, 32]
    assert len(bb.channels) == 4
    x = torch.randn(2, 3, 64, 96)
    feats = bb(x)
    assert len(feats) == 4
    for f, c, r in zip(feats, bb.channels, bb.reductions, strict=True):
        assert tuple(f.shape) == (2, c, 64 // r, 96 // r)  # channel-first, exact grid
        assert f.is_contiguous()


def test_swin_channel_last_is_converted():
    name, kwargs = FAMILIES["swin"]
    bb = BackboneAdapter(name, img_size=64, kwargs=kwargs)
    raw = bb.body(torch.randn(1, 3, 64, 64))
    assert raw[0].shape[-1] == bb.channels[0]  # timm gives NHWC for Swin
    out = bb(torch.randn(1, 3, 64, 64))
    assert out[0].shape[1] == bb.channels[0]


def test_presets_reproduce_the_paper_encoders():
    swin = BackboneAdapter("swin_ct", img_size=64)
    assert swin.channels == [64, 128, 256, 512]
    stages = [getattr(swin.body, f"layers_{i}") for i in range(4)]
    assert [len(s.blocks) for s in stages] == [2, 2, 8, 2]
    assert [s.blocks[0].attn.num_heads for s in stages] == [2, 4, 8, 16]
    pool = BackboneAdapter("poolformer_s12", img_size=64)
    assert pool.channels == [64, 128, 320, 512] and pool.reductions == [4, 8, 16, 32]
    assert set(PRESETS) >= {"swin_ct", "poolformer_s12", "tiny_swin", "tiny_cnn"}


def test_out_indices_validation():
    with pytest.raises(ConfigError, match="out_indices"):
        BackboneAdapter("resnet10t", out_indices=(1, 2, 3, 7))
    with pytest.raises(ConfigError, match="increasing"):
        BackboneAdapter("resnet10t", out_indices=(3, 2, 1, 4))
    bb = BackboneAdapter("resnet10t", out_indices=(-3, -2, -1), img_size=64)
    assert bb.out_indices == (2, 3, 4) and bb.reductions == [8, 16, 32]


def test_unknown_backbone_and_bad_kwargs():
    with pytest.raises(ConfigError, match="neither a preset"):
        BackboneAdapter("no_such_net_xyz")
    with pytest.raises(ConfigError, match="backbone_kwargs"):
        BackboneAdapter("resnet10t", kwargs={"not_an_arg": 1})


@pytest.mark.parametrize("decoder", ["dcswin", "unetformer", "fpn"])
@pytest.mark.parametrize("backbone", ["tiny_swin", "tiny_cnn"])
def test_decoders_give_logits_at_input_size(backbone, decoder):
    cfg = ModelConfig(backbone=backbone, decoder=decoder, decoder_channels=16, img_size=64)
    model = build_model(cfg, num_classes=5, in_chans=4)
    x = torch.randn(2, 4, 64, 96)
    logits, feats = model.forward_with_features(x)
    assert logits.shape == (2, 5, 64, 96)
    assert [f.shape[1] for f in feats] == model.feature_channels
    assert model.feature_reductions == [4, 8, 16, 32]
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert model.backbone.body.parameters().__next__().grad.abs().sum() > 0


def test_decoders_need_four_stages():
    cfg = ModelConfig(backbone="resnet10t", decoder="dcswin", out_indices=(2, 3, 4))
    with pytest.raises(ConfigError, match="needs 4 backbone stages"):
        build_model(cfg, 3)
    cfg.decoder = "fpn"
    model = build_model(cfg, 3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_check_input_size_names_nearest_valid_size():
    model = build_model(ModelConfig(backbone="tiny_swin", img_size=64), 3)
    model.check_input_size(64, 96)
    with pytest.raises(InputError, match=r"nearest valid size is 96x64"):
        model.check_input_size(100, 70)
    with pytest.raises(InputError, match=r"32x32"):
        model.check_input_size(8, 8)


def tiny_swin_timm(features: bool):
    name, kwargs = FAMILIES["swin"]
    return timm.create_model(name, pretrained=False, features_only=features, img_size=64, **kwargs)


def test_weights_full_classifier_checkpoint(tmp_path, caplog):
    src = tiny_swin_timm(False)  # a classification checkpoint: layers.0..., norm, head
    path = tmp_path / "swin.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    name, kwargs = FAMILIES["swin"]
    cfg = ModelConfig(backbone=name, backbone_kwargs=kwargs, weights=str(path), img_size=64)
    with caplog.at_level(logging.INFO, logger="aerialct"):
        model = build_model(cfg, 3)
    rep = model.weights_report
    assert rep.loaded == rep.total and not rep.missing and not rep.mismatched
    assert sorted(rep.unexpected) == ["head.fc.bias", "head.fc.weight", "norm.bias", "norm.weight"]
    got = model.backbone.body.state_dict()["layers_2.blocks.0.attn.qkv.weight"]
    assert torch.equal(got, src.state_dict()["layers.2.blocks.0.attn.qkv.weight"])
    assert "4 unexpected" in caplog.text


def test_weights_partial_and_prefixed(tmp_path, caplog):
    src = tiny_swin_timm(True).state_dict()
    keys = list(src)
    part = {f"module.backbone.{k}": v for k, v in src.items() if k.startswith("layers_0")}
    part["decoder.extra.weight"] = torch.zeros(3)
    part["layers_1.blocks.0.norm1.weight"] = torch.zeros(99)  # wrong shape
    path = tmp_path / "part.pt"
    torch.save(part, path)
    name, kwargs = FAMILIES["swin"]
    cfg = ModelConfig(backbone=name, backbone_kwargs=kwargs, weights=str(path), img_size=64)
    with caplog.at_level(logging.WARNING, logger="aerialct"):
        model = build_model(cfg, 3)
    rep = model.weights_report
    n0 = sum(k.startswith("layers_0") for k in keys)
    assert rep.loaded == n0
    assert len(rep.missing) == len(keys) - n0
    assert rep.unexpected == ["decoder.extra.weight"]
    assert rep.mismatched == ["layers_1.blocks.0.norm1.weight"]
    assert f"{len(keys) - n0} missing, 1 unexpected, 1 shape-mismatched" in caplog.text


def test_weights_that_match_nothing_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(2)}, path)
    with pytest.raises(InputError, match="none of its 1 tensors match"):
        build_model(ModelConfig(backbone="tiny_cnn", weights=str(path), img_size=64), 3)
    with pytest.raises(InputError, match="not found"):
        build_model(ModelConfig(backbone="tiny_cnn", weights=str(tmp_path / "x.pt")), 3)
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(InputError, match="cannot read weights"):
        build_model(ModelConfig(backbone="tiny_cnn", weights=str(bad)), 3)


def test_weights_of_another_size_are_refused_with_the_reason(tmp_path):
    wide = BackboneAdapter("tiny_cnn", img_size=64, kwargs={"dims": (24, 48, 96, 192)})
    path = tmp_path / "wide.pt"
    torch.save(wide.body.state_dict(), path)
    with pytest.raises(InputError, match="match by name but not by shape"):
        build_model(ModelConfig(backbone="tiny_cnn", weights=str(path), img_size=64), 3)
    # rebuilding from a checkpoint skips the (possibly gone) pretrained file
    gone = ModelConfig(backbone="tiny_cnn", weights=str(tmp_path / "gone.pt"), img_size=64)
    assert build_model(gone, 3, load_weights=False).weights_report is None


def test_random_init_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="aerialct"):
        build_model(ModelConfig(backbone="tiny_cnn", img_size=64), 3)
    assert "random init" in caplog.text


def test_fixed_size_swin_when_timm_has_no_dynamic_sizes(monkeypatch):
    # timm < 1.0.30's Swin has no dynamic_img_size: the adapter then pins model.img_size
    from aerialct.models import backbone as bmod

    real = bmod._accepts
    monkeypatch.setattr(
        bmod, "_accepts", lambda fn, arg: arg != "dynamic_img_size" and real(fn, arg)
    )
    bb = BackboneAdapter("tiny_swin", img_size=64)
    assert bb.fixed_size
    bb.check_input_size(64, 64)
    assert bb(torch.randn(1, 3, 64, 64))[0].shape == (1, 16, 16, 16)
    with pytest.raises(InputError, match="exactly 64x64"):
        bb.check_input_size(96, 96)


# Parameter counts of the decoders at the CT paper's encoder widths, as measured equal to the
# reference code (GeoSeg's DCSwin.py / UNetFormer.py, and the CT authors' fork) by
# benchmarks/compare_decoders.py, whose outputs after weight transfer agree to 1e-12 in
# float64 (benchmarks/RESULTS.md). A change to either decoder must be re-checked there.
REFERENCE_PARAMS = {
    ("dcswin", (64, 128, 256, 512)): 8_055_746,
    ("dcswin", (64, 128, 320, 512)): 9_701_394,
    ("unetformer", (64, 128, 256, 512)): 511_006,  # GeoSeg's training-only aux head excluded
}


@pytest.mark.parametrize(("decoder", "widths"), list(REFERENCE_PARAMS))
def test_decoders_have_the_reference_parameter_counts(decoder, widths):
    from aerialct.models.decoders import build_decoder

    dec = build_decoder(decoder, list(widths), 6, 64)
    assert sum(p.numel() for p in dec.parameters()) == REFERENCE_PARAMS[(decoder, widths)]


def test_decoder_comparison_script_maps_every_tensor_once():
    # benchmarks/compare_decoders.py's key map (the part that runs without a reference checkout)
    import importlib.util
    from pathlib import Path

    from aerialct.models.decoders import build_decoder

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_decoders.py"
    spec = importlib.util.spec_from_file_location("compare_decoders", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in ("dcswin", "unetformer"):
        keys = list(build_decoder(name, [64, 128, 256, 512], 6, 64).state_dict())
        mapped = [mod.reference_key(name, k) for k in keys]
        assert len(set(mapped)) == len(keys)  # one reference tensor per tensor
    assert mod.reference_key("unetformer", "b4.attn.local3.0.weight") == "b4.attn.local1.0.weight"
    assert mod.reference_key("dcswin", "down8_16b.skip.1.bias") == "dcfam.down232.downsample.1.bias"
    with pytest.raises(SystemExit, match=r"nowhere/geoseg/models/DCSwin.py: not found"):
        mod.load_reference(Path("nowhere"), "DCSwin")
