"""The paper's dataset protocol on ACDC, and per-volume evaluation shared with the benchmarks.

Train on the real scribbles of the training patients of a fold, predict the held-out patients'
volumes slice by slice, and score each volume in 3-D against its dense label (RV, Myo, LV).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.classes import ClassMap
from ..data.normalization import percentile_normalize
from ..data.readers import read_acdc_volume
from ..metrics import evaluate_segmentation, summarize_by_class, write_metrics_csv
from .trainer import TrainConfig, TriNetTrainer

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


@dataclass
class ProtocolResult:
    rows: list[dict]
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary_text(self) -> str:
        lines = ["model          RV Dice  Myo Dice  LV Dice  mean Dice  mean HD95"]
        for model, by_class in summary_table(self.rows).items():
            dice = [by_class[c]["dice"] for c in ACDC_CLASSES]
            hd = [by_class[c]["hd95"] for c in ACDC_CLASSES]
            lines.append(
                f"{model:14s} {dice[0]:7.4f}  {dice[1]:8.4f}  {dice[2]:7.4f}  "
                f"{np.mean(dice):9.4f}  {np.mean(hd):9.2f}"
            )
        return "\n".join(lines)


def run_acdc_protocol(
    data: Path,
    fold: int,
    config: TrainConfig,
    out: Path,
    unlabelled: int = 4,
    spacing=None,
    drive: Callable | None = None,
) -> ProtocolResult:
    """Trains on the fold's training patients' scribbles and scores its test patients."""
    from ..checkpoints import build_card, save_checkpoint
    from ..data.datasets import acdc_split

    split = acdc_split(data, fold)
    images, seeds = [], []
    for p in split.train:
        im, sd, _, _ = acdc_arrays(p, unlabelled)
        images.append(im)
        seeds.append(sd)
    trainer = TriNetTrainer(
        images,
        seeds,
        ACDC_NUM_CLASSES,
        config,
        preview=None,
        metadata={
            "class_values": [0, 1, 2, 3],
            "unlabelled": unlabelled,
            "class_names": ["background", "RV", "Myo", "LV"],
            "protocol": f"acdc fold{fold}",
        },
    )
    final = drive(trainer, f"fold{fold}") if drive else trainer.run()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = trainer.state_dict()
    checkpoint.card = build_card(
        checkpoint,
        trained_on={
            "dataset": f"{Path(data).name} (ACDC protocol)",
            "acdc_fold": f"fold{fold}",
            "images": len(split.train),
            "scribbled_pixels": int(sum(int((s >= 0).sum()) for s in seeds)),
        },
    )
    files = [save_checkpoint(checkpoint, out / "model.pt")]
    rows = []
    for p in split.test:
        im, _, label, _ = acdc_arrays(p, unlabelled)
        pred = trainer.predict(im)
        rows += score_prediction(pred, label, p.stem, spacing)
    files.append(write_metrics_csv(out / "metrics.csv", rows))
    return ProtocolResult(rows, files, final.elapsed if final else 0.0)
