"""One function per ``napari-medseg`` sub-command (the arguments are in :mod:`.parser`).

``train``, ``predict`` and ``demo`` drive :class:`napari_medseg.workflow.Workflow`, the same
workflow as the widget; the others call their tool. Heavy imports happen inside each command,
so that ``eval`` or ``--help`` do not wait for torch.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from .parser import CliError, path_or_error
from .progress import drive, print_floor


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


def _check_budget(args) -> None:
    """Budgets that would never end (NaN, infinite) or never start, refused before any work."""
    seconds = getattr(args, "seconds", None)
    if seconds is not None and (not math.isfinite(seconds) or seconds <= 0):
        raise CliError(f"--seconds must be a positive number of seconds, not {seconds}")
    iterations = getattr(args, "iterations", None)
    if iterations is not None and iterations <= 0:
        raise CliError(f"--iterations must be a positive number, not {iterations}")
    for option, name in (("--batch-size", "batch_size"), ("--patch-size", "patch_size")):
        v = getattr(args, name, None)
        low = 1 if name == "batch_size" else 0
        if v is not None and v < low:
            raise CliError(f"{option} must be at least {low}, not {v}")
    for option, name in (("--lr", "lr"), ("--rw-weight", "rw_weight")):
        v = getattr(args, name, None)
        if v is not None and (not math.isfinite(v) or v < 0 or (name == "lr" and v == 0)):
            sign = "positive" if name == "lr" else "non-negative"
            raise CliError(f"{option} must be a finite {sign} number, not {v}")


def _config_from_args(args, defaults: dict | None = None, class_values=()):
    from ..models import model_info
    from ..training import TrainConfig

    _check_budget(args)
    cfg = TrainConfig(**(defaults or {}))
    if args.models:
        cfg.models = args.models
    if args.preset:
        cfg.preset = args.preset
    cfg.device = args.device
    cfg.seed = args.seed
    cfg.preview_every_seconds = None  # nobody watches previews here
    if args.seconds is not None:
        cfg.seconds, cfg.iterations = args.seconds, None
    elif args.iterations is not None:
        cfg.iterations, cfg.seconds = args.iterations, None
    for name in ("batch_size", "patch_size", "lr", "rw_weight"):
        v = getattr(args, name, None)
        if v is not None:
            setattr(cfg, name, v)
    if getattr(args, "shape_prior", None) is not None:
        from ..shape_prior import parse_shape_prior

        try:
            cfg.shape_prior = parse_shape_prior(args.shape_prior, class_values).to_dict()
        except ValueError as e:
            raise CliError(f"--shape-prior: {e}") from None
    cfg.until_plateau = bool(getattr(args, "until_plateau", False))
    if cfg.iterations is None and cfg.seconds is None:
        cfg.seconds = 600.0 if cfg.until_plateau else 60.0
    for m in cfg.models:
        model_info(m)  # an unknown name is an error that lists the choices
    cfg.check()
    return cfg


def _report(files) -> None:
    for f in files:
        print(f"wrote {f}")


def _report_folder(outputs) -> None:
    """What committing changed besides this run's files (an earlier run's leftovers)."""
    for f in outputs.removed:
        print(f"removed {f} (an earlier run's prediction that this run does not replace)")
    for f in outputs.stale:
        print(
            f"note: {f} is from an earlier run and was kept; it does not belong to these outputs",
            file=sys.stderr,
        )


def _warn(warnings) -> None:
    for w in dict.fromkeys(warnings):  # each once, in order
        print(f"warning: {w}", file=sys.stderr)


# ---------------------------------------------------------------- train
def cmd_train(args) -> int:
    started = time.perf_counter()  # --seconds counts from here: reading and building too
    _check_budget(args)
    if args.dataset:
        return _train_dataset(args)
    from ..checkpoints import load_checkpoint
    from ..data.readers import (
        ACDC_UNLABELLED,
        is_acdc_scribble_file,
        load_image,
        read_scribbles,
    )
    from ..outputs import StagedOutputs
    from ..workflow import Task, Workflow, output_names, write_segmentation
    from .interrupt import StopOnInterrupt

    img_path = path_or_error(args.image, "--image")
    scr_path = path_or_error(args.scribbles, "--scribbles")
    ckpt_path = path_or_error(args.checkpoint, "--checkpoint") if args.checkpoint else None
    # the output folder is checked (and a staging folder made) before minutes of training
    with StagedOutputs(args.out, [img_path, scr_path, ckpt_path]) as outputs:
        outputs.check_names(["ensemble.tif", "model.pt"])
        image = load_image(img_path)
        scribbles = read_scribbles(scr_path)
        unlabelled = args.unlabelled
        if unlabelled is None:
            unlabelled = 0
            if is_acdc_scribble_file(scr_path):
                unlabelled = ACDC_UNLABELLED
                print(
                    f"note: {scr_path} is read from its 'scribble' dataset with "
                    f"{ACDC_UNLABELLED} as the unlabelled value (the ACDC convention; "
                    "--unlabelled sets another)",
                    file=sys.stderr,
                )
        base = load_checkpoint(ckpt_path) if ckpt_path else None
        workflow = Workflow(Task(unlabelled=unlabelled, spacing=image.spacing), base=base)
        _warn(workflow.set_inputs([(image.array, scribbles)]))
        values = workflow.task.class_values
        # fine-tuning keeps the base's slots, preset and shape prior unless told otherwise
        cfg = _config_from_args(args, workflow.base_settings(), values)
        workflow.build(cfg)
        outputs.check_names([*output_names(workflow.keys), "model.pt"])
        with StopOnInterrupt(workflow) as interrupt:
            print(
                f"training {', '.join(cfg.models)} ({cfg.preset}) on {workflow.device_for()} — "
                f"{len(values)} classes {list(values)}",
                file=sys.stderr,
                flush=True,
            )
            final = drive(workflow.train(started=started), cfg)
        segmentation = final.segmentation
        if segmentation is None:  # stopped: predict with what the networks have reached
            segmentation = workflow.predict(image.array, image_name=str(img_path))
        write_segmentation(segmentation, outputs.target, image.spacing, place=outputs.path)
        workflow.save(outputs.path("model.pt"))
        files = outputs.commit()
    print(f"{final.iteration} iterations in {final.elapsed:.1f} s")
    print_floor(segmentation)
    _report(files)
    _report_folder(outputs)
    if interrupt.requested:
        print(
            f"napari-medseg: interrupted after {final.iteration} iterations — the model and the "
            f"predictions reached so far are saved in {outputs.target}",
            file=sys.stderr,
        )
        return 130
    return 0


def _train_dataset(args) -> int:
    from ..training.dataset_protocol import run_acdc_protocol

    if not args.data:
        raise CliError("--data DIR is required with --dataset (the ACDC volume folder)")
    data = path_or_error(args.data, "--data")
    fold = args.fold.lower().removeprefix("fold")
    if not fold.isdigit() or not 1 <= int(fold) <= 5:
        raise CliError(f"--fold {args.fold!r} is not one of fold1..fold5")
    from ..outputs import check_output_folder
    from ..training.dataset_protocol import ACDC_NUM_CLASSES

    check_output_folder(args.out)  # before the folds' minutes of training
    cfg = _config_from_args(args, class_values=tuple(range(ACDC_NUM_CLASSES)))
    unlabelled = 4 if args.unlabelled is None else args.unlabelled
    result = run_acdc_protocol(
        data,
        int(fold),
        cfg,
        Path(args.out),
        unlabelled=unlabelled,
        spacing=args.spacing,
        drive=lambda trainer, desc: drive(trainer.steps(), trainer.config, desc),
    )
    print(result.summary_text())
    _report(result.files)
    return 0


# ---------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    from ..data.readers import load_image
    from ..outputs import StagedOutputs
    from ..workflow import Workflow, output_names, write_segmentation

    ckpt_path = path_or_error(args.checkpoint, "--checkpoint")
    img_path = path_or_error(args.image, "--image")
    with StagedOutputs(args.out, [ckpt_path, img_path]) as outputs:
        workflow = Workflow.load(ckpt_path)
        outputs.check_names(output_names(workflow.keys))
        image = load_image(img_path)
        seg = workflow.predict(image.array, device=args.device, image_name=str(img_path))
        _warn(seg.warnings)
        write_segmentation(seg, outputs.target, image.spacing, place=outputs.path)
        files = outputs.commit()
    _report(files)
    _report_folder(outputs)
    return 0


# ---------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    from ..data.readers import load_image, read_labels
    from ..metrics import evaluate_segmentation, summarize_by_class, write_metrics_csv

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
    if args.out:
        _refuse_overwrite(args.out, [*args.pred, *args.truth])
    summary = summarize_by_class(rows)
    print(_format_summary(summary))
    print(f"hd95/asd in {'; '.join(sorted(units))}")
    if args.out:
        print(f"wrote {write_metrics_csv(args.out, rows)}")
    return 0


def _refuse_overwrite(out: str, inputs) -> None:
    """An output file that is one of the inputs is refused (inputs are never written over)."""
    import os

    from ..outputs import check_output_file

    target = check_output_file(out)
    for inp in inputs:
        p = Path(inp)
        if target == p.resolve() or (target.exists() and os.path.samefile(target, p)):
            raise CliError(f"--out {out} is the input {inp} — choose another file for the output")


def _format_summary(summary) -> str:
    lines = []
    for cls, vals in summary.items():
        parts = ", ".join(f"{k} {v:.4f}" for k, v in vals.items() if k != "n")
        lines.append(f"class {cls}: {parts}")
    return "\n".join(lines)


# ---------------------------------------------------------------- bench-models
def cmd_bench_models(args) -> int:
    from ..benchmarking.model_efficiency import run_model_efficiency, to_markdown
    from ..data.validation import MIN_SIZE

    if args.size < MIN_SIZE:
        raise CliError(f"--size must be at least {MIN_SIZE} px, not {args.size}")
    if args.runs is not None and args.runs < 1:
        raise CliError(f"--runs must be at least 1, not {args.runs}")
    if args.warmup is not None and args.warmup < 0:
        raise CliError(f"--warmup must be 0 or more, not {args.warmup}")
    presets = tuple(p.strip() for p in args.presets.split(",") if p.strip())
    if not presets:
        raise CliError("--presets is empty — give e.g. lite,paper")
    if args.out:
        from ..outputs import check_output_file

        check_output_file(args.out)
    kwargs = {}
    if args.runs is not None:
        kwargs["runs"] = args.runs
    if args.warmup is not None:
        kwargs["warmup"] = args.warmup
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
        from ..atomic import atomic_write

        atomic_write(args.out, lambda tmp: Path(tmp).write_text(table + "\n"))
        print(f"wrote {args.out}")
    failed = [f"{r.model} ({r.preset})" for r in rows if r.error]
    if failed:
        raise CliError(f"{', '.join(failed)} failed to run (see the table) — check the options")
    if not rows:
        raise CliError("no model was measured — check --models and --presets")
    return 0


# ---------------------------------------------------------------- demo / gui
def cmd_demo(args) -> int:
    from .demo import run_demo

    if not math.isfinite(args.seconds) or args.seconds <= 0:
        raise CliError(f"--seconds must be a positive number of seconds, not {args.seconds}")
    run_demo(Path(args.out), seconds=args.seconds, sample=args.sample)
    return 0


def cmd_gui(args) -> int:
    try:
        from .._napari.launcher import launch_gui
    except ImportError as e:
        raise CliError(
            f"the napari GUI is not installed ({e}); "
            "install it with: pip install 'napari-medseg[gui]'"
        ) from None
    from .._napari.launcher import GuiUnavailableError

    try:
        launch_gui(sample=None if args.sample == "none" else args.sample)
    except GuiUnavailableError as e:
        raise CliError(str(e)) from None
    return 0


def cmd_list_models(args) -> int:
    from ..models import list_models, model_info

    for name in list_models():
        info = model_info(name)
        print(f"{name:14s} {info.display_name:12s} {info.family}")
    return 0
