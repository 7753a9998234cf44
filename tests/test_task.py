"""SegmentationTask: named loss terms, their combination, gradients, edge batches, gather hook."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aerialct.engine.task import CONTRAST_MODES, SegmentationTask
from aerialct.errors import ConfigError
from aerialct.losses import LossConfig
from aerialct.losses.segmentation import dice_loss, soft_cross_entropy
from aerialct.models import ModelConfig, build_model

K = 4


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {
        bb: build_model(ModelConfig(backbone=bb, decoder_channels=16, img_size=64), K)
        for bb in ("tiny_swin", "tiny_cnn")
    }


def batch(b: int = 2, size: int = 64):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(b, 3, size, size, generator=g)
    masks = torch.zeros(b, size, size, dtype=torch.long)
    h = size // 2
    masks[:, :h, h:] = 1
    masks[:, h:, :h] = 2
    masks[:, h:, h:] = 3
    masks[0, :8] = 255
    return images, masks


@pytest.mark.parametrize("mode", CONTRAST_MODES)
def test_terms_and_their_combination(models, mode):
    cfg = LossConfig(contrast=mode, ct_min_samples=2, mscs_min_pixels=2)
    task = SegmentationTask(models["tiny_swin"], cfg, K)
    out = task(*batch())
    expected = {"loss", "logits", "ce", "dice"}
    if mode.startswith("ct"):
        expected.add("ct")
    if mode.endswith("mscs"):
        expected |= {"ms", "cs"}
    assert set(out) == expected
    assert task.terms[0] == "loss" and set(task.terms) == expected - {"logits"}
    assert out["logits"].shape == (2, K, 64, 64)
    for k in expected - {"loss", "logits"}:
        assert not out[k].requires_grad and torch.isfinite(out[k])
    total = out["ce"] + cfg.dice_weight * out["dice"]
    if "ct" in out:
        assert out["ct"] > 0
        total = total + cfg.ct_lambda * out["ct"] / max(1.0, out["ct"].item())
    if "ms" in out:
        assert out["ms"] > 0 and out["cs"] > 0
        total = total + cfg.ms_lambda * out["ms"] + cfg.cs_lambda * out["cs"]
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-5)


@pytest.mark.parametrize("backbone", ["tiny_swin", "tiny_cnn"])
def test_gradients_reach_backbone_and_all_heads(models, backbone):
    model = models[backbone]
    task = SegmentationTask(model, LossConfig(contrast="ct-infonce+mscs", ct_min_samples=2), K)
    task.zero_grad(set_to_none=True)
    task(*batch())["loss"].backward()
    first = next(model.backbone.body.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    for name in ("ct", "mscs"):
        grads = [p.grad for p in task.heads[name].parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


def test_contrast_alone_drives_the_backbone(models):
    # the CT term alone (no segmentation loss) must reach the first backbone layer
    model = models["tiny_cnn"]
    task = SegmentationTask(model, LossConfig(contrast="ct-cl", ct_min_samples=2), K)
    _, feats = model.forward_with_features(batch()[0])
    ct, n = task.heads["ct"](feats, batch()[1])
    assert n > 0
    model.zero_grad(set_to_none=True)
    ct.backward()
    stem = next(model.backbone.body.parameters())
    assert stem.grad is not None and stem.grad.abs().sum() > 0


@pytest.mark.parametrize("fill", [255, 2])
def test_empty_and_one_class_batches(models, fill):
    task = SegmentationTask(models["tiny_swin"], LossConfig(contrast="ct-cl+mscs"), K)
    images, _ = batch()
    masks = torch.full((2, 64, 64), fill, dtype=torch.long)
    task.zero_grad(set_to_none=True)
    out = task(images, masks)
    for k in ("ct", "ms", "cs"):
        assert out[k].item() == 0.0
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    # every head parameter is part of the graph (DDP needs that), with a zero gradient
    for p in task.heads.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_heads_are_not_part_of_the_inference_model(models):
    model = models["tiny_cnn"]
    task = SegmentationTask(model, LossConfig(contrast="ct-cl+mscs"), K)
    model_ids = {id(p) for p in task.model.parameters()}
    assert not model_ids & {id(p) for p in task.heads.parameters()}
    assert not any("proj" in k or "heads" in k for k in task.model.state_dict())
    assert set(task.heads) == {"ct", "mscs"}
    assert SegmentationTask(model, LossConfig(), K).heads.state_dict() == {}


def test_unknown_contrast_mode_is_refused(models):
    with pytest.raises(ConfigError, match=r"loss\.contrast"):
        SegmentationTask(models["tiny_cnn"], LossConfig(contrast="ct"), K)  # type: ignore[arg-type]


def test_gather_hook_pools_samples(models):
    calls = []

    def fake_gather(t):  # a second "rank" holding a detached copy of the same rows
        calls.append(tuple(t.shape))
        return torch.cat([t, t.detach().clone()], 0)

    cfg = LossConfig(contrast="ct-cl+mscs", ct_min_samples=2, ct_stages=(0, 1))
    task = SegmentationTask(models["tiny_cnn"], cfg, K, gather=fake_gather)
    out = task(*batch())
    out["loss"].backward()
    # CT: pos/neg embeddings + their validity, all stages side by side;
    # MS/CS: embeddings, labels, validity per stage (4 stages)
    assert len(calls) == 4 + 3 * 4
    assert torch.isfinite(out["loss"])


def test_soft_ce_with_ignore_and_smoothing():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, 0] = 255
    valid = target != 255
    lp = logits.permute(0, 2, 3, 1)[valid].log_softmax(-1)  # (N, 3)
    onehot = F.one_hot(target[valid], 3).float()
    smooth = onehot * 0.9 + 0.1 / 3
    want = -(smooth * lp).sum(-1).mean()
    assert soft_cross_entropy(logits, target, 255, 0.1).item() == pytest.approx(
        want.item(), rel=1e-5
    )
    assert soft_cross_entropy(logits, torch.full_like(target, 255)).item() == 0.0


def test_dice_closed_form():
    target = torch.tensor([[[0, 1], [1, 255]]])
    perfect = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 100
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(1, 3, 2, 2)  # p = 1/3 everywhere; classes 0 and 1 present
    # class 0: 2*(1/3) / (1 + 1) ; class 1: 2*(2/3) / (1 + 2), over the 3 labelled pixels
    d0, d1 = 1 - (2 / 3) / 2, 1 - (4 / 3) / 3
    assert dice_loss(uniform, target).item() == pytest.approx((d0 + d1) / 2, rel=1e-5)
    assert math.isfinite(dice_loss(uniform, torch.full_like(target, 255)).item())


def _ddp_worker(rank: int, world: int, init: str, queue) -> None:
    import torch.distributed as dist

    from aerialct.engine.distributed import gather_with_grad

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = build_model(ModelConfig(backbone="tiny_cnn", decoder_channels=16, img_size=64), K)
        cfg = LossConfig(contrast="ct-infonce+mscs", ct_min_samples=2)
        task = SegmentationTask(model, cfg, K, gather=gather_with_grad)
        images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(rank))
        masks = torch.zeros(2, 64, 64, dtype=torch.long)
        masks[:, :, 32:] = 1 + rank  # the ranks hold different classes
        masks[:, 32:] = 3
        out = task(images, masks)
        out["loss"].backward()
        head_grad = sum(float(p.grad.abs().sum()) for p in task.heads.parameters())
        queue.put((rank, {k: float(out[k]) for k in ("ce", "ct", "ms")}, head_grad))
    finally:
        dist.destroy_process_group()


def test_ddp_gather_pools_contrastive_samples_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, init, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    (_, r0, g0), (_, r1, g1) = results
    assert r0["ce"] != r1["ce"]  # local segmentation terms differ ...
    assert r0["ms"] == pytest.approx(r1["ms"])  # ... the pooled contrastive ones agree
    assert r0["ct"] == pytest.approx(r1["ct"])
    assert g0 > 0 and g1 > 0


def test_released_modes_clamp_ct_and_use_released_mscs(models):
    cfg = LossConfig(
        contrast="ct-cl+mscs",
        ct_mode="released",
        mscs_mode="released",
        ct_min_samples=2,
        mscs_min_pixels=2,
        ct_lambda=2.0,
    )
    task = SegmentationTask(models["tiny_cnn"], cfg, K)
    assert task.heads["ct"].rule == "released"
    mscs = task.heads["mscs"]
    assert mscs.anchors == "per-image-class"
    assert all(p.layers == 1 for p in mscs.projectors.values())
    out = task(*batch())
    total = out["ce"] + out["dice"] + 2.0 * out["ct"].clamp(max=1.0)
    total = total + cfg.ms_lambda * out["ms"] + cfg.cs_lambda * out["cs"]
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-5)
    paper = SegmentationTask(models["tiny_cnn"], LossConfig(contrast="mscs"), K)
    assert paper.heads["mscs"].anchors == "per-class"
    assert all(p.layers == 2 for p in paper.heads["mscs"].projectors.values())


def test_loss_modes_are_validated(models):
    for key in ("ct_mode", "mscs_mode"):
        cfg = LossConfig(contrast="ct-cl+mscs", **{key: "code"})  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=rf"loss\.{key}"):
            SegmentationTask(models["tiny_cnn"], cfg, K)
    cfg = LossConfig(contrast="mscs", mscs_features="neck")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"loss\.mscs_features"):
        SegmentationTask(models["tiny_cnn"], cfg, K)


def test_mode_keys_load_from_config_overrides():
    from aerialct.config import load_config

    cfg = load_config(
        None,
        [
            "loss.ct_mode=released",
            "loss.mscs_anchors=per-image-class",
            "loss.mscs_proj_layers=3",
            "loss.mscs_features=decoder",
        ],
    )
    assert cfg.loss.ct_mode == "released" and cfg.loss.mscs_mode == "paper"
    assert cfg.loss.mscs_settings() == ("per-image-class", 3)
    with pytest.raises(ConfigError):
        load_config(None, ["loss.mscs_anchors=per-pixel"])


@pytest.mark.parametrize("decoder", ["fpn", "dcswin", "unetformer"])
def test_mscs_on_decoder_features(decoder):
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(backbone="tiny_cnn", decoder=decoder, decoder_channels=8, img_size=64), K
    )
    cfg = LossConfig(contrast="mscs", mscs_features="decoder", mscs_min_pixels=2, ms_lambda=1.0)
    task = SegmentationTask(model, cfg, K)
    # projectors sized for the decoder's maps (8 channels; dcswin's DCFAM keeps the
    # encoder's widths), not the encoder's
    dec_ch = model.decoder_feature_channels
    assert dec_ch == (model.feature_channels if decoder == "dcswin" else [8] * 4)
    projectors = task.heads["mscs"].projectors
    assert all(p.pre[0].in_features == dec_ch[int(s)] for s, p in projectors.items())
    images, masks = batch()
    _, enc, dec = model.forward_with_decoder_features(images)
    assert [d.shape[-2:] for d in dec] == [e.shape[-2:] for e in enc]
    ms, cs = task.heads["mscs"](dec, masks)
    assert ms > 0 and cs > 0
    model.zero_grad(set_to_none=True)
    (ms + cs).backward()
    # the contrast alone trains the decoder's multi-scale layers
    grads = [p.grad for n, p in model.decoder.named_parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    out = task(images, masks)
    assert torch.isfinite(out["loss"]) and out["ms"] > 0


def test_terms_name_the_focal_term_when_it_is_on(models):
    task = SegmentationTask(models["tiny_cnn"], LossConfig(focal_weight=0.5), K)
    out = task(*batch())
    assert task.terms == ("loss", "ce", "dice", "focal")
    assert set(out) == {*task.terms, "logits"}
