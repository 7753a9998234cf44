"""What a tiling run returns: per scene and for the whole run (rendered by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SceneReport:
    """What happened to one scene."""

    name: str
    image: str
    labels: str | None
    split: str | None
    chips: int = 0
    skipped_nodata: int = 0
    unknown_pixels: int = 0
    unknown_values: dict[str, int] = field(default_factory=dict)
    georef_copied: bool = False


@dataclass
class TileResult:
    """The outcome of a tiling run (rendered by the CLI, also returned to library callers)."""

    out: Path
    source: str
    label_mode: str | None
    chip_size: int
    window: int
    stride: int
    gsd: float
    crs: str
    chips: int
    splits: dict[str, int]
    skipped_nodata: int
    class_pixels: dict[str, int]
    unknown_pixels: int
    unknown_values: dict[str, int]
    scenes: list[SceneReport]
    warnings: list[str]
    seconds: float
    split_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per split: each class's (and ignore's) share of the label pixels."""
    band_stats: dict = field(default_factory=dict)
    """Robust per-band statistics of the training pixels (see :func:`band_statistics`)."""
    classes: list[dict] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    """What to pass to tile or train for a trainable set (:mod:`aerialct.tile.advice`)."""
    shard: str | None = None
    """K/N when this process cut a share of the band tasks."""
    complete: bool = True
    """False for a shard that left the index and header to the last shard to finish."""
    tasks: int = 0
    """Band tasks of the run (a row of windows of a scene each)."""
    tasks_done: int = 0
    """Band tasks finished so far, by any process."""
    tasks_kept: int = 0
    """Band tasks of an interrupted earlier run that this run kept (checked) instead of redoing."""
