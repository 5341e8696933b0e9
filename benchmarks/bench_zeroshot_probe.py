"""Does a trio trained on a few ACDC volumes segment other patients without strokes?

Issue 12 measured zero-shot Dice 0.16–0.24 on new patients after a base of 367 steps on 8
training volumes. This probe repeats that for the tree given (``--tree``, default this one),
deterministically (fixed steps, seed 0, one torch thread, so it may share the machine), to
tell a bug in cross-image training from a recipe that does not generalise:

    python benchmarks/bench_zeroshot_probe.py [--tree DIR] [--steps 367] [--augment]

Base: patients 021–024 (both frames, real scribbles), the per-image recipe (TrainConfig
defaults, no preview). Scored zero-shot (no strokes: the networks alone) on patients 007, 014,
020, both frames: mean Dice over RV, Myo, LV in 3-D, per member and for the ensemble.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    p.add_argument("--steps", type=int, default=367)
    p.add_argument("--data", default=None, help="ACDC volumes folder")
    p.add_argument("--augment", action="store_true", help="geometric + gamma augmentation on")
    p.add_argument(
        "--dense",
        action="store_true",
        help="train on the dense labels instead of the scribbles (full supervision, same recipe)",
    )
    args = p.parse_args()
    sys.path.insert(0, args.tree)
    import torch

    torch.set_num_threads(1)
    from napari_medseg.data.datasets import find_data_dir
    from napari_medseg.data.readers import read_acdc_volume
    from napari_medseg.training.trainer import TrainConfig, TriNetTrainer

    folder = Path(args.data) if args.data else (find_data_dir() or Path("-")) / "acdc" / "volumes"
    if not folder.is_dir():
        print(f"no ACDC volumes at {folder}: skipping")
        return

    def load(path):
        v = read_acdc_volume(path)
        s = v.scribble.astype(np.int64)
        return v.image[:, None].astype(np.float32), np.where(s == 4, -1, s), v.label

    def dice(pred, truth):
        return float(
            np.mean(
                [
                    2
                    * np.sum((pred == c) & (truth == c))
                    / max(1, np.sum(pred == c) + np.sum(truth == c))
                    for c in (1, 2, 3)
                ]
            )
        )

    train = sorted(folder.glob("patient02[1-4]_frame*.h5"))
    images, seeds, labels = zip(*(load(f) for f in train))
    if args.dense:  # every pixel a stroke: what the same networks and steps reach with full labels
        seeds = tuple(lab.astype(np.int64) for lab in labels)
    cfg = TrainConfig(
        device="cpu",
        iterations=args.steps,
        preview_every_seconds=None,
        seed=0,
        augment=True if args.augment else None,
    )
    trainer = TriNetTrainer(list(images), list(seeds), 4, cfg, preview=None)
    t0 = time.perf_counter()
    trainer.run()
    print(
        f"tree {args.tree}: {'dense labels' if args.dense else 'scribbles'}, base of "
        f"{len(train)} volumes, {trainer.iteration} steps in "
        f"{time.perf_counter() - t0:.0f} s"
    )
    scores = []
    for path in sorted(
        [
            *folder.glob("patient00[7]_*.h5"),
            *folder.glob("patient01[4]_*.h5"),
            *folder.glob("patient020_*.h5"),
        ]
    ):
        image, _, label = load(path)
        pred = trainer.predict(image)
        members = " ".join(f"{k} {dice(v, label):.3f}" for k, v in pred.per_model.items())
        scores.append(dice(pred.ensemble, label))
        print(f"{path.stem}: zero-shot ensemble {scores[-1]:.3f} ({members})", flush=True)
    print(f"mean zero-shot ensemble Dice {np.mean(scores):.3f} over {len(scores)} volumes")


if __name__ == "__main__":
    main()
