"""Segmentation model = backbone adapter + decoder, and :func:`build_model`."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aerialct.models.backbone import BackboneAdapter, WeightsReport, load_backbone_weights
from aerialct.models.config import ModelConfig
from aerialct.models.decoders import build_decoder, conv_bn_relu
from aerialct.progress import ProgressFn

log = logging.getLogger("aerialct")


class RefineHead(nn.Module):
    """Full-resolution residual correction of upsampled logits, guided by the input image.

    ``logits + body(cat(logits, image_features(x)))``: two 3x3 layers of ``channels`` at
    the input resolution; the last 1x1 layer starts at zero, so an untrained head is the
    identity and training only adds what the image's edges justify.
    """

    def __init__(self, in_chans: int, num_classes: int, channels: int) -> None:
        super().__init__()
        self.image = conv_bn_relu(in_chans, channels, 3)
        last = nn.Conv2d(channels, num_classes, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)  # type: ignore[arg-type]  # bias=True: never None
        self.body = nn.Sequential(
            conv_bn_relu(channels + num_classes, channels, 3),
            conv_bn_relu(channels, channels, 3),
            last,
        )

    def forward(self, logits: Tensor, x: Tensor) -> Tensor:
        """``logits`` (B, K, H, W) upsampled to the input ``x`` (B, C, H, W)."""
        return logits + self.body(torch.cat([logits, self.image(x)], dim=1))


class SegmentationModel(nn.Module):
    """Encoder-decoder segmentation network (the inference model: no projection heads).

    Shape:
        input ``(B, C_in, H, W)`` normalised float, H and W multiples of 32;
        output logits ``(B, K, H, W)``.
    """

    def __init__(
        self,
        backbone: BackboneAdapter,
        decoder: nn.Module,
        num_classes: int,
        refine: RefineHead | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.num_classes = num_classes
        self.refine = refine
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
        return self._full_size(logits, x), feats  # (B, K, H, W)

    def forward_with_decoder_features(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Logits, encoder maps and the decoder's multi-scale maps (finest first)."""
        feats = self.backbone(x)
        logits, dec = self.decoder.forward_features(feats)  # type: ignore[operator]
        return self._full_size(logits, x), feats, dec

    def _full_size(self, logits: Tensor, x: Tensor) -> Tensor:
        corners = getattr(self.decoder, "align_corners", False)  # dcswin: as its reference
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=corners)
        return logits if self.refine is None else self.refine(logits, x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K, H, W)``."""
        return self.forward_with_features(x)[0]


def build_model(
    cfg: ModelConfig,
    num_classes: int,
    in_chans: int = 3,
    *,
    load_weights: bool = True,
    progress: ProgressFn | None = None,
) -> SegmentationModel:
    """Build the model described by ``cfg``; load ``cfg.weights`` into the backbone if given.

    ``cfg.weights`` is a local file, ``imagenet``, ``timm:<model>.<tag>`` or an https URL
    with its SHA-256 (:mod:`aerialct.models.weights`); a download reports to ``progress``.
    ``load_weights=False`` skips ``cfg.weights`` (rebuilding a trained model from a
    checkpoint, whose state dict replaces every tensor anyway).
    """
    from aerialct.models.weights import resolve_weights

    resolved = None
    if cfg.weights and load_weights:  # a wrong name or an offline miss fails before building
        resolved = resolve_weights(
            cfg.weights, cfg.backbone, cfg.backbone_kwargs, progress=progress
        )
    backbone = BackboneAdapter(
        cfg.backbone,
        in_chans=in_chans,
        img_size=cfg.img_size,
        out_indices=tuple(cfg.out_indices) if cfg.out_indices is not None else None,
        kwargs=cfg.backbone_kwargs,
    )
    decoder = build_decoder(cfg.decoder, backbone.channels, num_classes, cfg.decoder_channels)
    refine = RefineHead(in_chans, num_classes, cfg.refine) if cfg.refine > 0 else None
    model = SegmentationModel(backbone, decoder, num_classes, refine)
    if resolved is not None:
        model.weights_report = load_backbone_weights(
            backbone, resolved.file, source=resolved.record()
        )
    elif load_weights:
        log.info(
            "backbone %s (%s): random init (no model.weights given)",
            cfg.backbone,
            backbone.timm_name,
        )
    return model
