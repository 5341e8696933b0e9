"""The anytime floor's rule, replayed on saved predictions: many rules, one training each.

The floor (``napari_medseg/training/floor.py``) only *combines* what the networks and the
walker predict; it never changes the training. So a step table (``bench_anytime.py``) can be
recorded once — every member's probabilities, the walker's, the member weights and the
held-out-stroke scores at each budget — and any combination rule scored on it in seconds,
deterministically, on exactly the same networks:

    python benchmarks/bench_floor_replay.py dump --dataset acdc --limit 6 \
        --out bench_output/floor/acdc
    python benchmarks/bench_floor_replay.py replay bench_output/floor/acdc \
        bench_output/floor/kvasir_seg

``dump`` trains as ``bench_anytime.py`` does (default trio, lite, one thread, seed 0: it may
share the machine) and records, at each of ``--steps``, what ``Workflow.predict`` combined;
``replay`` scores the share the recording tree gave ("recorded") beside the share this tree's
:func:`~napari_medseg.training.floor.earn_share` gives ("this tree"), the walker and the
networks alone — both shares mixed as this tree mixes (:func:`~napari_medseg.inference.
floor_mix`, or every pixel alike with ``--linear-mix``, as before the twelfth round);
``disagreement`` scores the disagreement map against the answer's errors.
Dumps are large (float16 probabilities): keep them out of git.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_anytime as anytime  # noqa: E402

from napari_medseg.inference import floor_mix  # noqa: E402
from napari_medseg.shape_prior import ShapePrior, apply_shape_prior  # noqa: E402
from napari_medseg.training.floor import FloorReport, earn_share  # noqa: E402


def dump(args) -> None:
    import torch

    import napari_medseg.training.trainer as trainer_module
    from napari_medseg.resolution import resize_seeds
    from napari_medseg.shape_prior import parse_shape_prior
    from napari_medseg.workflow import Task, Workflow

    torch.set_num_threads(args.threads)
    target: dict = {"path": None, "report": None}
    combine, assess = trainer_module.combine_predictions, trainer_module.assess

    def recording_assess(*a, **k):
        target["report"] = assess(*a, **k)
        return target["report"]

    def recording_combine(probs, *a, **k):
        walker, weights = k.get("walker"), a[1] if len(a) > 1 else k.get("weights")
        if target["path"] is not None and walker is not None and weights is not None:
            report = target["report"]
            prior = a[2] if len(a) > 2 else k.get("prior")
            seeds = a[3] if len(a) > 3 else k.get("seeds")
            rules = {}
            if prior is not None and seeds is not None and prior.active:
                # the rules act on the mixed label map: replay re-applies them after mixing
                rules = dict(
                    prior=np.array([json.dumps(prior.to_dict())]), seeds=np.asarray(seeds, np.int8)
                )
            np.savez_compressed(
                target["path"],
                **rules,
                walker=walker.astype(np.float16),
                share=k.get("network_share"),
                weights=np.array([weights[key] for key in probs]),
                heldout=np.array([json.dumps(getattr(report, "heldout", None) or {})]),
                **{f"m_{key}": p.astype(np.float16) for key, p in probs.items()},
            )
            target["path"] = None
        return combine(probs, *a, **k)

    trainer_module.assess = recording_assess
    trainer_module.combine_predictions = recording_combine
    cases = anytime.select_cases(args.dataset, args.limit, args.skip, args.seed)
    if cases is None:
        sys.exit(f"no {args.dataset} under ../shared/data (or $MEDSEG_DATA_DIR): nothing to dump")
    out = Path(args.out)
    steps = sorted(int(s) for s in args.steps.split(",") if s)
    for case in cases:
        folder = out / case.name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        values = [int(v) for v in np.unique(case.scribbles) if v != case.unlabelled]
        np.savez_compressed(
            folder / "truth.npz",
            truth=case.truth,
            fg=np.array(case.foreground),
            values=np.array(values),
        )
        wf = Workflow(Task(unlabelled=case.unlabelled))
        prior = parse_shape_prior(args.shape_prior, values)
        cfg = anytime.TrainConfig(
            device="cpu",
            preview_every_seconds=None,
            seed=args.seed,
            iterations=max(steps),
            ring_holdout=args.ring,
            shape_prior=prior.to_dict() if prior.active else None,
            **settings(args.set),
        )
        wf.prepare([(case.image, case.scribbles)], cfg)
        for upd in wf.train():
            if upd.iteration in steps:
                target["path"] = str(folder / f"s{upd.iteration}.npz")
                seg = wf.predict(case.image)
                ring = wf.trainer.ring
                if ring is not None and not (folder / "ring.npz").is_file():
                    # the held-out ring at the image's size (class indices, -1 elsewhere)
                    native = resize_seeds(ring, case.truth.shape[-2:], len(values))
                    np.savez_compressed(folder / "ring.npz", ring=native.astype(np.int8))
                d = anytime.dice(seg.ensemble, case.truth, case.foreground)
                print(f"{case.name} {upd.iteration} steps: ensemble {d:.3f}", flush=True)
            if upd.done or upd.iteration >= max(steps):
                break


def settings(pairs: list[str]) -> dict:
    """``--set key=value`` pairs as TrainConfig keyword arguments (values read as JSON, so
    ``pseudo_weight=0`` is a number; anything else stays a string)."""
    from dataclasses import fields

    known = {f.name for f in fields(anytime.TrainConfig)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"--set {pair!r}: write it as key=value, e.g. pseudo_weight=0")
        if key not in known:
            sys.exit(f"--set {pair!r}: TrainConfig has no setting {key!r} — one of {sorted(known)}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def emit(lines: list[str], out: str | None) -> None:
    """Print a markdown report and, with ``out``, write it there too."""
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def load(folder: Path):
    """Per case and budget: its folder, the step, truth, values, foreground, walker, weighted
    networks, the recorded share, held-out scores, the prior's rules, and the members'
    probabilities with their weights ({key: (probabilities, weight)})."""
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        t = np.load(case / "truth.npz")
        truth = t["truth"][None] if t["truth"].ndim == 2 else t["truth"]
        for f in sorted(case.glob("s*.npz"), key=lambda f: int(f.stem[1:])):
            d = np.load(f, allow_pickle=True)
            probs = {k: d[k].astype(np.float32) for k in d.files if k.startswith("m_")}
            members = {k: (p, float(w)) for (k, p), w in zip(probs.items(), d["weights"])}
            nets = sum(w * p for p, w in members.values())
            heldout = json.loads(str(d["heldout"][0])) if "heldout" in d.files else {}
            rules = None
            if "prior" in d.files:
                rules = (ShapePrior.from_dict(json.loads(str(d["prior"][0]))), d["seeds"])
            yield (
                case,
                int(f.stem[1:]),
                truth,
                t["values"],
                tuple(t["fg"]),
                d["walker"].astype(np.float32),
                nets,
                float(d["share"]),
                heldout,
                rules,
                members,
            )


def member_labels(members: dict) -> list[np.ndarray]:
    """Each member's argmax map, as ``inference.floor_mix`` takes them."""
    return [p.argmax(axis=1) for p, _ in members.values()]


def mixed_dice(share, walker, nets, values, truth, fg, rules, labels=None) -> float:
    """Dice of the floor's mix at ``share`` (0: the walker, 1: the networks), with the prior's
    ``rules`` (or None) applied after mixing, as ``Workflow.predict`` applies them.
    ``labels``: the members' argmax maps, for the product's per-pixel mix
    (:func:`~napari_medseg.inference.floor_mix`: the share doubled where they are sure and
    unanimous); None mixes every pixel at ``share`` (the rule before the twelfth round)."""
    idx = floor_mix(walker, nets, share, labels).argmax(axis=1).astype(np.uint8)
    if rules is not None:
        idx = apply_shape_prior(idx, rules[1], rules[0])
    return anytime.dice(values[idx], truth, fg)


def pair(text: str | None, name: str) -> tuple[float, float] | None:
    """``"0.82,0.98"`` as (0.82, 0.98); None stays None (the tree's constant)."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        sys.exit(f"--{name} {text!r}: give two numbers, low and high, e.g. --{name} 0.82,0.98")
    if not lo < hi:
        sys.exit(f"--{name} {text!r}: the first number must be below the second")
    return lo, hi


def replay(args) -> None:
    from napari_medseg.training.floor import AGREEMENT_RAMP, AREA_RATIO

    ramp = pair(args.ramp, "ramp") or AGREEMENT_RAMP
    area = pair(args.area, "area") or AREA_RATIO
    lines = [
        f'Rule replayed as "this tree": agreement ramp {ramp[0]:g} → {ramp[1]:g}, area '
        f"bounds {area[0]:g} → {area[1]:g}, "
        + (
            "every pixel mixed at the share (--linear-mix)."
            if args.linear_mix
            else "the share doubled where the networks are sure and unanimous."
        ),
        "",
    ]
    below: list[str] = []
    for folder in map(Path, args.dumps):
        rows: dict[int, dict[str, list[float]]] = {}
        for (
            case_dir,
            step,
            truth,
            values,
            fg,
            walker,
            nets,
            recorded,
            heldout,
            rules,
            members,
        ) in load(folder):
            report = earn_share(
                FloorReport(heldout=heldout), nets.argmax(axis=1), walker, ramp=ramp, area=area
            )
            labels = None if args.linear_mix else member_labels(members)
            case = (walker, nets, values, truth, fg, rules, labels)
            walker_dice = mixed_dice(0.0, *case)
            tree_dice = mixed_dice(report.network_share, *case)
            gain = tree_dice - walker_dice
            if gain < -1e-9:
                agreement, ratio = report.agreement["networks"], report.area_ratio
                below.append(
                    f"| {folder.name} | {case_dir.name} | {step} | {gain:+.4f} | "
                    f"{report.network_share:.2f} | "
                    f"{'–' if agreement is None else f'{agreement:.3f}'} | "
                    f"{'–' if ratio is None else f'{ratio:.2f}'} |"
                )
            r = rows.setdefault(step, {})
            for key, value in (
                ("walker", walker_dice),
                ("networks", mixed_dice(1.0, *case)),
                ("recorded", mixed_dice(recorded, *case)),
                ("this tree", tree_dice),
                ("share recorded", recorded),
                ("share this tree", report.network_share),
            ):
                r.setdefault(key, []).append(value)
        cases = len(next(iter(rows.values()))["walker"]) if rows else 0
        lines += [
            f"**{folder.name}** ({cases} cases; Dice, and ensemble − walker: mean / worst / "
            "cases below)",
            "",
            "| steps | walker | networks alone | recorded rule | this tree's rule | share "
            "recorded / this tree |",
            "|---|---|---|---|---|---|",
        ]
        for step in sorted(rows):
            r = {k: np.array(v) for k, v in rows[step].items()}

            def cell(k: str, r=r) -> str:
                d = r[k] - r["walker"]
                return (
                    f"{r[k].mean():.3f} ({d.mean():+.3f} / {d.min():+.3f} / "
                    f"{int((d < -1e-9).sum())} of {len(d)})"
                )

            lines.append(
                f"| {step} | {r['walker'].mean():.3f} | {r['networks'].mean():.3f} | "
                f"{cell('recorded')} | {cell('this tree')} | "
                f"{r['share recorded'].mean():.2f} / {r['share this tree'].mean():.2f} |"
            )
        lines.append("")
    lines += [
        f"Budgets below the walker under this tree's rule: {len(below)}",
        "",
    ]
    if below:
        lines += [
            "| set | case | steps | ensemble − walker | share | agreement | area ratio |",
            "|---|---|---|---|---|---|---|",
            *below,
            "",
        ]
    emit(lines, args.out)


def ring_agreement(pred: np.ndarray, ring: np.ndarray) -> float:
    """Share of the held-out ring's pixels (class indices, -1 elsewhere) ``pred`` matches."""
    held = ring >= 0
    return float((pred[held] == ring[held]).mean()) if held.any() else float("nan")


def ring(args) -> None:
    """The ring experiment's question: does agreement on sure pixels the networks never
    trained on (``dump --ring``) tell the budgets where they beat the walker from those
    where they lose? Prints, per budget, the cases sorted by that agreement."""
    lines = []
    for folder in map(Path, args.dumps):
        by_step: dict[int, list[tuple]] = {}
        for case, step, truth, values, fg, walker, nets, share, _, rules, members in load(folder):
            if not (case / "ring.npz").is_file():
                continue
            held = np.load(case / "ring.npz")["ring"]
            held = held[None] if held.ndim == 2 else held

            labels = member_labels(members)
            parts = (walker, nets, values, truth, fg, rules, labels)
            w = mixed_dice(0.0, *parts)
            by_step.setdefault(step, []).append(
                (
                    case.name,
                    w,
                    mixed_dice(share, *parts) - w,
                    mixed_dice(1.0, *parts) - w,
                    share,
                    ring_agreement(nets.argmax(axis=1), held),
                    ring_agreement(walker.argmax(axis=1), held),
                    int((held >= 0).sum()),
                )
            )
        lines += [f"**{folder.name}**: ring experiment", ""]
        for step in sorted(by_step):
            rows = sorted(by_step[step], key=lambda r: r[5])
            gain, nets_gain, agree = (np.array([r[i] for r in rows]) for i in (2, 3, 5))
            ok = np.isfinite(agree)
            corr = np.corrcoef(agree[ok], nets_gain[ok])[0, 1] if ok.sum() > 2 else float("nan")
            lines += [
                f"{step} steps: correlation of the networks' ring agreement with their gain "
                f"over the walker {corr:+.2f}; ensemble gain {gain.mean():+.3f}, "
                f"{int((gain < -1e-9).sum())} of {len(rows)} below",
                "",
                "| case | walker | ensemble − walker | networks − walker | share | "
                "networks' ring agreement | walker's | ring pixels |",
                "|---|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {r[0]} | {r[1]:.3f} | {r[2]:+.3f} | {r[3]:+.3f} | {r[4]:.2f} | {r[5]:.3f} | "
                f"{r[6]:.3f} | {r[7]} |"
                for r in rows
            ]
            lines.append("")
    emit(lines, args.out)


def disagreement(args) -> None:
    """Does the disagreement map point at the answer's errors (where a stroke would help)?
    The map as the networks alone drew it beside the map with the walker's vote
    (``inference.walker_vote``), scored against the truth on every recorded budget: the
    share of pixels it lights, the share of the answer's errors it lights (recall), the
    share of lit pixels that are errors (precision), and the recall on the budgets where the
    floor's answer is below the walker — the cases no label-free rule catches."""
    from napari_medseg.inference import combine_predictions

    lines = []
    for folder in map(Path, args.dumps):
        rows: dict[int, dict[str, list[float]]] = {}
        for _, step, truth, values, fg, walker, nets, _, heldout, rules, members in load(folder):
            share = earn_share(FloorReport(heldout=heldout), nets.argmax(axis=1), walker)
            prior, seeds = rules if rules is not None else (None, None)
            pred = combine_predictions(
                {k: p for k, (p, _) in members.items()},
                False,
                {k: w for k, (_, w) in members.items()},
                prior,
                seeds,
                walker,
                share.network_share,
            )
            errors = values[pred.ensemble] != truth
            labels = member_labels(members)
            parts = (walker, nets, values, truth, fg, rules, labels)
            below = mixed_dice(share.network_share, *parts) < (mixed_dice(0.0, *parts) - 1e-9)
            alone = (np.stack(list(pred.per_model.values())) != pred.ensemble[None]).mean(axis=0)
            r = rows.setdefault(step, {})
            for key, lit in (("networks", alone > 0), ("with walker", pred.disagreement > 0)):
                hit = np.count_nonzero(lit & errors)
                recall = hit / max(np.count_nonzero(errors), 1)
                r.setdefault(f"{key} lit", []).append(float(lit.mean()))
                r.setdefault(f"{key} recall", []).append(recall)
                r.setdefault(f"{key} precision", []).append(hit / max(np.count_nonzero(lit), 1))
                if below:
                    r.setdefault(f"{key} recall below", []).append(recall)
            r.setdefault("errors", []).append(float(errors.mean()))

        def mean(values) -> str:
            return f"{np.mean(values):.3f}" if values else "–"

        lines += [
            f"**{folder.name}**: the disagreement map against the answer's errors (means over "
            "cases; lit / recall / precision; recall on the budgets below the walker)",
            "",
            "| steps | errors (share of pixels) | networks alone | recall below | with the "
            "walker's vote | recall below |",
            "|---|---|---|---|---|---|",
        ]
        for step in sorted(rows):
            r = rows[step]
            cells = [
                " / ".join(mean(r[f"{key} {m}"]) for m in ("lit", "recall", "precision"))
                + f" | {mean(r.get(f'{key} recall below', []))}"
                + f" ({len(r.get(f'{key} recall below', []))})"
                for key in ("networks", "with walker")
            ]
            lines.append(f"| {step} | {mean(r['errors'])} | {cells[0]} | {cells[1]} |")
        lines.append("")
    emit(lines, args.out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="train and record the predictions at every budget")
    d.add_argument("--dataset", default="acdc", choices=["acdc", "kvasir_seg", "ph2", "samples"])
    d.add_argument("--limit", type=int, default=6)
    d.add_argument("--skip", type=int, default=0, help="leave out the first N of the cases")
    d.add_argument("--steps", default="5,10,25,50,100,200")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=1)
    d.add_argument(
        "--ring",
        type=int,
        default=0,
        help="experiment: hold this many working pixels of sure teacher pixels next to the "
        "walker's unsure band out of training (TrainConfig.ring_holdout) and save them",
    )
    d.add_argument(
        "--shape-prior",
        default="none",
        help="train and predict with these anatomical rules (e.g. cardiac); replay re-applies "
        "them after mixing",
    )
    d.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="experiment: a TrainConfig setting for every case (repeatable), e.g. pseudo_weight=0",
    )
    d.add_argument("--out", required=True)
    r = sub.add_parser("replay", help="score the recorded and this tree's rule")
    r.add_argument("dumps", nargs="+", help="folders written by dump")
    r.add_argument("--out", default=None, help="markdown file")
    r.add_argument(
        "--ramp",
        default=None,
        metavar="LO,HI",
        help="replay this agreement ramp instead of the tree's AGREEMENT_RAMP (e.g. 0.78,0.98)",
    )
    r.add_argument(
        "--area",
        default=None,
        metavar="OK,WORST",
        help="replay these area bounds instead of the tree's AREA_RATIO (e.g. 4,12)",
    )
    r.add_argument(
        "--linear-mix",
        action="store_true",
        help="mix every pixel at the share (the rule before the twelfth round), instead of "
        "doubling it where the networks are sure and unanimous (inference.floor_mix)",
    )
    g = sub.add_parser("ring", help="the ring experiment: ring agreement against gain")
    g.add_argument("dumps", nargs="+", help="folders written by dump --ring")
    g.add_argument("--out", default=None, help="markdown file")
    m = sub.add_parser("disagreement", help="the disagreement map against the answer's errors")
    m.add_argument("dumps", nargs="+", help="folders written by dump")
    m.add_argument("--out", default=None, help="markdown file")
    args = p.parse_args(argv)
    {"dump": dump, "replay": replay, "ring": ring, "disagreement": disagreement}[args.command](args)


if __name__ == "__main__":
    main()
