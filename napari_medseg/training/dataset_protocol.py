"""ACDC volumes as arrays, and the paper's per-volume scoring shared by the CLI and benchmarks.

The paper's dataset protocol (``napari-medseg train --dataset acdc --fold k``) trains through
:meth:`napari_medseg.workflow.Workflow.prepare_dataset` like any dataset folder; what is
ACDC-specific lives here: each volume scored in 3-D against its dense label (RV, Myo, LV) and
the summary table of those rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.classes import ClassMap
from ..data.normalization import percentile_normalize
from ..data.readers import read_acdc_volume
from ..metrics import evaluate_segmentation, summarize_by_class

ACDC_CLASSES = {1: "RV", 2: "Myo", 3: "LV"}
ACDC_NUM_CLASSES = 4


def acdc_arrays(path: Path, unlabelled: int = 4):
    """(image (Z,1,H,W) float32, seeds (Z,H,W) int64 with -1 unlabelled, label, volume)."""
    vol = read_acdc_volume(path)
    image = percentile_normalize(vol.image)[:, None]
    if vol.scribble is None:
        seeds = np.full(vol.image.shape, -1, dtype=np.int64)
    else:  # ACDC's label values are the class indices
        seeds = ClassMap(tuple(range(ACDC_NUM_CLASSES)), unlabelled).to_indices(vol.scribble)
    return image, seeds, vol.label, vol


def score_volume(
    prediction_indices: np.ndarray, truth: np.ndarray, case: str, model: str, spacing=None
) -> list[dict]:
    rows = evaluate_segmentation(
        prediction_indices.astype(np.int64),
        truth.astype(np.int64),
        class_values=list(ACDC_CLASSES),
        spacing=spacing,
        class_names=ACDC_CLASSES,
        case=case,
    )
    for r in rows:
        r["model"] = model
    return rows


def score_prediction(prediction, truth, case: str, spacing=None) -> list[dict]:
    """Rows for every network of a :class:`Prediction` and for its ensemble."""
    rows = []
    for key, lab in prediction.per_model.items():
        rows += score_volume(lab, truth, case, key, spacing)
    rows += score_volume(prediction.ensemble, truth, case, "ensemble", spacing)
    return rows


def summary_table(rows: list[dict]) -> dict[str, dict[int, dict[str, float]]]:
    """{model: {class: {metric: mean}}}."""
    models = sorted({r["model"] for r in rows}, key=lambda m: (m == "ensemble", m))
    return {m: summarize_by_class([r for r in rows if r["model"] == m]) for m in models}


def summary_text(rows: list[dict]) -> str:
    """Mean Dice per ACDC class and mean HD95, one line per model (the ensemble last)."""
    lines = ["model          RV Dice  Myo Dice  LV Dice  mean Dice  mean HD95"]
    for model, by_class in summary_table(rows).items():
        dice = [by_class[c]["dice"] for c in ACDC_CLASSES]
        hd = [by_class[c]["hd95"] for c in ACDC_CLASSES]
        lines.append(
            f"{model:14s} {dice[0]:7.4f}  {dice[1]:8.4f}  {dice[2]:7.4f}  "
            f"{np.mean(dice):9.4f}  {np.mean(hd):9.2f}"
        )
    return "\n".join(lines)
