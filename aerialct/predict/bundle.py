"""The inference bundle: a model that predicts, with everything needed to feed it raw pixels.

:func:`load_inference_model` opens a training checkpoint (``best.pt``, ``last.pt``,
a slim ``export --format pt``; the format is :mod:`aerialct.engine.checkpoint`'s)
or an exported ``.onnx`` / TorchScript model (:mod:`aerialct.export`) and gives an
:class:`InferenceBundle`: the eval-mode model on the device, the class table, the
band normalisation and the chip size. ``predict``, ``demo`` and the benchmarks
take a bundle; anything with the same attributes will do
(:class:`aerialct.predict.results.BundleLike`).

>>> bundle = load_inference_model("runs/exp/best.pt", device="cpu")
>>> logits = bundle.model(bundle.normalize(raw_pixels))   # raw (B, C, S, S)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.engine.checkpoint import load_checkpoint, local_model
from aerialct.errors import InputError

if TYPE_CHECKING:
    import torch

    from aerialct.config import ExperimentConfig

__all__ = ["InferenceBundle", "load_exported_model", "load_inference_model"]


@dataclass
class InferenceBundle:
    """An eval-mode model plus everything needed to feed it raw pixels."""

    model: Any  # a torch module, or a runner of an exported model (aerialct.export.OnnxRunner)
    classes: ClassTable
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    chip_size: int
    gsd: float | None = None
    config: ExperimentConfig | None = None
    path: Path | None = None
    ignore_index: int = IGNORE_INDEX
    low: tuple[float, ...] | None = None
    """Per-band clip range (robust training percentiles), applied before mean/std."""
    high: tuple[float, ...] | None = None
    _stats: dict = field(default_factory=dict, repr=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw pixel values (B, C, H, W) -> ``(clip(x, low, high) - mean) / std`` on x's device.

        The same transform as training's :class:`aerialct.data.transforms.Normalize`.
        """
        import torch

        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise InputError(
                f"the model expects {self.in_chans} bands, got an input of shape "
                f"{tuple(x.shape)}; give an image with {self.in_chans} bands"
            )
        key = (x.device,)
        if key not in self._stats:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            clip = None
            if self.low is not None and self.high is not None:
                clip = tuple(
                    torch.tensor(v, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
                    for v in (self.low, self.high)
                )
            self._stats[key] = (mean, std, clip)
        mean, std, clip = self._stats[key]
        x = x.float()
        if clip is not None:
            x = torch.maximum(torch.minimum(x, clip[1]), clip[0])
        return (x - mean) / std


def load_inference_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> InferenceBundle:
    """Load a checkpoint into an eval-mode model on ``device`` (no projection heads).

    An exported ``.onnx`` or TorchScript model (``aerialct export``) gives a bundle
    whose ``model`` is a runner called the same way (:func:`load_exported_model`).
    """
    import torch

    # here, not at the top: InferenceBundle alone stays free of timm and onnx
    from aerialct.modelfiles import is_torchscript
    from aerialct.models.restore import model_from_checkpoint

    p = local_model(path)
    if p.suffix.lower() == ".onnx" or is_torchscript(p):
        return load_exported_model(p, device=str(device))
    ckpt = load_checkpoint(p, map_location="cpu")
    model, cfg = model_from_checkpoint(ckpt, p)
    model.to(torch.device(device))
    norm = ckpt["normalization"]
    return InferenceBundle(
        model=model,
        classes=ClassTable.from_list(ckpt["classes"]),
        mean=tuple(float(v) for v in norm["mean"]),
        std=tuple(float(v) for v in norm["std"]),
        in_chans=int(ckpt["in_chans"]),
        chip_size=int(ckpt["chip_size"]),
        gsd=None if ckpt.get("gsd") is None else float(ckpt["gsd"]),
        config=cfg,
        path=p,
        ignore_index=int(ckpt.get("ignore_index", IGNORE_INDEX)),
        low=tuple(float(v) for v in norm["low"]) if norm.get("low") else None,
        high=tuple(float(v) for v in norm["high"]) if norm.get("high") else None,
    )


def load_exported_model(path: str | os.PathLike, device: str = "cpu") -> InferenceBundle:
    """An :class:`InferenceBundle` around an exported ``.onnx`` or TorchScript model."""
    from aerialct.export import read_exported

    p = Path(path)
    model, meta = read_exported(p, device)
    low, high = meta.get("low"), meta.get("high")
    return InferenceBundle(
        model=model,
        classes=meta["classes_table"],
        mean=tuple(float(v) for v in meta["mean"]),
        std=tuple(float(v) for v in meta["std"]),
        in_chans=int(meta["in_chans"]),
        chip_size=int(meta["chip_size"]),
        gsd=None if meta.get("gsd") is None else float(meta["gsd"]),
        config=None,
        path=p,
        ignore_index=int(meta.get("ignore_index", IGNORE_INDEX)),
        low=None if low is None else tuple(float(v) for v in low),
        high=None if high is None else tuple(float(v) for v in high),
    )
