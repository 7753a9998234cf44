"""CT patch contrast: every rule pinned by hand-made masks / embeddings with closed-form values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from aerialct.errors import ConfigError
from aerialct.losses.ct import (
    PatchContrastLoss,
    batched_class_losses,
    block_class_counts,
    block_labels,
    cap_loss,
    class_contrast_loss,
    ct_cl_loss,
    ct_infonce_loss,
    mine_hard_pairs,
    pack_valid_first,
    released_class_losses,
    sample_per_class,
)

IGN = 255  # ignore


def quadrant_mask() -> torch.Tensor:
    """8x8 mask (B=1) whose blocks exercise every assignment rule.

    top-left 4x4: class 0 | top-right 4x4: class 1 with one ignore pixel
    bottom-left: all ignore | bottom-right: 2x2 sub-blocks 0 / 2 / mixed(0,2) / 2 + 3 ignore
    """
    m = torch.full((8, 8), IGN, dtype=torch.long)
    m[:4, :4] = 0
    m[:4, 4:] = 1
    m[0, 4] = IGN
    m[4:6, 4:6] = 0
    m[4:6, 6:8] = 2
    m[6:8, 4:6] = torch.tensor([[0, 2], [2, 0]])
    m[6:8, 6:8] = torch.tensor([[2, IGN], [IGN, IGN]])
    return m[None]


def test_block_counts_are_per_token_class_histograms():
    counts = block_class_counts(quadrant_mask(), 4, 3, IGN)  # (1, 3, 2, 2)
    assert counts.shape == (1, 3, 2, 2)
    assert counts[0, :, 0, 0].tolist() == [16, 0, 0]
    assert counts[0, :, 0, 1].tolist() == [0, 15, 0]  # the ignore pixel counts nowhere
    assert counts[0, :, 1, 0].tolist() == [0, 0, 0]
    assert counts[0, :, 1, 1].tolist() == [6, 0, 7]


def test_block_labels_stride_4():
    pos, neg = block_labels(quadrant_mask(), 4, 3, IGN)  # (1, 3, 2, 2) each
    # token order (row-major): TL, TR, BL, BR
    assert pos[0].flatten(1).tolist() == [
        [True, False, False, False],  # class 0: TL pure; BR mixed 0/2 -> discarded
        [False, True, False, False],  # class 1: TR pure despite its ignore pixel
        [False, False, False, False],  # class 2: BR mixed -> discarded
    ]
    assert neg[0].flatten(1).tolist() == [
        [False, True, False, False],  # class 0: TR has no 0; BL all-ignore discarded
        [True, False, False, True],  # class 1: TL and BR contain no 1
        [True, True, False, False],  # class 2: BR contains 2 (mixed) -> not a negative
    ]


def test_block_labels_stride_2_bottom_right():
    pos, neg = block_labels(quadrant_mask(), 2, 3, IGN)  # (1, 3, 4, 4)
    # bottom-right quadrant = tokens (2..3, 2..3)
    p = pos[0, :, 2:, 2:].flatten(1).tolist()
    n = neg[0, :, 2:, 2:].flatten(1).tolist()
    # sub-blocks: [0-pure, 2-pure, mixed 0/2, 2 + three ignore]
    assert p == [[True, False, False, False], [False] * 4, [False, True, False, True]]
    assert n == [[False, True, False, True], [True] * 4, [True, False, False, False]]
    # all-ignore blocks (bottom-left) are neither positive nor negative for any class
    assert not pos[0, :, 2:, :2].any() and not neg[0, :, 2:, :2].any()


def test_block_labels_refuse_misaligned_mask():
    with pytest.raises(ValueError, match="multiple of the stage reduction"):
        block_labels(torch.zeros(1, 6, 8, dtype=torch.long), 4, 3)


def unit(*angles_deg: float) -> torch.Tensor:
    a = torch.tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], 1)  # (N, 2)


def test_hard_mining_keeps_least_similar_positives_and_most_similar_negatives():
    # positives 0..5 -> pairs (0,3), (1,4), (2,5) with angles 10, 80, 40 degrees apart
    pos = unit(0, 0, 0, 10, 80, 40)
    # negative pairs (pos_k, neg_k), k < min(6, 4) = 4: 100, 20, 170, 50 degrees apart
    neg = unit(100, 20, 170, 60)
    pairs = mine_hard_pairs(pos, neg, keep_fraction=0.5)
    # m = 3 positive pairs -> keep floor(1.5) = 1: the least similar, (1, 4)
    assert pairs.pos_a.tolist() == [1] and pairs.pos_b.tolist() == [4]
    assert pairs.pos_cos.tolist() == pytest.approx([math.cos(math.radians(80))])
    # n = 4 negative pairs -> keep 2: the most similar, k = 1 (20 deg) then k = 3 (50 deg)
    assert pairs.neg_p.tolist() == [1, 3] and pairs.neg_n.tolist() == [1, 3]
    assert pairs.neg_cos.tolist() == pytest.approx([math.cos(math.radians(a)) for a in (20, 50)])
    full = mine_hard_pairs(pos, neg, keep_fraction=1.0)
    assert sorted(full.pos_a.tolist()) == [0, 1, 2] and sorted(full.neg_n.tolist()) == [0, 1, 2, 3]


def test_cl_loss_closed_form_with_smoothing():
    pos_cos = torch.tensor([0.5, 0.0])
    neg_cos = torch.tensor([-0.5])
    got = ct_cl_loss(pos_cos, neg_cos, smoothing=0.1)
    # s = (cos + 1) / 2 -> 0.75, 0.5 (target 0.95) and 0.25 (target 0.05)
    terms = [
        -(0.95 * math.log(0.75) + 0.05 * math.log(0.25)),
        -(0.95 * math.log(0.5) + 0.05 * math.log(0.5)),
        -(0.05 * math.log(0.25) + 0.95 * math.log(0.75)),
    ]
    assert got.item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    # without smoothing it is the plain BCE
    plain = ct_cl_loss(pos_cos, neg_cos, smoothing=0.0)
    assert plain.item() == pytest.approx(
        -(math.log(0.75) + math.log(0.5) + math.log(0.75)) / 3, rel=1e-6
    )


def test_infonce_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    k = torch.nn.functional.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    n = torch.nn.functional.normalize(torch.randn(7, 8, generator=g, dtype=torch.float64), dim=1)
    t = 0.1
    direct = 0.0
    for i in range(5):
        num = math.exp(float(q[i] @ k[i]) / t)
        den = num + sum(math.exp(float(q[i] @ n[j]) / t) for j in range(7))
        direct += -math.log(num / den)
    assert ct_infonce_loss(q, k, n, t).item() == pytest.approx(direct / 5, rel=1e-9)


def test_class_loss_infonce_uses_hard_pairs_only():
    pos = unit(0, 0, 0, 10, 80, 40)
    neg = unit(100, 20, 170, 60)
    got = class_contrast_loss(pos, neg, "infonce", keep_fraction=0.5, temperature=0.1)
    # query pos[1], key pos[4] (80 deg); negatives neg[1], neg[3] (from pos[1] / pos[3])
    q = pos[1]
    s_pos = float(q @ pos[4]) / 0.1
    s_neg = [float(q @ neg[j]) / 0.1 for j in (1, 3)]
    want = -s_pos + math.log(math.exp(s_pos) + sum(math.exp(v) for v in s_neg))
    assert got.item() == pytest.approx(want, rel=1e-9)
    cl = class_contrast_loss(pos, neg, "cl", keep_fraction=0.5, smoothing=0.1)
    assert cl.item() == pytest.approx(
        ct_cl_loss(
            torch.tensor([math.cos(math.radians(80))]),
            torch.tensor([math.cos(math.radians(20)), math.cos(math.radians(50))]),
            0.1,
        ).item(),
        rel=1e-6,
    )


def test_cap_rescales_above_one_and_keeps_gradient():
    big = torch.tensor(4.0, requires_grad=True)
    capped = cap_loss(big)
    capped.backward()
    assert capped.item() == pytest.approx(1.0)
    assert big.grad.item() == pytest.approx(0.25)  # scaled, not zeroed (a clamp gives 0)
    small = torch.tensor(0.5, requires_grad=True)
    out = cap_loss(small)
    out.backward()
    assert out.item() == pytest.approx(0.5) and small.grad.item() == pytest.approx(1.0)


def two_image_features(c: int = 2):
    """Image 0 is all class 0 with tokens e1; image 1 all class 1 with tokens e2 (4x4, stride 2)."""
    mask = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)]).long()  # (2, 4, 4)
    feats = torch.zeros(2, c, 2, 2)
    feats[0, 0] = 1.0
    feats[1, 1] = 1.0
    return mask, feats


def identity_heads(loss: PatchContrastLoss) -> PatchContrastLoss:
    for h in loss.heads:
        h.net = nn.Identity()
    return loss


def test_patch_loss_pools_over_batch_closed_form():
    mask, feats = two_image_features()
    loss = identity_heads(
        PatchContrastLoss([2], [2], 2, mode="infonce", stages=(0,), min_samples=4, temperature=1.0)
    )
    value, n_terms = loss([feats], mask)
    # Per class: 4 positives in one image, 4 negatives in the other (only pooling pairs them).
    # m = 2 positive pairs (cos 1) -> keep 1; 4 negative pairs (cos 0) -> keep 2.
    # InfoNCE (t = 1) per query: -log(e^1 / (e^1 + 2 e^0)) = log(1 + 2 / e); both classes alike.
    assert n_terms == 2
    assert value.item() == pytest.approx(math.log1p(2 / math.e), rel=1e-6)


def test_patch_loss_skips_stage_class_with_too_few_samples():
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[:, :, 4:] = 1
    feats = [torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2)]
    loss = PatchContrastLoss([3, 3], [2, 4], 2, stages=(0, 1), min_samples=5)
    # stride 2: 8 positives / 8 negatives per class -> 2 terms; stride 4: 2 / 2 -> skipped
    assert loss(feats, mask)[1] == 2
    loss.min_samples = 2
    assert loss(feats, mask)[1] == 4


def test_patch_loss_empty_and_one_class_give_zero():
    feats = [torch.randn(2, 3, 4, 4, requires_grad=True)]
    loss = PatchContrastLoss([3], [2], 3, stages=(0,))
    for fill in (IGN, 1):
        value, n = loss(feats, torch.full((2, 8, 8), fill))
        assert value.item() == 0.0 and n == 0
        value.backward()  # still a valid graph
        assert torch.isfinite(feats[0].grad).all()


def test_patch_loss_gradient_reaches_features_and_heads():
    mask = torch.zeros(2, 8, 8, dtype=torch.long)
    mask[:, 4:] = 1
    mask[1, :, :4] = 2
    f = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = PatchContrastLoss([3], [2], 3, stages=(0,), min_samples=2)
    value, _ = loss([f], mask)
    value.backward()
    assert f.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())


def test_patch_loss_rejects_bad_config():
    with pytest.raises(ConfigError, match="ct_stages"):
        PatchContrastLoss([3], [4], 2, stages=(0, 1))
    with pytest.raises(ConfigError, match="keep_fraction"):
        PatchContrastLoss([3], [4], 2, stages=(0,), keep_fraction=0.0)


def test_sample_per_class_draws_flagged_rows_without_replacement():
    flags = torch.zeros(20, 3, dtype=torch.bool)
    flags[:12, 0] = True
    flags[5:8, 1] = True
    idx, valid = sample_per_class(flags, 8, torch.Generator().manual_seed(0))
    assert idx.shape == (8, 3)
    assert valid.sum(0).tolist() == [8, 3, 0]  # min(limit, flagged)
    for c in range(3):
        rows = idx[valid[:, c], c]
        assert flags[rows, c].all() and rows.unique().numel() == rows.numel()
        assert valid[: int(valid[:, c].sum()), c].all()  # valid draws come first


def test_pack_valid_first():
    emb = torch.arange(12.0).view(4, 3, 1)
    valid = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)
    e, v = pack_valid_first(emb, valid, torch.Generator().manual_seed(0))
    assert v.sum(0).tolist() == [2, 3, 1] and v[:2, 0].all() and v[:3, 1].all() and v[0, 2]
    assert sorted(e[:2, 0, 0].tolist()) == [3.0, 9.0] and e[0, 2, 0].item() == 11.0


@pytest.mark.parametrize("mode", ["cl", "infonce"])
@pytest.mark.parametrize("keep", [0.5, 0.3, 1.0])
def test_batched_losses_equal_per_class_reference(mode, keep):
    g = torch.Generator().manual_seed(7)
    s, t, k, d = 12, 10, 4, 5
    pos = torch.nn.functional.normalize(
        torch.randn(s, k, d, generator=g, dtype=torch.float64), dim=-1
    )
    neg = torch.nn.functional.normalize(
        torch.randn(t, k, d, generator=g, dtype=torch.float64), dim=-1
    )
    n_pos, n_neg = [12, 7, 3, 9], [10, 4, 6, 1]  # class 2: 3 positives, class 3: 1 negative
    pv = torch.arange(s)[:, None] < torch.tensor(n_pos)
    nv = torch.arange(t)[:, None] < torch.tensor(n_neg)
    loss, ok = batched_class_losses(pos, pv, neg, nv, mode, keep, 0.1, 0.1, min_samples=4)
    assert ok.tolist() == [True, True, False, False]
    for c in range(2):
        ref = class_contrast_loss(pos[: n_pos[c], c], neg[: n_neg[c], c], mode, keep, 0.1, 0.1)
        assert loss[c].item() == pytest.approx(ref.item(), rel=1e-9)
    assert loss[2:].tolist() == [0.0, 0.0]


def test_pooled_counts_equal_direct_counts():
    from aerialct.losses.ct import pool_counts, token_class_counts

    g = torch.Generator().manual_seed(3)
    mask = torch.randint(0, 4, (2, 16, 16), generator=g)
    mask[mask == 3] = IGN
    fine = token_class_counts(mask, 2, 3, IGN)  # (2, 8, 8, 4)
    assert torch.equal(pool_counts(fine, 4), token_class_counts(mask, 8, 3, IGN))
    assert fine.sum().item() == mask.numel()  # every pixel in exactly one bin
    assert fine[..., 3].sum().item() == int((mask == IGN).sum())


# ---------------------------------------------------------------------------
# released mode: the authors' code's formulas, from hand-made inputs


def test_block_labels_released_rule():
    pos, neg = block_labels(quadrant_mask(), 4, 3, IGN, rule="released")  # (1, 3, 2, 2)
    # token order TL (all 0), TR (1 + one ignore), BL (all ignore), BR (0/2/ignore mix)
    assert pos[0].flatten(1).tolist() == [
        [True, False, False, False],  # class 0: TL
        [False, False, False, False],  # class 1: TR holds an ignore pixel -> dropped
        [False, False, False, False],
    ]
    assert neg[0].flatten(1).tolist() == [
        [False, True, True, False],  # class 0: TR and the all-ignore BL are negatives
        [True, False, True, True],
        [True, True, True, False],
    ]


def packed(*groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-class sample sets (N_c, D) valid-first into (S, K, D) + validity."""
    s = max(g.shape[0] for g in groups)
    d = groups[0].shape[1]
    emb = torch.zeros(s, len(groups), d, dtype=groups[0].dtype)
    valid = torch.zeros(s, len(groups), dtype=torch.bool)
    for c, g in enumerate(groups):
        emb[: g.shape[0], c] = g
        valid[: g.shape[0], c] = True
    return emb, valid


def released_cl_pair(cos: float, positive: bool, eps: float = 0.1) -> float:
    """Soft CE (smoothing eps) of the logits [1 - s, s], s = (cos + 1) / 2."""
    s = (cos + 1) / 2
    q = math.exp(s) / (math.exp(1 - s) + math.exp(s))  # softmax(...)[1]
    hi, lo = 1 - eps / 2, eps / 2
    if positive:
        return -(hi * math.log(q) + lo * math.log(1 - q))
    return -(lo * math.log(q) + hi * math.log(1 - q))


def test_released_cl_keeps_the_first_pairs_without_mining():
    # 10 positives: pairs (i, 5 + i), 5 pairs -> the first floor(2.5) = 2 are kept, whatever
    # their similarity (the released sort runs over a length-1 axis)
    pos = unit(0, 0, 0, 0, 0, 5, 170, 90, 90, 90)
    neg = unit(30, 60, 179, 10, 20, 40)  # 6 negatives: pairs k < 6 -> the first 3 kept
    p, pv = packed(pos)
    n, nv = packed(neg)
    loss, ok = released_class_losses(p, pv, n, nv, "cl", 0.5, 0.1)
    want_neg = sum(released_cl_pair(math.cos(math.radians(a)), False) for a in (30, 60, 179)) / 3
    want_pos = sum(released_cl_pair(math.cos(math.radians(a)), True) for a in (5, 170)) / 2
    assert ok.tolist() == [True]
    assert loss.item() == pytest.approx(want_neg + want_pos, rel=1e-12)
    # with 5..9 positives only the negative term remains
    p7, pv7 = packed(pos[:7])
    loss7, _ = released_class_losses(p7, pv7, n, nv, "cl", 0.5, 0.1)
    assert loss7.item() == pytest.approx(want_neg, rel=1e-12)
    # fewer than 5 positives: the group is skipped
    p4, pv4 = packed(pos[:4])
    loss4, ok4 = released_class_losses(p4, pv4, n, nv, "cl", 0.5, 0.1)
    assert ok4.tolist() == [False] and loss4.item() == 0.0


def test_released_infonce_mines_on_negative_pairs_and_needs_ten():
    pos = unit(0, 10, 20, 30, 40, 50, 60, 70, 80, 90)
    neg_deg = (
        100,
        15,
        190,
        38,
        60,
        170,
        74,
        230,
        110,
        230,
    )  # gaps 100 5 170 8 20 120 14 160 30 140
    neg = unit(*neg_deg)
    p, pv = packed(pos)
    n, nv = packed(neg)
    t = 0.1
    loss, ok = released_class_losses(p, pv, n, nv, "infonce", 0.5, 0.1, t)
    # negative pairs (p_k, n_k) sorted by cos descending; keep L = floor(0.5 * 10) = 5
    pos_deg = range(0, 100, 10)
    gaps = [abs((nd - pd + 180) % 360 - 180) for pd, nd in zip(pos_deg, neg_deg, strict=True)]
    top = sorted(range(10), key=lambda k: gaps[k])[:5]
    queries, keys, negs = top[:2], top[2:4], top
    want = 0.0
    for qi, ki in zip(queries, keys, strict=True):
        s_pos = float(pos[qi] @ pos[ki]) / t
        s_neg = [float(pos[qi] @ neg[j]) / t for j in negs]
        want += math.log(math.exp(s_pos) + sum(math.exp(v) for v in s_neg)) - s_pos
    assert ok.tolist() == [True]
    assert loss.item() == pytest.approx(want / 2, rel=1e-10)
    # 5..9 positives: the released function computes a loss and returns 0
    p9, pv9 = packed(pos[:9])
    loss9, ok9 = released_class_losses(p9, pv9, n, nv, "infonce", 0.5, 0.1, t)
    assert ok9.tolist() == [True] and loss9.item() == 0.0


def test_released_module_averages_over_stages_times_classes_present():
    # 8x8 masks at stride 2 -> 16 tokens per image; image 0 all class 0 (tokens e1),
    # image 1 all class 1 (tokens e2) but one pixel of class 2 (its block is dropped for
    # class 1 and 2, a negative for class 0). Classes present: 3; one stage.
    mask = torch.stack([torch.zeros(8, 8), torch.ones(8, 8)]).long()
    mask[1, 0, 0] = 2
    feats = torch.zeros(2, 2, 4, 4)
    feats[0, 0] = 1.0
    feats[1, 1] = 1.0
    loss = identity_heads(PatchContrastLoss([2], [2], 3, stages=(0,), rule="released"))
    value, groups = loss([feats], mask)
    # class 0 and 1: negative pairs cos 0, positive pairs cos 1, P >= 10 -> both terms
    per_group = released_cl_pair(0.0, False) + released_cl_pair(1.0, True)
    assert groups == 2
    assert value.item() == pytest.approx(2 * per_group / (1 * 3), rel=1e-6)
    paper = identity_heads(PatchContrastLoss([2], [2], 3, stages=(0,)))
    assert paper([feats], mask)[1] == 2  # the paper mode averages over the 2 groups instead


def test_released_clamp_has_no_gradient_above_one():
    big = torch.tensor(4.0, requires_grad=True)
    out = cap_loss(big, 1.0, "released")
    out.backward()
    assert out.item() == 1.0 and big.grad.item() == 0.0
    small = torch.tensor(0.5, requires_grad=True)
    out = cap_loss(small, 1.0, "released")
    out.backward()
    assert out.item() == 0.5 and small.grad.item() == 1.0


def test_released_rule_is_validated():
    with pytest.raises(ConfigError, match="ct_mode"):
        PatchContrastLoss([3], [4], 2, stages=(0,), rule="code")  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", ["paper", "released"])
@pytest.mark.parametrize("mode", ["cl", "infonce"])
def test_patch_loss_float64_gradcheck(rule, mode):
    # the whole module follows the input dtype: a float64 finite-difference check
    g = torch.Generator().manual_seed(2)
    mask = torch.zeros(2, 8, 8, dtype=torch.long)  # 12 / 12 / 8 tokens of class 0 / 1 / 2
    mask[:, :, 4:] = 1
    mask[1, 4:] = 2
    f = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    loss = PatchContrastLoss([3], [2], 3, mode=mode, stages=(0,), rule=rule, hidden=4, dim=3)
    loss = loss.double()

    def run(x):
        value, _ = loss([x], mask, generator=torch.Generator().manual_seed(0))
        return value

    value = run(f)
    assert value.dtype == torch.float64 and value.item() > 0
    assert torch.autograd.gradcheck(run, (f,), fast_mode=True)
