"""The `napari-medseg` command line: outputs, exit codes and one-line errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

from napari_medseg.checkpoints import load_checkpoint
from napari_medseg.cli import main
from napari_medseg.data.readers import read_labels


@pytest.fixture()
def tiny_pair(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.normal(0.2, 0.05, (2, 40, 36)).astype(np.float32)
    img[:, 10:30, 10:26] += 0.6
    scr = np.zeros((2, 40, 36), np.uint8)
    scr[:, 2:4, 2:30] = 1
    scr[:, 18:20, 14:22] = 3  # values need not be consecutive
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "scr.tif", scr)
    truth = np.ones_like(scr)
    truth[:, 10:30, 10:26] = 3
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    return tmp_path


FAST = [
    "--iterations",
    "2",
    "--batch-size",
    "2",
    "--patch-size",
    "32",
    "--device",
    "cpu",
    "--models",
    "unet,unet",
]


def test_no_classifier_trains_on_the_walker_alone(tiny_pair, capsys):
    out = tiny_pair / "plain"
    args = ["--image", str(tiny_pair / "img.tif"), "--scribbles", str(tiny_pair / "scr.tif")]
    assert main(["train", *args, "--out", str(out), "--no-classifier", *FAST]) == 0
    printed = capsys.readouterr().out
    assert load_checkpoint(out / "model.pt").config["classifier"] is False
    line = next(x for x in printed.splitlines() if x.startswith("ensemble:"))
    assert "classical answer" not in line


def test_train_predict_eval_round_trip(tiny_pair, capsys):
    out = tiny_pair / "run"
    rc = main(
        [
            "train",
            "--image",
            str(tiny_pair / "img.tif"),
            "--scribbles",
            str(tiny_pair / "scr.tif"),
            "--out",
            str(out),
            "--shape-prior",
            "slices,convex=3",
            *FAST,
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "(lite) on cpu" in captured.err  # the preset the trainer resolved, not "None"
    # what the floor made of the networks: their share and what they changed of the walker's
    assert re.search(
        r"ensemble: (classical answer: [^;]+; )?networks' share \d+%, "
        r"[\d.]+% of the walker's answer changed",
        printed,
    )
    for name in ("ensemble.tif", "unet.tif", "unet_2.tif", "disagreement.tif", "model.pt"):
        assert (out / name).is_file() and name in printed
    ens = read_labels(out / "ensemble.tif")
    assert ens.shape == (2, 40, 36) and ens.dtype == np.uint8
    assert set(np.unique(ens)) <= {1, 3}
    # the prior is kept in label values' indices: value 3 is class index 1
    prior = {"exhaustive_slices": True, "convex": [1], "walls": []}
    assert load_checkpoint(out / "model.pt").shape_prior == prior
    assert load_checkpoint(out / "model.pt").config["classifier"] is True  # the default

    # fine-tune from the checkpoint (which keeps its prior unless told otherwise)
    rc = main(
        [
            "train",
            "--image",
            str(tiny_pair / "img.tif"),
            "--scribbles",
            str(tiny_pair / "scr.tif"),
            "--out",
            str(tiny_pair / "run2"),
            "--checkpoint",
            str(out / "model.pt"),
            "--iterations",
            "1",
            "--batch-size",
            "2",
            "--patch-size",
            "32",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert load_checkpoint(tiny_pair / "run2" / "model.pt").shape_prior == prior

    rc = main(
        [
            "predict",
            "--checkpoint",
            str(out / "model.pt"),
            "--image",
            str(tiny_pair / "img.tif"),
            "--out",
            str(tiny_pair / "pred"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    pred = read_labels(tiny_pair / "pred" / "ensemble.tif")
    assert pred.shape == (2, 40, 36) and set(np.unique(pred)) <= {1, 3}

    csv = tiny_pair / "m.csv"
    rc = main(
        [
            "eval",
            "--pred",
            str(tiny_pair / "truth.tif"),
            "--truth",
            str(tiny_pair / "truth.tif"),
            "--out",
            str(csv),
        ]
    )
    assert rc == 0
    assert "dice 1.0000" in capsys.readouterr().out
    assert csv.read_text().count("\n") == 3  # header + classes 1 and 3


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "--image", "missing.tif", "--scribbles", "x.tif", "--out", "o"],
            "does not exist",
        ),
        (
            ["train", "--image", "{img}", "--scribbles", "{empty}", "--out", "o"],
            "no labelled pixels",
        ),
        (
            [
                "train",
                "--image",
                "{img}",
                "--scribbles",
                "{scr}",
                "--out",
                "o",
                "--models",
                "unet,nonsense",
            ],
            "unknown model",
        ),
        (["train", "--image", "{img}", "--scribbles", "{cut}", "--out", "o"], "shape mismatch"),
        (
            ["train", "--image", "{img}", "--scribbles", "{scr}", "--out", "o"]
            + ["--shape-prior", "convex=7"],
            "class value 7",
        ),
        (
            ["predict", "--checkpoint", "{img}", "--image", "{img}", "--out", "o"],
            "not a PyTorch checkpoint",
        ),
        (["eval", "--pred", "{scr}", "--truth", "{cut}"], "shape mismatch"),
    ],
)
def test_errors_exit_nonzero_with_one_line(tiny_pair, capsys, args, message):
    tifffile.imwrite(tiny_pair / "empty.tif", np.zeros((2, 40, 36), np.uint8))
    tifffile.imwrite(tiny_pair / "cut.tif", np.zeros((2, 40, 30), np.uint8))
    paths = {k: str(tiny_pair / f"{k}.tif") for k in ("img", "scr", "empty", "cut")}
    argv = [a.format(**paths) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-medseg: error:") and message in err[0]


def test_list_models(capsys):
    assert main(["list-models"]) == 0
    out = capsys.readouterr().out
    for name in ("unet", "swin_unet", "mamba_unet", "wnet2d", "cmunext", "msnet", "wave_gms"):
        assert name in out


def test_dicom_series_trains_and_outputs_keep_its_spacing(tmp_path, capsys):
    """`--image folder/` reads a DICOM series; the outputs carry its spacing, and `eval` then
    reports distances in mm."""
    pytest.importorskip("pydicom")
    from dicom_files import write_series

    from napari_medseg.data.readers import load_image, write_labels

    rng = np.random.default_rng(0)
    vol = rng.normal(300, 20, (2, 40, 36)).clip(0).astype(np.uint16)
    vol[:, 10:30, 10:26] += 400
    write_series(tmp_path / "series", vol, spacing=(3.0, 0.8, 0.6), order=[1, 0])
    scr = np.zeros(vol.shape, np.uint8)
    scr[:, 2:4, 2:30] = 1
    scr[:, 18:20, 14:22] = 2
    tifffile.imwrite(tmp_path / "scr.tif", scr)
    out = tmp_path / "run"
    args = ["train", "--image", str(tmp_path / "series"), "--scribbles", str(tmp_path / "scr.tif")]
    assert main([*args, "--out", str(out), *FAST]) == 0
    ens = load_image(out / "ensemble.tif")
    assert ens.array.shape == vol.shape
    assert ens.spacing == pytest.approx((3.0, 0.8, 0.6))
    # where to draw next, for a command-line user: the map in the image's layout and spacing
    where = load_image(out / "disagreement.tif")
    assert where.array.shape == vol.shape and where.array.dtype == np.float32
    assert where.spacing == pytest.approx((3.0, 0.8, 0.6))
    assert 0.0 <= where.array.min() and where.array.max() <= 1.0
    capsys.readouterr()

    # eval: truth without spacing, prediction with it (2 columns off = 1.2 mm, not 2 voxels)
    truth = np.ones(vol.shape, np.uint8)
    truth[:, 10:30, 10:26] = 2
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    write_labels(tmp_path / "shifted.tif", np.roll(truth, 2, axis=2), spacing=(3.0, 0.8, 0.6))
    rc = main(
        ["eval", "--pred", str(tmp_path / "shifted.tif"), "--truth", str(tmp_path / "truth.tif")]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "class 2: dice" in printed and "hd95 1.2000" in printed
    assert "hd95/asd in physical units, e.g. mm (spacing 3,0.8,0.6)" in printed
    rc = main(
        ["eval", "--pred", str(tmp_path / "truth.tif"), "--truth", str(tmp_path / "truth.tif")]
    )
    assert "hd95/asd in voxels" in capsys.readouterr().out
