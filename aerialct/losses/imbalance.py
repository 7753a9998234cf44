"""Class imbalance: class weights from pixel counts, a focal term, rare-chip sampling weights.

Buildings are often under 10% of the pixels; without help a small model settles on
"all background". Three remedies, each a config key (README, "Your own classes"):

- ``loss.class_weights: auto`` weights cross-entropy by :func:`class_weights_from_counts`
  of the training split's pixel counts (from the chips index), or
  ``loss.class_weight_values: [w0, w1, ...]`` gives them;
- ``loss.focal_weight`` adds ``focal_weight * focal_loss(gamma=loss.focal_gamma)``;
- ``data.oversample_rare`` draws chips that hold a rare class (share of the training
  pixels below ``data.rare_share``) that many times more often (:func:`rare_chip_weights`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def class_weights_from_counts(counts: np.ndarray | list[int]) -> np.ndarray:
    """Inverse square-root frequency weights ``(K,)``, scaled to mean 1 over present classes.

    ``w_c = (share_c) ** -0.5``: a class 100x rarer weighs 10x more (plain inverse
    frequency over-corrects and makes training noisy). Classes without pixels get 1.
    """
    c = np.asarray(counts, dtype=np.float64)
    present = c > 0
    w = np.ones_like(c)
    if present.any():
        share = c[present] / c[present].sum()
        raw = share**-0.5
        w[present] = raw / raw.mean()
    return w


def rare_chip_weights(chip_counts: np.ndarray, rare_share: float, factor: float) -> np.ndarray:
    """Sampling weight per chip ``(N,)``: ``factor`` for chips with a rare class, else 1.

    ``chip_counts`` is ``(N, K)`` labelled pixels per chip and class; a class is rare
    when it holds less than ``rare_share`` of all labelled pixels (and some at all).
    """
    counts = np.asarray(chip_counts, dtype=np.float64)
    total = counts.sum(axis=0)
    share = total / max(total.sum(), 1.0)
    rare = (share > 0) & (share < rare_share)  # (K,)
    has_rare = (counts[:, rare] > 0).any(axis=1) if rare.any() else np.zeros(len(counts), bool)
    return np.where(has_rare, float(factor), 1.0)


def focal_loss(
    logits: Tensor, target: Tensor, gamma: float = 2.0, ignore_index: int = 255
) -> Tensor:
    """Focal loss ``-(1 - p_t)^gamma log p_t``, mean over non-ignored pixels.

    Shape:
        logits ``(B, K, H, W)``, target ``(B, H, W)`` int64; returns a scalar
        (0 with a graph when no pixel is labelled).
    """
    valid = target != ignore_index  # (B, H, W)
    logp = F.log_softmax(logits.float(), dim=1)  # (B, K, H, W)
    logp_t = logp.gather(1, target.clamp(min=0, max=logits.shape[1] - 1).unsqueeze(1))[:, 0]
    p_t = logp_t.exp()  # (B, H, W)
    term = -((1 - p_t) ** gamma) * logp_t * valid
    return term.sum() / valid.sum().clamp(min=1)


def weight_tensor(values: np.ndarray | list[float] | None) -> Tensor | None:
    """Class weights as a float32 tensor (None stays None)."""
    return None if values is None else torch.tensor(list(values), dtype=torch.float32)
