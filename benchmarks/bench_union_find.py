"""Seam merge: the hand-written union-find vs ``scipy.sparse.csgraph.connected_components``.

The label pairs are the ones ``aerialct vectorize`` finds at window seams on the
masks of ``bench_vectorize.py`` (same generator, window 2048); both functions run
on them in one process with timeit and must give the same roots.

    python benchmarks/bench_union_find.py               # 3000 and 10000 px masks
    python benchmarks/bench_union_find.py --sizes 3000
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--sizes", type=int, nargs="+", default=[3000, 10000])
    ap.add_argument("--window-size", type=int, default=2048)
    args = ap.parse_args()
    t0 = time.perf_counter()
    import scipy.sparse.csgraph  # noqa: F401

    print(
        f"import scipy.sparse.csgraph: {1e3 * (time.perf_counter() - t0):.0f} ms (a cost vectorize does not pay today)"
    )
    for size in args.sizes:
        pairs, n = seam_pairs(size, args.window_size)
        if not np.array_equal(merge._union_find(pairs, n), components(pairs, n)):
            raise SystemExit(f"size {size}: the two give different components")
        hand = (
            min(timeit.repeat(lambda p=pairs, k=n: merge._union_find(p, k), number=20, repeat=5))
            / 20
        )
        sp = min(timeit.repeat(lambda p=pairs, k=n: components(p, k), number=20, repeat=5)) / 20
        print(
            f"{size} x {size} px: {len(pairs)} seam pairs, {n} labels: union-find "
            f"{hand * 1e3:.3f} ms, csgraph {sp * 1e3:.3f} ms ({sp / hand:.1f}x slower); same roots"
        )


if __name__ == "__main__":
    main()
