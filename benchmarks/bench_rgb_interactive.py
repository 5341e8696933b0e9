"""Interactive protocol on RGB sets (Kvasir-SEG polyps, PH2 dermoscopy): simulated scribbles.

For each image: scribbles are simulated from its dense mask (skeleton strokes of the lesion and
of a ring of background around it), the chosen slots train for ``--seconds`` on CPU, and the
ensemble (and each network) is scored against the mask (Dice of the lesion). The random walker
on the same scribbles is reported beside them.

    python benchmarks/bench_rgb_interactive.py --dataset kvasir_seg --limit 5 --seconds 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_medseg.data.datasets import (  # noqa: E402
    find_data_dir,
    list_image_mask_pairs,
    load_pair,
)
from napari_medseg.data.scribbles import simulate_scribbles  # noqa: E402
from napari_medseg.metrics import evaluate_segmentation  # noqa: E402
from napari_medseg.training import TrainConfig, TriNetTrainer, prepare_interactive  # noqa: E402
from napari_medseg.training.pseudo_labels import random_walker_labels  # noqa: E402


def run(args) -> dict[str, list[float]]:
    data = find_data_dir()
    if data is None or not (data / args.dataset).is_dir():
        print(f"{args.dataset} not found under ../shared/data or $MEDSEG_DATA_DIR: skipping")
        return {}
    pairs = list_image_mask_pairs(data / args.dataset)[: args.limit]
    scores: dict[str, list[float]] = {}
    for i, pair in enumerate(pairs):
        image, mask = load_pair(pair)
        rng = np.random.default_rng(args.seed + i)
        scr = simulate_scribbles(
            mask.astype(np.uint8), offset=1, unlabelled=0, rng=rng, stroke_width=3
        )
        task = prepare_interactive(image, scr, 0)
        rw = (
            random_walker_labels(
                task.images[0][:, :, ::4, ::4], task.seeds[0][:, ::4, ::4], task.num_classes
            )
            if args.peers
            else None
        )
        cfg = TrainConfig(
            models=tuple(args.models.split(",")),
            preset="lite",
            seconds=args.seconds,
            device="cpu",
            seed=args.seed,
            preview_every_seconds=None,
        )
        trainer = TriNetTrainer(task.images, task.seeds, task.num_classes, cfg)
        final = trainer.run()
        truth = mask.astype(np.uint8) + 1
        results = {"ensemble": final.prediction.ensemble[0]}
        results.update({k: v[0] for k, v in final.prediction.per_model.items()})
        for name, idx in results.items():
            pred = np.asarray(task.class_values)[idx]
            d = evaluate_segmentation(pred, truth, class_values=[2], distances=False)[0]["dice"]
            scores.setdefault(name, []).append(d)
        if rw is not None:
            import torch
            import torch.nn.functional as F

            up = (
                F.interpolate(
                    torch.from_numpy(rw[:, None].astype(np.float32)),
                    size=mask.shape,
                    mode="nearest",
                )[0, 0]
                .numpy()
                .astype(np.int64)
            )
            pred = np.asarray(task.class_values)[np.clip(up, 0, None)]
            d = evaluate_segmentation(pred, truth, class_values=[2], distances=False)[0]["dice"]
            scores.setdefault("random_walker (1/4 res)", []).append(d)
        print(
            f"[{i + 1}/{len(pairs)}] {pair.stem}: ensemble Dice {scores['ensemble'][-1]:.3f}"
            f" ({final.iteration} it)",
            flush=True,
        )
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="kvasir_seg", choices=["kvasir_seg", "ph2", "ham10000"])
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--models", default="unet,swin_unet,mamba_unet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peers", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    scores = run(args)
    if not scores:
        return
    n = len(scores["ensemble"])
    lines = [
        f"{args.dataset}, {n} images, simulated scribbles, slots `{args.models}` (lite), "
        f"{args.seconds:g} s CPU training per image.",
        "",
        "| method | lesion Dice (mean ± sd) |",
        "|---|---|",
    ]
    for k, v in scores.items():
        lines.append(f"| {k} | {np.mean(v):.3f} ± {np.std(v):.3f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
