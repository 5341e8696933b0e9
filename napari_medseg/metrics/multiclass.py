"""Per-class segmentation metrics in 2-D or 3-D, with voxel spacing.

Overlap metrics come from the confusion counts (TP, FP, FN, TN). Surface distances use
MONAI (``compute_hausdorff_distance`` with ``percentile=95`` and
``compute_average_surface_distance`` with ``symmetric=True``), on boundary pixels found by
binary erosion, in physical units when ``spacing`` is given (same axis order as the
arrays, e.g. (z, y, x)):

* HD95 = max of the two directed 95th-percentile boundary distances (MONAI's definition;
  medpy's ``hd95`` takes one percentile over both directions pooled, which can differ
  slightly on irregular shapes).
* ASD = mean over the boundary points of *both* masks of the distance to the other
  boundary (symmetric, often written ASSD). medpy's ``asd`` (used by WSL4MIS) is the
  directed prediction→truth mean; pass ``symmetric_asd=False`` for that.

Empty masks have defined values so that averages never silently drop a case:

=================================  ======  =========  ==================================
case                               Dice    IoU        HD95 / ASD
=================================  ======  =========  ==================================
prediction and truth both empty    1       1          0 / 0
exactly one of them empty          0       0          image diagonal (physical units)
=================================  ======  =========  ==================================

The diagonal ``sqrt(sum((shape_i * spacing_i)^2))`` is the largest distance possible in
the image, a worst-case penalty for a missed or hallucinated structure. (The WSL4MIS
evaluation returns HD95 = 0 for an empty prediction, which rewards missing an organ; we
do not.) Rows carry ``distance_penalty=True`` in that case so it can be reported.
Ratios whose denominator is 0 follow the same logic: precision with no predicted pixel is
1 if the truth is also empty, else 0; sensitivity with an empty truth is 1 if the
prediction is also empty, else 0; specificity with no negative pixel is 1.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_write

__all__ = [
    "METRIC_NAMES",
    "binary_metrics",
    "class_dice",
    "evaluate_segmentation",
    "image_diagonal",
    "summarize",
    "summarize_by_class",
    "surface_distances",
    "write_metrics_csv",
]

METRIC_NAMES = (
    "dice",
    "iou",
    "accuracy",
    "precision",
    "sensitivity",
    "specificity",
    "hd95",
    "asd",
)


def class_dice(prediction, truth, class_values: Sequence[int]) -> dict[int, float]:
    """Dice of each class value (2-D or 3-D label maps, same shape; both empty: 1).

    The overlap alone, without the surface distances: cheap enough to score a dataset's
    validation files every few minutes of training.
    """
    pred, true = np.asarray(prediction), np.asarray(truth)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and truth {true.shape} differ in shape")
    out = {}
    for v in class_values:
        p, t = pred == v, true == v
        total = int(p.sum()) + int(t.sum())
        out[int(v)] = 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total
    return out


def _spacing_tuple(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        sp = (float(spacing),) * ndim
    else:
        sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise ValueError(
            f"spacing {tuple(sp)} has {len(sp)} values for {ndim}-D arrays; give "
            "one value per axis in array order (e.g. (z, y, x))"
        )
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing values must be positive and finite, got {sp}")
    return sp


def _ratio(num: int, den: int, if_zero: float) -> float:
    return float(num) / float(den) if den else float(if_zero)


def image_diagonal(shape: Sequence[int], spacing=None) -> float:
    """Length of the image diagonal in physical units: the empty-mask distance penalty."""
    sp = _spacing_tuple(spacing, len(shape))
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, sp))))


def surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing=None, symmetric_asd: bool = True
) -> tuple[float, float]:
    """(HD95, ASD) between two boolean masks, with the empty-mask rules of this module."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    sp = _spacing_tuple(spacing, pred.ndim)
    has_p, has_t = bool(pred.any()), bool(truth.any())
    if not has_p and not has_t:
        return 0.0, 0.0
    if has_p != has_t:
        d = image_diagonal(pred.shape, sp)
        return d, d
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    yp = torch.from_numpy(pred[None, None].astype(np.float32))
    yt = torch.from_numpy(truth[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(
            yp, yt, include_background=True, percentile=95, spacing=list(sp)
        )
        asd = compute_average_surface_distance(
            yp, yt, include_background=True, symmetric=symmetric_asd, spacing=list(sp)
        )
    return float(hd95.reshape(-1)[0]), float(asd.reshape(-1)[0])


def binary_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing=None,
    distances: bool = True,
    symmetric_asd: bool = True,
) -> dict:
    """All metrics for one binary mask pair (see the module docstring for conventions)."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    tn = int(p.size - tp - fp - fn)
    pred_empty, truth_empty = tp + fp == 0, tp + fn == 0
    row = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "accuracy": _ratio(tp + tn, p.size, 1.0),
        "precision": _ratio(tp, tp + fp, 1.0 if truth_empty else 0.0),
        "sensitivity": _ratio(tp, tp + fn, 1.0 if pred_empty else 0.0),
        "specificity": _ratio(tn, tn + fp, 1.0),
    }
    if distances:
        row["hd95"], row["asd"] = surface_distances(p, t, spacing, symmetric_asd)
    else:
        row["hd95"] = row["asd"] = float("nan")
    row.update(
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        pred_empty=pred_empty,
        truth_empty=truth_empty,
        distance_penalty=bool(distances and pred_empty != truth_empty),
    )
    return row


def _as_label_array(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must hold integer class values (got non-integer floats)")
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label map, got dtype {arr.dtype}")
    return arr


def evaluate_segmentation(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int | None = None,
    class_values: Sequence[int] | None = None,
    spacing=None,
    include_background: bool = False,
    class_names: Sequence[str] | dict | None = None,
    case: str | None = None,
    distances: bool = True,
    symmetric_asd: bool = True,
) -> list[dict]:
    """Per-class metrics of a label map against the truth (2-D or 3-D, same shape).

    Classes: ``class_values`` if given; else ``0..num_classes-1``; else every value found
    in either map. Background (0) is left out unless ``include_background``; explicit
    ``class_values`` are used as given. For a volume pass the whole (Z, H, W) arrays
    (3-D distances, as in the ACDC protocol) with ``spacing=(z, y, x)``.

    Returns one dict per class with ``class``, ``name``, the metrics of
    :data:`METRIC_NAMES`, the confusion counts and the empty-mask flags (plus ``case``
    when given).
    """
    p = _as_label_array(pred, "prediction")
    t = _as_label_array(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    if p.ndim not in (2, 3):
        raise ValueError(f"expected 2-D or 3-D label maps, got shape {p.shape}")
    sp = _spacing_tuple(spacing, p.ndim)
    if class_values is not None:
        values = [int(v) for v in class_values]
    else:
        if num_classes is not None:
            values = list(range(int(num_classes)))
        else:
            values = sorted(int(v) for v in np.union1d(np.unique(p), np.unique(t)))
        if not include_background:
            values = [v for v in values if v != 0]
    if not values:
        raise ValueError(
            "no class to evaluate: give class_values or num_classes, or set include_background=True"
        )
    rows = []
    for v in values:
        row: dict = {}
        if case is not None:
            row["case"] = case
        row["class"] = v
        if class_names is not None:
            if isinstance(class_names, dict):
                row["name"] = class_names.get(v, str(v))
            else:
                row["name"] = class_names[v] if 0 <= v < len(class_names) else str(v)
        row.update(binary_metrics(p == v, t == v, sp, distances, symmetric_asd))
        rows.append(row)
    return rows


def summarize(rows: Iterable[dict], metrics: Sequence[str] = METRIC_NAMES) -> dict[str, float]:
    """Mean of each metric over all rows (all classes and cases); NaNs are skipped."""
    rows = list(rows)
    out: dict[str, float] = {}
    for m in metrics:
        vals = np.array([float(r[m]) for r in rows if m in r], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        out[m] = float(vals.mean()) if vals.size else float("nan")
    out["n"] = float(len(rows))
    return out


def summarize_by_class(
    rows: Iterable[dict], metrics: Sequence[str] = METRIC_NAMES
) -> dict[int, dict[str, float]]:
    """Mean of each metric per class value (over cases)."""
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(int(r["class"]), []).append(r)
    return {c: summarize(g, metrics) for c, g in sorted(groups.items())}


def write_metrics_csv(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write rows to CSV (columns in first-seen order), atomically (temp file + replace)."""
    rows = list(rows)
    path = Path(path)
    columns: list[str] = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            for r in rows:
                writer.writerow(r)

    return atomic_write(path, write, suffix=".csv")
