"""Loss configuration (owned by :mod:`aerialct.losses`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ConfigDict, with_config

ContrastMode = Literal["none", "ct-cl", "ct-infonce", "mscs", "ct-cl+mscs", "ct-infonce+mscs"]
LossMode = Literal["paper", "released"]


@with_config(ConfigDict(extra="forbid", strict=True))  # strict loading: aerialct.config
@dataclass
class LossConfig:
    contrast: ContrastMode = "none"
    ce_smoothing: float = 0.1
    dice_weight: float = 1.0
    # CT (README, "Models, and the two contrastive schemes")
    ct_mode: LossMode = "paper"
    """``paper``: the paper's rules (our documented choices where it is silent);
    ``released``: the authors' released code, quirks included (see aerialct.losses.ct)."""
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
    # MS/CS (README, "Models, and the two contrastive schemes")
    mscs_mode: LossMode = "paper"
    """``paper``: K anchors per class and the two-layer projector; ``released``: K anchors
    per (image, class) and a one-layer projector, as in the authors' code."""
    mscs_anchors: Literal["per-class", "per-image-class"] | None = None
    """Anchor budget: ``per-class`` (the paper: K per class, split among the images that
    contain it) or ``per-image-class`` (the released code: K per (image, class) pair).
    None: what ``mscs_mode`` says."""
    mscs_proj_layers: int | None = None
    """Conv1x1-ReLU-BN layers before the projector's last linear layer (paper 2, released
    code 1). None: what ``mscs_mode`` says."""
    mscs_features: Literal["encoder", "decoder"] = "encoder"
    """Which multi-scale maps MS/CS contrast: the encoder stages, or the decoder's maps
    at the same strides (fpn, dcswin, unetformer)."""
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

    def mscs_settings(self) -> tuple[str, int]:
        """The (anchor rule, projector layers) in force: explicit values, else the mode's."""
        released = self.mscs_mode == "released"
        anchors = self.mscs_anchors or ("per-image-class" if released else "per-class")
        layers = (
            self.mscs_proj_layers if self.mscs_proj_layers is not None else 1 if released else 2
        )
        return anchors, layers
