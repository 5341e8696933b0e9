"""Metrics against hand-computed cases, an independent brute-force check, and edge cases."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

from napari_medseg.metrics import (
    METRIC_NAMES,
    binary_metrics,
    evaluate_segmentation,
    image_diagonal,
    summarize,
    summarize_by_class,
    surface_distances,
    write_metrics_csv,
)


def _squares(shift_y: int = 0, shift_x: int = 3, shape=(40, 40)):
    a = np.zeros(shape, np.uint8)
    b = np.zeros(shape, np.uint8)
    a[10:20, 10:20] = 1
    b[10 + shift_y : 20 + shift_y, 10 + shift_x : 20 + shift_x] = 1
    return a, b


def test_overlap_metrics_hand_computed():
    # 10x10 squares offset by 3 columns in a 40x40 image: overlap 10x7
    a, b = _squares()
    (row,) = evaluate_segmentation(a, b, num_classes=2)
    assert row["class"] == 1
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (70, 30, 30, 1470)
    assert row["dice"] == pytest.approx(140 / 200)
    assert row["iou"] == pytest.approx(70 / 130)
    assert row["accuracy"] == pytest.approx(1540 / 1600)
    assert row["precision"] == pytest.approx(0.7)
    assert row["sensitivity"] == pytest.approx(0.7)
    assert row["specificity"] == pytest.approx(1470 / 1500)


def test_surface_distances_hand_computed_squares():
    # Boundary of square A (36 px) to boundary of B shifted by 3 columns:
    # fourteen 3s, four 2s, four 1s, fourteen 0s (both directions, by symmetry).
    # HD95 = 3 (indices 33/34 of the sorted 36 values are 3s);
    # ASD = (14*3 + 4*2 + 4*1) / 36 = 1.5.
    a, b = _squares()
    hd95, asd = surface_distances(a, b)
    assert hd95 == pytest.approx(3.0)
    assert asd == pytest.approx(1.5, rel=1e-5)


def test_surface_distances_hand_computed_with_spacing():
    # Same squares, column spacing 2 (shift = 6 units), rows 1: A->B distances are
    # ten 6s, four 4s, two 3s, four 2s, two 1s, fourteen 0s -> sum 92.
    a, b = _squares()
    hd95, asd = surface_distances(a, b, spacing=(1.0, 2.0))
    assert hd95 == pytest.approx(6.0)
    assert asd == pytest.approx(92 / 36, rel=1e-5)
    # row spacing 2 instead: sixteen 3s, four 2s, two 1s, fourteen 0s -> sum 58;
    # the 3-column shift still sets HD95
    hd95_r, asd_r = surface_distances(a, b, spacing=(2.0, 1.0))
    assert hd95_r == pytest.approx(3.0)
    assert asd_r == pytest.approx(58 / 36, rel=1e-5)


def test_uniform_offsets_exact_distances_2d_and_3d():
    # two parallel 1-px lines 3 rows apart: every boundary distance is exactly 3
    a = np.zeros((20, 30), bool)
    b = np.zeros((20, 30), bool)
    a[5, 4:26] = True
    b[8, 4:26] = True
    assert surface_distances(a, b) == pytest.approx((3.0, 3.0))
    assert surface_distances(a, b, spacing=(2.5, 0.7)) == pytest.approx((7.5, 7.5))
    # 3-D: single voxels offset by (2, 3, 4) voxels with spacing (z, y, x) = (5, 1, 0.5)
    p = np.zeros((6, 8, 10), bool)
    t = np.zeros((6, 8, 10), bool)
    p[1, 2, 3] = True
    t[3, 5, 7] = True
    d = math.sqrt((2 * 5) ** 2 + 3**2 + (4 * 0.5) ** 2)
    assert surface_distances(p, t, spacing=(5, 1, 0.5)) == pytest.approx((d, d), rel=1e-5)
    rows = evaluate_segmentation(p.astype(np.uint8), t.astype(np.uint8), spacing=(5, 1, 0.5))
    assert rows[0]["hd95"] == pytest.approx(d, rel=1e-5)


def _brute_force(a: np.ndarray, b: np.ndarray, spacing):
    """Independent reference: erosion boundaries, all-pairs distances, MONAI's definitions."""
    ea = np.argwhere(a & ~ndi.binary_erosion(a)) * np.asarray(spacing)
    eb = np.argwhere(b & ~ndi.binary_erosion(b)) * np.asarray(spacing)
    d = cdist(ea, eb)
    ab, ba = d.min(1), d.min(0)
    hd95 = max(np.percentile(ab, 95), np.percentile(ba, 95))
    asd = np.concatenate([ab, ba]).mean()
    return hd95, asd


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.8, 1.9)])
def test_random_blobs_match_brute_force(spacing):
    rng = np.random.default_rng(0)
    a = ndi.gaussian_filter(rng.random((48, 48)), 3) > 0.5
    b = ndi.gaussian_filter(rng.random((48, 48)), 3) > 0.5
    assert a.any() and b.any()
    got = surface_distances(a, b, spacing=spacing)
    want = _brute_force(a, b, spacing)
    assert got == pytest.approx(want, rel=1e-4)


def test_empty_cases_are_defined():
    z = np.zeros((10, 20), np.uint8)
    one = z.copy()
    one[2:5, 2:5] = 1
    both = binary_metrics(z, z)
    assert (both["dice"], both["iou"], both["hd95"], both["asd"]) == (1.0, 1.0, 0.0, 0.0)
    assert both["precision"] == both["sensitivity"] == both["specificity"] == 1.0
    assert not both["distance_penalty"]

    diag = math.sqrt(10**2 + 20**2)
    missed = binary_metrics(z, one)  # empty prediction
    assert missed["dice"] == 0.0 and missed["hd95"] == pytest.approx(diag)
    assert missed["asd"] == pytest.approx(diag) and missed["distance_penalty"]
    assert missed["precision"] == 0.0 and missed["sensitivity"] == 0.0
    extra = binary_metrics(one, z, spacing=(2.0, 0.5))  # empty truth, physical units
    assert extra["dice"] == 0.0
    assert extra["hd95"] == pytest.approx(math.sqrt(20**2 + 10**2))
    assert extra["hd95"] == pytest.approx(image_diagonal((10, 20), (2.0, 0.5)))
    for row in (both, missed, extra):
        assert all(np.isfinite(row[m]) for m in METRIC_NAMES)


def test_class_selection_names_and_background():
    truth = np.zeros((16, 16), np.uint8)
    truth[2:6, 2:6] = 1
    truth[8:12, 8:12] = 2
    pred = truth.copy()
    pred[8:12, 8:12] = 0  # class 2 missed
    rows = evaluate_segmentation(
        pred, truth, num_classes=4, class_names=("bg", "a", "b", "c"), case="x"
    )
    assert [r["class"] for r in rows] == [1, 2, 3]
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert [r["dice"] for r in rows] == [1.0, 0.0, 1.0]  # class 3 absent in both -> 1
    assert all(r["case"] == "x" for r in rows)
    assert [r["class"] for r in evaluate_segmentation(pred, truth)] == [1, 2]
    with_bg = evaluate_segmentation(pred, truth, include_background=True)
    assert [r["class"] for r in with_bg] == [0, 1, 2]
    only = evaluate_segmentation(pred, truth, class_values=[0])
    assert only[0]["class"] == 0 and only[0]["dice"] < 1
    with pytest.raises(ValueError, match="shape"):
        evaluate_segmentation(pred, truth[:8])
    with pytest.raises(ValueError, match="spacing"):
        evaluate_segmentation(pred, truth, spacing=(1, 1, 1))


def test_summaries_and_csv(tmp_path):
    a, b = _squares()
    rows = evaluate_segmentation(a, b, num_classes=2, case="c1")
    rows += evaluate_segmentation(a, a, num_classes=2, case="c2")
    s = summarize(rows)
    assert s["dice"] == pytest.approx((0.7 + 1.0) / 2)
    assert s["hd95"] == pytest.approx(1.5)
    assert s["n"] == 2
    by = summarize_by_class(rows)
    assert list(by) == [1] and by[1]["asd"] == pytest.approx(0.75, rel=1e-5)

    path = write_metrics_csv(tmp_path / "m" / "metrics.csv", rows)
    with open(path, newline="") as f:
        back = list(csv.DictReader(f))
    assert [r["case"] for r in back] == ["c1", "c2"]
    assert float(back[0]["dice"]) == pytest.approx(0.7)
    assert list(back[0])[:3] == ["case", "class", "dice"]
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["metrics.csv"]
