"""Binary ("salient object" / polyp) segmentation metrics.

The polyp and salient-object literature (MSNet, M2SNet, PraNet ...) reports a fixed set of ten
numbers computed on a *prediction map* in [0, 1] (a probability map or a binary mask) against a
binary ground truth: MAE, max-F, adaptive-F, weighted F, S-measure, E-measure, Dice, IoU, BER and
accuracy. They live here, apart from the multi-class metrics in ``multiclass.py``, because several
of them sweep thresholds over the *continuous* map and have their own conventions.

Conventions (chosen to match the published reference code, deviations are noted):

* Ground truth: any array; pixels ``> 0.5`` are foreground (masks saved as 0/255 PNGs and read as
  ``/255`` work unchanged). Prediction: float array in [0, 1]; both must be 2-D and equal shape.
* Threshold sweeps use the 256 levels of an 8-bit map: the map is quantised as
  ``floor(255 * pred)`` and binarised as ``level >= t`` for ``t = 0 .. 255``.
* Adaptive threshold (adaptive-F, adaptive-E): ``min(2 * mean(pred), 1)``, binarise with
  ``pred >= thr``. Deviation: an all-zero map gives ``thr = 0``; the reference code then marks
  *every* pixel foreground, here it stays all background (so an empty prediction of an empty
  mask is not punished).
* F-measures (max, adaptive): ``beta^2 = 0.3`` (Achanta et al. 2009). Weighted F: Margolin et al.
  2014 with their default ``beta^2 = 1``.
* E-measure (Fan et al. 2018): :func:`e_measure_curve` gives the score at all 256 thresholds;
  ``adaptive_e`` is the score at the adaptive threshold (MSNet/M2SNet's "Em"), ``mean_e`` and
  ``max_e`` the mean and max over thresholds (PraNet-style toolboxes report ``mean_e``). The
  enhanced-alignment matrix is averaged over the ``N`` pixels as in the paper; the MATLAB code
  divides by ``N - 1`` (a relative difference of ``1/N``).
* Dice, IoU, BER, accuracy binarise ``pred >= 0.5`` by default. ``threshold=None`` gives the soft
  (probability-weighted) Dice/IoU; MSNet's evaluation script reports the soft Dice.
* BER is a fraction in [0, 1] (papers often print ``100 * BER``).

Edge cases (documented values, see the tests):

=================  ==========================  ==============================================
metric             empty GT, empty prediction  empty GT, non-empty prediction
=================  ==========================  ==============================================
MAE                0                           mean(pred)
max-F, adaptive-F  0 (recall undefined)        0
weighted F         0 (as the reference code)   0
S-measure          1                           1 - mean(pred)
E-measure          1                           fraction of pixels predicted background
Dice, IoU          1 (both empty: agreement)   0
BER                0 (uses the negative rate)  1 - TNR
accuracy           1                           fraction of pixels predicted background
=================  ==========================  ==============================================

An all-background prediction of a non-empty GT scores 0 on adaptive-F, weighted F, Dice and IoU,
``BER = 0.5`` and adaptive-E 0.25. Its max-F is *not* 0: like the reference toolboxes the sweep
includes ``t = 0``, where every pixel is foreground (precision = object fraction, recall = 1).
For the same reason ``mean_e`` of an empty prediction of an empty GT is 255/256, not 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

#: The ten metrics in the order of MSNet's evaluation script.
TEN_METRICS = (
    "mae",
    "max_f",
    "adaptive_f",
    "weighted_f",
    "s_measure",
    "adaptive_e",
    "dice",
    "iou",
    "ber",
    "accuracy",
)

_EPS = np.finfo(np.float64).eps
_LEVELS = 256


def _prepare(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    """Returns (pred as float64 in [0, 1], gt as bool); raises with advice on bad input."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt)
    if p.ndim != 2 or g.ndim != 2:
        raise ValueError(
            f"binary metrics work on 2-D maps, got prediction {p.shape} and ground truth "
            f"{g.shape}; evaluate 3-D volumes slice by slice"
        )
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    if p.size == 0:
        raise ValueError("empty prediction map")
    if not np.all(np.isfinite(p)) or p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise ValueError(
            "the prediction must lie in [0, 1]: pass probabilities (e.g. softmax/sigmoid of "
            "the logits) or a 0/1 mask, not logits or 0-255 images"
        )
    return np.clip(p, 0.0, 1.0), g.astype(np.float64) > 0.5


def _div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den with 0 where den == 0 (an undefined ratio counts as no success)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _f_from_pr(precision: np.ndarray, recall: np.ndarray, beta2: float) -> np.ndarray:
    return _div((1 + beta2) * precision * recall, beta2 * precision + recall)


def adaptive_threshold(pred: Any) -> float:
    """``min(2 * mean(pred), 1)``: twice the mean saliency (Achanta et al. 2009)."""
    return float(min(2.0 * float(np.mean(pred)), 1.0))


def _adaptive_binary(p: np.ndarray) -> np.ndarray:
    thr = adaptive_threshold(p)
    if thr <= 0:  # all-zero map: keep it background (see module docstring)
        return np.zeros(p.shape, dtype=bool)
    return p >= thr


def _level_counts(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TP and FP for ``level >= t``, t = 0..255, from 8-bit quantisation of the map."""
    # The tiny offset keeps k/255 (e.g. a uint8 image divided by 255) on level k.
    q = np.clip(np.floor(p * 255.0 + 1e-7), 0, 255).astype(np.int64)
    fg = np.bincount(q[g], minlength=_LEVELS)
    bg = np.bincount(q[~g], minlength=_LEVELS)
    tp = np.cumsum(fg[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(bg[::-1])[::-1].astype(np.float64)
    return tp, fp


def mae(pred: Any, gt: Any) -> float:
    """Mean absolute error between the map and the 0/1 ground truth."""
    p, g = _prepare(pred, gt)
    return float(np.mean(np.abs(p - g)))


def precision_recall_curve(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at the 256 thresholds ``t/255`` (index t), 0 where undefined."""
    p, g = _prepare(pred, gt)
    tp, fp = _level_counts(p, g)
    return _div(tp, tp + fp), _div(tp, g.sum())


def f_measure_curve(pred: Any, gt: Any, beta2: float = 0.3) -> np.ndarray:
    """F-measure at the 256 thresholds; ``max`` of it is the per-image max-F."""
    precision, recall = precision_recall_curve(pred, gt)
    return _f_from_pr(precision, recall, beta2)


def max_f_measure(pred: Any, gt: Any, beta2: float = 0.3) -> float:
    """Best F-measure over the 256 thresholds of this image."""
    return float(f_measure_curve(pred, gt, beta2).max())


def adaptive_f_measure(pred: Any, gt: Any, beta2: float = 0.3) -> float:
    """F-measure after binarising at the adaptive threshold ``min(2 mean, 1)``."""
    p, g = _prepare(pred, gt)
    b = _adaptive_binary(p)
    tp = float(np.sum(b & g))
    return float(_f_from_pr(_div(tp, b.sum()), _div(tp, g.sum()), beta2))


def _gaussian_kernel(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``."""
    r = (size - 1) / 2.0
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < _EPS * h.max()] = 0
    return h / h.sum()


def weighted_f_measure(pred: Any, gt: Any, beta2: float = 1.0) -> float:
    """Weighted F-measure (Margolin, Zelnik-Manor & Tal, CVPR 2014).

    Errors are weighted by *dependency* (a foreground error may be replaced by the Gaussian
    (7x7, sigma 5) average of the errors around it if that is smaller, so a smooth, slightly
    shifted boundary is not punished pixel by pixel) and *importance* (a false positive at
    distance d from the object weighs ``2 - 0.5 ** (d / 5)``: far-away blobs cost more).
    Weighted recall ``R = 1 - mean(E_w on GT)``, weighted precision
    ``P = TP_w / (TP_w + FP_w)``; returns ``(1 + beta2) P R / (beta2 P + R)``; 0 for an empty GT.
    """
    p, g = _prepare(pred, gt)
    if not g.any():
        return 0.0
    err = np.abs(p - g)
    # Distance of every pixel to the nearest foreground pixel, and that pixel's index.
    dist, idx = ndimage.distance_transform_edt(~g, return_indices=True)
    # Background pixels take the error of their nearest foreground pixel, so the blur below
    # sees a continuous error field at the object boundary.
    err_t = err[idx[0], idx[1]]
    err_t[g] = err[g]
    err_a = ndimage.correlate(err_t, _gaussian_kernel(), mode="constant", cval=0.0)
    min_e = np.where(g & (err_a < err), err_a, err)
    weight = np.where(g, 1.0, 2.0 - np.exp(np.log(0.5) / 5.0 * dist))
    ew = min_e * weight
    tp_w = g.sum() - ew[g].sum()
    fp_w = ew[~g].sum()
    recall = 1.0 - ew[g].mean()
    precision = float(_div(tp_w, tp_w + fp_w))
    return float(_f_from_pr(np.asarray(precision), np.asarray(recall), beta2))


def _ssim_region(p: np.ndarray, g: np.ndarray) -> float:
    """The S-measure's SSIM-like region similarity (no luminance constants)."""
    n = p.size
    if n == 0:
        return 0.0  # an empty quadrant has zero weight anyway
    x, y = p.mean(), g.mean()
    norm = max(n - 1, 1)
    sx = np.sum((p - x) ** 2) / norm
    sy = np.sum((g - y) ** 2) / norm
    sxy = np.sum((p - x) * (g - y)) / norm
    alpha = 4.0 * x * y * sxy
    beta = (x * x + y * y) * (sx + sy)
    if alpha != 0:
        return float(alpha / (beta + _EPS))
    return 1.0 if beta == 0 else 0.0


def _object_score(values: np.ndarray) -> float:
    """``2 mean / (mean^2 + 1 + std)`` over the pixels of one region (sample std)."""
    if values.size == 0:
        return 0.0
    x = values.mean()
    sigma = values.std(ddof=1) if values.size > 1 else 0.0
    return float(2.0 * x / (x * x + 1.0 + sigma + _EPS))


def _matlab_round(v: float) -> int:
    return int(np.floor(v + 0.5))  # halves away from zero (v >= 0), like MATLAB's round


def s_measure(pred: Any, gt: Any, alpha: float = 0.5) -> float:
    """Structure measure (Fan, Cheng, Liu, Li & Borji, ICCV 2017).

    ``alpha * S_object + (1 - alpha) * S_region``. ``S_object`` compares the distribution of the
    map inside the object (and of ``1 - map`` outside) to a uniform 1 via
    ``2 x / (x^2 + 1 + sigma)``, weighted by the object's area fraction. ``S_region`` splits both
    maps into four quadrants at the (1-based, MATLAB-rounded) GT centroid and sums the quadrants'
    structural similarity weighted by their area. Empty GT: ``1 - mean(pred)``; full GT:
    ``mean(pred)``. Negative scores are clipped to 0 as in the reference code.
    """
    p, g = _prepare(pred, gt)
    mu = g.mean()
    if mu == 0:
        return float(1.0 - p.mean())
    if mu == 1:
        return float(p.mean())
    s_obj = mu * _object_score(p[g]) + (1 - mu) * _object_score(1.0 - p[~g])
    h, w = g.shape
    rows, cols = np.nonzero(g)
    # 1-based centroid: quadrant split after row Y and column X (MATLAB GT(1:Y, 1:X)).
    cy = _matlab_round(rows.mean() + 1)
    cx = _matlab_round(cols.mean() + 1)
    gf = g.astype(np.float64)
    s_reg = 0.0
    for rs, cs in (
        (slice(0, cy), slice(0, cx)),
        (slice(0, cy), slice(cx, w)),
        (slice(cy, h), slice(0, cx)),
        (slice(cy, h), slice(cx, w)),
    ):
        pq, gq = p[rs, cs], gf[rs, cs]
        s_reg += gq.size / g.size * _ssim_region(pq, gq)
    return float(max(alpha * s_obj + (1 - alpha) * s_reg, 0.0))


def _e_from_counts(tp, fp, n_fg: float, n: float) -> np.ndarray:
    """E-measure of binary maps given TP/FP counts (arrays over thresholds)."""
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    pos = tp + fp
    if n_fg == 0:
        return (n - pos) / n
    if n_fg == n:
        return pos / n
    mu_fm = pos / n
    mu_gt = n_fg / n
    counts = {(1, 1): tp, (1, 0): fp, (0, 1): n_fg - tp, (0, 0): n - n_fg - fp}
    total = np.zeros_like(tp)
    for (fm, gv), c in counts.items():
        a = fm - mu_fm
        b = gv - mu_gt
        align = 2.0 * a * b / (a * a + b * b + _EPS)
        total += c * (align + 1.0) ** 2 / 4.0
    return total / n


def e_measure_curve(pred: Any, gt: Any) -> np.ndarray:
    """Enhanced-alignment measure (Fan et al., IJCAI 2018) at the 256 thresholds."""
    p, g = _prepare(pred, gt)
    tp, fp = _level_counts(p, g)
    return _e_from_counts(tp, fp, float(g.sum()), float(g.size))


def adaptive_e_measure(pred: Any, gt: Any) -> float:
    """E-measure after binarising at ``min(2 mean, 1)`` (MSNet/M2SNet's reported "Em")."""
    p, g = _prepare(pred, gt)
    b = _adaptive_binary(p)
    return float(_e_from_counts(np.sum(b & g), np.sum(b & ~g), float(g.sum()), float(g.size)))


def mean_e_measure(pred: Any, gt: Any) -> float:
    """Mean E-measure over the 256 thresholds (PraNet-style "meanEm")."""
    return float(e_measure_curve(pred, gt).mean())


def max_e_measure(pred: Any, gt: Any) -> float:
    """Max E-measure over the 256 thresholds."""
    return float(e_measure_curve(pred, gt).max())


def _confusion(pred: Any, gt: Any, threshold: float) -> tuple[float, float, float, float]:
    p, g = _prepare(pred, gt)
    b = p >= threshold
    tp = float(np.sum(b & g))
    fp = float(np.sum(b & ~g))
    fn = float(np.sum(~b & g))
    tn = float(np.sum(~b & ~g))
    return tp, fp, fn, tn


def dice(pred: Any, gt: Any, threshold: float | None = 0.5) -> float:
    """Dice ``2|P∩G| / (|P| + |G|)``; 1 when both are empty. ``threshold=None``: soft Dice."""
    if threshold is None:
        p, g = _prepare(pred, gt)
        inter, total = float(np.sum(p * g)), float(p.sum() + g.sum())
    else:
        tp, fp, fn, _ = _confusion(pred, gt, threshold)
        inter, total = tp, 2 * tp + fp + fn
    return 1.0 if total == 0 else 2.0 * inter / total


def iou(pred: Any, gt: Any, threshold: float | None = 0.5) -> float:
    """Intersection over union; 1 when both are empty. ``threshold=None``: soft Jaccard."""
    if threshold is None:
        p, g = _prepare(pred, gt)
        inter = float(np.sum(p * g))
        union = float(p.sum() + g.sum()) - inter
    else:
        tp, fp, fn, _ = _confusion(pred, gt, threshold)
        inter, union = tp, tp + fp + fn
    return 1.0 if union == 0 else inter / union


def ber(pred: Any, gt: Any, threshold: float = 0.5) -> float:
    """Balanced error rate ``1 - (TPR + TNR) / 2`` as a fraction.

    When the GT has no foreground (or no background) only the defined rate is used.
    """
    tp, fp, fn, tn = _confusion(pred, gt, threshold)
    rates = []
    if tp + fn > 0:
        rates.append(tp / (tp + fn))
    if tn + fp > 0:
        rates.append(tn / (tn + fp))
    return float(1.0 - np.mean(rates))


def accuracy(pred: Any, gt: Any, threshold: float = 0.5) -> float:
    """Fraction of correctly classified pixels after binarising at ``threshold``."""
    tp, fp, fn, tn = _confusion(pred, gt, threshold)
    return (tp + tn) / (tp + fp + fn + tn)


def binary_metrics(pred: Any, gt: Any, threshold: float = 0.5) -> dict[str, float]:
    """All metrics of one image: the ten of :data:`TEN_METRICS` plus ``mean_e`` and ``max_e``."""
    p, g = _prepare(pred, gt)
    e_curve = e_measure_curve(p, g)
    return {
        "mae": mae(p, g),
        "max_f": max_f_measure(p, g),
        "adaptive_f": adaptive_f_measure(p, g),
        "weighted_f": weighted_f_measure(p, g),
        "s_measure": s_measure(p, g),
        "adaptive_e": adaptive_e_measure(p, g),
        "dice": dice(p, g, threshold),
        "iou": iou(p, g, threshold),
        "ber": ber(p, g, threshold),
        "accuracy": accuracy(p, g, threshold),
        "mean_e": float(e_curve.mean()),
        "max_e": float(e_curve.max()),
    }


class BinaryMetricAccumulator:
    """Dataset-level scores, following the salient-object convention.

    Every metric is the mean of its per-image value, except the curve metrics: ``max_f`` is the
    maximum over thresholds of the F-measure of the dataset-mean precision and recall curves
    (as MSNet's evaluation script), and ``mean_e`` / ``max_e`` are the mean / max of the
    dataset-mean E-measure curve.
    """

    def __init__(self, threshold: float = 0.5, beta2: float = 0.3):
        self.threshold = threshold
        self.beta2 = beta2
        self._scores: list[dict[str, float]] = []
        self._precision: list[np.ndarray] = []
        self._recall: list[np.ndarray] = []
        self._e_curve: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._scores)

    def update(self, pred: Any, gt: Any) -> dict[str, float]:
        """Adds one image; returns its per-image metrics."""
        p, g = _prepare(pred, gt)
        scores = binary_metrics(p, g, self.threshold)
        precision, recall = precision_recall_curve(p, g)
        self._scores.append(scores)
        self._precision.append(precision)
        self._recall.append(recall)
        self._e_curve.append(e_measure_curve(p, g))
        return scores

    def compute(self) -> dict[str, float]:
        if not self._scores:
            raise ValueError("no images were added; call update(pred, gt) first")
        out = {k: float(np.mean([s[k] for s in self._scores])) for k in self._scores[0]}
        f = _f_from_pr(np.mean(self._precision, 0), np.mean(self._recall, 0), self.beta2)
        out["max_f"] = float(f.max())
        e = np.mean(self._e_curve, 0)
        out["mean_e"] = float(e.mean())
        out["max_e"] = float(e.max())
        return out
