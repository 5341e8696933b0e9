"""The classical answer before any network: walker, stroke classifier, their combinations.

For each case, on the same strokes as ``bench_anytime.py`` (ACDC's real scribbles, the
collection simulator's strokes on Kvasir/PH2, the bundled samples): Dice of the floor's
random walker (β 2000), the random forest on the strokes alone, ``walker × classifier``,
``walker on classifier`` (training/stroke_classifier.py), and of what the product chooses —
the trainer's rule on its own held-out split (20 % of the stroke tiles, seed 0), then the
chosen method on every stroke. No network is trained: what the floor and the teacher stand on.
Deterministic; cheap (seconds a case), so it may share the machine.

    python benchmarks/bench_classical.py --dataset acdc --limit 40 \
        --out bench_output/classical_acdc.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_anytime import dice, select_cases, write_results  # noqa: E402

from napari_medseg.data.normalization import normalize_image  # noqa: E402
from napari_medseg.resolution import (  # noqa: E402
    resize_image,
    resize_seeds,
    upsample_probabilities,
)
from napari_medseg.training.floor import WALKER_MAX_SIDE, floor_walker  # noqa: E402
from napari_medseg.training.holdout import HOLDOUT_FRACTION, split_strokes  # noqa: E402
from napari_medseg.training.stroke_classifier import (  # noqa: E402
    METHODS,
    WALKER,
    choose_for_image,
    classical_probabilities,
    classifier_probabilities,
    walker_size,
)

COLUMNS = (WALKER, "classifier alone", *METHODS, "chosen")


def prefiltered(data: np.ndarray, how: str) -> np.ndarray:
    """The image smoothed before the walker: ``g<σ>`` Gaussian, ``tv<weight>`` total
    variation (per channel and slice) — what a walker-only fix for noise would be."""
    from skimage.filters import gaussian
    from skimage.restoration import denoise_tv_chambolle

    out = np.empty_like(data)
    for z in range(data.shape[0]):
        for c in range(data.shape[1]):
            if how.startswith("g"):
                out[z, c] = gaussian(data[z, c], float(how[1:]))
            elif how.startswith("tv"):
                out[z, c] = denoise_tv_chambolle(data[z, c], weight=float(how[2:]))
            else:
                raise ValueError(f"unknown pre-filter {how!r}: g<sigma> or tv<weight>")
    return out


def run_case(case, beta: float = 2000.0, prefilters: tuple[str, ...] = ()) -> dict:
    values = tuple(int(v) for v in np.unique(case.scribbles) if v != case.unlabelled)
    norm = normalize_image(case.image)
    stack = norm.kind == "stack"
    scr = case.scribbles if stack else case.scribbles[None]
    truth = case.truth if stack else case.truth[None]
    seeds = np.full(scr.shape, -1, dtype=np.int64)
    for i, v in enumerate(values):
        seeds[scr == v] = i
    k, data = len(values), norm.data
    lut = np.asarray(values)
    row: dict = {"case": case.name}
    t0 = time.perf_counter()
    walker = floor_walker(data, seeds, k, beta)
    probs = {WALKER: walker}
    for method in METHODS:
        probs[method] = classical_probabilities(method, data, seeds, k, beta, walker=walker)
    # the forest alone, at the walker's size like the rest
    size = walker_size(data, WALKER_MAX_SIDE)
    small = (resize_image(data, size), resize_seeds(seeds, size, k))
    clf = classifier_probabilities(*small, k)
    if clf is not None:
        probs["classifier alone"] = upsample_probabilities(clf, tuple(data.shape[-2:]))
    row["seconds (all)"] = time.perf_counter() - t0
    training, held = split_strokes(seeds, HOLDOUT_FRACTION, seed=0)
    t0 = time.perf_counter()
    choice = choose_for_image(data, training, held, k, beta)
    row["seconds (choice)"] = time.perf_counter() - t0
    row["method"] = choice.method
    row["outline"] = choice.outline  # colour images: the walker outline's stroke distance
    probs["chosen"] = probs[choice.method]
    for variant in prefilters:  # "how" or "how:beta"
        how, _, b = variant.partition(":")
        pre = floor_walker(prefiltered(data, how), seeds, k, float(b or beta))
        probs[f"walker, {variant}"] = pre
    for name, prob in probs.items():
        row[name] = dice(lut[prob.argmax(axis=1)], truth, case.foreground)
    for name, score in choice.heldout.items():
        row[f"held-out {name}"] = score
    for name, ratio in choice.area.items():
        row[f"area {name}"] = ratio
    return row


def table(rows: list[dict], title: str) -> str:
    walker = np.array([r[WALKER] for r in rows])
    lines = [
        title,
        "",
        "| | mean Dice | − walker: mean / worst | above / below the walker |",
        "|---|---|---|---|",
    ]
    extra = sorted({k for r in rows for k in r if k.startswith("walker, ")})
    for name in (*COLUMNS, *extra):
        have = [r for r in rows if name in r]
        if not have:
            continue
        v = np.array([r[name] for r in have])
        w = np.array([r[WALKER] for r in have])
        d = v - w
        lines.append(
            f"| {name} | {v.mean():.3f} | {d.mean():+.3f} / {d.min():+.3f} | "
            f"{int((d > 1e-9).sum())} / {int((d < -1e-9).sum())} of {len(v)} |"
        )
    chosen = {m: sum(r["method"] == m for r in rows) for m in (WALKER, *METHODS)}
    lines += [
        "",
        "Chosen: " + ", ".join(f"{m} {n}" for m, n in chosen.items()) + f" (of {len(rows)}); "
        f"walker mean {walker.mean():.3f}; seconds a case: all methods "
        f"{np.mean([r['seconds (all)'] for r in rows]):.1f}, the choice "
        f"{np.mean([r['seconds (choice)'] for r in rows]):.1f}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="acdc", choices=["acdc", "kvasir_seg", "ph2", "samples"])
    p.add_argument("--limit", type=int, default=40)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--csv", default=None)
    p.add_argument(
        "--prefilters",
        default="",
        help="walkers on a smoothed image beside the rest, e.g. g0.5,g1,tv0.05,g1:4000",
    )
    args = p.parse_args(argv)
    prefilters = tuple(v for v in args.prefilters.split(",") if v)
    cases = select_cases(args.dataset, args.limit, args.skip, args.seed)
    if cases is None:
        print(f"{args.dataset} not found (../shared/data or $MEDSEG_DATA_DIR): skipping")
        return ""
    rows = []
    for n, case in enumerate(cases, 1):
        row = run_case(case, prefilters=prefilters)
        rows.append(row)
        print(
            f"[{n}/{len(cases)}] {case.name}: walker {row[WALKER]:.3f} | "
            + " | ".join(f"{m} {row[m]:.3f}" for m in COLUMNS[1:] if m in row)
            + f" | chose {row['method']}",
            flush=True,
        )
    text = table(rows, f"Classical answers, {args.dataset}, {len(rows)} cases (no network).")
    print(text)
    write_results(text, rows, args.out, args.csv)
    return text


if __name__ == "__main__":
    main()
