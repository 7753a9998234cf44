"""Segmentation models: timm backbone adapter, decoders, :func:`build_model`.

Projection heads for the contrastive losses live in :mod:`aerialct.losses`
and are owned by the training task, never by the inference model.
"""

from aerialct.models.backbone import PRESETS, BackboneAdapter, WeightsReport, load_backbone_weights
from aerialct.models.config import ModelConfig
from aerialct.models.model import SegmentationModel, build_model

__all__ = [
    "PRESETS",
    "BackboneAdapter",
    "ModelConfig",
    "SegmentationModel",
    "WeightsReport",
    "build_model",
    "load_backbone_weights",
]
