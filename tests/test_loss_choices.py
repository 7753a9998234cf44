"""The choices each loss mode makes where the papers are silent or the released code differs.

Each is stated in the README's loss section and the loss modules' docstrings; each test
fails if the choice changes (update both with it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aerialct.engine.task import SegmentationTask
from aerialct.losses import LossConfig
from aerialct.losses.ct import (
    RELEASED_INFONCE_MAX,
    PatchContrastLoss,
    ProjectionHead,
    cap_loss,
    released_class_losses,
)
from aerialct.losses.mscs import MultiScaleContrastLoss
from aerialct.models import build_model
from aerialct.models.config import ModelConfig

K = 3


def tiny_model():
    return build_model(
        ModelConfig(backbone="tiny_cnn", decoder="fpn", decoder_channels=8, img_size=64), K
    )


def test_mscs_projector_has_linear_bias_and_bn_momentum_0_1_in_both_modes():
    # paper: its Linear has a bias and BatchNorm's momentum is 0.1 (PyTorch's default);
    # the released code's 1x1 convs have no bias and its BatchNorm momentum is 3e-4.
    # We keep the first in both modes: the heads are training-only, and released
    # checkpoints stay loadable in either mode.
    for mode in ("paper", "released"):
        task = SegmentationTask(tiny_model(), LossConfig(contrast="mscs", mscs_mode=mode), K)
        mscs = task.heads["mscs"]
        assert isinstance(mscs, MultiScaleContrastLoss)
        for proj in mscs.projectors.values():
            linears = [m for m in proj.modules() if isinstance(m, nn.Linear)]
            norms = [m for m in proj.modules() if isinstance(m, nn.BatchNorm1d)]
            assert linears and all(m.bias is not None for m in linears)
            assert norms and all(m.momentum == 0.1 for m in norms)
            assert proj.layers == (2 if mode == "paper" else 1)


def test_ct_head_is_linear_relu_linear_in_both_modes():
    # the released code's ProjectionLayer uses GELU; we keep ReLU in both modes
    assert [type(m) for m in ProjectionHead(8).net] == [nn.Linear, nn.ReLU, nn.Linear]
    for mode in ("paper", "released"):
        task = SegmentationTask(tiny_model(), LossConfig(contrast="ct-cl", ct_mode=mode), K)
        for head in task.heads["ct"].heads:
            assert [type(m) for m in head.net] == [nn.Linear, nn.ReLU, nn.Linear]
            assert not any(isinstance(m, nn.GELU) for m in head.modules())


def test_ct_bound_rescales_in_paper_mode_and_clamps_in_released_mode():
    # "clipped to 1.0": paper mode reads it as loss / max(1, loss.detach()) (a gradient
    # above 1, scaled), released mode as the code's clamp(loss, 0, 1) (none above 1)
    for mode, grad in (("paper", 0.25), ("released", 0.0)):
        x = torch.tensor(4.0, requires_grad=True)
        y = cap_loss(x, 1.0, mode)  # type: ignore[arg-type]
        y.backward()
        assert y.item() == 1.0 and x.grad.item() == grad


def test_task_caps_ct_by_its_mode():
    # above the bound, the paper mode's CT still trains its heads; the released clamp does not
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    masks[:, :, 32:] = 1
    masks[1, 32:] = 2
    for mode, trains in (("paper", True), ("released", False)):
        cfg = LossConfig(contrast="ct-cl", ct_mode=mode, ct_lambda=1.0, ct_stages=(1, 2))
        task = SegmentationTask(tiny_model(), cfg, K)
        out = task(images, masks)
        assert out["ct"].item() > 1  # untrained: above the bound
        out["loss"].backward()
        grads = [p.grad for p in task.heads["ct"].parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == trains


def test_ct_sample_cap_is_4096_per_stage_and_class():
    assert LossConfig().ct_max_samples == 4096
    assert PatchContrastLoss([4], [4], K, stages=(0,)).max_samples == 4096
    task = SegmentationTask(tiny_model(), LossConfig(contrast="ct-cl"), K)
    assert task.heads["ct"].max_samples == 4096


def test_released_infonce_pairs_at_most_2000_rows():
    assert RELEASED_INFONCE_MAX == 2000
    g = torch.Generator().manual_seed(0)
    n = 2100
    pos = F.normalize(torch.randn(n, 1, 4, generator=g, dtype=torch.float64), dim=-1)
    neg = F.normalize(torch.randn(n, 1, 4, generator=g, dtype=torch.float64), dim=-1)
    ok = torch.ones(n, 1, dtype=torch.bool)
    full, _ = released_class_losses(pos, ok, neg, ok, "infonce")
    cut, _ = released_class_losses(pos[:2000], ok[:2000], neg[:2000], ok[:2000], "infonce")
    more, _ = released_class_losses(pos[:1999], ok[:1999], neg[:1999], ok[:1999], "infonce")
    assert full.item() == cut.item() != more.item()  # rows beyond 2000 take no part
