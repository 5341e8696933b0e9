"""The anytime floor: Dice of the ensemble at every step budget, the random walker beside it.

For each case (an image or volume with its strokes), through :class:`~napari_medseg.workflow.
Workflow` — the path the CLI and the widget take, default settings:

* one training run of ``max(--steps)`` steps, the image predicted as the user would get it
  (``Workflow.predict``: the floor, the shape prior if asked) after each budget of ``--steps``;
* with ``--seconds S`` a second run with a time budget of S seconds counted from the start
  (as ``napari-medseg train --seconds S``: the walker and the final prediction inside it), its
  wall time reported;
* beside them the floor's own walker (β 2000 on every stroke, the answer the ensemble starts
  from) and scikit-image's walker with its default β 130 (what a classical tool gives).

Datasets: ``acdc`` (fold1 test volumes, the real expert scribbles), ``kvasir_seg`` (the
``split.json`` test frames) and ``ph2`` (strokes simulated from the masks, seeded), and
``samples`` (the bundled brain MRI and dermoscopy images with their drawn strokes).
``--hog`` keeps one core busy with another process for the whole run (a busy laptop).

    python benchmarks/bench_anytime.py --dataset acdc --limit 40 --seconds 60 \\
        --out bench_output/anytime_acdc.md --csv bench_output/anytime_acdc.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_medseg.data.datasets import (  # noqa: E402
    acdc_split,
    find_data_dir,
    list_image_mask_pairs,
    load_pair,
)
from napari_medseg.data.normalization import normalize_image  # noqa: E402
from napari_medseg.data.readers import read_acdc_volume  # noqa: E402
from napari_medseg.data.scribbles import simulate_scribbles  # noqa: E402
from napari_medseg.inference import member_agreement  # noqa: E402
from napari_medseg.shape_prior import apply_shape_prior, parse_shape_prior  # noqa: E402
from napari_medseg.training import TrainConfig  # noqa: E402
from napari_medseg.training.floor import floor_walker  # noqa: E402
from napari_medseg.workflow import Task, Workflow  # noqa: E402


@dataclass
class Case:
    name: str
    image: np.ndarray  # as the user has it
    scribbles: np.ndarray  # user values
    truth: np.ndarray  # user values, the image's spatial shape
    unlabelled: int
    foreground: tuple[int, ...]  # values scored (mean Dice over them)


def dice(pred: np.ndarray, truth: np.ndarray, values) -> float:
    scores = []
    for v in values:
        p, t = pred == v, truth == v
        s = np.count_nonzero(p) + np.count_nonzero(t)
        scores.append(1.0 if s == 0 else 2.0 * np.count_nonzero(p & t) / s)
    return float(np.mean(scores))


def acdc_cases(data: Path, limit: int) -> list[Case]:
    cases = []
    for path in acdc_split(data / "acdc" / "volumes", 1).test[:limit]:
        vol = read_acdc_volume(path)
        cases.append(Case(path.stem, vol.image, vol.scribble, vol.label, 4, (1, 2, 3)))
    return cases


def rgb_cases(data: Path, dataset: str, limit: int, seed: int) -> list[Case]:
    folder = data / dataset
    pairs = list_image_mask_pairs(folder)
    split = folder / "split.json"
    if split.exists():
        test = set(json.loads(split.read_text())["test"])
        pairs = [p for p in pairs if p.stem in test]
    cases = []
    for i, pair in enumerate(pairs[:limit]):
        image, mask = load_pair(pair)
        rng = np.random.default_rng(seed + i)
        scr = simulate_scribbles(
            mask.astype(np.uint8), offset=1, unlabelled=0, rng=rng, stroke_width=3
        )
        cases.append(Case(pair.stem, image, scr, mask.astype(np.uint8) + 1, 0, (2,)))
    return cases


def sample_cases() -> list[Case]:
    from napari_medseg.sample_data import load_mri_sample, load_rgb_sample

    cases = []
    for name, load in (
        ("brain MRI sample", load_mri_sample),
        ("dermoscopy sample", load_rgb_sample),
    ):
        d = load()
        k = len(d["class_names"])
        cases.append(Case(name, d["image"], d["scribbles"], d["truth"], 0, tuple(range(2, k + 1))))
    return cases


def select_cases(dataset: str, limit: int, skip: int, seed: int) -> list[Case] | None:
    """The cases of ``dataset`` (None when its data folder is missing): the first ``limit``,
    then the first ``skip`` left out — after the selection, so that simulated strokes keep
    their seeds whichever part of a set a process takes."""
    if dataset == "samples":
        cases = sample_cases()
    else:
        data = find_data_dir()
        if data is None or not (data / dataset).exists():
            return None
        cases = (
            acdc_cases(data, limit) if dataset == "acdc" else rgb_cases(data, dataset, limit, seed)
        )
    return cases[skip:]


def walkers(case: Case, prior_spec: str) -> dict[str, np.ndarray]:
    """The floor's walker (β 2000) and scikit-image's default (β 130), in user values."""
    values = tuple(int(v) for v in np.unique(case.scribbles) if v != case.unlabelled)
    norm = normalize_image(case.image)
    scr = case.scribbles if norm.kind == "stack" else case.scribbles[None]
    seeds = np.full(scr.shape, -1, dtype=np.int64)
    for i, v in enumerate(values):
        seeds[scr == v] = i
    prior = parse_shape_prior(prior_spec, values)
    out = {}
    for name, beta in (
        ("walker (floor, beta 2000)", 2000.0),
        ("walker (scikit-image, beta 130)", 130.0),
    ):
        idx = floor_walker(norm.data, seeds, len(values), beta).argmax(axis=1).astype(np.uint8)
        idx = apply_shape_prior(idx, seeds, prior)
        lab = np.asarray(values)[idx]
        out[name] = lab if norm.kind == "stack" else lab[0]
    return out


def config(args, **kw) -> TrainConfig:
    cfg = TrainConfig(device="cpu", preview_every_seconds=None, seed=args.seed, **kw)
    if getattr(args, "no_classifier", False):
        cfg.classifier = False  # the walker alone as the classical answer (before round 16)
    return cfg


def run_case(case: Case, args) -> list[dict]:
    rows = []
    values = tuple(int(v) for v in np.unique(case.scribbles) if v != case.unlabelled)
    prior = parse_shape_prior(args.shape_prior, values)
    prior_cfg = prior.to_dict() if prior.active else None
    for name, lab in walkers(case, args.shape_prior).items():
        rows.append(
            dict(
                case=case.name, method=name, budget="-", dice=dice(lab, case.truth, case.foreground)
            )
        )
    steps = sorted(int(s) for s in args.steps.split(",") if s)
    if steps:
        wf = Workflow(Task(unlabelled=case.unlabelled))
        cfg = config(args, iterations=max(steps), shape_prior=prior_cfg)
        wf.prepare([(case.image, case.scribbles)], cfg)
        for upd in wf.train():
            last = upd.done or upd.iteration == max(steps)
            if upd.done or (upd.iteration in steps and not last):
                # the run's own final prediction for the largest budget, Predict for the others
                seg = upd.segmentation if upd.done else wf.predict(case.image)
                rep = seg.report
                rows.append(
                    dict(
                        case=case.name,
                        method="ensemble",
                        budget=f"{upd.iteration} steps",
                        dice=dice(seg.ensemble, case.truth, case.foreground),
                        share=getattr(rep, "network_share", None),
                        networks_heldout=(getattr(rep, "heldout", {}) or {}).get("networks"),
                        changed=getattr(rep, "changed", None),
                        overruled=getattr(rep, "overruled", None),
                        classical=getattr(rep, "classical", None),
                    )
                )
                if upd.done:
                    break
    if args.seconds > 0:
        t0 = time.perf_counter()
        wf = Workflow(Task(unlabelled=case.unlabelled))
        cfg = config(args, seconds=args.seconds, shape_prior=prior_cfg)
        wf.prepare([(case.image, case.scribbles)], cfg)
        *_, final = wf.train(started=t0)
        wall = time.perf_counter() - t0
        rep = final.segmentation.report
        rows.append(
            dict(
                case=case.name,
                method="ensemble",
                budget=f"{args.seconds:g} s",
                dice=dice(final.segmentation.ensemble, case.truth, case.foreground),
                share=getattr(rep, "network_share", None),
                networks_heldout=(getattr(rep, "heldout", {}) or {}).get("networks"),
                # how much of the walker's answer the networks changed, and of its sure pixels
                changed=getattr(rep, "changed", None),
                overruled=getattr(rep, "overruled", None),
                classical=getattr(rep, "classical", None),
                steps=final.iteration,
                wall_s=wall,
                # what review.csv ranks a folder by: does low agreement find the bad answers?
                agreement=member_agreement(final.segmentation.labels, final.segmentation.ensemble),
            )
        )
    return rows


def table(rows: list[dict], title: str) -> str:
    floor_name = "walker (floor, beta 2000)"
    sk_name = "walker (scikit-image, beta 130)"
    by_case = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[(r["method"], r["budget"])] = r
    budgets = list(dict.fromkeys(r["budget"] for r in rows if r["method"] == "ensemble"))
    floor = np.array([c[(floor_name, "-")]["dice"] for c in by_case.values()])
    sk = np.array([c[(sk_name, "-")]["dice"] for c in by_case.values()])
    lines = [
        title,
        "",
        f"Walkers on the same strokes: floor walker (beta 2000) **{floor.mean():.3f}**, "
        f"scikit-image walker (beta 130) **{sk.mean():.3f}** ({len(floor)} cases).",
        "",
        "| budget | ensemble mean Dice | − floor walker: mean / worst case | cases below the "
        "floor walker | − scikit-image walker: mean / worst | networks' share (mean) | walker's "
        "answer changed / sure pixels overruled (mean) | steps (mean) | wall s (max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in budgets:
        cases = [c for c in by_case.values() if ("ensemble", b) in c]
        ens = np.array([c[("ensemble", b)]["dice"] for c in cases])
        fl = np.array([c[(floor_name, "-")]["dice"] for c in cases])
        skc = np.array([c[(sk_name, "-")]["dice"] for c in cases])
        share = [c[("ensemble", b)].get("share") for c in cases]
        share = [s for s in share if s is not None]
        steps = [c[("ensemble", b)].get("steps") for c in cases if c[("ensemble", b)].get("steps")]
        wall = [c[("ensemble", b)].get("wall_s") for c in cases if c[("ensemble", b)].get("wall_s")]
        moved = [
            (c[("ensemble", b)].get("changed"), c[("ensemble", b)].get("overruled")) for c in cases
        ]
        moved = np.array([m for m in moved if None not in m], dtype=float).reshape(-1, 2)
        d, e = ens - fl, ens - skc
        lines.append(
            f"| {b} | {ens.mean():.3f} | {d.mean():+.3f} / {d.min():+.3f} | "
            f"{int((d < -1e-9).sum())} of {len(d)} | {e.mean():+.3f} / {e.min():+.3f} | "
            f"{np.mean(share) if share else float('nan'):.2f} | "
            + (f"{moved[:, 0].mean():.1%} / {moved[:, 1].mean():.1%} | " if len(moved) else "– | ")
            + f"{np.mean(steps) if steps else float('nan'):.0f} | "
            f"{max(wall) if wall else float('nan'):.1f} |"
        )
    lines += review_rank_lines(rows)
    return "\n".join(lines)


def review_rank_lines(rows: list[dict], what: str = "the timed runs") -> list[str]:
    """Whether ranking by the networks' agreement with the answer (``review.csv``) puts the
    worst answers first: Spearman's rho of agreement against the ensemble's Dice, and the
    Dice of the lowest-agreement quarter beside the rest's (rows: ``agreement``, ``dice``)."""
    from scipy.stats import spearmanr

    got = [r for r in rows if r.get("agreement") not in (None, "")]
    if len(got) < 4:
        return []
    agree = np.array([float(r["agreement"]) for r in got])
    dice_ = np.array([float(r["dice"]) for r in got])
    rho = spearmanr(agree, dice_).statistic
    order = np.argsort(agree)
    q = max(1, len(got) // 4)
    return [
        "",
        f"Review rank ({what}, {len(got)} cases): Spearman rho of the networks' "
        f"agreement with the answer against its Dice **{rho:+.2f}**; the quarter with the "
        f"lowest agreement has mean Dice {dice_[order[:q]].mean():.3f}, the rest "
        f"{dice_[order[q:]].mean():.3f}.",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="acdc", choices=["acdc", "kvasir_seg", "ph2", "samples"])
    p.add_argument("--limit", type=int, default=40)
    p.add_argument("--skip", type=int, default=0, help="leave out the first N of the cases")
    p.add_argument("--steps", default="5,10,25,50,100,200")
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--shape-prior", default="none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hog", action="store_true", help="keep one core busy meanwhile")
    p.add_argument(
        "--no-classifier",
        action="store_true",
        help="the walker alone as the classical answer (TrainConfig.classifier off)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=None)
    p.add_argument("--csv", default=None)
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cases = select_cases(args.dataset, args.limit, args.skip, args.seed)
    if cases is None:
        print(f"{args.dataset} not found under ../shared/data or $MEDSEG_DATA_DIR: skipping")
        return
    hog = None
    if args.hog:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    rows: list[dict] = []
    started = time.strftime("%Y-%m-%d %H:%M")
    try:
        for i, case in enumerate(cases):
            got = run_case(case, args)
            rows += got
            ens = {r["budget"]: r["dice"] for r in got if r["method"] == "ensemble"}
            fl = next(r["dice"] for r in got if r["method"].startswith("walker (floor"))
            print(
                f"[{i + 1}/{len(cases)}] {case.name}: floor walker {fl:.3f} | "
                + " ".join(f"{b} {d:.3f}" for b, d in ens.items()),
                flush=True,
            )
    finally:
        if hog is not None:
            hog.kill()
    import torch

    # the script cannot see other jobs: it only knows whether it ran its own hog
    machine = "one core busy with another process (--hog)" if args.hog else "no deliberate hog"
    title = (
        f"Anytime floor, {args.dataset}, {len(cases)} cases, shape prior `{args.shape_prior}`, "
        f"default trio (lite) on cpu, torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread(s), {machine}; "
        f"{started}."
    )
    text = table(rows, title)
    print(text)
    write_results(text, rows, args.out, args.csv)


def write_results(
    text: str, rows: list[dict], out: str | None, csv_path: str | None, fields=None
) -> None:
    """The markdown table to ``out`` and the rows to ``csv_path`` (either may be None);
    CSV columns ``fields``, else every key of the rows, sorted."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    if csv_path:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields or sorted({k for r in rows for k in r}))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
