import math

import numpy as np
import pytest

from aerialct.errors import InputError
from aerialct.evaluate.metrics import confusion_matrix, scores_from_confusion

NAMES = ["a", "b", "c", "clutter"]


def _direct(pred, ref, k, ignore=255):
    """Reference implementation: one pixel at a time."""
    cm = np.zeros((k, k), dtype=np.int64)
    for p, r in zip(pred.ravel().tolist(), ref.ravel().tolist(), strict=True):
        if p == ignore or r == ignore:
            continue
        cm[r, p] += 1
    return cm


def test_confusion_matches_direct_count_on_random_labels():
    rng = np.random.default_rng(0)
    k = 4
    ref = rng.integers(0, k, size=(37, 41)).astype(np.uint8)
    pred = rng.integers(0, k, size=(37, 41)).astype(np.uint8)
    ref[rng.random(ref.shape) < 0.1] = 255
    pred[rng.random(pred.shape) < 0.05] = 255
    cm = confusion_matrix(pred, ref, k)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, _direct(pred, ref, k))
    assert cm.sum() == int(((ref != 255) & (pred != 255)).sum())


def test_scores_match_per_pixel_definitions():
    rng = np.random.default_rng(1)
    k = 4
    ref = rng.integers(0, k, size=5000)
    pred = np.where(rng.random(5000) < 0.7, ref, rng.integers(0, k, size=5000))
    s = scores_from_confusion(confusion_matrix(pred, ref, k), NAMES)
    for c, name in enumerate(NAMES):
        tp = np.sum((pred == c) & (ref == c))
        fp = np.sum((pred == c) & (ref != c))
        fn = np.sum((pred != c) & (ref == c))
        d = s.per_class[name]
        assert d["iou"] == pytest.approx(tp / (tp + fp + fn))
        assert d["precision"] == pytest.approx(tp / (tp + fp))
        assert d["recall"] == pytest.approx(tp / (tp + fn))
        assert d["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert d["support"] == np.sum(ref == c)
    assert s.overall_accuracy == pytest.approx(np.mean(pred == ref))
    # clutter is excluded from the means by default
    assert s.excluded == ["clutter"]
    assert s.mean_iou == pytest.approx(np.mean([s.per_class[n]["iou"] for n in NAMES[:3]]))
    assert s.mean_f1 == pytest.approx(np.mean([s.per_class[n]["f1"] for n in NAMES[:3]]))
    s_all = scores_from_confusion(confusion_matrix(pred, ref, k), NAMES, exclude=())
    assert s_all.mean_iou == pytest.approx(np.mean([s.per_class[n]["iou"] for n in NAMES]))


def test_absent_class_is_nan_and_left_out_of_the_mean():
    ref = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 0])
    s = scores_from_confusion(confusion_matrix(pred, ref, 3), ["x", "y", "z"], exclude=())
    assert math.isnan(s.per_class["z"]["iou"])
    assert s.mean_iou == pytest.approx((2 / 3 + 1 / 2) / 2)
    d = s.to_dict()
    assert d["confusion"] == [[2, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert d["pixels"] == 4


def test_ignore_and_out_of_range():
    ref = np.array([255, 0, 1])
    pred = np.array([1, 255, 1])
    cm = confusion_matrix(pred, ref, 2)
    assert cm.tolist() == [[0, 0], [0, 1]]
    with pytest.raises(InputError, match="class id 7"):
        confusion_matrix(np.array([7]), np.array([0]), 2)
    with pytest.raises(InputError, match="shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)
    empty = confusion_matrix(np.array([255]), np.array([0]), 2)
    assert empty.sum() == 0
    assert math.isnan(scores_from_confusion(empty, ["a", "b"]).overall_accuracy)


def test_metrics_import_is_light():
    """The training engine imports aerialct.evaluate.metrics: no raster or vector stack with it."""
    import subprocess
    import sys

    heavy = ("rasterio", "shapely", "geopandas", "pyogrio", "torch", "scipy")
    code = (
        "import sys, aerialct.evaluate.metrics; "
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
