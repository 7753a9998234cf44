"""PNG plots of a training run (matplotlib, Agg backend: no display needed).

``loss.png``: every training loss term and the validation loss per epoch;
``iou.png``: validation mean IoU and per-class IoU per epoch;
``confusion.png``: the row-normalised validation confusion matrix of the best epoch.
Each file is written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from aerialct.geo.outputs import atomic_output

__all__ = ["plot_confusion", "plot_history"]


def _figure(width: float = 7.0, height: float = 4.2):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=110)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _series(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in history:
        v = row.get(key)
        if v is None or v == "":
            continue
        v = float(v)
        if math.isfinite(v):
            xs.append(float(row["epoch"]))
            ys.append(v)
    return xs, ys


def plot_history(
    history: Sequence[dict], out_dir: str | Path, class_names: Sequence[str]
) -> list[Path]:
    """Draw ``loss.png`` and ``iou.png`` from the per-epoch metrics rows."""
    out = Path(out_dir)
    written: list[Path] = []
    if not history:
        return written
    keys = list(history[-1].keys())

    plt, fig, ax = _figure()
    for k in keys:
        if k.startswith("train_"):
            xs, ys = _series(history, k)
            if ys:
                ax.plot(xs, ys, marker="o", ms=3, label=k.removeprefix("train_"))
    xs, ys = _series(history, "val_ce")
    if ys:
        ax.plot(xs, ys, marker="s", ms=3, ls="--", color="black", label="validation CE")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Loss terms (training mean per epoch)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    written.append(_save(plt, fig, out / "loss.png"))

    plt, fig, ax = _figure()
    for name in class_names:
        xs, ys = _series(history, f"iou_{name}")
        if ys:
            ax.plot(xs, ys, lw=1, alpha=0.8, label=name)
    xs, ys = _series(history, "val_miou")
    if ys:
        ax.plot(xs, ys, lw=2.5, color="black", marker="o", ms=3, label="mean IoU")
    ax.set_xlabel("epoch")
    ax.set_ylabel("IoU (validation)")
    ax.set_ylim(0, 1)
    ax.set_title("Validation IoU")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncol=2)
    written.append(_save(plt, fig, out / "iou.png"))
    return written


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Row-normalised confusion matrix (rows = reference, columns = prediction)."""
    import numpy as np

    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(class_names)
    plt, fig, ax = _figure(1.0 + 0.8 * k + 1.5, 0.8 * k + 1.5)
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    for i in range(k):
        for j in range(k):
            if rows[i, 0] > 0:
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_title(title or "Confusion (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(plt, fig, Path(path))
