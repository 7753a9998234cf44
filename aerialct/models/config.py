"""Model configuration (owned by :mod:`aerialct.models`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict, with_config


@with_config(ConfigDict(extra="forbid", strict=True))  # strict loading: aerialct.config
@dataclass
class ModelConfig:
    backbone: str = "swin_ct"
    """A named preset (``swin_ct``: Swin embed 64, depths 2-2-8-2, heads 2-4-8-16;
    ``poolformer_s12``; ``tiny_swin`` / ``tiny_cnn`` for tests) or any timm model name."""
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments passed to ``timm.create_model`` (override the preset's)."""
    decoder: Literal["dcswin", "unetformer", "fpn"] = "dcswin"
    decoder_channels: int = 64
    weights: str | None = None
    """Pretrained encoder weights: ``imagenet`` (timm's default tag for the backbone),
    ``timm:<model>.<tag>``, ``https://...#sha256=<hex>`` or a local file
    (:mod:`aerialct.models.weights`). None: random init."""
    img_size: int = 512
    """Training chip size, given to backbones that build size-dependent buffers (Swin);
    they still accept any multiple of the largest reduction (32)."""
    out_indices: tuple[int, ...] | None = None
    """Backbone feature levels to use; None: the last four (reductions 4, 8, 16, 32)."""
    refine: int = 0
    """Channels of a full-resolution refinement head (0: none). The decoder's logits are at
    stride 4 and upsampled, which rounds off small objects (a 10 m building at 0.5 m is a
    5x5 logit patch); the head corrects them with convolutions over the input image at
    full resolution. Starts as the identity (last layer zero-initialised)."""
