"""Binary (salient / polyp) metrics on cases small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_medseg.metrics import binary as bm


def test_mae():
    pred = np.array([[0.2, 0.8], [1.0, 0.0]])
    gt = np.array([[0, 1], [1, 1]])
    # |0.2| + |0.2| + 0 + 1 over 4 pixels
    assert bm.mae(pred, gt) == pytest.approx(0.35)


def test_gt_read_from_0_255_png_is_thresholded_at_half():
    gt = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    pred = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert bm.mae(pred, gt) == 0.0
    assert bm.dice(pred, gt) == 1.0


def test_max_f_over_thresholds():
    pred = np.array([[0.9, 0.6], [0.3, 0.1]])
    gt = np.array([[1, 0], [1, 0]])
    # 8-bit levels 229, 153, 76, 25. Thresholds and (P, R):
    #   t <= 25: (1/2, 1); 26..76: (2/3, 1); 77..153: (1/2, 1/2); 154..229: (1, 1/2); else 0.
    f = lambda p, r: 1.3 * p * r / (0.3 * p + r)  # noqa: E731
    curve = bm.f_measure_curve(pred, gt)
    assert curve.shape == (256,)
    assert curve[0] == pytest.approx(f(0.5, 1))
    assert curve[50] == pytest.approx(f(2 / 3, 1))
    assert curve[100] == pytest.approx(f(0.5, 0.5))
    assert curve[200] == pytest.approx(f(1, 0.5))
    assert curve[230] == 0
    assert bm.max_f_measure(pred, gt) == pytest.approx(0.8125)  # f(1, 1/2) = 0.65 / 0.8


def test_adaptive_f_uses_twice_the_mean():
    pred = np.array([[1.0, 0.5], [0.25, 0.25]])  # mean 0.5 -> threshold 1.0
    gt = np.array([[1, 0], [1, 0]])
    assert bm.adaptive_threshold(pred) == 1.0
    # only the 1.0 pixel is foreground: P = 1, R = 1/2
    assert bm.adaptive_f_measure(pred, gt) == pytest.approx(0.8125)
    # threshold capped at 1; a low-mean map uses 2 * mean
    assert bm.adaptive_threshold(np.full((2, 2), 0.1)) == pytest.approx(0.2)


def test_f_measures_of_perfect_binary_prediction():
    gt = np.zeros((8, 8))
    gt[2:5, 3:7] = 1
    assert bm.max_f_measure(gt, gt) == pytest.approx(1.0)
    assert bm.adaptive_f_measure(gt, gt) == pytest.approx(1.0)
    assert bm.weighted_f_measure(gt, gt) == pytest.approx(1.0, abs=1e-9)


def _interior_square(n=12, lo=4, hi=8):
    gt = np.zeros((n, n))
    gt[lo:hi, lo:hi] = 1
    return gt


def test_weighted_f_uniform_foreground_error():
    # Prediction 0.5 on an object far (>3 px) from the image border, 0 elsewhere: every
    # foreground error is 0.5 and its Gaussian neighbourhood average is 0.5 too, so
    # R = 1 - 0.5, P = 1 (no background error) and F(beta^2=1) = 2 * 0.5 / 1.5.
    gt = _interior_square()
    assert bm.weighted_f_measure(0.5 * gt, gt) == pytest.approx(2 / 3)
    # nothing predicted: R = 0, P = 0
    assert bm.weighted_f_measure(np.zeros_like(gt), gt) == pytest.approx(0.0, abs=1e-12)


def test_weighted_f_false_positive_weighted_by_distance():
    gt = np.zeros((9, 14))
    gt[2:5, 2:5] = 1  # 9 pixels
    pred = gt.copy()
    pred[3, 9] = 1.0  # 5 px right of the object's column 4
    # importance 2 - 0.5 ** (5 / 5) = 1.5; TPw = 9, FPw = 1.5, P = 9 / 10.5 = 6/7, R = 1
    assert bm.weighted_f_measure(pred, gt) == pytest.approx(12 / 13)
    # a far-away FP costs more than a close one
    far = gt.copy()
    far[3, 13] = 1.0
    assert bm.weighted_f_measure(far, gt) < bm.weighted_f_measure(pred, gt)


def test_s_measure_perfect_and_constant():
    gt = np.zeros((4, 4))
    gt[:, :2] = 1
    assert bm.s_measure(gt, gt) == pytest.approx(1.0)
    # constant 0.5: object score 2 * 0.5 / (0.25 + 1) = 0.8 on both sides; every quadrant
    # is constant in both maps, which the region SSIM scores 1 -> 0.5 * 0.8 + 0.5 * 1
    assert bm.s_measure(np.full((4, 4), 0.5), gt) == pytest.approx(0.9)


def test_s_measure_hand_computed_single_pixel_object():
    gt = np.zeros((4, 4))
    gt[0, 0] = 1
    pred = gt.copy()
    pred[0, 1] = 1.0  # one false positive
    # Centroid (1, 1) in 1-based coordinates -> quadrants of 1, 3, 3 and 9 pixels. The 1x3
    # top-right quadrant holds the FP over an all-zero GT and scores 0; the others match -> 1.
    region = (1 + 0 + 3 + 9) / 16
    # Object: foreground mean 1, std 0 -> 1. Background: 1 - pred on 15 pixels = fourteen 1s
    # and one 0: mean 14/15, sample std sqrt(1/15).
    m, sd = 14 / 15, math.sqrt(1 / 15)
    obj = (1 / 16) * 1.0 + (15 / 16) * (2 * m / (m * m + 1 + sd))
    assert bm.s_measure(pred, gt) == pytest.approx(0.5 * obj + 0.5 * region)


def test_s_measure_degenerate_gt():
    pred = np.array([[0.2, 0.4], [0.0, 0.2]])
    assert bm.s_measure(pred, np.zeros((2, 2))) == pytest.approx(1 - 0.2)
    assert bm.s_measure(pred, np.ones((2, 2))) == pytest.approx(0.2)


def test_e_measure_hand_computed():
    gt = np.array([[1, 0], [0, 0]])
    pred = np.array([[1.0, 1.0], [0.0, 0.0]])  # mean 0.5 -> adaptive threshold 1
    # bias matrices: GT - 1/4 and FM - 1/2; alignment per pixel 12/13, -4/5, 4/5, 4/5;
    # enhanced (1 + a)^2 / 4 = 625/676, 1/100, 81/100, 81/100
    expected = (625 / 676 + 1 / 100 + 2 * 81 / 100) / 4
    assert bm.adaptive_e_measure(pred, gt) == pytest.approx(expected)
    curve = bm.e_measure_curve(pred, gt)
    assert curve[255] == pytest.approx(expected)
    assert curve[0] == pytest.approx(0.25)  # t = 0: all foreground, bias 0, alignment 0
    assert bm.mean_e_measure(pred, gt) == pytest.approx((0.25 + 255 * expected) / 256)
    assert bm.max_e_measure(pred, gt) == pytest.approx(expected)


def _e_measure_direct(fm: np.ndarray, gt: np.ndarray) -> float:
    """The paper's formula pixel by pixel (non-degenerate GT)."""
    fm = fm.astype(float)
    gt = gt.astype(float)
    a, b = fm - fm.mean(), gt - gt.mean()
    align = 2 * a * b / (a * a + b * b + np.finfo(float).eps)
    return float(np.mean((align + 1) ** 2 / 4))


def test_e_measure_curve_matches_pixelwise_formula():
    rng = np.random.default_rng(0)
    gt = np.zeros((9, 11), dtype=bool)
    gt[2:6, 3:9] = True
    pred = np.clip(gt * 0.6 + rng.random(gt.shape) * 0.5, 0, 1)
    curve = bm.e_measure_curve(pred, gt)
    levels = np.floor(pred * 255 + 1e-7)
    for t in (0, 40, 100, 128, 200, 255):
        assert curve[t] == pytest.approx(_e_measure_direct(levels >= t, gt)), t


def test_overlap_metrics_hand_computed():
    pred = np.array([[0.9, 0.4], [0.6, 0.1]])  # binarised: [[1, 0], [1, 0]]
    gt = np.array([[1, 1], [0, 0]])  # TP 1, FN 1, FP 1, TN 1
    assert bm.dice(pred, gt) == pytest.approx(0.5)
    assert bm.iou(pred, gt) == pytest.approx(1 / 3)
    assert bm.ber(pred, gt) == pytest.approx(0.5)
    assert bm.accuracy(pred, gt) == pytest.approx(0.5)
    # soft variants: sum(p * g) = 1.3, sum(p) = 2, sum(g) = 2
    assert bm.dice(pred, gt, threshold=None) == pytest.approx(2.6 / 4)
    assert bm.iou(pred, gt, threshold=None) == pytest.approx(1.3 / 2.7)


def test_ber_is_balanced():
    gt = np.array([[1, 1, 1, 0]])
    pred = np.array([[1.0, 0.0, 0.0, 0.0]])
    # TPR 1/3, TNR 1 -> 1 - (4/3) / 2
    assert bm.ber(pred, gt) == pytest.approx(1 / 3)
    assert bm.accuracy(pred, gt) == pytest.approx(0.5)


def test_edge_case_empty_gt_and_empty_prediction():
    z = np.zeros((6, 7))
    m = bm.binary_metrics(z, z)
    assert set(bm.TEN_METRICS) <= set(m)
    expected = {
        "mae": 0.0,
        "max_f": 0.0,
        "adaptive_f": 0.0,
        "weighted_f": 0.0,
        "s_measure": 1.0,
        "adaptive_e": 1.0,
        "dice": 1.0,
        "iou": 1.0,
        "ber": 0.0,
        "accuracy": 1.0,
        # threshold t = 0 marks every pixel foreground (E = 0); the other 255 give 1
        "mean_e": 255 / 256,
        "max_e": 1.0,
    }
    for k, v in expected.items():
        assert m[k] == pytest.approx(v), k


def test_edge_case_empty_gt_with_false_positives():
    gt = np.zeros((4, 4))
    pred = np.zeros((4, 4))
    pred[0, :2] = 1.0  # 2 of 16 pixels
    m = bm.binary_metrics(pred, gt)
    assert m["mae"] == pytest.approx(2 / 16)
    assert m["s_measure"] == pytest.approx(1 - 2 / 16)
    assert m["adaptive_e"] == pytest.approx(14 / 16)
    assert m["accuracy"] == pytest.approx(14 / 16)
    assert m["ber"] == pytest.approx(2 / 16)
    for k in ("max_f", "adaptive_f", "weighted_f", "dice", "iou"):
        assert m[k] == 0.0, k


def test_edge_case_empty_prediction_of_an_object():
    gt = _interior_square()
    m = bm.binary_metrics(np.zeros_like(gt), gt)
    assert m["mae"] == pytest.approx(16 / 144)
    assert m["ber"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(128 / 144)
    assert m["adaptive_e"] == pytest.approx(0.25)  # constant map: zero alignment everywhere
    # max-F: only the trivial threshold t = 0 (every pixel foreground) finds the object:
    # P = 16/144, R = 1
    p = 16 / 144
    assert m["max_f"] == pytest.approx(1.3 * p / (0.3 * p + 1))
    for k in ("adaptive_f", "weighted_f", "dice", "iou"):
        assert m[k] == pytest.approx(0.0, abs=1e-12), k


def test_accumulator_uses_mean_curves_for_max_f():
    gt = np.zeros((4, 4))
    gt[:2, :2] = 1  # a quarter of the image
    acc = bm.BinaryMetricAccumulator()
    acc.update(gt, gt)  # perfect
    acc.update(np.zeros_like(gt), gt)  # missed
    out = acc.compute()
    assert len(acc) == 2
    assert out["mae"] == pytest.approx((0 + 4 / 16) / 2)
    assert out["dice"] == pytest.approx(0.5)
    # t >= 1: mean P = mean R = 1/2 -> F = 0.5; t = 0: P = 1/4, R = 1 -> 0.325 / 1.075
    assert out["max_f"] == pytest.approx(0.5)


def test_invalid_inputs_explain_the_fix():
    gt = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bm.mae(np.full((3, 3), 3.0), gt)
    with pytest.raises(ValueError, match="differ in shape"):
        bm.mae(np.zeros((3, 4)), gt)
    with pytest.raises(ValueError, match="2-D"):
        bm.s_measure(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="update"):
        bm.BinaryMetricAccumulator().compute()
