"""What ``vectorize`` reports: :class:`VectorizeResult` per raster, :class:`VectorizeBatch`
for many; and how a class raster finds its probability raster."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class VectorizeResult:
    """What ``vectorize`` wrote."""

    source: str
    output: str
    layer: str
    driver: str
    classes: list[str]
    count: int
    count_by_class: dict[str, int]
    total_area: float
    dropped_small: int
    crs: str | None
    window_size: int
    windows: int
    seam_merges: int
    seconds: float
    appended: bool = False
    options: dict = field(default_factory=dict)


@dataclass
class VectorizeBatch:
    """What :func:`vectorize_many` did: one result per raster, failures with their error."""

    results: list[VectorizeResult]
    failed: list[tuple[str, str]]
    output: str
    seconds: float
    mosaics: int = 0
    """Maps the rasters formed (touching rasters on one grid are one map); 0: one file each."""
    across_files: int = 0
    """Buildings joined across file seams."""
    shard: str | None = None
    """K/N when this process traced a share (its part is in ``<output>.parts``)."""
    parts_joined: int = 0
    """How many parts this process joined into ``output`` (0: none, or left to another)."""

    @property
    def waiting(self) -> bool:
        """A shard of a map whose part is written and whose join is left to another process."""
        return self.shard is not None and self.mosaics > 0 and not self.parts_joined

    def to_dict(self) -> dict:
        """Each raster's result, the failures and the total count (the ``--json`` output)."""
        from dataclasses import asdict

        return {
            "output": self.output,
            "rasters": [asdict(r) for r in self.results],
            "failed": [{"raster": r, "error": e} for r, e in self.failed],
            "count": sum(r.count for r in self.results),
            "mosaics": self.mosaics,
            "across_files": self.across_files,
            "shard": self.shard,
            "parts_joined": self.parts_joined,
            "seconds": round(self.seconds, 3),
        }


def probabilities_for(
    raster: str | os.PathLike, probabilities: str | os.PathLike | None
) -> str | Path | None:
    """The probability raster of ``raster``: a file (or URL) as given, or
    ``<stem>_probabilities.tif`` in a folder (``<stem>`` without ``_classes``, as predict
    names them)."""
    from aerialct.geo.inputs import source_label, source_path

    if probabilities is None:
        return None
    p = source_path(probabilities)
    if not isinstance(p, Path) or not p.is_dir():
        return p
    return p / f"{Path(source_label(raster)).stem.removesuffix('_classes')}_probabilities.tif"
