"""The device predict runs on, resolved by the one resolver in :mod:`aerialct.engine.distributed`."""

from __future__ import annotations

from typing import Any


def resolve_device_name(device: str | None) -> str:
    """``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` as a device name; under torchrun ``cuda``
    is this rank's GPU. InputError (value and fix) for a device that is not there."""
    from aerialct.engine.distributed import resolve_device as resolve

    return str(resolve(device))


def resolve_device(device: str | None, model: Any) -> Any:
    """The torch device to predict on: ``device``, or the model's when None or ""."""
    import torch

    from aerialct.engine.distributed import resolve_device as resolve

    if device in (None, ""):
        try:
            return next(model.parameters()).device
        except StopIteration:
            return torch.device("cpu")
    return resolve(device)
