"""The checkpoint format: one self-describing file per training state.

This module is the format only: it writes (:func:`make_checkpoint`,
:func:`save_checkpoint`) and checks (:func:`load_checkpoint`,
:func:`check_resume_compatible`) the file. Turning one into a model that predicts
is :mod:`aerialct.predict.bundle`'s job.

A checkpoint is a plain dict written with :func:`torch.save` through
:func:`aerialct.geo.outputs.atomic_output` (temporary sibling + ``os.replace``), so a
run killed mid-write leaves the previous file intact. It holds everything
``predict`` needs (model weights, config, class table, normalisation, chip size)
and everything ``train --resume`` needs (optimiser, scheduler, grad scaler,
step, epoch, batch within the epoch, RNG states)::

    {"format": "aerialct-checkpoint", "version": 1, "aerialct_version": str,
     "config": to_dict(ExperimentConfig), "classes": ClassTable.to_list(),
     "ignore_index": 255,
     "normalization": {"mean": [...], "std": [...], "low"?: [...], "high"?: [...]},
     "in_chans": int, "chip_size": int, "gsd": float | None,
     "model": <inference model state_dict>, "heads": <projector state_dict>,
     "optimizer", "scheduler", "scaler", "step", "epoch", "batch_in_epoch", "rng",
     "best_miou", "metrics", "exported"?: true}

``batch_in_epoch`` counts the batches of ``epoch`` already trained (a checkpoint
written mid-epoch resumes there; 0 at an epoch's end). ``exported`` marks a slim
checkpoint written by ``aerialct export --format pt`` (no training state).

Files are read with ``torch.load(weights_only=True)``: only tensors and plain
containers are unpickled, so a checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aerialct import __version__
from aerialct.classes import IGNORE_INDEX, ClassTable
from aerialct.errors import CheckpointError
from aerialct.geo.outputs import atomic_output

if TYPE_CHECKING:
    import torch

    from aerialct.config import ExperimentConfig

FORMAT = "aerialct-checkpoint"
VERSION = 1

REQUIRED_KEYS = ("config", "classes", "normalization", "in_chans", "chip_size", "model")
TRAINING_KEYS = ("optimizer", "scheduler", "step", "epoch")
"""Keys ``train --resume`` needs (absent or None in a slim export)."""

__all__ = [
    "FORMAT",
    "REQUIRED_KEYS",
    "TRAINING_KEYS",
    "VERSION",
    "check_resume_compatible",
    "load_checkpoint",
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
    batch_in_epoch: int = 0,
    rng: dict | None = None,
    best_miou: float | None = None,
    metrics: dict | None = None,
    low: tuple[float, ...] | list[float] | None = None,
    high: tuple[float, ...] | list[float] | None = None,
    exported: bool = False,
) -> dict[str, Any]:
    """Assemble a checkpoint dict in the documented layout."""
    from aerialct.config import to_dict  # here: pydantic and the model configs load on use

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
        "batch_in_epoch": int(batch_in_epoch),
        "rng": rng,
        "best_miou": None if best_miou is None else float(best_miou),
        "metrics": metrics or {},
        **({"exported": True} if exported else {}),
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
