"""What prediction takes in and gives back: the model bundle and the result records."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aerialct.classes import ClassTable
from aerialct.geo.inputs import redact


class BundleLike(Protocol):
    """What prediction needs from :class:`aerialct.predict.bundle.InferenceBundle`."""

    model: Any
    classes: ClassTable
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    chip_size: int
    gsd: float | None

    def normalize(self, x: Any) -> Any:
        """Scale raw pixels (B, C, S, S) as in training."""
        ...


@dataclass
class SceneResult:
    """What happened to one output (a scene's, a tile's or a mosaic's): ``status`` is "ok",
    "skipped" (a complete output was already there, or it lies outside ``--aoi``),
    "failed" (then ``error`` says why) or "pending" (this process computed blocks of it;
    the process that finishes its last block writes it)."""

    scene: str | Path
    """The scene as given: a Path, or a GDAL path / URL as a string (recorded redacted)."""
    status: str = "ok"
    source: str = ""
    """The scene as given, verbatim (a URL or ``/vsi`` path keeps its ``//``)."""
    output: Path | None = None
    probabilities: Path | None = None
    quicklook: Path | None = None
    width: int = 0
    height: int = 0
    windows: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0
    grid_seconds: float = 0.0
    pixels_per_second: float = 0.0
    nodata_pixels: int = 0
    class_pixels: dict[str, int] = field(default_factory=dict)
    gsd: float | None = None
    resampled: bool = False
    device: str = ""
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The scene's file name, without a URL's secrets."""
        from aerialct.geo.inputs import source_label

        return source_label(self.source or self.scene)  # a Path of a URL lost its //

    @property
    def overhead_share(self) -> float:
        """Share of the wall time spent outside the model forward (read, blend, write, COG);
        NaN when this record ran no window (a tile of a catalog, written from blocks: the
        job's record has the numbers)."""
        if self.seconds <= 0 or not self.windows:
            return float("nan")
        return 1.0 - self.forward_seconds / self.seconds

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON types (``predict --json``)."""
        share = self.overhead_share
        return {
            "scene": redact(self.source or str(self.scene)),
            "status": self.status,
            "output": str(self.output) if self.output else None,
            "probabilities": str(self.probabilities) if self.probabilities else None,
            "quicklook": str(self.quicklook) if self.quicklook else None,
            "width": self.width,
            "height": self.height,
            "windows": self.windows,
            "seconds": round(self.seconds, 3),
            "forward_seconds": round(self.forward_seconds, 3),
            "grid_seconds": round(self.grid_seconds, 3),
            "overhead_share": None if math.isnan(share) else round(share, 4),
            "pixels_per_second": round(self.pixels_per_second, 1) if self.windows else None,
            "nodata_pixels": self.nodata_pixels,
            "class_pixels": self.class_pixels,
            "gsd": self.gsd,
            "resampled": self.resampled,
            "device": self.device,
            "error": self.error,
        }


@dataclass
class BatchResult:
    """The outcome of :func:`predict_scenes` on this process: its output records, and per
    job (a scene or a catalog) its share of the blocks (``jobs``, JobResult records)."""

    scenes: list[SceneResult]
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1
    jobs: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> list[SceneResult]:
        """The scenes predicted."""
        return [s for s in self.scenes if s.status == "ok"]

    @property
    def failed(self) -> list[SceneResult]:
        """The scenes that failed (``error`` says why)."""
        return [s for s in self.scenes if s.status == "failed"]

    @property
    def skipped(self) -> list[SceneResult]:
        """The scenes skipped: a complete output exists, or outside the area of interest."""
        return [s for s in self.scenes if s.status == "skipped"]

    @property
    def pending(self) -> list[SceneResult]:
        """Outputs that wait for blocks of other processes (they write them)."""
        return [s for s in self.scenes if s.status == "pending"]

    def to_dict(self) -> dict[str, Any]:
        """The batch as plain JSON types (``predict --json``)."""
        px = sum(s.width * s.height for s in self.ok)
        return {
            "scenes": [s.to_dict() for s in self.scenes],
            "ok": len(self.ok),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "pending": len(self.pending),
            "jobs": [j.to_dict() for j in self.jobs],
            "seconds": round(self.seconds, 3),
            "pixels_per_second": round(px / self.seconds, 1) if self.seconds > 0 else None,
            "rank": self.rank,
            "world_size": self.world_size,
        }
