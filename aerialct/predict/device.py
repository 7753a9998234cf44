"""Device resolution for predict.

To be replaced by the one resolver in :mod:`aerialct.engine.distributed` (issue 12):
kept here unchanged until then.
"""

from __future__ import annotations

import os
from typing import Any

from aerialct.errors import InputError


def resolve_device_name(device: str | None) -> str:
    """ "auto" -> "cuda" when available else "cpu"; under torchrun "cuda" -> "cuda:LOCAL_RANK"."""
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available here; use --device cpu")
    if name == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return name


def resolve_device(device: str | None, model: Any) -> Any:
    """The torch device to predict on: ``device``, or the model's when None or ""."""
    import torch

    if device in (None, ""):
        try:
            return next(model.parameters()).device
        except StopIteration:
            return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available here; use --device cpu")
    return dev
