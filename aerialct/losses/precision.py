"""The dtype the contrastive losses compute in, whatever the dtype of their input.

float16 and bfloat16 cannot hold the losses' arithmetic: ``log(1 - s)`` with
``s = 1 - 1e-6`` rounds to ``log(0)``, and ``exp(z.z / 0.1)`` spans more than
their precision resolves. The loss functions and modules therefore compute in
float32 for those inputs (float64 stays float64, so a whole module can be checked
by finite differences) and return their value in the input's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: float16 / bfloat16 / float32 -> float32, float64 -> float64."""
    return torch.promote_types(dtype, torch.float32)


def upcast(t: Tensor) -> Tensor:
    """``t`` in :func:`loss_dtype` of its dtype (the same tensor when already there)."""
    return t.to(loss_dtype(t.dtype))


def param_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of a module's first parameter (``default`` when it has none)."""
    for p in module.parameters():
        return p.dtype
    return default
