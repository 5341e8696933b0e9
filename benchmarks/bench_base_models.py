"""Base models trained across images (issue 12): zero-shot, fine-tuned, the walker beside.

Four runs, one at a time (they share the CPU), every one through the product's own path —
``open_collection`` → ``Workflow.prepare_dataset`` / ``train_dataset`` (what ``napari-medseg
train --data`` runs), ``Workflow.evaluate`` / ``predict`` for zero-shot scores and
``Workflow.train`` on one image's strokes for fine-tuning (what ``train --checkpoint`` runs):

* ``learning-curve`` — ACDC fold1, a clinician's session: the training patients' real
  scribbles added one patient (both frames) at a time in patient order (021, 022, ...), the
  trio fine-tuned for ``--seconds`` (default 120) or ``--steps`` after each; the snapshots
  after k = ``--patients`` (1,2,4,8,16) patients scored zero-shot on the fold's 40 test
  volumes. Writes the learning-curve PNG (``--png``).
* ``acdc-base`` — ACDC fold1: a base on all 80 training patients, zero-shot on the 40 test
  volumes, then fine-tuned on each test volume's own scribbles (``--ft-seconds``, 30); beside
  it the random walker (β 2000, the floor's) with the cardiac rules and the trio from scratch
  (``--scratch-seconds``, 60), and the published references.
* ``kvasir-base`` — Kvasir-SEG: a base on the 800 ``split.json`` training frames with
  simulated strokes; zero-shot on the 200 test frames; fine-tuned on the strokes of 20 test
  frames (``--ft-seconds``, 20); the walker beside.
* ``ph2-base`` — PH2: a base on 30 of the 40 images (a seeded draw), zero-shot and fine-tuned
  on the other 10; the walker beside.

Scores: per-class Dice and HD95 (voxels/pixels: the files carry no spacing) of every file,
3-D for ACDC volumes (``workflow.score_segmentation``, the metrics ``train --dataset`` writes).

Reproducible and resumable: ``--steps N`` budgets (deterministic with ``--threads 1``,
whatever else the machine runs) or ``--seconds S``; everything goes to ``--work DIR/<run>``:
the base (``base/model.pt``, resumed when a run was cut short, reused when finished), one
JSON line per scored file (``results.jsonl``: an interrupted run scores only what is
missing) and ``settings.json`` (a second run with other settings in the same folder is refused).
``--quick``: 2 training patients/frames, 2 test ones, 5 steps everywhere (~1-2 min a run).

    python benchmarks/bench_base_models.py learning-curve --threads 1 --steps 200
    python benchmarks/bench_base_models.py acdc-base --threads 1 --seconds 2700
    python benchmarks/bench_base_models.py kvasir-base --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_medseg.checkpoints import load_checkpoint  # noqa: E402
from napari_medseg.cli.parser import _models_arg  # noqa: E402
from napari_medseg.data.classes import ClassMap  # noqa: E402
from napari_medseg.data.collection import Collection, open_collection  # noqa: E402
from napari_medseg.data.datasets import find_data_dir  # noqa: E402
from napari_medseg.data.normalization import normalize_image  # noqa: E402
from napari_medseg.inference import member_agreement  # noqa: E402
from napari_medseg.presets import dataset_recipe, single_slice_recipe  # noqa: E402
from napari_medseg.shape_prior import apply_shape_prior, parse_shape_prior  # noqa: E402
from napari_medseg.training import TrainConfig  # noqa: E402
from napari_medseg.training.floor import floor_walker  # noqa: E402
from napari_medseg.workflow import Segmentation, Task, Workflow, score_segmentation  # noqa: E402

RUNS = ("learning-curve", "acdc-base", "kvasir-base", "ph2-base")
WALKER_BETA = 2000.0  # the floor's walker, the trio's teacher

# per run: base budget (s), fine-tuning (s), data folder, validation fraction. A base meant
# for fine-tuning holds files out by default: its card then records base vs walker Dice,
# which is what lets the floor trust it (and lets it teach) on a new image; the learning
# curve's snapshots are only scored zero-shot, so every patient trains.
DEFAULTS = {
    "learning-curve": dict(seconds=120.0, ft_seconds=None, data="acdc", val=0.0),
    "acdc-base": dict(seconds=2700.0, ft_seconds=30.0, data="acdc", val=0.1),
    "kvasir-base": dict(seconds=1800.0, ft_seconds=20.0, data="kvasir_seg", val=0.1),
    "ph2-base": dict(seconds=600.0, ft_seconds=20.0, data="ph2", val=0.1),
}
TARGETS = {
    "acdc-base": {"zero-shot": 0.87, "fine-tuned": 0.90},
    "kvasir-base": {"zero-shot": 0.75, "fine-tuned": 0.85},
}
# ACDC, published (WSL4MIS 5-fold cross-validation, UNet, 3-D Dice; Weak-Mamba-UNet on GPU)
REFERENCES = (
    ("WSL4MIS UNet, random-walker pseudo labels", 0.788),
    ("WSL4MIS DMPLS", 0.872),
    ("WSL4MIS UNet, full supervision", 0.898),
    ("Weak-Mamba-UNet, GPU, full schedule", 0.9171),
)


# ---------------------------------------------------------------------------- bookkeeping
class Results:
    """``results.jsonl``: one record per (method, snapshot, file), appended as it is scored."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict] = []
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    try:
                        self.records.append(json.loads(line))
                    except ValueError:  # a line cut by a kill: scored again
                        continue
        self._done = {self._key(r) for r in self.records}

    @staticmethod
    def _key(r: dict) -> tuple:
        return (r["method"], r.get("k"), r["case"])

    def has(self, method: str, case: str, k: int | None = None) -> bool:
        return (method, k, case) in self._done

    def add(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self._done.add(self._key(record))

    def select(self, method: str, k: int | None = None) -> list[dict]:
        return [r for r in self.records if r["method"] == method and r.get("k") == k]


def compact(rows: list[dict]) -> dict:
    """{model: {class value: {dice, hd95}}} of score_segmentation's rows."""
    out: dict = {}
    for r in rows:
        out.setdefault(r["model"], {})[str(r["class"])] = {
            "dice": float(r["dice"]),
            "hd95": float(r["hd95"]),
        }
    return out


def summary(records: list[dict], model: str = "ensemble") -> dict | None:
    """Per-class mean Dice/HD95 over the files, the mean over classes, and the file count."""
    per = [r["scores"][model] for r in records if model in r["scores"]]
    if not per:
        return None
    classes = sorted(per[0], key=int)
    dice = {c: float(np.mean([p[c]["dice"] for p in per])) for c in classes}
    hd = {c: float(np.mean([p[c]["hd95"] for p in per])) for c in classes}
    steps = [r["steps"] for r in records if r.get("steps") is not None]
    secs = [r["seconds"] for r in records if r.get("seconds") is not None]
    return {
        "dice": dice,
        "hd95": hd,
        "mean_dice": float(np.mean(list(dice.values()))),
        "mean_hd95": float(np.mean(list(hd.values()))),
        "n": len(per),
        "steps": float(np.mean(steps)) if steps else None,
        "seconds": float(np.mean(secs)) if secs else None,
    }


def check_settings(folder: Path, settings: dict) -> None:
    """The work folder's results belong to one set of settings: others are refused."""
    path = folder / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            sys.exit(
                f"{folder} holds results of other settings {diff} (old, new) — give another "
                "--work folder, or remove that one to start over"
            )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1))


def budget(steps: int | None, seconds: float | None) -> dict:
    return (
        {"iterations": steps, "seconds": None}
        if steps
        else {"iterations": None, "seconds": seconds}
    )


def budget_text(b: dict) -> str:
    return f"{b['iterations']} steps" if b["iterations"] else f"{b['seconds']:g} s"


# ---------------------------------------------------------------------------- data
def link_view(src: Path, stems: list[str], dst: Path) -> Path:
    """A folder ``dst`` of links to ``src``'s images/ and masks/ of ``stems`` only (a
    train or test part that ``open_collection`` reads like any dataset folder)."""
    if dst.exists():
        shutil.rmtree(dst)  # links only: rebuilt every run from the stems
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True)
        files = {p.stem: p for p in (src / sub).iterdir() if not p.name.startswith(".")}
        for s in stems:
            (dst / sub / files[s].name).symlink_to(files[s].resolve())
    return dst


def first_groups(collection: Collection, n: int) -> Collection:
    """The collection's first ``n`` groups (patients, or frames) in name order."""
    groups = sorted({it.group for it in collection.items})[:n]
    return collection.restricted(lambda it: it.group in set(groups), f"its first {n} groups")


def acdc_parts(data: Path, seed: int, quick: bool, test_limit: int | None):
    everything = open_collection(data / "acdc", seed=seed)
    train, test = everything.acdc_fold(1), everything.acdc_fold(1, test=True)
    if quick:
        train = first_groups(train, 2)
    if test_limit:
        test = test.restricted(lambda it: it in set(test.items[:test_limit]), "the test limit")
    return train, test


def dense_view(view: Path) -> Path:
    """``view``'s masks written beside it as fully drawn scribbles (an upper bound: every
    pixel a stroke, the lossy masks thresholded as the collection reads them)."""
    from skimage.io import imsave

    from napari_medseg.data.collection import read_mask

    (view / "scribbles").mkdir(exist_ok=True)
    for mask in sorted((view / "masks").iterdir()):
        imsave(view / "scribbles" / f"{mask.stem}.png", read_mask(mask), check_contrast=False)
    return view


def image_parts(
    run: str, data: Path, work: Path, seed: int, quick: bool, test_limit, dense: bool = False
):
    """(train, test) collections of Kvasir-SEG (split.json) or PH2 (30/10, seeded draw).

    ``dense``: the training part's strokes are its whole masks (an experiment: what full
    supervision gives at the same budget); the test part keeps its simulated strokes."""
    name = DEFAULTS[run]["data"]
    src = data / name
    if run == "kvasir-base":
        split = json.loads((src / "split.json").read_text())
        train_stems, test_stems = list(split["train"]), list(split["test"])
    else:
        stems = sorted(p.stem for p in (src / "images").iterdir() if not p.name.startswith("."))
        order = np.random.default_rng(seed).permutation(len(stems))
        train_stems = sorted(stems[i] for i in order[:30])
        test_stems = sorted(stems[i] for i in order[30:])
    if quick:
        train_stems, test_stems = train_stems[:2], test_stems[:2]
    if test_limit:
        test_stems = test_stems[:test_limit]
    views = work / "views"
    train_view = link_view(src, train_stems, views / "train" / name)
    if dense:  # the masks' values are 0 and 255: 1 is free to mean "unlabelled"
        train = open_collection(dense_view(train_view), unlabelled=1, seed=seed)
    else:
        train = open_collection(train_view, simulate_scribbles=True, seed=seed)
    test = open_collection(
        link_view(src, test_stems, views / "test" / name), simulate_scribbles=True, seed=seed
    )
    return train, test


# ---------------------------------------------------------------------------- training
def train_base(
    collection: Collection,
    out: Path,
    b: dict,
    args,
    base_path: Path | None = None,
) -> dict:
    """The trio on ``collection`` into ``out/model.pt`` (``train --data`` in-process).

    Finished before (``out/done.json``): reused. Cut short (a ``model.pt`` without it):
    resumed where its last checkpoint left it. ``base_path``: a trio to fine-tune instead
    of starting from scratch (``train --checkpoint``)."""
    done = out / "done.json"
    if done.is_file() and (out / "model.pt").is_file():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    if (out / "model.pt").is_file():  # an interrupted run: --resume
        saved = load_checkpoint(out / "model.pt")
        workflow = Workflow(base=saved)
        cfg = TrainConfig.from_dict(saved.config)
        resume = True
        print(f"resuming {out / 'model.pt'} at step {saved.iteration}", flush=True)
    else:
        base = load_checkpoint(base_path) if base_path is not None else None
        workflow = Workflow(base=base)
        cfg = TrainConfig.from_dict(workflow.base_settings())
        cfg.preset = cfg.preset or args.preset
        cfg.device, cfg.seed, cfg.preview_every_seconds = args.device, args.seed, None
        cfg.iterations, cfg.seconds = b["iterations"], b["seconds"]
        if args.models:  # an experiment: other members than the trio
            cfg.models = _models_arg(args.models)  # as train --models parses it
        if args.max_side is not None:  # the base's working resolution (lite: 128 px)
            cfg.max_side = args.max_side
        if args.base_rw_weight is not None:  # an experiment: the walker's weight as teacher
            cfg.rw_weight = args.base_rw_weight
            if args.base_rw_weight == 0:
                cfg.rw_dice_weight = 0.0
        if args.net_preset:  # an experiment: --preset's dataset recipe, other networks' widths
            cfg.resolve(cfg.preset, dataset_recipe(cfg.preset))
            cfg.preset = args.net_preset  # every recipe field is set: only the networks change
        resume = False
    t0 = time.perf_counter()
    workflow.prepare_dataset(
        collection, cfg, val_fraction=args.val_fraction, split_seed=args.seed, resume=resume
    )
    final = None
    for upd in workflow.train_dataset(
        save_to=out / "model.pt", save_every=args.save_every, validate_every=0, started=t0
    ):
        final = upd
    steps, seconds = workflow.run_done
    if final is not None and final.stopped:
        sys.exit(f"training stopped at step {steps}: run the same command again to resume")
    info = {
        "images": workflow.trained_on.get("images"),
        "steps": int(steps),
        "seconds": float(seconds),
        "wall_s": time.perf_counter() - t0,
    }
    done.write_text(json.dumps(info))
    return info


def per_image_config(workflow: Workflow, b: dict, args, prior: dict | None) -> TrainConfig:
    cfg = TrainConfig.from_dict(workflow.base_settings())
    cfg.preset = cfg.preset or args.preset
    cfg.device, cfg.seed, cfg.preview_every_seconds = args.device, args.seed, None
    cfg.iterations, cfg.seconds = b["iterations"], b["seconds"]
    cfg.shape_prior = prior
    if args.net_preset:  # the experiment's base: fine-tune with --preset's per-image recipe
        single = args.run in ("kvasir-base", "ph2-base")  # single 2-D images, not stacks
        cfg.resolve(args.preset, single_slice_recipe(args.preset) if single else None)
        cfg.preset = args.net_preset
    return cfg


# ---------------------------------------------------------------------------- scoring
def walker_labels(image, scribbles, classes: ClassMap, kind: str, prior_spec: str):
    """The floor's walker (β 2000) on the strokes, the prior's rules applied, in user values."""
    norm = normalize_image(image, kind)
    scr = np.asarray(scribbles)
    seeds = classes.to_indices(scr if norm.kind == "stack" else scr[None])
    probs = floor_walker(norm.data, seeds, classes.num_classes, WALKER_BETA)
    idx = probs.argmax(axis=1).astype(np.uint8)
    idx = apply_shape_prior(idx, seeds, parse_shape_prior(prior_spec, classes.values))
    lab = classes.to_values(idx)
    return lab if norm.kind == "stack" else lab[0]


def score_zero_shot(ckpt: Path, test: Collection, results: Results, args, k=None) -> None:
    todo = [it for it in test.items if not results.has("zero-shot", it.name, k)]
    if not todo:
        return
    workflow = Workflow.load(ckpt)
    for i, (it, seg, rows) in enumerate(workflow.evaluate(test, todo, device=args.device)):
        # what review.csv ranks a predicted folder by
        agreement = member_agreement(seg.labels, seg.ensemble)
        results.add(
            {
                "method": "zero-shot",
                "k": k,
                "case": it.name,
                "scores": compact(rows),
                "agreement": agreement,
            }
        )
        d = np.mean([r["dice"] for r in rows if r["model"] == "ensemble"])
        print(
            f"  zero-shot{'' if k is None else f' k={k}'} [{i + 1}/{len(todo)}] {it.name}: {d:.3f}",
            flush=True,
        )


def review_lines(records: list[dict]) -> list[str]:
    """Does ``review.csv``'s order (the networks' agreement with the answer, lowest first)
    put the worst zero-shot answers first? (bench_anytime.review_rank_lines over the files,
    Dice = the ensemble's mean over classes.)"""
    from bench_anytime import review_rank_lines

    rows = [
        {
            "agreement": r.get("agreement"),
            "dice": float(np.mean([c["dice"] for c in r["scores"]["ensemble"].values()])),
        }
        for r in records
        if "ensemble" in r["scores"]
    ]
    return review_rank_lines(rows, "zero-shot, ranked as review.csv ranks a folder")


def score_with_strokes(
    test: Collection,
    items,
    results: Results,
    args,
    *,
    ckpt: Path | None,
    ft: dict,
    scratch: dict | None,
    prior_spec: str,
) -> None:
    """Per file with its strokes: the walker, the base fine-tuned, the trio from scratch."""
    classes = ClassMap(test.class_values, test.unlabelled)
    base = load_checkpoint(ckpt) if ckpt is not None else None
    for i, it in enumerate(items):
        methods = ["walker"] + (["fine-tuned"] if base is not None else [])
        methods += ["scratch"] if scratch else []
        if all(results.has(m, it.name) for m in methods):
            continue
        sample = test.read(it)
        task = Task(unlabelled=test.unlabelled, kind=test.kind)
        shown = []
        if not results.has("walker", it.name):
            t0 = time.perf_counter()
            lab = walker_labels(sample.image, sample.scribbles, classes, test.kind, prior_spec)
            seg = Segmentation(
                labels={}, ensemble=lab, disagreement=np.zeros(lab.shape, np.float32)
            )
            rows = score_segmentation(
                seg, sample.truth, Task(classes.values, (), test.unlabelled), case=it.name
            )
            results.add(
                {
                    "method": "walker",
                    "case": it.name,
                    "scores": compact(rows),
                    "seconds": time.perf_counter() - t0,
                }
            )
        for method, start, b in (("fine-tuned", base, ft), ("scratch", None, scratch)):
            if method not in methods or results.has(method, it.name):
                continue
            workflow = Workflow(task, base=start)
            values = start.classes.values if start is not None else test.class_values
            prior = parse_shape_prior(prior_spec, values)
            cfg = per_image_config(workflow, b, args, prior.to_dict() if prior.active else None)
            t0 = time.perf_counter()
            final = None
            for upd in workflow.train([(sample.image, sample.scribbles)], cfg, started=t0):
                final = upd
            seg = final.segmentation or workflow.predict(sample.image, image_name=it.name)
            rows = score_segmentation(seg, sample.truth, workflow.task, case=it.name)
            results.add(
                {
                    "method": method,
                    "case": it.name,
                    "scores": compact(rows),
                    "steps": int(final.run_step),
                    "seconds": time.perf_counter() - t0,
                }
            )
        for m in methods:
            rec = next(r for r in results.select(m) if r["case"] == it.name)
            shown.append(
                f"{m} {np.mean([v['dice'] for v in rec['scores']['ensemble'].values()]):.3f}"
            )
        print(f"  [{i + 1}/{len(items)}] {it.name}: " + " | ".join(shown), flush=True)


# ---------------------------------------------------------------------------- reports
def class_header(names: dict) -> tuple[str, str]:
    cols = " | ".join(f"{n} Dice" for n in names.values())
    return cols, "|".join(["---"] * len(names))


def row_cells(s: dict, names: dict) -> str:
    return " | ".join(f"{s['dice'][str(c)]:.3f}" for c in names)


def method_table(results: Results, names: dict, labels: dict, extra: Iterable[tuple] = ()):
    cols, rule = class_header(names)
    lines = [
        f"| method | {cols} | mean Dice | mean HD95 | files | steps (mean) | s / file |",
        f"|---|{rule}|---|---|---|---|---|",
    ]
    for method, label in labels.items():
        s = summary(results.select(method))
        if s is None:
            continue
        steps = "–" if s["steps"] is None else f"{s['steps']:.0f}"
        secs = "–" if s["seconds"] is None else f"{s['seconds']:.1f}"
        lines.append(
            f"| {label} | {row_cells(s, names)} | **{s['mean_dice']:.3f}** | "
            f"{s['mean_hd95']:.2f} | {s['n']} | {steps} | {secs} |"
        )
    blank = " | ".join("" for _ in names)
    for label, dice in extra:
        lines.append(f"| {label} (published, not run here) | {blank} | {dice:.3f} | | | | |")
    return lines


def machine_line(args) -> str:
    import torch

    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}, preset `{args.preset}` on {args.device}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s), seed {args.seed}"
        + (", **--quick** (sizes too small to mean anything)" if args.quick else "")
    )


def targets_line(run: str, results: Results, subset=None) -> str:
    parts = []
    for method, goal in TARGETS.get(run, {}).items():
        recs = results.select(method)
        if subset is not None:
            recs = [r for r in recs if r["case"] in subset]
        s = summary(recs)
        if s is not None:
            verdict = "met" if s["mean_dice"] >= goal else "not met"
            parts.append(f"{method} {s['mean_dice']:.3f} (target ≥ {goal}: {verdict})")
    return "Targets: " + "; ".join(parts) + "." if parts else ""


def learning_curve_png(
    points: list[dict], walker: dict | None, names: dict, n_test: int, path: Path
) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (
            f"matplotlib is not installed: no PNG written ({path}); `make bench` (or `pip install "
            "matplotlib`) and run the same command again (the scores are cached)"
        )
    ks = [p["k"] for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    ax.plot(
        ks,
        [p["mean_dice"] for p in points],
        "o-",
        color="black",
        lw=2,
        label="trio, zero-shot (mean)",
    )
    for c, n in names.items():
        ax.plot(ks, [p["dice"][str(c)] for p in points], ".--", lw=1, label=n)
    if walker is not None:
        ax.axhline(
            walker["mean_dice"],
            color="tab:gray",
            ls=":",
            label="walker on each test volume's own strokes",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("training patients (both frames, real scribbles)")
    ax.set_ylabel(f"3-D Dice, {n_test} fold1 test volumes (no strokes)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("ACDC fold1: a base learnt one patient at a time")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return f"wrote {path}"


# ---------------------------------------------------------------------------- runs
def run_learning_curve(args, data: Path, work: Path, results: Results) -> str:
    train, test = acdc_parts(data, args.seed, args.quick, args.test_limit)
    ks = sorted({int(k) for k in args.patients.split(",") if k})
    groups = sorted({it.group for it in train.items})
    if ks[-1] > len(groups):
        sys.exit(f"--patients asks for {ks[-1]} patients but the fold has {len(groups)}")
    b = budget(args.steps, args.seconds)
    names = dict(zip(test.class_values[1:], test.class_names[1:]))
    points, previous, total = [], None, {"steps": 0, "seconds": 0.0}
    for k in range(1, ks[-1] + 1):
        out = work / f"k{k:02d}"
        info = train_base(first_groups(train, k), out, b, args, base_path=previous)
        total = {
            "steps": total["steps"] + info["steps"],
            "seconds": total["seconds"] + info["seconds"],
        }
        print(
            f"k={k} ({groups[k - 1]}): {info['steps']} steps in {info['seconds']:.0f} s", flush=True
        )
        previous = out / "model.pt"
        if k in ks:
            score_zero_shot(previous, test, results, args, k=k)
            s = summary(results.select("zero-shot", k))
            points.append({"k": k, **s, **{f"total_{x}": v for x, v in total.items()}})
    score_with_strokes(
        test, test.items, results, args, ckpt=None, ft={}, scratch=None, prior_spec="none"
    )
    walker = summary(results.select("walker"))
    cols, rule = class_header(names)
    lines = [
        f"ACDC fold1 learning curve: the first k training patients (both frames, real "
        f"scribbles) added one at a time, {budget_text(b)} of `train --data` fine-tuning after "
        f"each; snapshots scored zero-shot (no strokes) on {len(test.items)} test volumes, "
        f"3-D, HD95 in voxels. {machine_line(args)}.",
        "",
        f"| patients k | {cols} | mean Dice | mean HD95 | steps (total) | training s (total) |",
        f"|---|{rule}|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['k']} | {row_cells(p, names)} | **{p['mean_dice']:.3f}** | "
            f"{p['mean_hd95']:.2f} | {p['total_steps']} | {p['total_seconds']:.0f} |"
        )
    if walker is not None:
        lines.append(
            f"| walker (β 2000) on each volume's own strokes | {row_cells(walker, names)} | "
            f"{walker['mean_dice']:.3f} | {walker['mean_hd95']:.2f} | – | – |"
        )
    png = Path(args.png) if args.png else work / "learning_curve.png"
    lines += ["", learning_curve_png(points, walker, names, len(test.items), png)]
    return "\n".join(lines)


def run_base(run: str, args, data: Path, work: Path, results: Results) -> str:
    if run == "acdc-base":
        train, test = acdc_parts(data, args.seed, args.quick, args.test_limit)
        prior_spec = args.shape_prior
    else:
        train, test = image_parts(
            run, data, work, args.seed, args.quick, args.test_limit, args.dense_labels
        )
        prior_spec = "none"
    b = budget(args.steps, args.seconds)
    ft = budget(args.ft_steps, args.ft_seconds)
    scratch = budget(args.scratch_steps, args.scratch_seconds) if run == "acdc-base" else None
    info = train_base(train, work / "base", b, args)
    print(
        f"base: {info['images']} files, {info['steps']} steps in {info['seconds']:.0f} s",
        flush=True,
    )
    ckpt = work / "base" / "model.pt"
    score_zero_shot(ckpt, test, results, args)
    ft_items = test.items[: args.ft_limit] if args.ft_limit else test.items
    score_with_strokes(
        test, ft_items, results, args, ckpt=ckpt, ft=ft, scratch=scratch, prior_spec=prior_spec
    )
    names = dict(zip(test.class_values[1:], test.class_names[1:] or ("foreground",) * 9))
    rules = " + cardiac rules" if prior_spec == "cardiac" else ""
    labels = {
        "zero-shot": "base, zero-shot (no strokes)",
        "fine-tuned": f"base fine-tuned on the file's strokes ({budget_text(ft)}){rules}",
        "walker": f"random walker (β 2000) on the strokes{rules}",
    }
    if scratch:
        labels["scratch"] = f"trio from scratch on the strokes ({budget_text(scratch)}){rules}"
    what = {
        "acdc-base": "ACDC fold1, base on the fold's training patients' real scribbles, scored on "
        "the test volumes (3-D)",
        "kvasir-base": "Kvasir-SEG, base on the split.json training frames with simulated "
        "strokes, scored on the test frames",
        "ph2-base": "PH2, base on 30 images (seeded draw) with simulated strokes, scored on "
        "the other 10",
    }[run]
    if getattr(args, "dense_labels", False):
        what = what.replace("with simulated strokes", "with their whole masks (--dense-labels)")
    lines = [
        f"{what}: base {info['images']} files, {info['steps']} steps in "
        f"{info['seconds']:.0f} s ({budget_text(b)} budget). HD95 in voxels/pixels. "
        f"{machine_line(args)}.",
        "",
        *method_table(results, names, labels, REFERENCES if run == "acdc-base" else ()),
    ]
    lines += review_lines(results.select("zero-shot"))
    n_ft = len(ft_items)
    if n_ft < len(test.items):  # zero-shot on the fine-tuned files alone, for a fair pair
        subset = {it.name for it in ft_items}
        s = summary([r for r in results.select("zero-shot") if r["case"] in subset])
        if s is not None:
            lines += [
                "",
                f"Zero-shot on the {n_ft} fine-tuned files alone: mean Dice {s['mean_dice']:.3f}.",
            ]
    t = targets_line(run, results)
    if t:
        lines += ["", t]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", choices=RUNS)
    p.add_argument("--data", default=None, help="folder holding acdc/, kvasir_seg/, ph2/")
    p.add_argument("--work", default=str(ROOT / "bench_output" / "base_models"))
    budget_group = p.add_mutually_exclusive_group()
    budget_group.add_argument("--steps", type=int, help="base budget in steps (reproducible)")
    budget_group.add_argument("--seconds", type=float, help="base budget in seconds")
    ft = p.add_mutually_exclusive_group()
    ft.add_argument("--ft-steps", type=int, help="fine-tuning budget per file in steps")
    ft.add_argument("--ft-seconds", type=float, help="fine-tuning budget per file in seconds")
    sc = p.add_mutually_exclusive_group()
    sc.add_argument("--scratch-steps", type=int, help="acdc-base: trio from scratch, steps")
    sc.add_argument("--scratch-seconds", type=float, default=None, help="(default 60)")
    p.add_argument("--patients", default="1,2,4,8,16", help="learning-curve snapshots k")
    p.add_argument("--test-limit", type=int, default=None, help="first N test files only")
    p.add_argument(
        "--ft-limit",
        type=int,
        default=None,
        help="fine-tune the first N test files (default: all; kvasir-base 20)",
    )
    p.add_argument(
        "--shape-prior",
        default="cardiac",
        help="acdc-base: rules for the walker, "
        "the fine-tuned and the scratch trio (cardiac or none)",
    )
    p.add_argument("--preset", default="lite")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--save-every", type=float, default=300.0, help="base checkpoint period (s)")
    p.add_argument("--quick", action="store_true", help="2 train / 2 test files, 5 steps")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="training files held out to validate the base (its card then records the base's "
        "and the walker's Dice on them, which lets the floor trust a base that beat the walker); "
        "default 0.1 for the base runs, 0 for the learning curve",
    )
    p.add_argument(
        "--base-rw-weight",
        type=float,
        default=None,
        help="experiment: the random walker's weight as the base's dense teacher (default: "
        "the preset's; 0 trains the base on the strokes and the trio's own pseudo labels only)",
    )
    p.add_argument(
        "--models",
        default=None,
        help="experiment: the base's members, comma-separated (train --models; default the "
        "trio unet,swin_unet,mamba_unet); fine-tuning keeps the base's",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="the base's working resolution, longest side in px (train --max-side; default: "
        "the preset's, lite 128); fine-tuning and zero-shot keep the base's",
    )
    p.add_argument(
        "--net-preset",
        default=None,
        choices=["lite", "paper"],
        help="experiment: the base's networks at this preset's widths (e.g. paper: the UNet's "
        "16-256 channels) with --preset's training recipe; fine-tuning keeps the base's",
    )
    p.add_argument(
        "--dense-labels",
        action="store_true",
        help="experiment (kvasir-base, ph2-base): train the base on the whole masks instead "
        "of simulated strokes — the full-supervision bound at the same budget",
    )
    p.add_argument("--out", default=None, help="markdown file (also written to WORK/<run>/)")
    p.add_argument("--png", default=None, help="learning-curve PNG (default WORK/<run>/)")
    args = p.parse_args(argv)
    if args.dense_labels and args.run not in ("kvasir-base", "ph2-base"):
        p.error(f"--dense-labels is for kvasir-base and ph2-base, not {args.run}")
    d = DEFAULTS[args.run]
    if args.val_fraction is None:
        args.val_fraction = d["val"]
    if args.quick:
        args.steps = args.steps or 5
        args.ft_steps = args.ft_steps or (5 if not args.ft_seconds else None)
        args.scratch_steps = args.scratch_steps or (5 if not args.scratch_seconds else None)
        args.patients = "1,2"
        args.test_limit = min(args.test_limit or 2, 2)
    if args.steps is None and args.seconds is None:
        args.seconds = d["seconds"]
    if args.ft_steps is None and args.ft_seconds is None:
        args.ft_seconds = d["ft_seconds"]
    if args.scratch_steps is None and args.scratch_seconds is None:
        args.scratch_seconds = 60.0
    if args.ft_limit is None and args.run == "kvasir-base":
        args.ft_limit = 20
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = Path(args.data) if args.data else find_data_dir()
    if data is None or not (data / d["data"]).is_dir():
        print(
            f"{d['data']} not found under {data or '../shared/data or $MEDSEG_DATA_DIR'}: skipping"
        )
        return 0
    work = Path(args.work) / (f"{args.run}-quick" if args.quick else args.run)
    settings = {
        k: v
        for k, v in sorted(vars(args).items())
        if k not in ("work", "out", "png", "threads", "save_every", "data")
    }
    if not settings["dense_labels"]:  # work folders from before the flag stay resumable
        del settings["dense_labels"]
    check_settings(work, settings)
    results = Results(work / "results.jsonl")
    t0 = time.perf_counter()
    if args.run == "learning-curve":
        text = run_learning_curve(args, data, work, results)
    else:
        text = run_base(args.run, args, data, work, results)
    text += (
        f"\n\n(`{' '.join(['python benchmarks/bench_base_models.py', *(argv or sys.argv[1:])])}`, "
    )
    text += f"{time.perf_counter() - t0:.0f} s this invocation)"
    print(text)
    (work / "results.md").write_text(text + "\n")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
