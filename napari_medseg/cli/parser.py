"""The command line's arguments: the parser, its value types, and errors about arguments.

This interface is a public contract: options keep their names and meaning across releases.
Choices (presets, devices, models) come from the modules that define them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..device import DEVICE_CHOICES
from ..errors import MedsegError
from ..presets import PRESETS


class CliError(MedsegError):
    """A problem with the command line's arguments; the message says what to fix."""


def _models_arg(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one model name, e.g. unet,swin_unet")
    return names


def _spacing_arg(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"spacing {text!r} is not a list of numbers, e.g. 10,1.5,1.5 (z,y,x in mm)"
        ) from None
    if any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError("spacing values must be positive")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="napari-medseg",
        description="Scribble-supervised segmentation: UNet, SwinUNet and MambaUNet teach each "
        "other from a few strokes per structure (Weak-Mamba-UNet).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the trio on scribbles (one image, or a dataset)")
    t.add_argument("--image", help="image: .tif/.tiff/.png/.jpg/.nii(.gz)/.h5 (2-D, RGB or Z,H,W)")
    t.add_argument("--scribbles", help="scribble map with the image's spatial shape")
    t.add_argument("--out", help="output folder (required; with --resume RUN it defaults to RUN)")
    t.add_argument(
        "--unlabelled",
        type=int,
        default=None,
        help="scribble value meaning 'not scribbled' (default 0; ACDC uses 4)",
    )
    t.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="network sizes (default: paper on CUDA, lite otherwise)",
    )
    t.add_argument(
        "--models",
        type=_models_arg,
        default=None,
        help="comma-separated slots (default unet,swin_unet,mamba_unet)",
    )
    budget = t.add_mutually_exclusive_group()
    budget.add_argument(
        "--seconds",
        type=float,
        help="time budget from start to finish: reading, training and the final prediction "
        "(default 60; with --until-plateau the most it may take, default 600)",
    )
    budget.add_argument("--iterations", type=int, help="training iteration budget")
    t.add_argument(
        "--until-plateau",
        action="store_true",
        help="stop once the networks' agreement with held-out strokes stops improving",
    )
    t.add_argument("--device", default="auto", choices=list(DEVICE_CHOICES))
    t.add_argument("--checkpoint", help="start from a saved trio (fine-tuning)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--patch-size", type=int, default=None)
    t.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="working resolution: longest side in px the images are brought to (0: native; "
        "default the preset's — lite 128, paper native; with --data the median image's side); "
        "a --checkpoint keeps its own",
    )
    t.add_argument("--lr", type=float, default=None)
    t.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rot90/flip/rotation/gamma augmentation (default: the preset's recipe — in lite "
        "off for a stack, on for a single 2-D image and for a dataset)",
    )
    t.add_argument(
        "--classifier",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the classical answer under the networks: the random walker combined with a "
        "random forest on the strokes where that classifies held-out strokes at least as "
        "well (default on; --no-classifier: the walker alone, docs/design.md 'The classical "
        "answer')",
    )
    t.add_argument(
        "--rw-weight",
        type=float,
        default=None,
        help="weight of the random-walker pseudo-label loss (0 disables)",
    )
    t.add_argument(
        "--shape-prior",
        default=None,
        help="anatomical rules for the predictions and the walker's target: 'none' (default), "
        "'cardiac' (ACDC values 1 RV, 2 Myo, 3 LV: a convex LV cavity, a myocardium no "
        "thicker than twice its strokes' distance from the cavity, complete slices), or rules "
        "in label values such as 'slices,convex=3,wall=2:3' (docs/design.md 'Shape priors')",
    )
    t.add_argument(
        "--dataset",
        choices=["acdc"],
        help="the paper's ACDC protocol (with --data and --fold): --data training on the fold's "
        "80 training patients (no validation split unless --val-fraction), then its 20 test "
        "patients scored without strokes into OUT/metrics.csv",
    )
    t.add_argument(
        "--data",
        help="dataset folder to train on instead of one image: images/ + scribbles/ (same "
        "stems), images/ + masks/ (with --simulate-scribbles) or ACDC-style .h5 volumes; "
        "a split.json 'train' list restricts it to those stems",
    )
    t.add_argument(
        "--simulate-scribbles",
        action="store_true",
        help="draw strokes from the dense masks/labels (seeded by --seed) instead of reading "
        "scribbles (with --data)",
    )
    t.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share of the files (of the patients, for ACDC) held out to score the trio "
        "(with --data; default 0.1, 0 with --dataset)",
    )
    t.add_argument(
        "--validate-every",
        type=float,
        default=120.0,
        help="seconds between validations (with --data; default 120; 0: only at the end)",
    )
    t.add_argument(
        "--save-every",
        type=float,
        default=300.0,
        help="seconds between checkpoints OUT/model.pt (with --data; default 300; 0: only at "
        "the end)",
    )
    t.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the dataset run saved in RUN (RUN/model.pt): weights, optimiser "
        "states, step count and the rest of its budget",
    )
    t.add_argument(
        "--fold",
        default=None,
        help="ACDC fold fold1..fold5: with --dataset the paper's protocol (default fold1); with "
        "--data only that fold's 80 training patients are trained and validated on",
    )
    t.add_argument(
        "--spacing",
        type=_spacing_arg,
        default=None,
        help="voxel spacing z,y,x for the distance metrics of --dataset's test scores",
    )

    pr = sub.add_parser("predict", help="segment an image with a saved trio")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument(
        "--image",
        required=True,
        help="an image file, a DICOM folder, or a folder of images (one <stem>.tif per image)",
    )
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--device", default="auto", choices=list(DEVICE_CHOICES))

    ev = sub.add_parser("eval", help="score predictions against dense labels (CSV + summary)")
    ev.add_argument(
        "--pred",
        required=True,
        nargs="+",
        help="prediction label file(s), or one folder (matched to --truth's by file stem)",
    )
    ev.add_argument(
        "--truth", required=True, nargs="+", help="ground-truth label file(s), or one folder"
    )
    ev.add_argument(
        "--spacing",
        type=_spacing_arg,
        default=None,
        help="voxel/pixel spacing, e.g. 10,1.5,1.5 (default: from the files, else 1)",
    )
    ev.add_argument(
        "--classes",
        default=None,
        help="comma-separated class values to score (default: all non-zero values)",
    )
    ev.add_argument("--out", default=None, help="CSV file (default: print only)")

    bm = sub.add_parser("bench-models", help="parameters, FLOPs, latency and memory per model")
    bm.add_argument("--models", type=_models_arg, default=None)
    bm.add_argument("--presets", default=",".join(PRESETS))
    bm.add_argument("--size", type=int, default=512)
    bm.add_argument("--device", default="auto", choices=list(DEVICE_CHOICES))
    bm.add_argument("--runs", type=int, default=None)
    bm.add_argument("--warmup", type=int, default=None)
    bm.add_argument("--out", default=None, help="write the markdown table here")

    d = sub.add_parser("demo", help="short headless training on the bundled sample")
    d.add_argument("--out", default="demo_output")
    d.add_argument("--seconds", type=float, default=45.0)
    d.add_argument("--sample", choices=["mri", "rgb"], default="mri")

    g = sub.add_parser("gui", help="open napari with a sample and the widget docked")
    g.add_argument("--sample", choices=["mri", "rgb", "none"], default="mri")

    sub.add_parser("list-models", help="registered architectures")

    i = sub.add_parser("info", help="print a saved trio's model card")
    i.add_argument("checkpoint", help="a model.pt (or the run folder holding one)")
    return p


def path_or_error(text: str | None, what: str) -> Path:
    if not text:
        raise CliError(f"{what} is required")
    p = Path(text)
    if not p.exists():
        raise CliError(f"{what} {p} does not exist — check the path")
    return p
