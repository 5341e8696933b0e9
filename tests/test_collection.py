"""Training across images: dataset folders in three layouts, validation, checkpoints with a
model card, resuming, fine-tuning a base and predicting a folder (issue 12)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
import torch

from napari_medseg.checkpoints import card_text, load_checkpoint
from napari_medseg.cli import main
from napari_medseg.data.collection import DatasetError, open_collection
from napari_medseg.data.readers import read_labels, write_labels
from napari_medseg.training import TrainConfig
from napari_medseg.workflow import Workflow

FAST = ["--batch-size", "2", "--patch-size", "32", "--device", "cpu", "--models", "unet,unet"]


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def scribble_folder(root, n=4, with_labels=True):
    """images/ (grey TIFF) + scribbles/ (1 background, 2 disc, 0 unlabelled) + labels/."""
    rng = np.random.default_rng(0)
    for d in ("images", "scribbles", "labels"):
        (root / d).mkdir(parents=True)
    for i in range(n):
        h, w = 36 + 2 * i, 40  # sizes differ: crops, and the median side sets the scale
        disc = _disc(h, w, h // 2, 20, 8 + i)
        img = rng.normal(0.2, 0.05, (h, w)).astype(np.float32) + 0.6 * disc
        scr = np.zeros((h, w), np.uint8)
        scr[2:4, 2:38] = 1
        scr[h // 2, 16:24] = 2
        tifffile.imwrite(root / "images" / f"case{i}.tif", img)
        tifffile.imwrite(root / "scribbles" / f"case{i}.tif", scr)
        if with_labels:
            tifffile.imwrite(root / "labels" / f"case{i}.tif", (1 + disc).astype(np.uint8))
    return root


def mask_folder(root, n=4):
    """images/ (RGB PNG) + masks/ (0/255 PNG), as Kvasir-SEG ships them."""
    import imageio.v3 as iio

    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        disc = _disc(40, 44, 20, 18 + i, 9)
        img = rng.integers(20, 60, (40, 44, 3), dtype=np.uint8)
        img[disc] = (200, 80 + 10 * i, 60)
        iio.imwrite(root / "images" / f"frame{i}.png", img)
        iio.imwrite(root / "masks" / f"frame{i}.png", (255 * disc).astype(np.uint8))
    return root


def acdc_folder(root, patients=(1, 2, 3)):
    """ACDC-style volumes: two frames per patient, image/label/scribble (4 = unlabelled)."""
    rng = np.random.default_rng(2)
    root.mkdir(parents=True)
    for p in patients:
        for frame in (1, 12):
            label = np.zeros((2, 32, 32), np.uint8)
            label[:, 8:24, 6:14] = 1
            label[:, 10:22, 16:26] = 3
            label[:, 9:23, 15:16] = 2
            image = (0.1 + 0.25 * label + rng.normal(0, 0.03, label.shape)).astype(np.float32)
            scr = np.full(label.shape, 4, np.uint16)
            scr[:, 2, 2:30] = 0
            scr[:, 16, 8:12] = 1
            scr[:, 12:20, 15] = 2
            scr[:, 16, 18:24] = 3
            with h5py.File(root / f"patient{p:03d}_frame{frame:02d}.h5", "w") as f:
                f["image"], f["label"], f["scribble"] = image, label, scr
    return root


LAYOUTS = {
    "scribbles": (scribble_folder, []),
    "masks": (mask_folder, ["--simulate-scribbles"]),
    "acdc": (acdc_folder, []),
}


# ---------------------------------------------------------------------- the reader
def test_layouts_classes_and_a_split_by_patient(tmp_path):
    c = open_collection(scribble_folder(tmp_path / "a"))
    assert (c.layout, c.class_values, c.unlabelled) == ("scribbles", (1, 2), 0)
    assert len(c.items) == 4 and c.has_truth

    m = open_collection(mask_folder(tmp_path / "b"), simulate_scribbles=True)
    # the masks' own values are the classes: predictions compare with them directly
    assert (m.layout, m.class_values, m.unlabelled) == ("masks", (0, 255), 256)
    s = m.read(m.items[0])
    assert s.image.shape == (40, 44, 3) and s.truth.shape == (40, 44)
    drawn = s.scribbles != 256
    assert drawn.any() and np.array_equal(s.scribbles[drawn], s.truth[drawn])
    assert np.array_equal(m.read(m.items[0]).scribbles, s.scribbles)  # seeded
    other = open_collection(tmp_path / "b", simulate_scribbles=True, seed=5)
    assert not np.array_equal(other.read(other.items[0]).scribbles, s.scribbles)

    a = open_collection(acdc_folder(tmp_path / "c"))
    assert (a.layout, a.kind, a.class_values, a.unlabelled) == ("acdc", "stack", (0, 1, 2, 3), 4)
    train, val = a.split(0.34, seed=0)
    assert len(val) == 2 and len(train) == 4
    assert not {it.group for it in train} & {it.group for it in val}  # whole patients


def test_an_acdc_fold_keeps_its_test_patients_out(tmp_path):
    c = open_collection(acdc_folder(tmp_path / "v", patients=(1, 21, 22))).acdc_fold(1)
    assert sorted({it.group for it in c.items}) == ["patient021", "patient022"] and c.fold == 1
    with pytest.raises(DatasetError, match="fold2"):
        c.acdc_fold(2)  # patients 21-40 are fold2's test patients: none left
    with pytest.raises(DatasetError, match="not ACDC"):
        open_collection(scribble_folder(tmp_path / "s")).acdc_fold(1)


def test_train_data_max_side_sets_the_working_resolution(tmp_path):
    """--max-side brings the median longest side (40 px here) to it; the card keeps it."""
    data = scribble_folder(tmp_path / "d")
    runs = {}
    for side in ("20", "0"):
        out = tmp_path / f"run{side}"
        args = ["train", "--data", str(data), "--out", str(out), "--iterations", "1"]
        assert main([*args, "--validate-every", "0", "--max-side", side, *FAST]) == 0
        runs[side] = load_checkpoint(out / "model.pt").working_scale
    assert runs["20"] == pytest.approx(0.5) and runs["0"] == 1.0


def test_train_data_with_a_fold_trains_on_that_folds_patients_only(tmp_path):
    data = acdc_folder(tmp_path / "v", patients=(1, 21, 22, 23))
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--fold", "fold1", "--out", str(out)]
    assert main([*args, "--iterations", "1", "--validate-every", "0", *FAST]) == 0
    trained = load_checkpoint(out / "model.pt").card["trained_on"]
    # patients 21-23 (6 volumes): one held out for validation, patient 1 never seen
    assert trained["acdc_fold"] == 1 and trained["images"] == 4
    assert trained["validation_images"] == 2


def test_the_acdc_protocol_trains_like_a_dataset_and_scores_the_folds_test_patients(
    tmp_path, capsys
):
    """``--dataset acdc`` is ``--data --fold`` (one machinery: card, checkpoints, --resume)
    plus the paper's test scores; its training patients are all trained on."""
    import csv

    data = acdc_folder(tmp_path / "v", patients=(1, 21, 22))
    out = tmp_path / "run"
    args = ["train", "--dataset", "acdc", "--data", str(data), "--out", str(out)]
    assert main([*args, "--iterations", "2", "--validate-every", "0", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "fold1 test patients: 2 volume(s)" in printed and "mean HD95" in printed
    card = load_checkpoint(out / "model.pt").card
    trained = card["trained_on"]
    assert trained["protocol"] == "acdc" and trained["acdc_fold"] == 1
    assert trained["images"] == 4 and trained["validation_images"] == 0  # all of 21, 22
    assert card["run"]["steps"] == 2
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # patient001 only (fold1's test patient), both frames, RV/Myo/LV, two slots + ensemble
    assert {r["case"] for r in rows} == {"patient001_frame01", "patient001_frame12"}
    assert {r["class"] for r in rows} == {"1", "2", "3"}
    assert {r["model"] for r in rows} == {"unet", "unet_2", "ensemble"}
    assert len(rows) == 2 * 3 * 3 and all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)

    # resuming the protocol run goes on to its budget and scores the test patients again
    (out / "metrics.csv").unlink()
    resume = ["train", "--resume", str(out), "--iterations", "3", "--validate-every", "0"]
    assert main([*resume, "--device", "cpu"]) == 0
    assert load_checkpoint(out / "model.pt").card["run"]["steps"] == 3
    assert (out / "metrics.csv").is_file()


def test_the_acdc_protocol_needs_its_test_patients_before_training(tmp_path):
    data = acdc_folder(tmp_path / "v", patients=(21, 22))
    args = ["train", "--dataset", "acdc", "--data", str(data), "--out", str(tmp_path / "o")]
    assert main([*args, "--iterations", "1", *FAST]) == 2
    assert not (tmp_path / "o").exists()


def test_split_json_keeps_test_stems_out(tmp_path):
    root = mask_folder(tmp_path / "k", n=5)
    (root / "split.json").write_text('{"train": ["frame0", "frame1", "frame2"], "test": ["x"]}')
    c = open_collection(root, simulate_scribbles=True)
    assert [it.name for it in c.items] == ["frame0", "frame1", "frame2"] and c.test_stems == 1


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda p: p.mkdir(), {}, "is not a dataset folder: expected one of"),
        (lambda p: (p / "images").mkdir(parents=True), {}, "holds no image files"),
        (lambda p: mask_folder(p), {}, "pass --simulate-scribbles"),
        (
            lambda p: (mask_folder(p), (p / "masks").rename(p / "other")),
            {},
            "neither 'scribbles/' nor 'masks/'",
        ),
        (
            lambda p: (
                scribble_folder(p),
                [f.rename(f.with_name("x" + f.name)) for f in (p / "scribbles").iterdir()],
            ),
            {},
            "no file stem occurs in both 'images/' and 'scribbles/'",
        ),
    ],
)
def test_bad_folders_name_the_folder_and_what_was_expected(tmp_path, make, kwargs, message):
    folder = tmp_path / "data"
    make(folder)
    with pytest.raises(DatasetError, match="data") as e:
        open_collection(folder, **kwargs)
    assert message in str(e.value)


def test_h5_volumes_without_scribbles_say_so(tmp_path):
    root = tmp_path / "v"
    root.mkdir()
    with h5py.File(root / "patient001_frame01.h5", "w") as f:
        f["image"] = np.zeros((2, 16, 16), np.float32)
        f["label"] = np.zeros((2, 16, 16), np.uint8)
    with pytest.raises(DatasetError, match="no 'scribble' dataset.*--simulate-scribbles"):
        open_collection(root)
    assert open_collection(root, simulate_scribbles=True).items[0].scribbles is None


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_trains_validates_and_writes_a_card(tmp_path, capsys, layout):
    make, flags = LAYOUTS[layout]
    data = make(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--iterations", "2"]
    assert main([*args, "--val-fraction", "0.3", "--validate-every", "0", *flags, *FAST]) == 0
    err = capsys.readouterr().err
    assert "validation Dice" in err and "ETA" in err
    ckpt = load_checkpoint(out / "model.pt")
    card = ckpt.card
    assert card["trained_on"]["dataset"] == "data" and card["trained_on"]["layout"] == layout
    assert card["trained_on"]["images"] + card["trained_on"]["validation_images"] in (4, 6)
    assert card["trained_on"]["scribbled_pixels"] > 0
    assert 0.0 <= card["validation"]["dice"] <= 1.0 and card["validation"]["images"] >= 1
    # the walker on the validation files' own strokes, beside: what a base must beat
    assert 0.0 <= card["validation"]["walker"] <= 1.0 and "walker on their strokes" in err
    assert card["run"]["steps"] == 2 and card["models"] == ["unet", "unet"]
    assert [c["value"] for c in card["classes"]] == list(ckpt.classes.values)
    assert card["image"]["channels"] == (3 if layout == "masks" else 1)

    assert main(["info", str(out / "model.pt")]) == 0
    printed = capsys.readouterr().out
    assert "validation:     Dice" in printed and "trained on:" in printed and layout in printed
    assert f"random walker on the same files' strokes: {card['validation']['walker']:.4f}" in (
        printed
    )


def test_dataset_trainer_keeps_only_working_resolution_copies(tmp_path):
    c = open_collection(scribble_folder(tmp_path / "a"))
    wf = Workflow()
    cfg = TrainConfig(models=("unet",), iterations=1, device="cpu", max_side=20)
    wf.prepare_dataset(c, cfg, val_fraction=0.0)
    t = wf.trainer
    assert t._native_images is None
    sides = sorted(max(it.shape) for it in c.items)
    assert t.scale == pytest.approx(20 / sides[len(sides) // 2])  # the median side fits
    assert all(max(im.shape[-2:]) <= round(max(sides) * t.scale) for im in t._images)
    assert t.config.augment is True and cfg.augment is None  # the dataset recipe, in a copy


def test_a_saved_trio_predicts_what_its_trainer_predicts(tmp_path):
    """No validation before the save: the checkpoint must still hold BatchNorm statistics of
    its weights, not the running averages that remember the initial ones."""
    c = open_collection(scribble_folder(tmp_path / "a"))
    wf = Workflow()
    cfg = TrainConfig(models=("unet", "unet"), iterations=3, device="cpu", batch_size=2)
    wf.prepare_dataset(c, cfg, val_fraction=0.0)
    for _ in wf.train_dataset(save_to=tmp_path / "run" / "model.pt", validate_every=0):
        pass
    image = c.read(c.items[1], scribbles=False, truth=False).image
    loaded = Workflow.load(tmp_path / "run" / "model.pt").predict(image, device="cpu")
    trained = wf.predict(image)
    for key in trained.labels:
        np.testing.assert_array_equal(loaded.labels[key], trained.labels[key])
    np.testing.assert_array_equal(loaded.ensemble, trained.ensemble)


def test_predicting_many_images_between_steps_estimates_batchnorm_once(tmp_path):
    c = open_collection(scribble_folder(tmp_path / "a"))
    wf = Workflow()
    wf.prepare_dataset(
        c, TrainConfig(models=("unet",), iterations=1, device="cpu"), val_fraction=0.5
    )
    calls = []
    sample = wf.trainer._sample_batch
    wf.trainer._sample_batch = lambda *a, **k: calls.append(1) or sample(*a, **k)
    first = wf.validate()
    n = len(calls)
    second = wf.validate()
    assert n > 0 and len(calls) == n  # the second validation drew no batch
    assert first.dice == second.dice


def test_an_interrupted_run_resumes_where_its_checkpoint_left_it(tmp_path, capsys):
    data = acdc_folder(tmp_path / "data")
    run = tmp_path / "run"
    c = open_collection(data)
    cfg = TrainConfig(models=("unet",), iterations=5, device="cpu", batch_size=2)
    wf = Workflow()
    wf.prepare_dataset(c, cfg, val_fraction=0.34)
    for upd in wf.train_dataset(save_to=run / "model.pt", validate_every=0):
        if upd.run_step == 2:
            wf.request_stop()  # what Ctrl-C does in the CLI
    saved = load_checkpoint(run / "model.pt")
    assert saved.card["run"]["steps"] == 2 and saved.iteration == 2
    assert all(s.optimizer for s in saved.slots)

    # the resumed trio starts from the saved weights and optimiser states
    again = Workflow(base=saved)
    again.prepare_dataset(c, TrainConfig.from_dict(saved.config), val_fraction=0.34, resume=True)
    model = again.trainer.models["unet"]
    for k, v in model.state_dict().items():
        assert torch.equal(v.cpu(), saved.slots[0].state_dict[k]), k
    assert again.trainer.iteration == 2

    # the CLI: --resume RUN goes on to the run's budget (5 steps), on the same split
    assert main(["train", "--resume", str(run), "--device", "cpu", "--validate-every", "0"]) == 0
    assert "resuming unet" in capsys.readouterr().err
    done = load_checkpoint(run / "model.pt")
    assert done.iteration == 5 and done.card["run"]["steps"] == 5
    assert done.card["trained_on"]["split_seed"] == 0
    assert done.card["validation"]["images"] == 2  # the same held-out patient


def test_fine_tuned_base_predicts_a_folder_and_eval_takes_folders(tmp_path, capsys):
    data = scribble_folder(tmp_path / "data")
    base = tmp_path / "base"
    args = ["train", "--data", str(data), "--out", str(base), "--iterations", "3"]
    assert main([*args, "--validate-every", "0", *FAST]) == 0
    base_ckpt = load_checkpoint(base / "model.pt")

    # fine-tune on one image: the base's weights are the start, not a fresh initialisation
    ft = tmp_path / "ft"
    args = ["train", "--checkpoint", str(base / "model.pt"), "--out", str(ft)]
    args += ["--image", str(data / "images" / "case0.tif")]
    args += ["--scribbles", str(data / "scribbles" / "case0.tif"), "--iterations", "1"]
    assert main([*args, "--batch-size", "2", "--device", "cpu"]) == 0
    tuned = load_checkpoint(ft / "model.pt")
    assert tuned.iteration == base_ckpt.iteration + 1
    assert tuned.card["fine_tuned_from"]["dataset"] == "data"
    assert tuned.card["trained_on"]["images"] == 1
    from napari_medseg.models import create_model

    fresh = create_model("unet", 1, 2, tuned.preset).state_dict()
    w_base, w_tuned = base_ckpt.slots[0].state_dict, tuned.slots[0].state_dict
    key = next(k for k in w_base if k.endswith("weight") and w_base[k].ndim == 4)
    to_base = (w_tuned[key] - w_base[key]).norm()
    to_fresh = (w_tuned[key] - fresh[key]).norm()
    assert to_base < 0.5 * to_fresh

    # predict a whole folder: one <stem>.tif per image, and a summary
    pred = tmp_path / "pred"
    capsys.readouterr()
    args = ["predict", "--checkpoint", str(ft / "model.pt"), "--image", str(data / "images")]
    assert main([*args, "--out", str(pred), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "predicted 4 image(s)" in out
    for i in range(4):
        lab = read_labels(pred / f"case{i}.tif")
        assert lab.shape == (36 + 2 * i, 40) and set(np.unique(lab)) <= {1, 2}
    # review.csv ranks the four images, lowest agreement first; the summary names the first
    import csv

    with open(pred / "review.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == [f"case{i}.tif" for i in range(4)]
    agreement = [float(r["agreement"]) for r in rows]
    assert agreement == sorted(agreement) and all(0.0 <= a <= 1.0 for a in agreement)
    assert f"the networks agree least on: {rows[0]['image']}" in out
    # into the image folder itself: refused before any work, the images untouched
    import hashlib

    def digest(folder):
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}

    before = digest(data / "images")
    args = ["predict", "--checkpoint", str(ft / "model.pt"), "--image", str(data / "images")]
    assert main([*args, "--out", str(data / "images"), "--device", "cpu"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert digest(data / "images") == before

    # eval matches the two folders by stem; a perfect copy scores 1
    perfect = tmp_path / "perfect"
    for i in range(3):
        write_labels(perfect / f"case{i}.tif", read_labels(data / "labels" / f"case{i}.tif"))
    assert main(["eval", "--pred", str(perfect), "--truth", str(data / "labels")]) == 0
    res = capsys.readouterr()
    assert "class 2: dice 1.0000" in res.out and "1 labels without a partner" in res.err
    assert main(["eval", "--pred", str(pred), "--truth", str(data / "labels")]) == 0


def test_every_checkpoint_has_a_card_and_old_files_still_print(tmp_path, capsys):
    data = scribble_folder(tmp_path / "data", n=1)
    out = tmp_path / "one"
    args = ["train", "--image", str(data / "images" / "case0.tif"), "--out", str(out)]
    args += ["--scribbles", str(data / "scribbles" / "case0.tif"), "--iterations", "1"]
    assert main([*args, *FAST]) == 0
    ckpt = load_checkpoint(out / "model.pt")
    drawn = int((read_labels(data / "scribbles" / "case0.tif") > 0).sum())
    assert ckpt.card["trained_on"] == {"dataset": None, "images": 1, "scribbled_pixels": drawn}
    assert ckpt.card["validation"] is None and ckpt.card["version"]
    ckpt.card = {}
    assert "saved without a card" in card_text(ckpt)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "nothing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
