"""The bad-input matrix (issue 13): every refusal is clear, early, and touches no input.

Each case spoils one thing a hostile but realistic user could spoil — a file, an option, an
array, a checkpoint — and asserts three things: the exit code (CLI, run in-process through
``main(argv)``) or the exception (Python API), a fragment of the message that says what is wrong
or names the file, and that no file in the case's folder changed and none appeared (the sha256
of every file before and after; an output folder that fails must not be created either).
The GUI cases are in ``test_reliability_widget.py``. Counts per class: docs/reliability.md.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_medseg.checkpoints import load_checkpoint, save_checkpoint
from napari_medseg.cli import main
from napari_medseg.errors import CheckpointError, ConfigError, InputError, MedsegError
from napari_medseg.training import TrainConfig, TriNetTrainer
from napari_medseg.workflow import Task, Workflow

sys.path.insert(0, str(Path(__file__).parent))
from reliability_cases import (  # noqa: E402
    CORRUPTIONS,
    corrupt,
    digests,
    giant_dicom,
    giant_jpeg,
    giant_png,
    giant_tiff,
    image_2d,
    scribbles_2d,
    write_valid_files,
)

FAST = ["--iterations", "1", "--device", "cpu", "--models", "unet", "--batch-size", "2"]


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, Path]:
    """Valid files every case starts from: images, scribbles, a saved one-UNet model."""
    folder = tmp_path_factory.mktemp("valid")
    files = write_valid_files(folder)
    tifffile.imwrite(folder / "img.tif", image_2d())
    tifffile.imwrite(folder / "scr.tif", scribbles_2d())
    seeds = np.where(scribbles_2d() > 0, scribbles_2d().astype(np.int64) - 1, -1)[None]
    trainer = TriNetTrainer(
        [image_2d()[None, None]],
        [seeds],
        2,
        TrainConfig(models=("unet",), preset="lite", device="cpu"),
        metadata={"class_values": [1, 2], "unlabelled": 0, "kind": "gray"},
    )
    save_checkpoint(trainer.state_dict(), folder / "model.pt")
    files.update(img=folder / "img.tif", scr=folder / "scr.tif", model=folder / "model.pt")
    return files


@pytest.fixture
def case_dir(tmp_path, valid) -> Path:
    """The case's own folder with copies of the valid files (img.tif, scr.tif, model.pt...)."""
    for p in valid.values():
        shutil.copy(p, tmp_path / p.name)
    return tmp_path


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.err + captured.out


@dataclass
class Case:
    """``make(folder)`` prepares the case and returns CLI arguments or a callable (API).

    ``fragments``: every one must appear in the message (case-insensitive); ``"{d}"`` is
    replaced by the case folder. ``error``: the exception an API case raises. ``rc``: the exit
    code a CLI case returns. ``env``: environment variables set for the case.
    """

    id: str
    make: Callable[[Path], object]
    fragments: tuple[str, ...]
    error: type[BaseException] = MedsegError
    rc: int = 2
    env: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- helpers for cases
def _tif(d: Path, name: str, array) -> Path:
    tifffile.imwrite(d / name, np.asarray(array))
    return d / name


def _train(d: Path, image="img.tif", scribbles="scr.tif", out="out", *extra) -> list:
    return ["train", "--image", d / image, "--scribbles", d / scribbles, "--out", d / out, *FAST,
            *extra]  # fmt: skip


def _train_scr(array, *extra, dtype=None) -> Callable[[Path], list]:
    def make(d):
        _tif(d, "bad_scr.tif", np.asarray(array, dtype=dtype) if dtype else array)
        return _train(d, scribbles="bad_scr.tif") + list(extra)

    return make


def _train_img(array) -> Callable[[Path], list]:
    def make(d):
        _tif(d, "bad_img.tif", array)
        shape = np.shape(array)
        spatial = shape[:2] if len(shape) == 3 and shape[-1] in (3, 4) else shape
        scr = np.zeros(spatial if len(spatial) <= 3 else spatial[-3:], np.uint8)
        if scr.ndim >= 2 and min(scr.shape[-2:]) > 0:
            scr.reshape(-1, *scr.shape[-2:])[:, 0, 0] = 1
            scr.reshape(-1, *scr.shape[-2:])[:, -1, -1] = 2
        _tif(d, "bad_img_scr.tif", scr)
        return _train(d, image="bad_img.tif", scribbles="bad_img_scr.tif")

    return make


def _predict(image="img.tif", checkpoint="model.pt", out="pred") -> Callable[[Path], list]:
    def make(d):
        return ["predict", "--checkpoint", d / checkpoint, "--image", d / image, "--out", d / out,
                "--device", "cpu"]  # fmt: skip

    return make


def _predict_img(array) -> Callable[[Path], list]:
    def make(d):
        _tif(d, "bad_img.tif", array)
        return _predict(image="bad_img.tif")(d)

    return make


def _edit_checkpoint(d: Path, edit: Callable[[dict], None], name="edited.pt") -> Path:
    state = torch.load(d / "model.pt", weights_only=True)
    edit(state)
    torch.save(state, d / name)
    return d / name


def _tamper(state):
    sd = state["slots"][0]["state_dict"]
    key = sorted(k for k, v in sd.items() if v.is_floating_point())[0]
    sd[key] = sd[key] + 0.01


def _reshape_weight(state):
    state.pop("content_sha256")
    sd = state["slots"][0]["state_dict"]
    key = sorted(k for k, v in sd.items() if v.is_floating_point() and v.ndim == 4)[0]
    sd[key] = torch.zeros(1, 1, 1, 1)


class Payload:
    """A class a checkpoint must never unpickle (it could be anything)."""

    def __reduce__(self):
        return (os.getcwd, ())


def _pickled(d: Path) -> Path:
    state = torch.load(d / "model.pt", weights_only=True)
    state["metadata"]["payload"] = Payload()
    torch.save(state, d / "pickled.pt")
    return d / "pickled.pt"


def _ckpt_case(edit=None, make_file=None) -> Callable[[Path], Path]:
    def make(d):
        if make_file is not None:
            return make_file(d)
        return _edit_checkpoint(d, edit)

    return make


def _set(key, value):
    def edit(state):
        state[key] = value

    return edit


def _drop(key):
    def edit(state):
        state.pop(key)

    return edit


CHECKPOINTS = {
    "tampered_weight": (_ckpt_case(_tamper), ("altered", "content hash")),
    "working_scale_0": (_ckpt_case(_set("working_scale", 0.0)), ("working_scale 0",)),
    "working_scale_nan": (_ckpt_case(_set("working_scale", math.nan)), ("working_scale",)),
    "working_scale_2": (_ckpt_case(_set("working_scale", 2.0)), ("working_scale 2",)),
    "num_classes_1": (_ckpt_case(_set("num_classes", 1)), ("num_classes 1",)),
    "no_slots": (_ckpt_case(_drop("slots")), ("incomplete", "slots")),
    "no_marker": (_ckpt_case(_drop("format")), ("not a napari-medseg checkpoint",)),
    "bad_in_channels": (_ckpt_case(_set("in_channels", "three")), ("incomplete",)),
    "hash_not_text": (_ckpt_case(_set("content_sha256", 12)), ("altered",)),
    "weight_of_wrong_shape": (_ckpt_case(_reshape_weight), ("do not fit",)),
    "pickled_code": (_ckpt_case(make_file=_pickled), ("refused", "pickled code")),
    "not_a_zip": (
        _ckpt_case(make_file=lambda d: (d / "junk.pt").write_bytes(b"junk") and d / "junk.pt"),
        ("could not be read",),
    ),
    "truncated": (
        _ckpt_case(
            make_file=lambda d: corrupt(d / "model.pt", "half", d / "half.pt"),
        ),
        ("could not be read",),
    ),
}


def _with_checkpoint(command: str, make_ckpt) -> Callable[[Path], list]:
    def make(d):
        ckpt = make_ckpt(d)
        if command == "predict":
            return ["predict", "--checkpoint", ckpt, "--image", d / "img.tif", "--out", d / "pred"]
        return _train(d) + ["--checkpoint", ckpt]

    return make


def _symlink_loop(d: Path) -> Path:
    os.symlink(d / "loop", d / "loop")
    return d / "loop"


def _dangling(d: Path) -> Path:
    os.symlink(d / "nowhere", d / "dangling")
    return d / "dangling"


def _out_case(make_out: Callable[[Path], Path], command="train") -> Callable[[Path], list]:
    def make(d):
        out = make_out(d)
        if command == "predict":
            return _predict()(d)[:-4] + ["--out", out, "--device", "cpu"]
        if command == "demo":
            return ["demo", "--out", out, "--seconds", "1"]
        return _train(d)[:5] + ["--out", out] + FAST

    return make


def _input_inside_out(name: str, which: str, command="train") -> Callable[[Path], list]:
    """An input stored in the --out folder under a name the run writes."""

    def make(d):
        (d / "run").mkdir()
        src = {"image": "img.tif", "scribbles": "scr.tif", "checkpoint": "model.pt"}[which]
        shutil.copy(d / src, d / "run" / name)
        if command == "predict":
            image = f"run/{name}" if which == "image" else "img.tif"
            ckpt = f"run/{name}" if which == "checkpoint" else "model.pt"
            return _predict(image=image, checkpoint=ckpt, out="run")(d)
        args = _train(
            d,
            image=f"run/{name}" if which == "image" else "img.tif",
            scribbles=f"run/{name}" if which == "scribbles" else "scr.tif",
            out="run",
        )
        return args + (["--checkpoint", d / "run" / name] if which == "checkpoint" else [])

    return make


# ---------------------------------------------------------------- the CLI cases
def _reader_cases() -> list[Case]:
    """Every reader × every corruption, as --image and --scribbles of train and --image of
    predict: the message names the spoilt file."""
    cases = []
    for fmt in ("tif", "png", "jpg", "nii", "nii.gz", "h5"):
        for how in CORRUPTIONS:
            name = f"spoilt_{how}.{fmt}"

            def spoil(d, fmt=fmt, how=how, name=name):
                return corrupt(d / f"valid.{fmt}", how, d / name)

            def as_image(d, spoil=spoil, name=name):
                spoil(d)
                return _train(d, image=name)

            def as_scribbles(d, spoil=spoil, name=name):
                spoil(d)
                return _train(d, scribbles=name)

            def as_predicted(d, spoil=spoil, name=name):
                spoil(d)
                return _predict(image=name)(d)

            for role, make in (("image", as_image), ("scribbles", as_scribbles),
                               ("predict", as_predicted)):  # fmt: skip
                cases.append(Case(f"reader-{fmt}-{how}-{role}", make, (name,)))
    return cases


def _giant(d: Path) -> list:
    giant_tiff(d / "giant.tif")
    return _train(d, image="giant.tif")


#: what the memory guard allows in the cases that reach it (the machine's memory varies)
SMALL_MEMORY = {"MEDSEG_MAX_IMAGE_BYTES": str(256 << 20)}


def _giant_file(write: Callable[[Path], Path], name: str, role: str = "image"):
    def make(d):
        write(d / name)
        if role == "scribbles":
            return _train(d, scribbles=name)
        return _train(d, image=name) if role == "image" else _predict(image=name)(d)

    return make


def _acdc_h5_without_scribble(d: Path) -> list:
    import h5py

    with h5py.File(d / "gt_only.h5", "w") as f:
        f["image"] = np.stack([image_2d()] * 2)
        f["label"] = np.ones((2, 32, 32), np.uint8)
    return _train(d, image="gt_only.h5", scribbles="gt_only.h5")


def _h5_scribble_70000(d: Path) -> list:
    import h5py

    scr = np.full((2, 32, 32), 4, np.uint32)
    scr[:, 2, 2:30] = 0
    scr[:, 15:17, 12:20] = 70000
    with h5py.File(d / "wide.h5", "w") as f:
        f["image"] = np.stack([image_2d()] * 2)
        f["scribble"] = scr
    return _train(d, image="wide.h5", scribbles="wide.h5")


def _dense_scribbles():
    dense = np.ones((32, 32), np.uint8)
    dense[16:] = 2
    return dense


def _dense_stack_slice(d: Path) -> list:
    # one slice drawn everywhere trains (the walker keeps its strokes); a whole stack drawn
    # everywhere is a dense label map: refused
    img = np.stack([image_2d()] * 2)
    _tif(d, "stack.tif", img)
    _tif(d, "dense_stack.tif", np.stack([_dense_scribbles()] * 2))
    return _train(d, image="stack.tif", scribbles="dense_stack.tif")


def _scr_with(values, dtype=np.uint8):
    return scribbles_2d(dtype=dtype, values=values)


def _colour_scribbles():
    scr = np.zeros((32, 32, 3), np.uint8)
    scr[2, 2:30] = (1, 2, 3)
    return scr


def _float_scribbles(value):
    scr = scribbles_2d().astype(np.float32)
    scr[20, 20] = value
    return scr


def _missing(option: str) -> Callable[[Path], list]:
    def make(d):
        args = _train(d)
        i = args.index(option)
        args[i + 1] = d / "no_such_file.tif"
        return args

    return make


def _folder_as(option: str) -> Callable[[Path], list]:
    def make(d):
        (d / "a_folder").mkdir()
        args = _train(d)
        args[args.index(option) + 1] = d / "a_folder"
        return args

    return make


def _file_as_out(d: Path) -> Path:
    (d / "out_file").write_text("not a folder")
    return d / "out_file"


def _below_file(d: Path) -> Path:
    (d / "plain").write_text("x")
    return d / "plain" / "out"


def _proc_out(d: Path) -> Path:
    return Path("/proc/medseg-cannot-write-here")


def _eval_case(kind: str) -> Callable[[Path], list]:
    def make(d):
        pred = _tif(d, "pred.tif", scribbles_2d())
        truth = _tif(d, "truth.tif", scribbles_2d())
        if kind == "shape":
            truth = _tif(d, "truth.tif", np.zeros((16, 16), np.uint8))
            return ["eval", "--pred", pred, "--truth", truth]
        if kind == "out_is_truth":
            return ["eval", "--pred", pred, "--truth", truth, "--out", truth]
        if kind == "out_is_folder":
            return ["eval", "--pred", pred, "--truth", truth, "--out", d]
        if kind == "classes":
            return ["eval", "--pred", pred, "--truth", truth, "--classes", "a,b"]
        if kind == "counts":
            return ["eval", "--pred", pred, pred, "--truth", truth]
        if kind == "float_labels":
            _tif(d, "pred.tif", image_2d())
            return ["eval", "--pred", pred, "--truth", truth]
        raise AssertionError(kind)

    return make


CLI_CASES: list[Case] = [
    *_reader_cases(),
    Case("giant-tiff-header", _giant, ("giant.tif", "holds only")),
    # a tiny file whose header declares a huge image: refused before anything is allocated
    Case(
        "giant-png-header", _giant_file(giant_png, "giant.png"), ("giant.png", "can hold at most")
    ),
    Case(
        "giant-png-header-scribbles",
        _giant_file(giant_png, "giant.png", "scribbles"),
        ("giant.png", "can hold at most"),
    ),  # fmt: skip
    Case(
        "giant-jpeg-header",
        _giant_file(giant_jpeg, "giant.jpg"),
        ("giant.jpg", "65000×65000", "can spare"),
        env=SMALL_MEMORY,
    ),  # fmt: skip
    Case(
        "giant-jpeg-header-predict",
        _giant_file(giant_jpeg, "giant.jpg", "predict"),
        ("giant.jpg", "can spare"),
        env=SMALL_MEMORY,
    ),  # fmt: skip
    Case("giant-dicom-header", _giant_file(giant_dicom, "giant.dcm"), ("giant.dcm", "holds only")),
    # scribbles that are not scribbles
    Case("dense-label-map", _train_scr(_dense_scribbles()), ("dense label map",)),
    Case("dense-stack", _dense_stack_slice, ("dense label map",)),
    Case(
        "unlabelled-300-uint8",
        _train_scr(_dense_scribbles(), "--unlabelled", "300"),
        ("unlabelled value 300", "uint8"),
    ),  # fmt: skip
    Case(
        "unlabelled--1-uint8",
        _train_scr(scribbles_2d(), "--unlabelled", "-1"),
        ("unlabelled value -1", "uint8"),
    ),  # fmt: skip
    Case(
        "unlabelled-70000-uint16",
        _train_scr(_scr_with((1, 2), np.uint16), "--unlabelled", "70000"),
        ("unlabelled value 70000", "uint16"),
    ),  # fmt: skip
    Case("scribble-value-70000", _train_scr(_scr_with((1, 70000), np.uint32)), ("70000",)),
    Case("scribble-value-negative", _train_scr(_scr_with((1, -3), np.int16)), ("negative",)),
    Case("acdc-h5-has-no-scribble", _acdc_h5_without_scribble, ("'scribble'", "gt_only.h5")),
    Case("acdc-h5-scribble-70000", _h5_scribble_70000, ("70000", "wide.h5")),
    Case(
        "scribbles-one-class",
        _train_scr(np.where(scribbles_2d() == 2, 0, scribbles_2d())),
        ("one class only",),
    ),  # fmt: skip
    Case("scribbles-none", _train_scr(np.zeros((32, 32), np.uint8)), ("no labelled pixels",)),
    Case("scribbles-shape", _train_scr(np.zeros((30, 32), np.uint8)), ("shape mismatch",)),
    Case("scribbles-colour", _train_scr(_colour_scribbles()), ("colour label image",)),
    Case("scribbles-fraction", _train_scr(_float_scribbles(1.5)), ("not whole numbers",)),
    Case("scribbles-nan", _train_scr(_float_scribbles(np.nan)), ("not whole numbers",)),
    # images no network can take
    Case("image-3x3", _train_img(np.ones((3, 3), np.float32)), ("too small",)),
    Case(
        "image-all-nan", _train_img(np.full((32, 32), np.nan, np.float32)), ("no finite value",)
    ),  # fmt: skip
    Case("image-32x32x2", _train_img(np.ones((32, 32, 2), np.float32)), ("too small",)),
    Case("image-4d", _train_img(np.ones((2, 2, 32, 32), np.float32)), ("4-D",)),
    Case("image-complex", _train_img(np.ones((32, 32), np.complex64)), ("non-numeric",)),
    Case("image-missing", _missing("--image"), ("does not exist",)),
    Case("scribbles-missing", _missing("--scribbles"), ("does not exist",)),
    Case("image-is-folder", _folder_as("--image"), ("a_folder",)),
    Case("scribbles-is-folder", _folder_as("--scribbles"), ("a_folder", "folder")),
    # budgets and settings
    *[
        Case(
            f"seconds-{v}",
            lambda d, v=v: _train(d)[:7] + ["--seconds", v, "--device", "cpu"],
            ("--seconds",),
        )  # fmt: skip
        for v in ("nan", "inf", "-inf", "-1", "0")
    ],
    *[
        Case(
            f"iterations-{v}", lambda d, v=v: _train(d)[:7] + ["--iterations", v], ("--iterations",)
        )  # fmt: skip
        for v in ("0", "-5")
    ],
    Case(
        "iterations-not-a-number",
        lambda d: _train(d)[:7] + ["--iterations", "ten"],
        ("invalid int",),
    ),  # fmt: skip
    Case(
        "batch-size-0",
        lambda d: _train(d, "img.tif", "scr.tif", "out", "--batch-size", "0"),
        ("--batch-size",),
    ),  # fmt: skip
    Case(
        "patch-size--1",
        lambda d: _train(d, "img.tif", "scr.tif", "out", "--patch-size", "-1"),
        ("--patch-size",),
    ),  # fmt: skip
    Case(
        "max-side-8",
        lambda d: _train(d, "img.tif", "scr.tif", "out", "--max-side", "8"),
        ("--max-side 8 is too small",),
    ),  # fmt: skip
    *[
        Case(
            f"lr-{v}", lambda d, v=v: _train(d, "img.tif", "scr.tif", "out", "--lr", v), ("--lr",)
        )  # fmt: skip
        for v in ("0", "nan", "-0.1", "inf")
    ],
    Case(
        "rw-weight--1",
        lambda d: _train(d, "img.tif", "scr.tif", "out", "--rw-weight", "-1"),
        ("--rw-weight",),
    ),  # fmt: skip
    Case(
        "unknown-model",
        lambda d: _train(d)[:7] + ["--models", "resnet9000"],
        ("unknown model", "resnet9000"),
    ),  # fmt: skip
    Case(
        "unknown-preset",
        lambda d: _train(d, "img.tif", "scr.tif", "out", "--preset", "huge"),
        ("invalid choice",),
    ),  # fmt: skip
    Case(
        "bad-shape-prior",
        lambda d: _train(d, "img.tif", "scr.tif", "out", "--shape-prior", "convex=99"),
        ("--shape-prior",),
    ),  # fmt: skip
    Case(
        "bad-fold",
        lambda d: ["train", "--dataset", "acdc", "--data", d, "--out", d / "o", "--fold", "fold9"],
        ("fold9",),
    ),  # fmt: skip
    Case(
        "dataset-without-data",
        lambda d: ["train", "--dataset", "acdc", "--out", d / "o"],
        ("--data",),
    ),  # fmt: skip
    # output folders found unusable before any training
    Case("out-is-file", _out_case(_file_as_out), ("is a file",)),
    Case("out-symlink-loop", _out_case(_symlink_loop), ("symbolic link loop",)),
    Case("out-dangling-symlink", _out_case(_dangling), ("does not exist",)),
    Case("out-below-a-file", _out_case(_below_file), ("is a file",)),
    Case("out-unwritable", _out_case(_proc_out), ("cannot be written",)),
    Case("out-is-file-predict", _out_case(_file_as_out, "predict"), ("is a file",)),
    Case("out-symlink-loop-predict", _out_case(_symlink_loop, "predict"), ("symbolic link",)),
    Case("out-is-file-demo", _out_case(_file_as_out, "demo"), ("is a file",)),
    # outputs that would replace an input
    *[
        Case(
            f"input-{which}-as-{name}",
            _input_inside_out(name, which),
            ("would overwrite the input", name),
        )  # fmt: skip
        for which, name in (
            ("scribbles", "ensemble.tif"),
            ("image", "unet.tif"),
            ("checkpoint", "model.pt"),
            ("scribbles", "model.pt"),
        )  # fmt: skip
    ],
    *[
        Case(
            f"predict-input-{which}-as-{name}",
            _input_inside_out(name, which, "predict"),
            ("would overwrite the input", name),
        )  # fmt: skip
        for which, name in (("image", "ensemble.tif"), ("image", "unet.tif"))
    ],
    # checkpoints, for train (fine-tuning) and predict
    *[
        Case(f"checkpoint-{key}-{command}", _with_checkpoint(command, make), fragments)
        for key, (make, fragments) in CHECKPOINTS.items()
        for command in ("train", "predict")
    ],
    Case("checkpoint-missing", lambda d: _predict(checkpoint="gone.pt")(d), ("does not exist",)),
    # predict takes only what train takes
    Case("predict-3x3", _predict_img(np.ones((3, 3), np.float32)), ("too small",)),
    Case(
        "predict-all-nan", _predict_img(np.full((32, 32), np.nan, np.float32)), ("no finite value",)
    ),  # fmt: skip
    Case("predict-32x32x2", _predict_img(np.ones((32, 32, 2), np.float32)), ("too small",)),
    Case("predict-4d", _predict_img(np.ones((2, 2, 32, 32), np.float32)), ("4-D",)),
    Case(
        "predict-rgb-on-grey-model",
        _predict_img(np.zeros((32, 32, 3), np.uint8)),
        ("grayscale", "rgb"),
    ),  # fmt: skip
    # eval, bench-models, demo
    *[
        Case(f"eval-{k}", _eval_case(k), frag)
        for k, frag in (
            ("shape", ("shape mismatch",)),
            ("out_is_truth", ("is the input",)),
            ("out_is_folder", ("is a folder",)),
            ("classes", ("--classes",)),
            ("counts", ("matching order",)),
            ("float_labels", ("not whole numbers",)),
        )
    ],  # fmt: skip
    *[
        Case(
            f"bench-{'-'.join(a)}",
            lambda d, a=a: [
                "bench-models",
                "--models",
                "unet",
                "--presets",
                "lite",
                "--device",
                "cpu",
                *a,
            ],
            (a[0],),
        )  # fmt: skip
        for a in (
            ("--size", "0"),
            ("--size", "-4"),
            ("--runs", "0"),
            ("--warmup", "-1"),
            ("--presets", ","),
        )  # fmt: skip
    ],
    *[
        Case(
            f"demo-seconds-{v}",
            lambda d, v=v: ["demo", "--out", d / "demo", "--seconds", v],
            ("--seconds",),
        )  # fmt: skip
        for v in ("-1", "0", "nan", "inf")
    ],
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_refuses_clearly_and_touches_no_input(case, case_dir, capsys, monkeypatch):
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    argv = case.make(case_dir)
    before = digests(case_dir)
    rc, text = run_cli(argv, capsys)
    assert rc == case.rc, text
    low = text.lower()
    for fragment in case.fragments:
        assert fragment.lower() in low, text
    assert "unexpected" not in low and "traceback" not in low, text
    assert digests(case_dir) == before  # nothing changed, nothing new (no partial outputs)


# ---------------------------------------------------------------- the Python API cases
def _set_inputs(image, scribbles, unlabelled=0):
    def make(d):
        return lambda: Workflow(Task(unlabelled=unlabelled)).set_inputs([(image, scribbles)])

    return make


def _predict_api(image, **kw):
    def make(d):
        wf = Workflow.load(d / "model.pt")
        return lambda: wf.predict(image, **kw)

    return make


def _config(**kw):
    return lambda d: lambda: TrainConfig(**kw)


def _configure(**kw):
    def make(d):
        wf = Workflow(Task(unlabelled=0))
        wf.set_inputs([(image_2d(), scribbles_2d())])
        wf.build(TrainConfig(models=("unet",), preset="lite", device="cpu", iterations=1))
        return lambda: wf.configure(**kw)

    return make


def _reader(fn_name: str, make_file: Callable[[Path], Path]):
    def make(d):
        from napari_medseg.data import readers

        path = make_file(d)
        return lambda: getattr(readers, fn_name)(path)

    return make


def _load(make_file: Callable[[Path], Path]):
    def make(d):
        path = make_file(d)  # the spoilt file exists before the digests are taken
        return lambda: load_checkpoint(path)

    return make


def _h5(d: Path, **datasets) -> Path:
    import h5py

    with h5py.File(d / "x.h5", "w") as f:
        for k, v in datasets.items():
            f[k] = v
    return d / "x.h5"


IMG, SCR = image_2d(), scribbles_2d()

API_CASES: list[Case] = [
    Case("api-dense", _set_inputs(IMG, _dense_scribbles()), ("dense label map",), InputError),
    Case(
        "api-unlabelled-300", _set_inputs(IMG, SCR, 300), ("unlabelled value 300",), InputError
    ),  # fmt: skip
    Case("api-unlabelled-float", _set_inputs(IMG, SCR, 0.5), ("whole number",), InputError),
    Case(
        "api-70000", _set_inputs(IMG, _scr_with((1, 70000), np.uint32)), ("70000",), InputError
    ),  # fmt: skip
    Case("api-3x3", _set_inputs(np.ones((3, 3)), np.zeros((3, 3))), ("too small",), InputError),
    Case("api-all-nan", _set_inputs(np.full((32, 32), np.nan), SCR), ("no finite",), InputError),
    Case(
        "api-32x32x2",
        _set_inputs(np.ones((32, 32, 2)), np.zeros((32, 32, 2))),
        ("too small",),
        InputError,
    ),  # fmt: skip
    Case(
        "api-object",
        _set_inputs(np.array([[object()] * 32] * 32), SCR),
        ("non-numeric",),
        InputError,
    ),  # fmt: skip
    Case("api-no-pairs", lambda d: lambda: Workflow().set_inputs([]), ("no image",), InputError),
    Case("api-none-image", _set_inputs(None, SCR), ("no image",), InputError),
    Case("api-none-scribbles", _set_inputs(IMG, None), ("no scribbles",), InputError),
    *[
        Case(f"api-predict-{k}", _predict_api(a), frag, InputError)
        for k, a, frag in (
            ("3x3", np.ones((3, 3), np.float32), ("too small",)),
            ("all-nan", np.full((32, 32), np.nan, np.float32), ("no finite",)),
            ("32x32x2", np.ones((32, 32, 2), np.float32), ("too small",)),
            ("4d", np.ones((1, 2, 32, 32), np.float32), ("4-d",)),
            ("empty", np.zeros((0, 32), np.float32), ("empty",)),
            ("strings", np.full((32, 32), "a"), ("non-numeric",)),
        )
    ],
    Case("api-predict-kind", _predict_api(IMG, kind="rgb"), ("kind 'rgb'",), InputError),
    Case(
        "api-predict-rgb",
        _predict_api(np.zeros((32, 32, 3), np.uint8)),
        ("grayscale",),
        CheckpointError,
    ),  # fmt: skip
    *[
        Case(f"api-config-{k}-{v}", _config(**{k: v}), (k,), ConfigError)
        for k, v in (
            ("iterations", 0),
            ("iterations", -1),
            ("iterations", 2.5),
            ("seconds", math.nan),
            ("seconds", math.inf),
            ("seconds", -1.0),
            ("seconds", 0),
            ("batch_size", 0),
            ("lr", 0.0),
            ("lr", math.nan),
            ("max_side", 3),
            ("holdout_fraction", 1.0),
            ("rw_weight", -1.0),
            ("preview_every_seconds", -1.0),
            ("predict_batch_size", 0),
            ("models", ()),
        )  # fmt: skip
    ],
    *[
        Case(f"api-configure-{k}", _configure(**{k: v}), (k,), ConfigError)
        for k, v in (("iterations", 0), ("seconds", math.inf), ("lr", -1.0), ("bogus", 1))
    ],
    *[
        Case(
            f"api-load-checkpoint-{key}",
            _load(make),
            fragments,
            CheckpointError,
        )  # fmt: skip
        for key, (make, fragments) in CHECKPOINTS.items()
        if key != "weight_of_wrong_shape"  # loads; refused when the networks are built
    ],
    Case(
        "api-read-scribbles-gt-only",
        _reader("read_scribbles", lambda d: _h5(d, label=np.ones((2, 8, 8), np.uint8))),
        ("'scribble'",),
        InputError,
    ),  # fmt: skip
    Case(
        "api-read-acdc-70000",
        _reader(
            "read_acdc_volume",
            lambda d: _h5(
                d, image=np.zeros((1, 8, 8)), scribble=np.full((1, 8, 8), 70000, np.uint32)
            ),
        ),
        ("70000",),
        InputError,
    ),  # fmt: skip
    Case(
        "api-read-acdc-label-300",
        _reader(
            "read_acdc_volume",
            lambda d: _h5(d, image=np.zeros((1, 8, 8)), label=np.full((1, 8, 8), 300, np.uint16)),
        ),
        ("300",),
        InputError,
    ),  # fmt: skip
    Case(
        "api-giant-tiff",
        _reader("load_image", lambda d: giant_tiff(d / "g.tif")),
        ("g.tif", "holds only"),
        InputError,
    ),  # fmt: skip
    Case(
        "api-giant-png",
        _reader("load_image", lambda d: giant_png(d / "g.png")),
        ("g.png", "can hold at most"),
        InputError,
    ),  # fmt: skip
    Case(
        "api-giant-jpeg",
        _reader("load_image", lambda d: giant_jpeg(d / "g.jpg")),
        ("g.jpg", "can spare"),
        InputError,
        env=SMALL_MEMORY,
    ),  # fmt: skip
    Case(
        "api-giant-dicom",
        _reader("load_image", lambda d: giant_dicom(d / "g.dcm")),
        ("g.dcm", "holds only"),
        InputError,
    ),  # fmt: skip
    Case(
        "api-unsupported",
        _reader("load_image", lambda d: (d / "x.xyz").write_bytes(b"1") and d / "x.xyz"),
        ("unsupported file type",),
        InputError,
    ),  # fmt: skip
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_refuses_clearly_and_touches_no_input(case, case_dir, monkeypatch):
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    call = case.make(case_dir)
    arrays = {k: v.copy() for k, v in (("img", IMG), ("scr", SCR))}
    before = digests(case_dir)
    with pytest.raises(case.error) as info:
        call()
    low = str(info.value).lower()
    for fragment in case.fragments:
        assert fragment.lower() in low, str(info.value)
    assert digests(case_dir) == before
    for k, v in arrays.items():  # the caller's arrays are never modified
        np.testing.assert_array_equal(v, IMG if k == "img" else SCR)


def test_the_matrix_is_at_least_150_cases():
    assert len(CLI_CASES) + len(API_CASES) >= 150
