"""The contrastive losses in every floating dtype they accept: float16 and bfloat16 are
computed in float32 and returned in the input's dtype (aerialct.losses.precision)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from aerialct.losses.ct import PatchContrastLoss, batched_class_losses, ct_cl_loss
from aerialct.losses.mscs import MultiScaleContrastLoss, supervised_contrastive_loss

HALF = [torch.float16, torch.bfloat16]
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}  # one rounding of the result, and some


def two_class_mask(size: int = 32) -> torch.Tensor:
    mask = torch.zeros(2, size, size, dtype=torch.long)
    mask[:, :, size // 2 :] = 1
    return mask


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(
    ("rule", "mode"), [("paper", "cl"), ("paper", "infonce"), ("released", "cl")]
)
def test_ct_module_with_identical_embeddings_in_half_precision(dtype, rule, mode):
    # Every token identical: cos = 1 for every pair. The paper CL's log(1 - s) with s
    # clamped at 1 - 1e-6 was log(0) = inf in float16 and bfloat16.
    torch.manual_seed(0)
    half = PatchContrastLoss([4] * 4, [4, 8, 16, 32], 2, rule=rule, mode=mode).to(dtype)
    full = copy.deepcopy(half).float()  # the same (rounded) weights in float32
    feats = [
        torch.ones(2, 4, 32 // r, 32 // r, dtype=dtype, requires_grad=True) for r in (4, 8, 16, 32)
    ]
    got, n = half(feats, two_class_mask(), generator=torch.Generator().manual_seed(0))
    want, _ = full(
        [f.detach().float() for f in feats],
        two_class_mask(),
        generator=torch.Generator().manual_seed(0),
    )
    assert got.dtype == dtype and n.item() > 0
    assert torch.isfinite(got) and got.item() == pytest.approx(want.item(), rel=TOL[dtype])
    got.backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)


@pytest.mark.parametrize("dtype", HALF)
def test_ct_functions_compute_in_float32(dtype):
    one = torch.ones(3, dtype=dtype)
    got = ct_cl_loss(one, one)  # identical pairs: s = 1 for positives and negatives
    want = ct_cl_loss(one.float(), one.float())
    assert got.dtype == dtype and got.item() == pytest.approx(want.item(), rel=TOL[dtype])
    e = F.normalize(torch.randn(8, 2, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    ok = torch.ones(8, 2, dtype=torch.bool)
    loss, _ = batched_class_losses(e.to(dtype), ok, e.to(dtype), ok)
    ref, _ = batched_class_losses(e.to(dtype).float(), ok, e.to(dtype).float(), ok)
    assert loss.dtype == dtype and torch.allclose(loss.float(), ref, rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("t", [0.1, 0.05, 0.02])
def test_supcon_six_anchors_in_half_precision(dtype, t):
    # float16 gave NaN at t <= 0.05 here, bfloat16 values 30% off
    z = F.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    zh = z.to(dtype).requires_grad_()
    got = supervised_contrastive_loss(zh, y, temperature=t)
    got.backward()
    z32 = zh.detach().float().requires_grad_()  # the same rounded inputs in float32
    want = supervised_contrastive_loss(z32, y, temperature=t)
    want.backward()
    assert got.dtype == dtype and got.item() == pytest.approx(want.item(), rel=TOL[dtype])
    assert zh.grad.dtype == dtype
    torch.testing.assert_close(zh.grad.float(), z32.grad, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", HALF)
def test_mscs_module_in_half_precision(dtype):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(2, 4, 32 // r, 32 // r, generator=g).to(dtype) for r in (4, 8, 16, 32)]
    half = MultiScaleContrastLoss([4] * 4, [4, 8, 16, 32], 2).to(dtype)
    full = copy.deepcopy(half).float()
    got = half(feats, two_class_mask(), generator=torch.Generator().manual_seed(0))
    want = full(
        [f.float() for f in feats], two_class_mask(), generator=torch.Generator().manual_seed(0)
    )
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype and torch.isfinite(a)
        # the projectors run in the half dtype, so the embeddings differ by its rounding
        assert a.item() == pytest.approx(b.item(), rel=3e-2)
    assert want[0].item() > 0
