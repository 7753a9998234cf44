"""Segmentation model = backbone adapter + decoder, and :func:`build_model`."""

from __future__ import annotations

import logging

import torch.nn.functional as F
from torch import Tensor, nn

from aerialct.models.backbone import BackboneAdapter, WeightsReport, load_backbone_weights
from aerialct.models.config import ModelConfig
from aerialct.models.decoders import build_decoder

log = logging.getLogger("aerialct")


class SegmentationModel(nn.Module):
    """Encoder-decoder segmentation network (the inference model: no projection heads).

    Shape:
        input ``(B, C_in, H, W)`` normalised float, H and W multiples of 32;
        output logits ``(B, K, H, W)``.
    """

    def __init__(self, backbone: BackboneAdapter, decoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.num_classes = num_classes
        self.weights_report: WeightsReport | None = None

    @property
    def feature_channels(self) -> list[int]:
        """Channels of the encoder's maps, finest first."""
        return list(self.backbone.channels)

    @property
    def feature_reductions(self) -> list[int]:
        """Strides of the encoder's maps (e.g. 4, 8, 16, 32)."""
        return list(self.backbone.reductions)

    @property
    def decoder_feature_channels(self) -> list[int] | None:
        """Channels of the decoder's multi-scale maps (at ``feature_reductions``), if any."""
        ch = getattr(self.decoder, "feature_channels", None)
        return list(ch) if ch is not None else None

    def check_input_size(self, h: int, w: int) -> None:
        """Raise InputError naming the nearest valid size when (h, w) does not fit the backbone."""
        self.backbone.check_input_size(h, w)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The encoder's maps ``[(B, C_i, H/r_i, W/r_i)]``."""
        return self.backbone(x)  # [(B, C_i, H/r_i, W/r_i)]

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits ``(B, K, H, W)`` and the encoder's maps (for the contrastive losses)."""
        feats = self.backbone(x)
        logits = self.decoder(feats)  # (B, K, H/r_0, W/r_0)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits, feats  # (B, K, H, W)

    def forward_with_decoder_features(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Logits, encoder maps and the decoder's multi-scale maps (finest first)."""
        feats = self.backbone(x)
        logits, dec = self.decoder.forward_features(feats)  # type: ignore[operator]
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits, feats, dec

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K, H, W)``."""
        return self.forward_with_features(x)[0]


def build_model(
    cfg: ModelConfig, num_classes: int, in_chans: int = 3, *, load_weights: bool = True
) -> SegmentationModel:
    """Build the model described by ``cfg``; load ``cfg.weights`` into the backbone if given.

    ``load_weights=False`` skips ``cfg.weights`` (rebuilding a trained model from a
    checkpoint, whose state dict replaces every tensor anyway).
    """
    backbone = BackboneAdapter(
        cfg.backbone,
        in_chans=in_chans,
        img_size=cfg.img_size,
        out_indices=tuple(cfg.out_indices) if cfg.out_indices is not None else None,
        kwargs=cfg.backbone_kwargs,
    )
    decoder = build_decoder(cfg.decoder, backbone.channels, num_classes, cfg.decoder_channels)
    model = SegmentationModel(backbone, decoder, num_classes)
    if cfg.weights and load_weights:
        model.weights_report = load_backbone_weights(backbone, cfg.weights)
    elif load_weights:
        log.info(
            "backbone %s (%s): random init (no model.weights given)",
            cfg.backbone,
            backbone.timm_name,
        )
    return model
