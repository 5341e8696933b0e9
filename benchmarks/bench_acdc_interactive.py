"""Interactive protocol on ACDC: real scribbles of one volume → train → predict that volume.

For each held-out volume of a fold (fold1: patients 001-020, 40 volumes), side by side on the
same scribbles:
  * the trio (or any slots) trained for ``--seconds`` on CPU, `lite` preset;
  * scikit-image's random walker seeded by the scribbles, slice by slice;
  * an ilastik-style pixel classifier (multiscale_basic_features + random forest).
With ``--shape-prior cardiac`` (the default) the trio trains and predicts with the cardiac
shape prior (napari_medseg.shape_prior), every peer is also scored with the same rules applied
to its labels (rows ``<peer>+prior``), and ``ensemble_without_rules`` scores the same trained
networks' ensemble before the rules — so the prior's share is visible on every method.
Reports 3-D per-volume Dice and HD95 (voxels; the h5 files carry no spacing) per class, seconds
per volume and the time from the start of training to the first prediction.

    python benchmarks/bench_acdc_interactive.py --seconds 60 --out bench_output/acdc.md
    python benchmarks/bench_acdc_interactive.py --patients 3,11,18 --seconds 60   # quick look
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_medseg.data.datasets import acdc_patient_number, acdc_split, find_data_dir  # noqa: E402
from napari_medseg.shape_prior import (  # noqa: E402
    ShapePrior,
    apply_shape_prior,
    parse_shape_prior,
)
from napari_medseg.training import TrainConfig, TriNetTrainer  # noqa: E402
from napari_medseg.training.dataset_protocol import (  # noqa: E402
    ACDC_CLASSES,
    acdc_arrays,
    score_prediction,
    score_volume,
)
from napari_medseg.training.pseudo_labels import random_walker_labels  # noqa: E402


def pixel_classifier(image: np.ndarray, seeds: np.ndarray, seed: int = 0) -> np.ndarray:
    """ilastik-style: multiscale intensity/edge/texture features + random forest per volume."""
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    feats = np.stack(
        [
            multiscale_basic_features(image[z, 0], sigma_min=1, sigma_max=16)
            for z in range(image.shape[0])
        ]
    )
    mask = seeds >= 0
    clf = RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=-1, random_state=seed)
    clf.fit(feats[mask], seeds[mask])
    return clf.predict(feats.reshape(-1, feats.shape[-1])).reshape(seeds.shape)


# --peers key -> (row name, method(image, seeds) -> class indices)
PEERS = {
    "rw": ("random_walker", lambda im, sd: random_walker_labels(im, sd, 4)),
    # the walker the trio learns from (its beta), all pixels: the trio's own teacher
    "rw_tuned": (
        "random_walker_beta2000",
        lambda im, sd: random_walker_labels(im, sd, 4, beta=TrainConfig.rw_beta),
    ),
    "rf": ("pixel_classifier", pixel_classifier),
}


def run(args) -> list[dict]:
    data = Path(args.data) if args.data else find_data_dir()
    if data is None or not (data / "acdc").exists() and not Path(data).glob("*.h5"):
        print("ACDC data not found (../shared/data/acdc or $MEDSEG_DATA_DIR): skipping")
        return []
    folder = data / "acdc" if (data / "acdc").exists() else data
    split = acdc_split(folder, args.fold)
    vols = list(split.test)
    if args.patients:
        keep = {int(p) for p in args.patients.split(",")}
        vols = [v for v in vols if acdc_patient_number(v) in keep]
    if args.limit:
        vols = vols[: args.limit]
    rows: list[dict] = []
    models = tuple(args.models.split(","))
    prior = parse_shape_prior(args.shape_prior, range(4))
    for i, path in enumerate(vols):
        image, seeds, label, _ = acdc_arrays(path, 4)
        case = path.stem
        for key in args.peers.split(","):
            if key not in PEERS:
                continue
            name, method = PEERS[key]
            t0 = time.perf_counter()
            pred = np.clip(method(image, seeds), 0, None)
            dt = time.perf_counter() - t0
            for r in score_volume(pred, label, case, name):
                r["seconds"] = dt
                rows.append(r)
            if prior.active:
                t0 = time.perf_counter()
                shaped = apply_shape_prior(pred, seeds, prior)
                for r in score_volume(shaped, label, case, f"{name}+prior"):
                    r["seconds"] = dt + time.perf_counter() - t0
                    rows.append(r)
        if args.seconds > 0:
            cfg = TrainConfig(
                models=models,
                preset=args.preset,
                seconds=args.seconds,
                device=args.device,
                seed=args.seed,
                preview_every_seconds=1e9,
                preview_first_after_steps=1,
                rw_weight=args.rw_weight,
                pseudo_weight=args.pseudo_weight,
                batch_size=args.batch_size,
                patch_size=args.patch_size,
                shape_prior=prior.to_dict() if prior.active else None,
            )
            t0 = time.perf_counter()
            trainer = TriNetTrainer([image], [seeds], 4, cfg)
            first = None
            final = None
            for upd in trainer.steps():
                if upd.prediction is not None and first is None:
                    first = time.perf_counter() - t0
                final = upd
            dt = time.perf_counter() - t0
            for r in score_prediction(final.prediction, label, case):
                r["seconds"] = dt
                r["first_prediction_s"] = first
                r["iterations"] = final.iteration
                rows.append(r)
            if prior.active:  # the same networks, their ensemble before the output rules
                trainer.shape_prior = ShapePrior()
                raw = trainer.predict(image)
                for r in score_volume(raw.ensemble, label, case, "ensemble_without_rules"):
                    r["seconds"] = dt
                    rows.append(r)
            its = final.iteration
        else:
            its = 0
        ens = [r["dice"] for r in rows if r["case"] == case and r["model"] == "ensemble"]
        rwd = [r["dice"] for r in rows if r["case"] == case and r["model"] == "random_walker"]
        print(
            f"[{i + 1}/{len(vols)}] {case}: ensemble Dice "
            f"{np.mean(ens) if ens else float('nan'):.3f}"
            f" | random walker {np.mean(rwd) if rwd else float('nan'):.3f} | {its} it",
            flush=True,
        )
    return rows


def markdown(rows: list[dict], args) -> str:
    models = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    n_cases = len({r["case"] for r in rows})
    lines = [
        f"ACDC fold{args.fold} interactive protocol, {n_cases} volumes, real scribbles, "
        f"preset `{args.preset}`, {args.seconds:g} s training per volume on {args.device}.",
        "HD95 is in voxels, not mm: the WSL4MIS ACDC h5 files carry no spacing and this "
        "benchmark applies none.",
        "",
        "| method | RV Dice | Myo Dice | LV Dice | mean Dice | mean HD95 (vox) | s / volume "
        "| first prediction (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        sel = [r for r in rows if r["model"] == m]
        dice = [np.mean([r["dice"] for r in sel if r["class"] == c]) for c in ACDC_CLASSES]
        hd = np.mean([r["hd95"] for r in sel])
        secs = np.mean([r["seconds"] for r in sel])
        first = [r.get("first_prediction_s") for r in sel if r.get("first_prediction_s")]
        lines.append(
            f"| {m} | {dice[0]:.3f} | {dice[1]:.3f} | {dice[2]:.3f} | "
            f"{np.mean(dice):.3f} | {hd:.2f} | {secs:.1f} | "
            f"{np.mean(first):.1f} |"
            if first
            else f"| {m} | {dice[0]:.3f} | {dice[1]:.3f} | {dice[2]:.3f} | "
            f"{np.mean(dice):.3f} | {hd:.2f} | {secs:.1f} | – |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=None)
    p.add_argument("--fold", type=int, default=1)
    p.add_argument("--patients", default=None, help="comma-separated patient numbers")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--models", default="unet,swin_unet,mamba_unet")
    p.add_argument("--preset", default="lite")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rw-weight", type=float, default=TrainConfig.rw_weight)
    p.add_argument("--pseudo-weight", type=float, default=TrainConfig.pseudo_weight)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--patch-size", type=int, default=TrainConfig.patch_size)
    p.add_argument(
        "--shape-prior",
        default="cardiac",
        help="anatomical rules for the trio (teacher and output) and extra peer rows: "
        "cardiac (default) or none",
    )
    p.add_argument(
        "--peers",
        default="rw,rf",
        help="classical peers to run: rw (scikit-image's defaults), rw_tuned (the walker "
        "the trio learns from, beta 2000), rf, or none",
    )
    p.add_argument("--out", default=None, help="markdown summary file")
    p.add_argument("--csv", default=None, help="per-volume rows")
    args = p.parse_args()
    rows = run(args)
    if not rows:
        return
    table = markdown(rows, args)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
