"""Checkpoints: one self-describing file per training state.

A checkpoint is a plain dict written with :func:`torch.save` through
:func:`aerialct.geo.outputs.atomic_output` (temporary sibling + ``os.replace``), so a
run killed mid-write leaves the previous file intact. It holds everything
``predict`` needs (model weights, config, class table, normalisation, chip size)
and everything ``train --resume`` needs (optimiser, scheduler, grad scaler,
step, epoch, RNG states)::

    {"format": "aerialct-checkpoint", "version": 1, "aerialct_version": str,
     "config": to_dict(ExperimentConfig), "classes": ClassTable.to_list(),
     "ignore_index": 255, "normalization": {"mean": [...], "std": [...]},
     "in_chans": int, "chip_size": int, "gsd": float | None,
     "model": <inference model state_dict>, "heads": <projector state_dict>,
     "optimizer", "scheduler", "scaler", "step", "epoch", "rng",
     "best_miou", "metrics"}

Files are read with ``torch.load(weights_only=True)``: only tensors and plain
containers are unpickled, so a checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.errors import AerialctError, CheckpointError
from aerialct.geo.outputs import atomic_output

if TYPE_CHECKING:
    import torch
    from torch import nn

    from aerialct.config import ExperimentConfig

FORMAT = "aerialct-checkpoint"
VERSION = 1

REQUIRED_KEYS = ("config", "classes", "normalization", "in_chans", "chip_size", "model")
TRAINING_KEYS = ("optimizer", "scheduler", "step", "epoch")
"""Keys ``train --resume`` needs (absent or None in a slim export)."""

__all__ = [
    "FORMAT",
    "VERSION",
    "InferenceBundle",
    "check_resume_compatible",
    "load_checkpoint",
    "load_inference_model",
    "make_checkpoint",
    "save_checkpoint",
]


def make_checkpoint(
    *,
    config: ExperimentConfig | dict,
    classes: ClassTable,
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
    in_chans: int,
    chip_size: int,
    model_state: dict,
    gsd: float | None = None,
    ignore_index: int = IGNORE_INDEX,
    heads_state: dict | None = None,
    optimizer: dict | None = None,
    scheduler: dict | None = None,
    scaler: dict | None = None,
    step: int = 0,
    epoch: int = 0,
    rng: dict | None = None,
    best_miou: float | None = None,
    metrics: dict | None = None,
    low: tuple[float, ...] | list[float] | None = None,
    high: tuple[float, ...] | list[float] | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict in the documented layout."""
    from aerialct import __version__
    from aerialct.config import to_dict

    return {
        "format": FORMAT,
        "version": VERSION,
        "aerialct_version": __version__,
        "config": config if isinstance(config, dict) else to_dict(config),
        "classes": classes.to_list(),
        "ignore_index": int(ignore_index),
        "normalization": {
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            **({"low": [float(v) for v in low]} if low else {}),
            **({"high": [float(v) for v in high]} if high else {}),
        },
        "in_chans": int(in_chans),
        "chip_size": int(chip_size),
        "gsd": None if gsd is None else float(gsd),
        "model": model_state,
        "heads": heads_state or {},
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
        "step": int(step),
        "epoch": int(epoch),
        "rng": rng,
        "best_miou": None if best_miou is None else float(best_miou),
        "metrics": metrics or {},
    }


def save_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any], overwrite: bool = True) -> Path:
    """Write ``ckpt`` atomically to ``path`` (temp sibling, then ``os.replace``).

    ``overwrite`` defaults to True because a run rewrites its own ``last.pt``
    and ``best.pt``; the caller decides whether the run folder may be reused.
    """
    import torch

    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: refusing to save a dict without format={FORMAT!r}")
    with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def local_model(path: str | os.PathLike) -> Path:
    """A model file's path; CheckpointError for a URL or GDAL path (models are read locally)."""
    from aerialct.geo.inputs import is_gdal_path, redact

    if is_gdal_path(path):
        raise CheckpointError(
            f"{redact(path)}: models are read from local files, not URLs; download it first "
            "(e.g. curl -o model.pt URL) and give that file"
        )
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, for_training: bool = False
) -> dict[str, Any]:
    """Read and validate a checkpoint; CheckpointError names the file and the problem.

    ``for_training`` also requires the optimiser/scheduler state that ``--resume`` needs.
    """
    import torch

    p = local_model(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint; give a .pt file written by aerialct train")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder; give a checkpoint file such as {p / 'best.pt'}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load raises many types (struct.error, UnpicklingError, ...)
        first = (str(e).splitlines() or ["unreadable"])[0][:160]
        raise CheckpointError(
            f"{p}: not a readable aerialct checkpoint ({type(e).__name__}: {first}); "
            "give a last.pt/best.pt written by aerialct train"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{p}: not an aerialct checkpoint (no format={FORMAT!r} marker); "
            "give a last.pt/best.pt written by aerialct train"
        )
    version = ckpt.get("version")
    if version != VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format version {version!r} is not supported (this aerialct reads "
            f"version {VERSION}); use the aerialct version that wrote it "
            f"({ckpt.get('aerialct_version', 'unknown')})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if for_training:
        missing += [k for k in TRAINING_KEYS if ckpt.get(k) is None]
    if missing:
        what = "resume training" if for_training else "use it"
        raise CheckpointError(
            f"{p}: checkpoint lacks {', '.join(missing)}; cannot {what} (was it truncated or "
            "exported without training state?)"
        )
    try:
        ClassTable.from_list(ckpt["classes"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{p}: the class table in the checkpoint is invalid ({e})") from e
    norm = ckpt["normalization"]
    if (
        not isinstance(norm, dict)
        or len(norm.get("mean", [])) != ckpt["in_chans"]
        or len(norm.get("std", [])) != ckpt["in_chans"]
    ):
        raise CheckpointError(
            f"{p}: normalisation does not have one mean/std per band ({ckpt['in_chans']} bands)"
        )
    return ckpt


def check_resume_compatible(
    ckpt: dict[str, Any],
    config: ExperimentConfig,
    classes: ClassTable,
    in_chans: int,
    path: str | os.PathLike = "checkpoint",
) -> None:
    """Refuse to resume/fine-tune from a checkpoint of another model, class table or band count."""
    from aerialct.config import to_dict

    old_names = [c["name"] for c in ckpt["classes"]]
    if old_names != classes.names:
        raise CheckpointError(
            f"{path}: class table {old_names} differs from the data's {classes.names}; "
            "train into a new --out folder (or tile the data with the checkpoint's classes)"
        )
    old_model = ckpt["config"].get("model", {})
    new_model = to_dict(config.model)
    diffs = [
        f"model.{k}: {old_model.get(k)!r} -> {new_model[k]!r}"
        for k in new_model
        if k != "weights" and old_model.get(k) != new_model[k]
    ]
    if diffs:
        raise CheckpointError(
            f"{path}: checkpoint holds another model ({'; '.join(diffs)}); "
            "use the checkpoint's config or train into a new --out folder"
        )
    old_contrast = ckpt["config"].get("loss", {}).get("contrast")
    if old_contrast is not None and old_contrast != config.loss.contrast:
        raise CheckpointError(
            f"{path}: checkpoint was trained with loss.contrast={old_contrast!r}, config says "
            f"{config.loss.contrast!r}; keep the same contrast mode to resume or use a new --out"
        )
    if int(ckpt["in_chans"]) != int(in_chans):
        raise CheckpointError(
            f"{path}: checkpoint expects {ckpt['in_chans']} bands, the chips have {in_chans}; "
            "train into a new --out folder"
        )


# ---------------------------------------------------------------------------
# Inference


@dataclass
class InferenceBundle:
    """An eval-mode model plus everything needed to feed it raw pixels."""

    model: nn.Module  # or a runner of an exported model (aerialct.export.OnnxRunner)
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
            from aerialct.errors import InputError

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
    whose ``model`` is a runner called the same way (:mod:`aerialct.export`).
    """
    import torch

    from aerialct.config import config_from_dict
    from aerialct.export import is_torchscript, load_exported_model
    from aerialct.models import build_model

    p = local_model(path)
    if p.suffix.lower() == ".onnx" or is_torchscript(p):
        return load_exported_model(p, device=str(device))
    ckpt = load_checkpoint(p, map_location="cpu")
    try:
        cfg = config_from_dict(ckpt["config"])
    except AerialctError as e:
        raise CheckpointError(
            f"{p}: the config stored in the checkpoint is not valid for this aerialct ({e})"
        ) from e
    classes = ClassTable.from_list(ckpt["classes"])
    in_chans = int(ckpt["in_chans"])
    # the checkpoint's state dict replaces every tensor: no pretrained file, no init log
    model = build_model(cfg.model, num_classes=len(classes), in_chans=in_chans, load_weights=False)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0][:200]
        raise CheckpointError(
            f"{p}: weights do not fit the model described by its config ({first})"
        ) from e
    model.eval().to(torch.device(device))
    norm = ckpt["normalization"]
    return InferenceBundle(
        model=model,
        classes=classes,
        mean=tuple(float(v) for v in norm["mean"]),
        std=tuple(float(v) for v in norm["std"]),
        in_chans=in_chans,
        chip_size=int(ckpt["chip_size"]),
        gsd=None if ckpt.get("gsd") is None else float(ckpt["gsd"]),
        config=cfg,
        path=p,
        ignore_index=int(ckpt.get("ignore_index", IGNORE_INDEX)),
        low=tuple(float(v) for v in norm["low"]) if norm.get("low") else None,
        high=tuple(float(v) for v in norm["high"]) if norm.get("high") else None,
    )
