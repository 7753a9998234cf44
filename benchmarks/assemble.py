"""Assemble benchmarks/RESULTS.md from the sections in benchmarks/results/.

Each benchmark writes its own section (``results/<name>.md``) with its date,
machine and side-by-side figures. Sections measured on a GPU machine are named
``*_cuda.md`` or ``*_gpu.md`` (benchmarks/GPU_RUNS.md); a run without a GPU cannot
regenerate them, so they are kept as recorded. Usage: ``python benchmarks/assemble.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [
    "tile",
    "step",
    "engine",
    "train",
    "contrast",
    "buildings",
    "pretrained",
    "evidence",
    "predict",
    "export",
    "vectorize",
    "startup",
    "decoders",
    "flight",
]


def is_gpu(p: Path) -> bool:
    return p.stem.endswith(("_cuda", "_gpu"))


def order(p: Path) -> tuple[int, int, str]:
    base = p.stem.split("_")[0]
    return (ORDER.index(base) if base in ORDER else len(ORDER), is_gpu(p), p.stem)


def machine_line() -> str:
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def main() -> None:
    results = HERE / "results"
    sections = sorted(results.glob("*.md"), key=order)
    parts = [
        "# aerialct benchmark results",
        "",
        f"Assembled {dt.date.today().isoformat()} by `benchmarks/run_all` on {machine_line()}.",
        "Each section below states when and where it was measured and its peer tool;",
        "ratios > 1 mean aerialct is faster (or smaller) than the peer. Regenerate with",
        "`benchmarks/run_all` (CPU sections); GPU sections (`--device cuda` modes) come",
        "from a GPU machine and are kept as recorded.",
        "",
    ]
    for p in sections:
        parts.append(p.read_text().rstrip() + "\n")
    out = HERE / "RESULTS.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    print(out)


if __name__ == "__main__":
    main()
