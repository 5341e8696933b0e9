"""The `napari-medseg` command line: outputs, exit codes and one-line errors."""

from __future__ import annotations

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
    printed = capsys.readouterr().out
    for name in ("ensemble.tif", "unet.tif", "unet_2.tif", "model.pt"):
        assert (out / name).is_file() and name in printed
    ens = read_labels(out / "ensemble.tif")
    assert ens.shape == (2, 40, 36) and ens.dtype == np.uint8
    assert set(np.unique(ens)) <= {1, 3}
    # the prior is kept in label values' indices: value 3 is class index 1
    prior = {"exhaustive_slices": True, "convex": [1], "walls": []}
    assert load_checkpoint(out / "model.pt").shape_prior == prior

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
