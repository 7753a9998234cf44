"""Losses: segmentation (CE + Dice), CT patch contrast, MS/CS multi/cross-scale contrast."""

from aerialct.losses.config import LossConfig
from aerialct.losses.ct import (
    PatchContrastLoss,
    ProjectionHead,
    block_labels,
    cap_loss,
    ct_cl_loss,
    ct_infonce_loss,
    mine_hard_pairs,
    released_class_losses,
    released_labels_from_counts,
)
from aerialct.losses.mscs import (
    MultiScaleContrastLoss,
    Projector,
    balanced_sample,
    downsample_labels,
    supervised_contrastive_loss,
)
from aerialct.losses.segmentation import SegmentationLoss, dice_loss, soft_cross_entropy

__all__ = [
    "LossConfig",
    "MultiScaleContrastLoss",
    "PatchContrastLoss",
    "ProjectionHead",
    "Projector",
    "SegmentationLoss",
    "balanced_sample",
    "block_labels",
    "cap_loss",
    "ct_cl_loss",
    "ct_infonce_loss",
    "dice_loss",
    "downsample_labels",
    "mine_hard_pairs",
    "released_class_losses",
    "released_labels_from_counts",
    "soft_cross_entropy",
    "supervised_contrastive_loss",
]
