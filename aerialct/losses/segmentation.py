"""Segmentation losses: soft cross-entropy with label smoothing and multi-class Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def soft_cross_entropy(
    logits: Tensor,
    target: Tensor,
    ignore_index: int = 255,
    smoothing: float = 0.1,
    weight: Tensor | None = None,
) -> Tensor:
    """Cross-entropy against label-smoothed one-hot targets, mean over non-ignored pixels.

    With class ``weight`` ``(K,)`` the mean is weighted (divided by the weights' sum).

    Shape:
        logits ``(B, K, H, W)``, target ``(B, H, W)`` int64 (``ignore_index`` skipped);
        returns a scalar. A batch with no labelled pixel gives 0 (with a graph), not NaN.
    """
    total = F.cross_entropy(
        logits.float(),
        target,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=smoothing,
        reduction="sum",
    )
    if weight is not None:
        valid = target != ignore_index
        w = weight[target.clamp(0, len(weight) - 1)] * valid  # (B, H, W)
        return total / w.sum().clamp(min=1e-6)
    return total / (target != ignore_index).sum().clamp(min=1)  # no host sync


def dice_loss(logits: Tensor, target: Tensor, ignore_index: int = 255, eps: float = 1e-6) -> Tensor:
    """Multi-class soft Dice loss, ``1 - 2|P∩Y| / (|P| + |Y|)`` per class over the batch.

    Averaged over the classes present in the (non-ignored) target; ignored pixels
    count neither in the prediction nor the target.

    Shape:
        logits ``(B, K, H, W)``, target ``(B, H, W)`` int64; returns a scalar.
    """
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)  # (B, 1, H, W)
    probs = logits.float().softmax(1) * valid  # (B, K, H, W)
    onehot = F.one_hot(target.clamp(0, k - 1) * valid[:, 0], k).permute(0, 3, 1, 2)
    onehot = onehot.to(probs.dtype) * valid  # (B, K, H, W)
    inter = (probs * onehot).sum((0, 2, 3))  # (K,)
    card = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))  # (K,)
    dice = (2 * inter + eps) / (card + eps)  # (K,)
    present = onehot.sum((0, 2, 3)) > 0  # (K,)
    return torch.where(present, 1 - dice, 0).sum() / present.sum().clamp(min=1)


class SegmentationLoss(nn.Module):
    """``CE(smoothing) + dice_weight * Dice``; returns (total, ce, dice)."""

    class_weight: Tensor | None
    """Per-class CE weights (a non-persistent buffer), or None."""

    def __init__(
        self,
        ignore_index: int = 255,
        smoothing: float = 0.1,
        dice_weight: float = 1.0,
        class_weight: Tensor | None = None,
    ):
        super().__init__()
        self.ignore_index = ignore_index
        self.smoothing = smoothing
        self.dice_weight = dice_weight
        self.register_buffer("class_weight", class_weight, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(total, CE, Dice) of logits ``(B, K, H, W)`` against ``target`` ``(B, H, W)``."""
        ce = soft_cross_entropy(
            logits, target, self.ignore_index, self.smoothing, self.class_weight
        )
        dice = (
            dice_loss(logits, target, self.ignore_index)
            if self.dice_weight
            else torch.zeros((), device=logits.device)
        )
        return ce + self.dice_weight * dice, ce, dice
