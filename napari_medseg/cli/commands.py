"""One function per ``napari-medseg`` sub-command (the arguments are in :mod:`.parser`).

``train``, ``predict`` and ``demo`` drive :class:`napari_medseg.workflow.Workflow`, the same
workflow as the widget; the others call their tool. Heavy imports happen inside each command,
so that ``eval`` or ``--help`` do not wait for torch.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from contextlib import contextmanager
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
        "info": cmd_info,
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
    for option, name in (
        ("--batch-size", "batch_size"),
        ("--patch-size", "patch_size"),
        ("--max-side", "max_side"),
    ):
        v = getattr(args, name, None)
        low = 1 if name == "batch_size" else 0
        if v is not None and v < low:
            raise CliError(f"{option} must be at least {low}, not {v}")
    side = getattr(args, "max_side", None)
    if side is not None and 0 < side < 16:
        raise CliError(f"--max-side {side} is too small: give at least 16 px, or 0 for native")
    for option, name in (("--lr", "lr"), ("--rw-weight", "rw_weight")):
        v = getattr(args, name, None)
        if v is not None and (not math.isfinite(v) or v < 0 or (name == "lr" and v == 0)):
            sign = "positive" if name == "lr" else "non-negative"
            raise CliError(f"{option} must be a finite {sign} number, not {v}")


def _config_from_args(args, defaults: dict | None = None, class_values=()):
    from ..models import model_info
    from ..training import TrainConfig

    _check_budget(args)
    cfg = TrainConfig.from_dict(defaults or {})
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
    for name in (
        "batch_size",
        "patch_size",
        "max_side",
        "lr",
        "rw_weight",
        "augment",
        "classifier",
    ):
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
    if args.data or args.resume or args.dataset:
        return _train_collection(args, started)
    for flag in ("simulate_scribbles", "val_fraction", "fold"):
        if getattr(args, flag) not in (None, False):
            raise CliError(f"--{flag.replace('_', '-')} goes with --data DIR")
    if not args.out:
        raise CliError("--out is required: the folder for the predictions and model.pt")
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
                f"training {', '.join(cfg.models)} ({workflow.preset}) on "
                f"{workflow.device_for()} — "
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


def _run_folder(text: str) -> tuple[Path, Path]:
    """(RUN/model.pt, RUN) for ``--resume RUN`` (a folder, or the model file in it)."""
    run = Path(text)
    path = run / "model.pt" if run.is_dir() else run
    if not path.is_file():
        raise CliError(f"--resume {text}: no model.pt there — give the --out folder of a run")
    return path, path.parent


@contextmanager
def _stop_on_interrupt(workflow):
    """Ctrl-C ends training after the current step (the checkpoint is then written); a second
    Ctrl-C interrupts at once."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def stop(signum, frame):
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)
        workflow.request_stop()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _train_collection(args, started: float) -> int:
    """``train --data DIR`` (or ``--resume RUN``): the trio on a dataset folder.

    ``--dataset acdc`` is the paper's protocol on the same machinery: the fold's 80 training
    patients (all trained on unless ``--val-fraction`` says otherwise), then its 20 test
    patients scored (``RUN/metrics.csv``); a resumed protocol run scores them when it ends.
    """
    from ..checkpoints import load_checkpoint
    from ..data.collection import open_collection
    from ..outputs import check_output_folder
    from ..workflow import Workflow

    if args.image or args.scribbles:
        what = "--dataset" if args.dataset else "--data DIR"
        raise CliError(f"give either {what} or --image/--scribbles, not both")
    base, defaults, trained = None, {}, {}
    if args.resume:
        if args.checkpoint:
            raise CliError("--resume continues a run; --checkpoint starts a new one from a base")
        path, run = _run_folder(args.resume)
        base = load_checkpoint(path)
        defaults = dict(base.config)  # the run goes on with its own settings unless told
        trained = (base.card or {}).get("trained_on") or {}
        out = Path(args.out) if args.out else run
    else:
        if not args.out:
            raise CliError("--out is required: the folder for model.pt")
        out = Path(args.out)
        if args.checkpoint:  # a base to fine-tune on the dataset
            base = load_checkpoint(path_or_error(args.checkpoint, "--checkpoint"))
            defaults = Workflow(base=base).base_settings()
    protocol = args.dataset or trained.get("protocol")
    fold = args.fold or trained.get("acdc_fold") or ("fold1" if protocol else None)
    if fold:  # a wrong fold is refused before any file is read
        fold = _fold(f"fold{fold}" if isinstance(fold, int) else fold)
    data = args.data or trained.get("folder")
    if not data:
        raise CliError(
            "--data DIR is required"
            + (" with --dataset (the ACDC volume folder)" if protocol else "")
            + (f" ({args.resume} does not record its folder)" if args.resume else "")
        )
    check_output_folder(out)  # before minutes of reading and training
    simulate = args.simulate_scribbles or bool(trained.get("simulated_scribbles"))
    val_fraction = args.val_fraction
    if val_fraction is None:  # the paper's protocol trains on every training patient
        val_fraction = float(trained.get("validation_fraction", 0.0 if protocol else 0.1))
    if not 0 <= val_fraction < 1:
        raise CliError(f"--val-fraction must be in [0, 1), not {val_fraction}")
    split_seed = int(trained.get("split_seed", args.seed)) if args.resume else args.seed
    everything = open_collection(
        path_or_error(data, "--data"),
        simulate_scribbles=simulate,
        unlabelled=args.unlabelled,
        seed=split_seed,
    )
    collection = everything.acdc_fold(fold) if fold else everything
    # the protocol's test patients: missing ones are found now, not after the training
    test = everything.acdc_fold(fold, test=True) if protocol else None
    cfg = _config_from_args(args, defaults, collection.class_values)
    if args.resume and args.seconds is None and args.iterations is None:
        cfg.seconds, cfg.iterations = base.config.get("seconds"), base.config.get("iterations")
    workflow = Workflow(base=base)
    warnings = workflow.prepare_dataset(
        collection,
        cfg,
        val_fraction=val_fraction,
        split_seed=split_seed,
        resume=bool(args.resume),
    )
    if protocol:  # recorded in the card, so that --resume RUN scores the test patients too
        workflow.trained_on["protocol"] = protocol
    try:
        with _stop_on_interrupt(workflow):
            if workflow.is_main:
                code = _drive_collection(args, workflow, cfg, out, warnings, started)
                if test is not None and code == 0:
                    _score_protocol(workflow, test, fold, out, args.spacing, args.device)
                return code
            for _ in workflow.train_dataset(started=started):  # another rank: train quietly
                pass
            return 0
    finally:
        from ..training.distributed import shutdown

        shutdown()


def _drive_collection(args, workflow, cfg, out: Path, warnings, started: float) -> int:
    from .progress import drive_dataset

    ds = workflow.dataset
    collection = ds.collection
    base = workflow.base
    simulate = collection.simulated
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    dist = workflow.distributed
    procs = f" over {dist.world} processes" if dist is not None else ""
    what = "resuming" if args.resume else ("fine-tuning" if base is not None else "training")
    print(
        f"{what} {', '.join(cfg.models)} ({workflow.preset}) on "
        f"{workflow.device_for()} — "
        f"{collection.name} ({collection.layout}{', simulated strokes' if simulate else ''}): "
        f"{workflow.trained_on['images']} training and {len(ds.val)} validation file(s)"
        f"{procs}, "
        f"classes {list(collection.class_values)}, working scale "
        f"{workflow.trainer.scale:.3g}",
        file=sys.stderr,
    )
    if not ds.val:
        print("no validation files: no validation Dice (dense labels needed)", file=sys.stderr)
    steps = workflow.train_dataset(
        save_to=out / "model.pt",
        save_every=args.save_every,
        validate_every=args.validate_every,
        started=started,
    )
    final = drive_dataset(steps, cfg, workflow.run_before)
    steps_done, seconds = workflow.run_done
    state = "stopped" if final is not None and final.stopped else "finished"
    print(f"{state}: {steps_done} steps in {seconds:.1f} s (this run: {final.run_step} steps)")
    if workflow.validation is not None:
        v = workflow.validation
        beside = "" if v.walker is None else f" (the walker on their strokes: {v.walker:.4f})"
        print(f"validation Dice {v.dice:.4f} on {ds.collection.name}{beside}")
    _report([out / "model.pt"])
    if state == "stopped" and workflow.trained_on.get("protocol"):
        print(
            f"the test patients are scored when the run finishes: napari-medseg train --resume "
            f"{out}",
            file=sys.stderr,
        )
        return 130
    return 0


def _score_protocol(workflow, test, fold: int, out: Path, spacing, device: str) -> None:
    """The paper's evaluation: every test volume zero-shot, 3-D Dice/HD95 per class and
    model, ``out/metrics.csv`` and the summary table."""
    from ..metrics import write_metrics_csv
    from ..training.dataset_protocol import summary_text
    from .progress import progress_bar

    rows = []
    with progress_bar(len(test.items), f"scoring fold{fold}'s test patients", "volume") as bar:
        for _, _, got in workflow.evaluate(test, spacing=spacing, device=device):
            rows += got
            bar.update(1)
    print(f"fold{fold} test patients: {len(test.items)} volume(s), scored without their strokes")
    print(summary_text(rows))
    units = "voxels (the .h5 files carry no spacing; --spacing z,y,x gives mm)"
    print(f"HD95 in {units if spacing is None else 'the units of --spacing'}")
    _report([write_metrics_csv(out / "metrics.csv", rows)])


def _fold(text: str) -> int:
    fold = text.lower().removeprefix("fold")
    if not fold.isdigit() or not 1 <= int(fold) <= 5:
        raise CliError(f"--fold {text!r} is not one of fold1..fold5")
    return int(fold)


# ---------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    from ..data.readers import is_dicom_path, load_image
    from ..outputs import StagedOutputs
    from ..workflow import Workflow, output_names, write_segmentation

    ckpt_path = path_or_error(args.checkpoint, "--checkpoint")
    img_path = path_or_error(args.image, "--image")
    if img_path.is_dir() and not is_dicom_path(img_path):
        return _predict_folder(ckpt_path, img_path, args.out, args.device)
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


def _predict_folder(checkpoint: Path, folder: Path, out: str, device: str) -> int:
    """Every image of ``folder`` → ``out/<stem>.tif`` (the ensemble), then a summary.

    Staged like every run's outputs (:meth:`Workflow.predict_folder`): written aside and moved
    in at the end, never over an input (``--out`` the image folder itself is refused before
    any work)."""
    from collections import Counter

    from ..workflow import Workflow, review_hint
    from .progress import progress_bar

    workflow = Workflow.load(checkpoint)
    steps = workflow.predict_folder(folder, out, device=device, inputs=[checkpoint])
    first = next(steps)  # the folder and the names are checked before any image
    written, pixels, review = [], Counter(), []
    with progress_bar(first.total, "predicting", "image") as bar:
        for step in steps:
            if step.written is not None:
                written, review = step.written, step.review or []
                continue
            seg = step.segmentation
            for w in seg.warnings:
                print(f"warning: {step.source.name}: {w}", file=sys.stderr)
            values, counts = np.unique(seg.ensemble, return_counts=True)
            pixels.update(dict(zip(values.tolist(), counts.tolist())))
            bar.update(1)
    out = first.folder
    total = sum(pixels.values())
    shares = ", ".join(f"{v}: {100 * n / total:.1f} %" for v, n in sorted(pixels.items()))
    print(f"predicted {first.total} image(s) of {folder} into {out} (one <stem>.tif each)")
    print(f"label values over all images: {shares}")
    for f in written[:5]:
        print(f"wrote {f}")
    if len(written) > 5:
        print(f"... and {len(written) - 5} more in {out}")
    hint = review_hint(review)
    if hint:
        print(hint)
    return 0


# ---------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    from ..data.readers import load_image, read_labels
    from ..metrics import evaluate_segmentation, summarize_by_class, write_metrics_csv

    pairs = _eval_pairs(args.pred, args.truth)
    classes = None
    if args.classes:
        try:
            classes = [int(c) for c in args.classes.split(",")]
        except ValueError:
            raise CliError(f"--classes {args.classes!r} must be integers, e.g. 1,2,3") from None
    rows = []
    units: set[str] = set()
    for p, t in pairs:
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


def _eval_pairs(preds: list[str], truths: list[str]) -> list[tuple[str, str]]:
    """(prediction, truth) files: as given, or two folders matched by file stem."""
    folders = [Path(x).is_dir() for x in (*preds, *truths)]
    if not any(folders):
        if len(preds) != len(truths):
            raise CliError(
                f"{len(preds)} prediction file(s) but {len(truths)} truth file(s)"
                " — give them in matching order"
            )
        return list(zip(preds, truths))
    if len(preds) != 1 or len(truths) != 1 or not all(folders):
        raise CliError("give --pred FOLDER --truth FOLDER (one folder each), or lists of files")
    from ..data.collection import files_by_stem

    pred, truth = files_by_stem(preds[0]), files_by_stem(truths[0])
    stems = [s for s in pred if s in truth]
    if not stems:
        raise CliError(
            f"no file stem of {preds[0]} occurs in {truths[0]} — predictions and labels are "
            "matched by file name without extension (a.tif ↔ a.png)"
        )
    for what, left in (("predictions", set(pred) - set(truth)), ("labels", set(truth) - set(pred))):
        if left:
            print(f"note: {len(left)} {what} without a partner left out", file=sys.stderr)
    return [(str(pred[s]), str(truth[s])) for s in stems]


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
    result = run_demo(Path(args.out), seconds=args.seconds, sample=args.sample)
    return 130 if result.get("interrupted") else 0


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


def cmd_info(args) -> int:
    from ..checkpoints import card_text, load_checkpoint

    path = Path(args.checkpoint)
    if path.is_dir():
        path = path / "model.pt"
    print(card_text(load_checkpoint(path)))
    return 0


def cmd_list_models(args) -> int:
    from ..models import list_models, model_info

    for name in list_models():
        info = model_info(name)
        print(f"{name:14s} {info.display_name:12s} {info.family}")
    return 0
