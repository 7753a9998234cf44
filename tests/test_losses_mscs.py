"""MS/CS losses: label downsampling, balanced K, stable supervised InfoNCE, scale pairing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aerialct.errors import ConfigError
from aerialct.losses.mscs import (
    MultiScaleContrastLoss,
    balanced_sample,
    downsample_labels,
    supervised_contrastive_loss,
)

IGN = 255


def test_downsample_takes_every_rth_pixel():
    mask = torch.arange(16).view(1, 4, 4)
    assert downsample_labels(mask, 2).tolist() == [[[0, 2], [8, 10]]]
    assert downsample_labels(mask, 4).tolist() == [[[0]]]


def k_mask() -> torch.Tensor:
    """Image 0: class 0 x10, class 1 x6; image 1: class 0 x3 (too few), class 2 x13."""
    m = torch.full((2, 16), IGN, dtype=torch.long)
    m[0, :10] = 0
    m[0, 10:16] = 1
    m[1, :3] = 0
    m[1, 3:16] = 2
    return m.view(2, 4, 4)


@pytest.mark.parametrize(
    ("max_k", "max_total", "k"), [(2500, 10000, 6), (4, 10000, 4), (2500, 10, 3)]
)
def test_balanced_sample_per_image_class_k_and_membership(max_k, max_total, k):
    # the released code's budget: K per (image, class) pair
    labels = k_mask()
    s = balanced_sample(
        labels, 3, IGN, min_pixels=5, max_k=max_k, max_total=max_total,
        generator=torch.Generator().manual_seed(1), rule="per-image-class",
    )  # fmt: skip
    # eligible pairs: (0, 0): 10, (0, 1): 6, (1, 2): 13 -> K = min(6, max_k, max_total // 3)
    assert s.pairs.item() == 3 and s.k.item() == k
    assert s.index.shape == (min(max_total, 32),)  # static slots
    drawn, lab = s.index[s.valid], s.label[s.valid]
    assert drawn.unique().numel() == drawn.numel() == 3 * k  # no pixel drawn twice
    flat = labels.reshape(-1)
    assert torch.equal(flat[s.index], s.label)
    image = drawn // 16
    got = sorted(zip(image.tolist(), lab.tolist(), strict=True))
    want = sorted([(0, 0)] * k + [(0, 1)] * k + [(1, 2)] * k)
    assert got == want  # class 0 of image 1 (3 pixels) and ignore never drawn


@pytest.mark.parametrize(
    ("max_k", "max_total", "k", "split"),
    [(2500, 10000, 6, [(3, 3)]), (4, 10000, 4, [(2, 2)]), (2500, 10, 3, [(2, 1), (1, 2)])],
)
def test_balanced_sample_per_class_k_and_split(max_k, max_total, k, split):
    # the paper's budget: class totals 0: 10 + 3 = 13, 1: 6, 2: 13 -> K = min(6, caps)
    # anchors per class, split evenly among the images holding the class (class 0: both,
    # image 1's 3 pixels included although fewer than min_pixels: the class total counts)
    labels = k_mask()
    for seed in range(4):
        s = balanced_sample(
            labels, 3, IGN, min_pixels=5, max_k=max_k, max_total=max_total,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        assert s.pairs.item() == 3 and s.k.item() == k
        drawn, lab = s.index[s.valid], s.label[s.valid]
        assert drawn.unique().numel() == drawn.numel() == 3 * k
        assert torch.equal(labels.reshape(-1)[s.index], s.label)
        image = drawn // 16
        per_image = tuple(int(((lab == 0) & (image == i)).sum()) for i in (0, 1))
        assert per_image in split
        assert int((lab == 1).sum()) == int((lab == 2).sum()) == k


def test_balanced_sample_per_class_fills_from_larger_images():
    # class 0: 1 pixel in image 0, 20 in image 1; class 1: 12 pixels in image 0
    labels = torch.full((2, 4, 8), IGN, dtype=torch.long)
    labels[0, 0, 0] = 0
    labels[1, :, :5] = 0
    labels[0, 1:, :4] = 1
    s = balanced_sample(labels, 2, IGN, min_pixels=5, generator=torch.Generator().manual_seed(0))
    assert s.k.item() == 12  # smallest class total: 12 (class 1), class 0 has 21
    drawn, lab = s.index[s.valid], s.label[s.valid]
    image = drawn // 32
    # image 0 gives its only class-0 pixel, image 1 the other 11
    assert int(((lab == 0) & (image == 0)).sum()) == 1
    assert int(((lab == 0) & (image == 1)).sum()) == 11


def test_balanced_sample_rejects_unknown_rule():
    with pytest.raises(ConfigError, match="mscs_anchors"):
        balanced_sample(k_mask(), 3, rule="per-image")  # type: ignore[arg-type]


def test_balanced_sample_is_random_within_groups():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 4:] = 1  # 32 pixels per class; K capped by max_k = 5
    a = balanced_sample(labels, 2, max_k=5, generator=torch.Generator().manual_seed(0))
    b = balanced_sample(labels, 2, max_k=5, generator=torch.Generator().manual_seed(1))
    assert a.k.item() == b.k.item() == 5
    assert set(a.index[a.valid].tolist()) != set(b.index[b.valid].tolist())


def test_balanced_sample_empty():
    s = balanced_sample(torch.full((2, 4, 4), IGN), 3)
    assert s.pairs.item() == 0 and not s.valid.any()


def direct_supcon(z, y, zc, yc, t, same):
    """Eq. 1: mean over every anchor; one without a positive or a negative adds 0."""
    total, n = 0.0, 0
    for i in range(len(z)):
        pos = [j for j in range(len(zc)) if yc[j] == y[i] and not (same and j == i)]
        neg = [j for j in range(len(zc)) if yc[j] != y[i]]
        n += 1
        if not pos or not neg:
            continue
        negsum = sum(math.exp(float(z[i] @ zc[j]) / t) for j in neg)
        terms = []
        for p in pos:
            e = math.exp(float(z[i] @ zc[p]) / t)
            terms.append(-math.log(e / (e + negsum)))
        total += sum(terms) / len(terms)
    return total / n


def test_supcon_matches_formula_same_set():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(9, 4, generator=g, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # class 3 has no positive: adds 0, counts
    got = supervised_contrastive_loss(z, y, temperature=0.1)
    assert got.item() == pytest.approx(direct_supcon(z, y, z, y, 0.1, True), rel=1e-9)


def test_supcon_matches_formula_cross_set():
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=1)
    zc = F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1)
    y, yc = torch.tensor([0, 1, 1, 2, 0]), torch.tensor([1, 0, 0, 1, 2, 2])
    got = supervised_contrastive_loss(z, y, zc, yc, temperature=0.5)
    assert got.item() == pytest.approx(direct_supcon(z, y, zc, yc, 0.5, False), rel=1e-9)


def test_cross_scale_anchor_without_coarse_class_counts_as_zero():
    # Fine-scale anchors: class 0 at 0 deg, class 1 at 90 deg. Coarse samples: class 0 at
    # 0 deg, class 2 at 180 deg; class 1 has no sample there. t = 1.
    # anchor 0: P = {0 deg} (cos 1), N = {180 deg} (cos -1): -log(e / (e + 1/e)) = log(1 + e^-2)
    # anchor 1: no positive -> 0, and it stays in the denominator (eq. 1): mean = half of it
    def unit(*deg):
        a = torch.tensor(deg, dtype=torch.float64) * math.pi / 180
        return torch.stack([a.cos(), a.sin()], 1)

    za, ya = unit(0, 90), torch.tensor([0, 1])
    zc, yc = unit(0, 180), torch.tensor([0, 2])
    got = supervised_contrastive_loss(za, ya, zc, yc, temperature=1.0)
    assert got.item() == pytest.approx(math.log1p(math.exp(-2)) / 2, rel=1e-12)
    # an anchor with positives but no negative adds 0 as well: -log(e / e)
    only0 = supervised_contrastive_loss(unit(0, 30), torch.tensor([0, 0]), zc[:1], yc[:1], 1.0)
    assert only0.item() == 0.0


def separated_clusters(flip: int, n: int = 30, d: int = 8, noise: float = 0.05):
    """Two tight clusters (class 0 near e0, class 1 near e1), the first ``flip`` anchors of
    class 0 labelled 1: a model that separates the classes, with a few mislabelled pixels."""
    g = torch.Generator().manual_seed(0)
    centre = torch.eye(2, d, dtype=torch.float64)  # (2, D)
    y = torch.arange(2).repeat_interleave(n)  # (2n,)
    z = F.normalize(centre[y] + noise * torch.randn(2 * n, d, generator=g, dtype=torch.float64))
    y = y.clone()
    y[:flip] = 1
    return z, y


def oracle_supcon(z, y, t):
    """An independent float64 reference: masks over the whole matrix, torch's own
    logsumexp and softplus, autograd for the gradient."""
    s = z @ z.T / t  # (A, A)
    same_class = y[:, None] == y[None, :]
    pos = same_class & ~torch.eye(len(y), dtype=torch.bool)
    lse = torch.logsumexp(s.masked_fill(same_class, -math.inf), 1)  # (A,) over N(i)
    per = (F.softplus(lse[:, None] - s) * pos).sum(1) / pos.sum(1).clamp(min=1)
    has = pos.any(1) & (~same_class).any(1)
    return torch.where(has, per, 0).sum() / len(y)


@pytest.mark.parametrize("flip", [2, 0])
@pytest.mark.parametrize("t", [0.2, 0.1, 0.05, 0.02])
def test_supcon_float32_equals_float64_oracle_on_separated_clusters(t, flip):
    # The negatives are summed directly: with (all classes) - (own class) the self pair
    # cancels them away once classes separate (6% off at t = 0.05, negative with flip = 0).
    z, y = separated_clusters(flip)
    z64 = z.clone().requires_grad_()
    want = oracle_supcon(z64, y, t)
    want.backward()
    z32 = z.float().requires_grad_()
    got = supervised_contrastive_loss(z32, y, temperature=t)
    got.backward()
    assert got.dtype == torch.float32 and got.item() >= 0
    assert got.item() == pytest.approx(want.item(), rel=2e-6)
    g32, g64 = z32.grad.double(), z64.grad
    assert (g32 - g64).norm() <= 1e-5 * g64.norm()
    torch.testing.assert_close(g32, g64, rtol=1e-4, atol=1e-6 * g64.abs().max().item())


def mp_supcon(z, y, t) -> float:
    """Eq. 1 at 50 significant digits (mpmath), straight from the definition."""
    import mpmath

    mpmath.mp.dps = 50
    zz = [[mpmath.mpf(float(v)) for v in row] for row in z]
    total = mpmath.mpf(0)
    for i in range(len(zz)):
        sim = [
            mpmath.fsum(a * b for a, b in zip(zz[i], zz[j], strict=True)) / t
            for j in range(len(zz))
        ]
        pos = [j for j in range(len(zz)) if y[j] == y[i] and j != i]
        negsum = mpmath.fsum(mpmath.exp(sim[j]) for j in range(len(zz)) if y[j] != y[i])
        if pos and negsum:
            terms = [-mpmath.log(mpmath.exp(sim[p]) / (mpmath.exp(sim[p]) + negsum)) for p in pos]
            total += mpmath.fsum(terms) / len(pos)
    return float(total / len(zz))


@pytest.mark.parametrize(("t", "least"), [(0.02, 4.8), (0.01, 9.1), (0.005, 17.9)])
def test_supcon_tiny_temperature_is_exact_in_float64(t, least):
    # Separated clusters of 6, one anchor mislabelled: its positives sit in the other
    # cluster, far below its negatives, so the loss is large. With the self pair in the
    # shift and (all - own) for the negatives, float64 gave 4.63, 11.5 and 28.3 here.
    z, y = separated_clusters(1, n=6, d=4, noise=0.02)
    want = mp_supcon(z.tolist(), y.tolist(), t)
    assert want > least
    got = supervised_contrastive_loss(z, y, temperature=t)
    assert got.item() == pytest.approx(want, rel=1e-12)
    z32 = z.float().requires_grad_()
    got32 = supervised_contrastive_loss(z32, y, temperature=t)
    got32.backward()
    assert got32.item() == pytest.approx(want, rel=1e-5) and torch.isfinite(z32.grad).all()


def test_supcon_one_class_or_singletons_is_zero():
    z = F.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    for y in (torch.zeros(4, dtype=torch.long), torch.arange(4)):
        loss = supervised_contrastive_loss(z, y)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(z.grad).all()


def test_supcon_validity_masks_and_chunking():
    g = torch.Generator().manual_seed(2)
    z = F.normalize(torch.randn(10, 4, generator=g, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 2, 0])
    ok = torch.tensor([1, 1, 1, 0, 1, 1, 1, 1, 0, 1], dtype=torch.bool)
    want = direct_supcon(z[ok], y[ok], z[ok], y[ok], 0.1, True)
    za = z.clone().requires_grad_()
    whole = supervised_contrastive_loss(za, y, temperature=0.1, anchor_valid=ok)
    whole.backward()
    zb = z.clone().requires_grad_()
    chunked = supervised_contrastive_loss(
        zb, y, temperature=0.1, anchor_valid=ok, chunk_elements=20
    )
    chunked.backward()  # 2 anchors per chunk, recomputed in backward
    assert whole.item() == pytest.approx(want, rel=1e-9)
    assert chunked.item() == pytest.approx(want, rel=1e-9)
    assert torch.allclose(za.grad, zb.grad)
    assert za.grad[~ok].abs().sum() == 0  # invalid rows take no part


def scale_features(b: int = 2, c: int = 4, size: int = 128, grad: bool = True):
    g = torch.Generator().manual_seed(0)
    feats = [
        torch.randn(b, c, size // r, size // r, generator=g).requires_grad_(grad)
        for r in (4, 8, 16, 32)
    ]
    mask = torch.zeros(b, size, size, dtype=torch.long)
    mask[:, :, size // 2 :] = 1
    mask[1, size // 2 :] = 2
    return feats, mask


def test_cross_scale_pairs_and_weights():
    feats, mask = scale_features()
    loss = MultiScaleContrastLoss([4] * 4, [4, 8, 16, 32], 3)
    assert loss.cs_stage_pairs == [(0, 3), (0, 2)]
    ms, cs = loss(feats, mask, generator=torch.Generator().manual_seed(3))
    # recompute from the same draws: projectors in the same order, same generator
    g = torch.Generator().manual_seed(3)
    emb = {s: loss.embed_stage(s, feats[s], mask, generator=g) for s in loss.stages}

    def supcon(a, b=None):
        za, ya, oka = emb[a]
        if b is None:
            return supervised_contrastive_loss(za, ya, temperature=0.1, anchor_valid=oka)
        zb, yb, okb = emb[b]
        return supervised_contrastive_loss(za, ya, zb, yb, 0.1, oka, okb)

    per_scale = [supcon(s) for s in range(4)]
    assert all(v > 0 for v in per_scale)  # every scale has >= 2 classes with >= 5 px
    want_ms = sum(w * v for w, v in zip((1.0, 0.7, 0.4, 0.1), per_scale, strict=True))
    want_cs = supcon(0, 3) + supcon(0, 2)
    assert ms.item() == pytest.approx(want_ms.item(), rel=1e-5)
    assert cs.item() == pytest.approx(want_cs.item(), rel=1e-5)


def test_cross_scale_gradient_reaches_both_scales():
    feats, mask = scale_features()
    loss = MultiScaleContrastLoss(
        [4] * 4, [4, 8, 16, 32], 3, ms_weights=(0.0, 0.0, 0.0, 0.0), cs_pairs=((4, 32),)
    )
    assert loss.stages == [0, 3]
    ms, cs = loss(feats, mask)
    assert ms.item() == 0.0 and cs.item() > 0
    cs.backward()
    assert feats[0].grad.abs().sum() > 0 and feats[3].grad.abs().sum() > 0
    assert feats[1].grad is None and feats[2].grad is None
    for name in ("0", "3"):
        assert all(p.grad is not None for p in loss.projectors[name].parameters())


def test_mscs_empty_and_one_class():
    feats, _ = scale_features(grad=False)
    loss = MultiScaleContrastLoss([4] * 4, [4, 8, 16, 32], 3)
    for fill in (IGN, 2):
        ms, cs = loss(feats, torch.full((2, 128, 128), fill))
        assert ms.item() == 0.0 and cs.item() == 0.0
        (ms + cs).backward()
        assert all(p.grad is not None for p in loss.parameters())


def test_mscs_rejects_missing_stride():
    with pytest.raises(ConfigError, match="cs_pairs"):
        MultiScaleContrastLoss([4] * 3, [4, 8, 16], 3, ms_weights=(1, 1, 1))


def test_supcon_analytic_backward_gradcheck():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    zc = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y, yc = torch.tensor([0, 1, 0, 2, 1, 1, 0]), torch.tensor([1, 0, 2, 2, 0])
    ok = torch.tensor([1, 1, 1, 1, 0, 1, 1], dtype=torch.bool)

    def same(x):
        return supervised_contrastive_loss(
            x, y, temperature=0.5, anchor_valid=ok, chunk_elements=14
        )

    def cross(x, xc):
        return supervised_contrastive_loss(x, y, xc, yc, 0.5, ok, chunk_elements=10)

    assert torch.autograd.gradcheck(same, (z,))
    assert torch.autograd.gradcheck(cross, (z, zc))


def test_projector_depth_and_mode_settings():
    from torch import nn

    from aerialct.losses import LossConfig
    from aerialct.losses.mscs import Projector

    paper = Projector(8, 4)  # two Conv1x1-ReLU-BN layers, then a linear layer to d
    kinds = [type(m) for m in paper.pre]
    assert paper.layers == 2 and kinds == [nn.Linear, nn.ReLU, nn.BatchNorm1d] * 2
    assert paper.out.out_features == 4
    assert Projector(8, 4, layers=1).layers == 1
    with pytest.raises(ConfigError, match="mscs_proj_layers"):
        Projector(8, 4, layers=0)
    assert LossConfig().mscs_settings() == ("per-class", 2)
    assert LossConfig(mscs_mode="released").mscs_settings() == ("per-image-class", 1)
    mixed = LossConfig(mscs_mode="released", mscs_proj_layers=2, mscs_anchors="per-class")
    assert mixed.mscs_settings() == ("per-class", 2)
    loss = MultiScaleContrastLoss([4] * 4, [4, 8, 16, 32], 3, proj_layers=1)
    assert all(p.layers == 1 for p in loss.projectors.values())
    with pytest.raises(ConfigError, match="mscs_anchors"):
        MultiScaleContrastLoss([4] * 4, [4, 8, 16, 32], 3, anchors="per-pixel")  # type: ignore[arg-type]


@pytest.mark.parametrize("anchors", ["per-class", "per-image-class"])
def test_mscs_module_float64_gradcheck(anchors):
    # the whole module runs in the input's dtype, so float64 finite differences apply
    feats, mask = scale_features(size=32, grad=False)
    feats = [f.double() for f in feats]
    loss = MultiScaleContrastLoss([4] * 4, [4, 8, 16, 32], 3, anchors=anchors).double()

    def run(f2, f3):
        g = torch.Generator().manual_seed(5)  # the same draws on every call
        ms, cs = loss([feats[0], feats[1], f2, f3], mask, generator=g)
        return ms + cs

    f2 = feats[2].clone().requires_grad_()
    f3 = feats[3].clone().requires_grad_()
    value = run(f2, f3)
    assert value.dtype == torch.float64 and value.item() > 0
    assert torch.autograd.gradcheck(run, (f2, f3), fast_mode=True)
