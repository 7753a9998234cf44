"""Loss configuration (owned by :mod:`aerialct.losses`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ContrastMode = Literal["none", "ct-cl", "ct-infonce", "mscs", "ct-cl+mscs", "ct-infonce+mscs"]


@dataclass
class LossConfig:
    contrast: ContrastMode = "none"
    ce_smoothing: float = 0.1
    dice_weight: float = 1.0
    # CT (DESIGN section 4)
    ct_lambda: float = 1.0
    ct_stages: tuple[int, ...] = (0, 1, 2, 3)
    ct_proj_hidden: int = 128
    ct_proj_dim: int = 128
    ct_keep_fraction: float = 0.5
    ct_min_samples: int = 5
    ct_max_samples: int = 4096
    """At most this many positives and negatives per (stage, class), drawn at random
    before pairing (bounds the InfoNCE matrix at stride 4); 0 = no limit."""
    ct_smoothing: float = 0.1
    ct_temperature: float = 0.1
    # MS/CS (DESIGN section 5)
    mscs_dim: int = 256
    mscs_temperature: float = 0.1
    ms_weights: tuple[float, ...] = (1.0, 0.7, 0.4, 0.1)
    cs_pairs: tuple[tuple[int, int], ...] = ((4, 32), (4, 16))
    ms_lambda: float = 0.1
    cs_lambda: float = 0.1
    mscs_min_pixels: int = 5
    mscs_max_k: int = 2500
    mscs_max_total: int = 10000
    # class imbalance (aerialct.losses.imbalance)
    class_weights: Literal["none", "auto"] = "none"
    """``auto``: cross-entropy weighted by the training split's pixel counts (inverse sqrt)."""
    class_weight_values: tuple[float, ...] | None = None
    """Given cross-entropy weights, one per class (wins over ``class_weights``)."""
    focal_weight: float = 0.0
    """Weight of an added focal term (0: none)."""
    focal_gamma: float = 2.0
