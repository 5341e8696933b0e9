"""Implementations of the CLI sub-commands (argument parsing lives in :mod:`napari_medseg.cli`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .cli import CliError, path_or_error


def run_command(args: argparse.Namespace) -> int:
    handlers = {
        "train": cmd_train,
        "predict": cmd_predict,
        "eval": cmd_eval,
        "bench-models": cmd_bench_models,
        "demo": cmd_demo,
        "gui": cmd_gui,
        "list-models": cmd_list_models,
    }
    return handlers[args.command](args)


# ---------------------------------------------------------------- shared helpers
def _progress(total: float | None, desc: str, unit: str = "it"):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None,
        leave=True,
    )


def _config_from_args(args, defaults: dict | None = None, class_values=()):
    from .training import TrainConfig

    cfg = TrainConfig(**(defaults or {}))
    if args.models:
        cfg.models = args.models
    if args.preset:
        cfg.preset = args.preset
    cfg.device = args.device
    cfg.seed = args.seed
    if args.seconds is not None:
        if args.seconds <= 0:
            raise CliError("--seconds must be positive")
        cfg.seconds, cfg.iterations = args.seconds, None
    elif args.iterations is not None:
        if args.iterations <= 0:
            raise CliError("--iterations must be positive")
        cfg.iterations, cfg.seconds = args.iterations, None
    for name in ("batch_size", "patch_size", "lr", "rw_weight"):
        v = getattr(args, name, None)
        if v is not None:
            setattr(cfg, name, v)
    if getattr(args, "shape_prior", None) is not None:
        from .shape_prior import parse_shape_prior

        try:
            cfg.shape_prior = parse_shape_prior(args.shape_prior, class_values).to_dict()
        except ValueError as e:
            raise CliError(f"--shape-prior: {e}") from None
    if cfg.iterations is None and cfg.seconds is None:
        cfg.seconds = 60.0
    from .models import list_models

    known = list_models()
    for m in cfg.models:
        if m not in known:
            raise CliError(f"unknown model {m!r}; choose from: {', '.join(known)}")
    return cfg


def drive(trainer, desc: str = "training"):
    """Runs a trainer with a progress bar; returns the final update."""
    cfg = trainer.config
    total = cfg.iterations if cfg.iterations else cfg.seconds
    unit = "it" if cfg.iterations else "s"
    last = None
    with _progress(total, desc, unit) as bar:
        for upd in trainer.steps():
            last = upd
            if cfg.iterations:
                bar.n = min(
                    upd.iteration - (upd.total_iterations or 0) + cfg.iterations, cfg.iterations
                )
            else:
                bar.n = round(min(upd.elapsed, cfg.seconds), 1)
            bar.set_postfix(
                loss=f"{upd.losses.get('total', float('nan')):.3f}",
                it_s=f"{upd.iterations_per_second:.2f}",
                refresh=False,
            )
            bar.refresh()
    return last


def _write_prediction(out: Path, task, prediction, spacing=None) -> list[Path]:
    from .data.readers import write_labels

    written = []
    ens = task.to_values(prediction.ensemble)
    written.append(write_labels(out / "ensemble.tif", ens, spacing=spacing))
    for key, lab in prediction.per_model.items():
        written.append(write_labels(out / f"{key}.tif", task.to_values(lab), spacing=spacing))
    return [Path(p) if p is not None else None for p in written]


# ---------------------------------------------------------------- train
def cmd_train(args) -> int:
    if args.dataset:
        return _train_dataset(args)
    from .checkpoints import load_checkpoint, save_checkpoint
    from .data.readers import load_image, read_labels
    from .training import TriNetTrainer, prepare_interactive

    img_path = path_or_error(args.image, "--image")
    scr_path = path_or_error(args.scribbles, "--scribbles")
    out = Path(args.out)
    image = load_image(img_path)
    scribbles = read_labels(scr_path)
    unlabelled = 0 if args.unlabelled is None else args.unlabelled
    checkpoint = load_checkpoint(args.checkpoint) if args.checkpoint else None
    class_values = None
    defaults = {}
    if checkpoint is not None:
        meta = checkpoint.get("metadata", {})
        class_values = meta.get("class_values")
        defaults = {
            "models": tuple(s["name"] for s in checkpoint["slots"]),
            "preset": checkpoint["slots"][0]["preset"],
            # fine-tuning keeps the rules the trio was trained with unless told otherwise
            "shape_prior": checkpoint.get("config", {}).get("shape_prior"),
        }
    task = prepare_interactive(image.array, scribbles, unlabelled, class_values)
    for w in task.warnings:
        print(f"warning: {w}", file=sys.stderr)
    cfg = _config_from_args(args, defaults, task.class_values)
    cfg.preview_every_seconds = None
    trainer = TriNetTrainer(
        task.images,
        task.seeds,
        task.num_classes,
        cfg,
        checkpoint=checkpoint,
        metadata={
            "class_values": list(task.class_values),
            "unlabelled": unlabelled,
            "kind": task.kind,
        },
    )
    print(
        f"training {', '.join(cfg.models)} ({cfg.preset}) on {trainer.device} — "
        f"{task.num_classes} classes {list(task.class_values)}",
        file=sys.stderr,
    )
    final = drive(trainer)
    out.mkdir(parents=True, exist_ok=True)
    files = _write_prediction(out, task, final.prediction, image.spacing)
    ckpt = save_checkpoint(trainer.state_dict(), out / "model.pt")
    print(f"{final.iteration} iterations in {final.elapsed:.1f} s")
    for f in files:
        print(f"wrote {f}")
    print(f"wrote {ckpt}")
    return 0


def _train_dataset(args) -> int:
    from .training.dataset_protocol import run_acdc_protocol

    if not args.data:
        raise CliError("--data DIR is required with --dataset (the ACDC volume folder)")
    data = path_or_error(args.data, "--data")
    fold = args.fold.lower().removeprefix("fold")
    if not fold.isdigit() or not 1 <= int(fold) <= 5:
        raise CliError(f"--fold {args.fold!r} is not one of fold1..fold5")
    from .training.dataset_protocol import ACDC_NUM_CLASSES

    cfg = _config_from_args(args, class_values=tuple(range(ACDC_NUM_CLASSES)))
    cfg.preview_every_seconds = None
    unlabelled = 4 if args.unlabelled is None else args.unlabelled
    result = run_acdc_protocol(
        data,
        int(fold),
        cfg,
        Path(args.out),
        unlabelled=unlabelled,
        spacing=args.spacing,
        drive=drive,
    )
    print(result.summary_text())
    for f in result.files:
        print(f"wrote {f}")
    return 0


# ---------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    from .checkpoints import load_checkpoint, models_from_checkpoint
    from .data.normalization import normalize_image
    from .data.readers import load_image
    from .device import resolve_device
    from .inference import combine_saved, predict_models
    from .training.interactive import InteractiveTask

    state = load_checkpoint(path_or_error(args.checkpoint, "--checkpoint"))
    image = load_image(path_or_error(args.image, "--image"))
    device = resolve_device(args.device)
    norm = normalize_image(image.array)
    if norm.data.shape[1] != int(state["in_channels"]):
        kinds = {1: "grayscale", 3: "RGB"}
        raise CliError(
            f"the checkpoint was trained on {kinds.get(state['in_channels'])} images but "
            f"{args.image} is {kinds.get(norm.data.shape[1], norm.data.shape[1])}"
        )
    models = models_from_checkpoint(state, device)
    meta = state.get("metadata", {})
    values = tuple(meta.get("class_values") or range(int(state["num_classes"])))
    task = InteractiveTask(
        [norm.data],
        [],
        len(values),
        values,
        norm.kind,
        norm.spatial_shape,
        int(meta.get("unlabelled", 0)),
    )
    probs = predict_models(models, norm.data, device, float(state.get("working_scale", 1.0)))
    pred = combine_saved(probs, state)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in _write_prediction(out, task, pred, image.spacing):
        print(f"wrote {f}")
    return 0


# ---------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    from .data.readers import load_image, read_labels
    from .metrics import evaluate_segmentation, summarize_by_class, write_metrics_csv

    if len(args.pred) != len(args.truth):
        raise CliError(
            f"{len(args.pred)} prediction file(s) but {len(args.truth)} truth file(s)"
            " — give them in matching order"
        )
    classes = None
    if args.classes:
        try:
            classes = [int(c) for c in args.classes.split(",")]
        except ValueError:
            raise CliError(f"--classes {args.classes!r} must be integers, e.g. 1,2,3") from None
    rows = []
    units: set[str] = set()
    for p, t in zip(args.pred, args.truth):
        pred = read_labels(path_or_error(p, "--pred"))
        truth = read_labels(path_or_error(t, "--truth"))
        if pred.shape != truth.shape:
            raise CliError(f"shape mismatch: {p} is {pred.shape} but {t} is {truth.shape}")
        # the truth file's spacing, else the prediction's (train/predict write the image's)
        spacing = args.spacing or load_image(t).spacing or load_image(p).spacing
        if spacing is not None and len(spacing) != truth.ndim:
            spacing = spacing[-truth.ndim :] if len(spacing) > truth.ndim else None
        units.add(
            "voxels (no spacing in the files; --spacing gives mm)"
            if spacing is None
            else f"physical units, e.g. mm (spacing {','.join(f'{v:g}' for v in spacing)})"
        )
        cls = classes or [
            int(v) for v in np.unique(np.concatenate([np.unique(truth), np.unique(pred)])) if v != 0
        ]
        for r in evaluate_segmentation(pred, truth, class_values=cls, spacing=spacing, case=str(p)):
            r["truth_file"] = str(t)
            rows.append(r)
    summary = summarize_by_class(rows)
    print(_format_summary(summary))
    print(f"hd95/asd in {'; '.join(sorted(units))}")
    if args.out:
        print(f"wrote {write_metrics_csv(args.out, rows)}")
    return 0


def _format_summary(summary) -> str:
    lines = []
    for cls, vals in summary.items():
        parts = ", ".join(f"{k} {v:.4f}" for k, v in vals.items() if k != "n")
        lines.append(f"class {cls}: {parts}")
    return "\n".join(lines)


# ---------------------------------------------------------------- bench-models
def cmd_bench_models(args) -> int:
    from .benchmarking.model_efficiency import run_model_efficiency, to_markdown

    kwargs = {}
    if args.runs is not None:
        kwargs["runs"] = args.runs
    if args.warmup is not None:
        kwargs["warmup"] = args.warmup
    presets = tuple(p.strip() for p in args.presets.split(",") if p.strip())
    rows = run_model_efficiency(
        models=list(args.models) if args.models else None,
        presets=presets,
        size=args.size,
        device=args.device,
        **kwargs,
    )
    table = to_markdown(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
        print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------- demo / gui
def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), seconds=args.seconds, sample=args.sample)
    return 0


def cmd_gui(args) -> int:
    try:
        from ._launcher import launch_gui
    except ImportError as e:
        raise CliError(
            f"the napari GUI is not installed ({e}); "
            "install it with: pip install 'napari-medseg[gui]'"
        ) from None
    from ._launcher import GuiUnavailableError

    try:
        launch_gui(sample=None if args.sample == "none" else args.sample)
    except GuiUnavailableError as e:
        raise CliError(str(e)) from None
    return 0


def cmd_list_models(args) -> int:
    from .models import list_models, model_info

    for name in list_models():
        info = model_info(name)
        print(f"{name:14s} {info.display_name:12s} {info.family}")
    return 0
