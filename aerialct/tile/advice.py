"""Is a labelled chips folder trainable, and what to pass when it is not (the tile report's advice).

Before cutting, :func:`check_trainable` counts the training and validation chips the grid
will give. With the default window (no ``--size``) a set too small to train on is refused,
naming a grid that is not: one 900 px scene in 512 px windows gives 4 chips and no
validation split; ``--size 128 --stride 96 --val-fraction 0.2`` gives about 81 and 19.
With a window the user chose, the same finding is advice in the report, not a refusal.

After cutting, :func:`recipe_advice` names the README's buildings recipe when a class is
rare in the training pixels (below :data:`RARE_SHARE`, the share ``data.oversample_rare``
calls rare).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aerialct.errors import InputError
from aerialct.geo.grid import window_starts

MIN_TRAIN_CHIPS = 32
"""Training chips a dataset needs: one batch of the paper presets, four of tiny-cpu's."""
VAL_FRACTION = 0.2
"""The validation share the advice suggests."""
GRIDS = ((256, 192), (128, 96), (64, 48))
"""(window, stride) tried, largest first, when the default window gives too few chips."""
RARE_SHARE = 0.1
"""A class below this share of the training label pixels is rare (``data.rare_share``)."""
RECIPE = (
    "--set loss.class_weights=auto --set loss.focal_weight=1.0 "
    "--set data.oversample_rare=2.0 --set model.refine=16"
)
"""The README's buildings recipe, as ``aerialct train`` options."""

Assign = Callable[..., list[dict[tuple[int, int], str]]]


def _count(scenes: Sequence[Any], window: int, stride: int, val_fraction: float,
           val_block: int | None, seed: int, assign: Assign) -> Counter:  # fmt: skip
    """Chips per split that ``window``/``stride`` give (before nodata skipping)."""
    grids = [
        (window_starts(s.height, window, stride), window_starts(s.width, window, stride))
        for s in scenes
    ]
    splits = assign(scenes, grids, window, val_fraction, val_block or 2 * window, seed, [])
    return Counter(split for per_scene in splits for split in per_scene.values())


def _where(scenes: Sequence[Any]) -> str:
    if len(scenes) == 1:
        s = scenes[0]
        return f"{s.image}: {s.width}x{s.height} px"
    big = max(scenes, key=lambda s: s.width * s.height)
    return f"{len(scenes)} scenes (largest {big.width}x{big.height} px)"


def _suggest(scenes: Sequence[Any], seed: int, assign: Assign) -> tuple[str, Counter]:
    """The largest grid of :data:`GRIDS` that is trainable (else the smallest), as options."""
    for window, stride in GRIDS:
        n = _count(scenes, window, stride, VAL_FRACTION, None, seed, assign)
        if n["train"] >= MIN_TRAIN_CHIPS and n["val"]:
            break
    return f"--size {window} --stride {stride} --val-fraction {VAL_FRACTION:g}", n


def check_trainable(
    scenes: Sequence[Any],
    *,
    size: int | None,
    default_size: int,
    stride: int | None,
    val_fraction: float,
    val_block: int | None,
    seed: int,
    assign: Assign,
) -> list[str]:
    """Refuse (default window) or advise (chosen window) when the chips would not train.

    Returns the advice lines for the report; raises InputError when ``size`` is None (the
    default window) and the training split would hold fewer than :data:`MIN_TRAIN_CHIPS`.
    """
    window = size or default_size
    step = stride or window
    n = _count(scenes, window, step, val_fraction, val_block, seed, assign)
    few = n["train"] < MIN_TRAIN_CHIPS
    if not few and n["val"]:
        return []
    options, m = _suggest(scenes, seed, assign)
    gives = f"about {m['train']} training and {m['val']} validation chips"
    has = (
        f"{n['train']} training chip{'s' if n['train'] != 1 else ''} and "
        f"{n['val'] or 'no'} validation chip{'s' if n['val'] != 1 else ''}"
    )
    if few and size is None:
        raise InputError(
            f"{_where(scenes)} in the default {window} px windows gives {has}, too few to train "
            f"on (at least {MIN_TRAIN_CHIPS}, and a validation split); pass {options} ({gives}), "
            f"or --size {window} to cut these chips anyway"
        )
    if few:
        return [f"{has} ({window} px windows): too few to train on; {options} gives {gives}"]
    v = _count(scenes, window, step, VAL_FRACTION, val_block, seed, assign)["val"]
    fix = (
        f"pass --val-fraction {VAL_FRACTION:g} (about {v} chips)"
        if v
        else f"pass {options} ({gives})"
    )
    return [f"no validation chips: best.pt will follow the last epoch; {fix}"]


def recipe_advice(shares: dict[str, float], excluded: Sequence[str]) -> list[str]:
    """The buildings recipe when a class is rare in the training split's label pixels.

    ``shares``: each class's (and ``ignore``'s) share of the training split's label pixels.
    """
    labelled = 1.0 - shares.get("ignore", 0.0)
    rare = {
        name: share / labelled
        for name, share in shares.items()
        if name != "ignore"
        and name not in excluded
        and labelled > 0
        and 0 < share / labelled < RARE_SHARE
    }
    if not rare:
        return []
    named = ", ".join(f"{k} {v:.1%}" for k, v in sorted(rare.items(), key=lambda kv: kv[1]))
    return [
        f"rare classes in the training pixels ({named}): train with the buildings recipe "
        f"(README, 'Your own classes'): {RECIPE}"
    ]
