"""A simulated user follows the disagreement map: one stroke where it points, then Resume.

The floor (``bench_anytime.py``) cannot see every error: on some frames the three networks
are unanimous, sure and wrong where no stroke is (BENCHMARKS §9, sixth round). The product's
answer is the user, shown *where* to draw by the disagreement map. This benchmark measures
that loop as the widget runs it, through :class:`~napari_medseg.workflow.Workflow`:

1. Train the default trio ``--steps`` steps on the case's strokes and predict (round 0).
2. The user looks at the map and the answer: of the regions the map lights (disagreement
   > 0) *and* the answer gets wrong (a user sees that), the largest connected one on one
   slice gets one stroke of its true class along its medial line (the skeleton of its inner
   half, 3 px wide) — a clinician's correction, never a whole mask.
3. ``Workflow.update_scribbles`` with the new stroke, ``configure(iterations=…)`` and Resume
   for ``--steps`` more steps (the widget's Resume / Train on the current model); predict.
4. Repeat for ``--rounds``.

After each stroke, **a stroke's reach**: the ``floor`` column is the product's own floor
walker, beside the plain walker on all strokes (``walker``, what a classical tool gives); they
differ with ``--stroke-local`` (training/stroke_history.py: the new walker within reach of
the new strokes, the one the slice showed before elsewhere; opt-in). Scored post hoc besides:
the plain walker and the answer beside their stroke-local composites (:func:`stroke_local`,
the whole stroke's extent) and what the stroke flipped beyond that reach, right or wrong.

Beside it, the **control**: the same training resumed for the same steps *without* the new
stroke (a second run: the trainer holds locks and cannot be copied; at one thread and a fixed
seed its round 0 is the same run, checked), and the floor walker with the strokes of each
round (what a classical tool gives with the same correction). Step budgets, one torch
thread, seeded: it may share the machine.

    python benchmarks/bench_user_loop.py --dataset kvasir_seg --limit 20 --steps 100 \\
        --out bench_output/user_loop_kvasir.md --csv bench_output/user_loop_kvasir.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_anytime as anytime  # noqa: E402

FLOOR = "walker (floor, beta 2000)"


def _stack(a) -> np.ndarray:
    a = np.asarray(a)
    return a[None] if a.ndim == 2 else a


def correction_stroke(
    ensemble: np.ndarray,
    disagreement: np.ndarray,
    truth: np.ndarray,
    scribbles: np.ndarray,
    unlabelled: int,
    max_px: int | None = None,
) -> tuple[np.ndarray, int, int]:
    """(stroke mask, its value, the region's size) — one stroke where the map points.

    Arrays in user values, (H, W) or (Z, H, W). The region: the largest 2-D connected set of
    pixels of one true class that the map lights and the answer gets wrong (a user draws on
    one slice), at least ``margin`` pixels inside that class (1 % of the longest side, ≥ 2:
    a clinician draws inside a structure, not on its edge — a stroke on the very boundary
    can send the walker across it). The stroke: the skeleton of the region's inner half,
    3 px wide, kept inside the region and off the existing strokes. ``max_px``: a short
    stroke instead — the ``max_px`` pixels of that line nearest the region's deepest point
    (a clinician's dab in the middle of a missed region). An empty mask when nothing
    is lit and wrong.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    ens, dis, tru, scr = (_stack(a) for a in (ensemble, disagreement, truth, scribbles))
    margin = max(2.0, 0.01 * max(tru.shape[-2:]))
    best = (0, None, None, None)  # size, z, value, region
    for z in range(tru.shape[0]):
        wrong = (dis[z] > 0) & (ens[z] != tru[z])
        for value in np.unique(tru[z][wrong]):
            inside = ndimage.distance_transform_edt(tru[z] == value) >= margin
            comps, n = ndimage.label(wrong & inside)
            if n == 0:
                continue
            sizes = np.bincount(comps.ravel())[1:]
            i = int(np.argmax(sizes))
            if sizes[i] > best[0]:
                best = (int(sizes[i]), z, int(value), comps == i + 1)
    stroke = np.zeros(tru.shape, bool)
    size, z, value, region = best
    if region is None:
        return stroke.reshape(np.shape(truth)), -1, 0
    depth = ndimage.distance_transform_edt(region)
    inner = depth >= max(depth.max() / 2.0, 1.0)
    line = skeletonize(inner)
    line = ndimage.binary_dilation(line, iterations=1) & region & (scr[z] == unlabelled)
    if max_px is not None and line.sum() > max_px:
        yy, xx = np.mgrid[: line.shape[0], : line.shape[1]]
        # the deepest point; along a ridge of equal depth the one nearest the region's centre
        deep = depth >= depth.max() - 0.5
        off = np.where(deep, np.hypot(yy - yy[region].mean(), xx - xx[region].mean()), np.inf)
        cy, cx = np.unravel_index(int(np.argmin(off)), off.shape)
        dist = np.where(line, np.hypot(yy - cy, xx - cx), np.inf)
        line = np.zeros(line.shape, bool)
        line.flat[np.argsort(dist, axis=None, kind="stable")[:max_px]] = True
    stroke[z] = line
    return stroke.reshape(np.shape(truth)), value, size


def stroke_reach(stroke: np.ndarray) -> float:
    """Pixels from a stroke within which it is taken to correct the answer: its own extent
    (the diagonal of its bounding box on its slice), at least 5 % of the slice's longest side.
    A user drawing along a wrong region spans it; what changes much farther away was not
    pointed at."""
    s = _stack(stroke)
    _, ys, xs = np.nonzero(s)
    floor = 0.05 * max(s.shape[-2:])
    if len(ys) == 0:
        return floor
    return float(max(np.hypot(np.ptp(ys), np.ptp(xs)), floor))


def stroke_local(
    before: np.ndarray, after: np.ndarray, stroke: np.ndarray, reach: float
) -> np.ndarray:
    """``after`` within ``reach`` of the stroke (on the stroke's slices), ``before`` elsewhere.

    A rule the product could follow, scored here post hoc: a correction changes its
    neighbourhood and leaves the rest of the answer the user saw. The random walker is
    monotone in its seeds — a stroke of class c can only grow c — and a correct stroke that
    lets c flood across a weak edge far from it is what made the walker, and the floor with
    it, fall in the seventh and eighth rounds' loops."""
    from scipy import ndimage

    b, a, s = (_stack(x) for x in (before, after, stroke))
    out = b.copy()
    for z in range(s.shape[0]):
        if not s[z].any():
            continue
        near = ndimage.distance_transform_edt(~s[z]) <= reach
        out[z][near] = a[z][near]
    return out.reshape(np.shape(after))


def _reach_row(before, after, stroke, reach, truth, foreground) -> dict:
    """Dice of the stroke-local composite and the flips the stroke caused beyond its reach
    (pixels whose new label is right / wrong against the truth)."""
    local = stroke_local(before, after, stroke, reach)
    far = (after != before) & (local == before)
    return dict(
        local=anytime.dice(local, truth, foreground),
        far_right=int(np.count_nonzero(far & (after == truth))),
        far_wrong=int(np.count_nonzero(far & (after != truth))),
    )


REACH_FIELDS = (
    "reach_px",
    "walker_local",
    "walker_far_right",
    "walker_far_wrong",
    "ensemble_local",
    "ensemble_far_right",
    "ensemble_far_wrong",
)


def _run(case, args, draw: bool) -> list[dict]:
    """Round 0, then ``--rounds`` Resumes; with ``draw`` a stroke after each round (the
    stroke arm), without none (the control). Per round: the ensemble's Dice, the floor
    walker's on that round's strokes, steps, and the stroke drawn after it (px)."""
    from napari_medseg.workflow import Task, Workflow

    scribbles = np.array(case.scribbles, copy=True)
    wf = Workflow(Task(unlabelled=case.unlabelled))
    cfg = anytime.config(args, iterations=args.steps)
    cfg.stroke_local = bool(getattr(args, "stroke_local", False)) or cfg.stroke_local
    cfg.stroke_far = getattr(args, "stroke_far", None) or cfg.stroke_far
    if getattr(args, "stroke_blend_old", None) is not None:
        cfg.stroke_blend_old = args.stroke_blend_old
    wf.prepare([(case.image, scribbles)], cfg)
    rows = []
    previous = None  # (walker, ensemble, stroke) of the round before, with its stroke
    for r in range(args.rounds + 1):
        *_, final = wf.train()
        seg = wf.predict(case.image)
        walker = anytime.walkers(_with(case, scribbles), "")[FLOOR]
        inp = wf.inputs[0]  # the product's own floor walker (stroke-local if asked)
        shown = inp.to_values(wf.trainer.shown_walker().argmax(axis=1))
        row = dict(
            case=case.name,
            arm="stroke" if draw else "control",
            round=r,
            steps=final.iteration,
            ensemble=anytime.dice(seg.ensemble, case.truth, case.foreground),
            walker=anytime.dice(walker, case.truth, case.foreground),
            floor=anytime.dice(shown, case.truth, case.foreground),
            share=getattr(seg.report, "network_share", None),
            stroke_px=0,
            region_px=0,
            **dict.fromkeys(REACH_FIELDS),
        )
        if previous is not None and previous[2].any():
            w0, e0, stroke = previous
            reach = stroke_reach(stroke)
            row["reach_px"] = round(reach, 1)
            for name, before, after in (("walker", w0, walker), ("ensemble", e0, seg.ensemble)):
                got = _reach_row(before, after, stroke, reach, case.truth, case.foreground)
                row.update({f"{name}_{k}": v for k, v in got.items()})
        rows.append(row)
        if r == args.rounds:
            break
        if draw:
            stroke, value, region = correction_stroke(
                seg.ensemble,
                seg.disagreement,
                case.truth,
                scribbles,
                case.unlabelled,
                getattr(args, "stroke_px", None),
            )
            if stroke.any():
                scribbles = scribbles.copy()
                scribbles[stroke] = value
                wf.update_scribbles(scribbles)
            rows[-1].update(stroke_px=int(stroke.sum()), region_px=region)
            previous = (walker, seg.ensemble, stroke)
        wf.configure(iterations=args.steps)  # a Resume runs this many more steps
    return rows


def _with(case, scribbles):
    return anytime.Case(
        case.name, case.image, scribbles, case.truth, case.unlabelled, case.foreground
    )


def run_case(case, args) -> list[dict]:
    rows = _run(case, args, draw=True)
    if getattr(args, "no_control", False):
        return rows
    control = _run(case, args, draw=False)
    if abs(control[0]["ensemble"] - rows[0]["ensemble"]) > 1e-9:
        print(f"warning: {case.name}: the control's round 0 differs", file=sys.stderr)
    return rows + control


def table(rows: list[dict], rounds: int) -> str:
    by = {}
    for r in rows:
        by.setdefault((r["arm"], r["round"]), []).append(r)
    lines = [
        "| round | steps | ensemble, stroke (mean / below its walker) | walker with the strokes "
        "| the product's floor walker | ensemble − walker: mean / worst "
        "| control: ensemble (no stroke) / below | stroke px (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in range(rounds + 1):
        s, c = by.get(("stroke", k), []), by.get(("control", k), [])
        if not s:
            continue
        gain = [r["ensemble"] - r["walker"] for r in s]
        below = sum(g < 0 for g in gain)
        cbelow = sum(r["ensemble"] < r["walker"] for r in c)
        control = f"{np.mean([r['ensemble'] for r in c]):.3f} / {cbelow} of {len(c)}" if c else "–"
        lines.append(
            f"| {k} | {np.mean([r['steps'] for r in s]):.0f} "
            f"| {np.mean([r['ensemble'] for r in s]):.3f} / {below} of {len(s)} "
            f"| {np.mean([r['walker'] for r in s]):.3f} "
            f"| {np.mean([r.get('floor', np.nan) for r in s]):.3f} "
            f"| {np.mean(gain):+.3f} / {min(gain):+.3f} "
            f"| {control} "
            f"| {np.mean([r['stroke_px'] for r in s]):.0f} |"
        )
    return "\n".join(lines)


def reach_table(rows: list[dict]) -> str:
    """After each stroke: the plain answer and walker beside their stroke-local composites
    (:func:`stroke_local`), how many answers fell below the answer before the stroke, and
    what the stroke flipped beyond its reach (mean pixels per case, right / wrong)."""
    before = {(r["case"], r["round"]): r for r in rows if r["arm"] == "stroke"}
    lines = [
        "| round | walker / stroke-local | answer / stroke-local | answer below the answer "
        "before the stroke: plain / stroke-local | beyond the reach, walker flips right / "
        "wrong (px) | beyond the reach, answer flips right / wrong (px) |",
        "|---|---|---|---|---|---|",
    ]
    rounds = sorted({r["round"] for r in rows if r.get("reach_px") is not None})
    for k in rounds:
        s = [r for r in rows if r["arm"] == "stroke" and r["round"] == k and r["reach_px"]]
        prev = [before[(r["case"], k - 1)]["ensemble"] for r in s]
        fell = sum(r["ensemble"] < p for r, p in zip(s, prev, strict=True))
        fell_local = sum(r["ensemble_local"] < p for r, p in zip(s, prev, strict=True))

        def mean(key, s=s):
            return np.mean([r[key] for r in s])

        lines.append(
            f"| {k} | {mean('walker'):.3f} / {mean('walker_local'):.3f} "
            f"| {mean('ensemble'):.3f} / {mean('ensemble_local'):.3f} "
            f"| {fell} / {fell_local} of {len(s)} "
            f"| {mean('walker_far_right'):.0f} / {mean('walker_far_wrong'):.0f} "
            f"| {mean('ensemble_far_right'):.0f} / {mean('ensemble_far_wrong'):.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--dataset", default="kvasir_seg", choices=["acdc", "kvasir_seg", "ph2", "samples"]
    )
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--skip", type=int, default=0, help="leave out the first N of the cases")
    p.add_argument("--steps", type=int, default=100, help="training steps per round")
    p.add_argument("--rounds", type=int, default=1, help="corrections (Resumes) after round 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="markdown file")
    p.add_argument("--csv", default=None)
    p.add_argument(
        "--no-control",
        action="store_true",
        help="leave out the control run without the stroke (half the time)",
    )
    p.add_argument(
        "--stroke-px",
        type=int,
        default=None,
        help="a short correction: at most this many pixels of the stroke, mid-region",
    )
    p.add_argument(
        "--stroke-local",
        action="store_true",
        help="the floor's and teacher's walker stroke-local (TrainConfig.stroke_local; opt-in)",
    )
    p.add_argument(
        "--stroke-far",
        choices=["blend", "keep"],
        default=None,
        help="with --stroke-local: what the floor shows beyond a new stroke's reach",
    )
    p.add_argument(
        "--stroke-blend-old",
        type=float,
        default=None,
        help="with --stroke-far blend: the previous walker's weight beyond the reach",
    )
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    cases = anytime.select_cases(args.dataset, args.limit, args.skip, args.seed)
    if cases is None:
        sys.exit(f"no {args.dataset} under ../shared/data (or $MEDSEG_DATA_DIR): nothing to do")
    rows = []
    for case in cases:
        case_rows = run_case(case, args)
        for r in case_rows:
            local = (
                f" (stroke-local: ensemble {r['ensemble_local']:.3f} walker "
                f"{r['walker_local']:.3f})"
                if r["reach_px"]
                else ""
            )
            print(
                f"{r['case']} {r['arm']} round {r['round']} ({r['steps']} steps): ensemble "
                f"{r['ensemble']:.3f} walker {r['walker']:.3f} floor {r['floor']:.3f} "
                f"stroke {r['stroke_px']} px" + local,
                flush=True,
            )
        rows += case_rows
    arms = 1 if args.no_control else 2
    text = f"{args.dataset}, {len(rows) // (arms * (args.rounds + 1))} cases\n\n" + table(
        rows, args.rounds
    )
    text += "\n\nA stroke's reach (post hoc):\n\n" + reach_table(rows)
    print(text)
    anytime.write_results(text, rows, args.out, args.csv, fields=list(rows[0]))


if __name__ == "__main__":
    main()
