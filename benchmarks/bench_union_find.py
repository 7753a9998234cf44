"""Seam merge: the hand-written union-find vs ``scipy.sparse.csgraph.connected_components``.

The label pairs are the ones ``aerialct vectorize`` finds at window seams on the
masks of ``bench_vectorize.py`` (same generator, window 2048); both functions run
on them in one process with timeit and must give the same roots.

    python benchmarks/bench_union_find.py               # 3000 and 10000 px masks
    python benchmarks/bench_union_find.py --quick       # 3000 px only

Writes its section to benchmarks/results/vectorize_union_find.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vectorize import make_mask, write_mask

import aerialct.vectorize.merge as merge
from aerialct.vectorize import polygonise

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "vectorize_union_find.md"


def components(pairs: np.ndarray, n: int) -> np.ndarray:
    """The same roots as ``merge._union_find`` through scipy's connected components."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(pairs):
        return np.arange(n + 1, dtype=np.int64)
    ones = np.ones(len(pairs), dtype=np.int8)
    graph = coo_matrix((ones, (pairs[:, 0], pairs[:, 1])), shape=(n + 1, n + 1))
    _, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)  # components are numbered by smallest label
    return first[comp].astype(np.int64)


def seam_pairs(size: int, window: int) -> tuple[np.ndarray, int]:
    """The pairs and label count vectorize passes to the union-find for one mask."""
    captured: list[tuple[np.ndarray, int]] = []
    hand = merge._union_find

    def spy(pairs: np.ndarray, n: int) -> np.ndarray:
        captured.append((pairs.copy(), n))
        return hand(pairs, n)

    with tempfile.TemporaryDirectory(prefix="bench_uf_") as d:
        mask, _ = make_mask(size)
        write_mask(Path(d) / "m.tif", mask)
        del mask
        merge._union_find = spy
        try:
            polygonise(Path(d) / "m.tif", window_size=window)
        finally:
            merge._union_find = hand
    return captured[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the 3000 px mask only")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--window-size", type=int, default=2048)
    args = ap.parse_args()
    sizes = args.sizes or ([3000] if args.quick else [3000, 10000])
    t0 = time.perf_counter()
    import scipy.sparse.csgraph  # noqa: F401

    import_ms = 1e3 * (time.perf_counter() - t0)
    rows = []
    for size in sizes:
        pairs, n = seam_pairs(size, args.window_size)
        if not np.array_equal(merge._union_find(pairs, n), components(pairs, n)):
            raise SystemExit(f"size {size}: the two give different components")
        hand = min(timeit.repeat(lambda p=pairs, k=n: merge._union_find(p, k), number=20, repeat=5))
        sp = min(timeit.repeat(lambda p=pairs, k=n: components(p, k), number=20, repeat=5))
        hand, sp = hand / 20, sp / 20
        rows.append(
            f"| {size} x {size} | {len(pairs)} | {n} | {hand * 1e3:.3f} | {sp * 1e3:.3f} | "
            f"**{sp / hand:.1f}** | yes |"
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Vectorize seam merge: union-find vs scipy.sparse.csgraph",
        "",
        f"Date: {now}. Commit: {commit}. Machine: {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPU cores (shared with other jobs), Python "
        f"{platform.python_version()}. Pairs: the label pairs aerialct vectorize finds at "
        f"window seams (window {args.window_size}) on the masks of bench_vectorize.py; best "
        "of 5 x 20 calls each (timeit), one process.",
        "",
        "| mask px | seam pairs | labels | union-find ms | csgraph ms | csgraph / union-find "
        "| same roots |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Importing scipy.sparse.csgraph adds {import_ms:.0f} ms to a vectorize process "
        "(which imports no scipy.sparse today). The hand-written union-find stays "
        "(aerialct/vectorize/merge.py).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)


if __name__ == "__main__":
    main()
