"""Model configuration (owned by :mod:`aerialct.models`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class ModelConfig:
    backbone: str = "swin_ct"
    """A named preset (``swin_ct``: Swin embed 64, depths 2-2-8-2, heads 2-4-8-16;
    ``poolformer_s12``; ``tiny_swin`` for tests) or any timm model name."""
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments passed to ``timm.create_model``."""
    decoder: Literal["dcswin", "unetformer", "fpn"] = "dcswin"
    decoder_channels: int = 64
    weights: str | None = None
    """Local file of pretrained backbone weights; never downloaded. None: random init."""
