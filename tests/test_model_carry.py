"""Issue 12's engine side of the widget: the user data folder and model library, a trio that
continues from image to image (its outline, fit checks and start point), training on several
pairs and predicting a folder through the facade."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_medseg._napari.session import TrainingSession, TrainRequest
from napari_medseg.checkpoints import card_text
from napari_medseg.data.readers import read_labels
from napari_medseg.errors import InputError, OutputError
from napari_medseg.model_library import library_models, library_path
from napari_medseg.training import TrainConfig
from napari_medseg.user_dirs import USER_DATA_ENV, model_library_dir, user_data_dir
from napari_medseg.workflow import Task, Workflow

FAST = dict(
    models=("unet", "unet"),
    preset="lite",
    iterations=2,
    device="cpu",
    batch_size=2,
    patch_size=32,
    preview_every_seconds=None,
)


def _pair(h=40, w=36, shift=0, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(0.2, 0.05, (h, w)).astype(np.float32)
    img[10 + shift : 30 + shift, 10:26] += 0.6
    scr = np.zeros((h, w), np.uint8)
    scr[2:4, 2:30] = 1
    scr[18 + shift : 20 + shift, 14:22] = 2
    return img, scr


def test_user_data_dir_follows_the_environment_and_is_created_only_on_request(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(USER_DATA_ENV, str(tmp_path / "medseg"))
    assert user_data_dir() == tmp_path / "medseg" and not (tmp_path / "medseg").exists()
    assert library_models() == []  # a missing library is an empty one
    assert not (tmp_path / "medseg").exists()
    lib = model_library_dir(create=True)
    assert lib == tmp_path / "medseg" / "models" and lib.is_dir()
    monkeypatch.delenv(USER_DATA_ENV)
    assert user_data_dir().name == "napari-medseg"


def test_library_names_are_safe_file_names(tmp_path, monkeypatch):
    monkeypatch.setenv(USER_DATA_ENV, str(tmp_path))
    assert library_path("cardiac MRI") == tmp_path / "models" / "cardiac MRI.pt"
    assert library_path("a/b:c.pt").name == "a_b_c.pt"
    with pytest.raises(OutputError, match="not a usable model name"):
        library_path(" / ")
    for name in ("b", "A", "c"):
        (tmp_path / "models" / f"{name}.pt").write_bytes(b"")
    (tmp_path / "models" / "notes.txt").write_text("")
    assert [p.stem for p in library_models()] == ["A", "b", "c"]


def test_a_trained_trio_describes_itself_checks_fit_and_carries_to_the_next_image():
    wf = Workflow(Task.named(["background", "square"]))
    list(wf.train([_pair()], TrainConfig(**FAST)))
    outline = wf.outline()
    saved = wf.checkpoint()
    assert outline.card["classes"] == saved.card["classes"]
    assert outline.card["models"] == ["unet", "unet"] and outline.iteration == 2
    assert outline.card["trained_on"]["images"] == 1
    assert all(not s.state_dict for s in outline.slots)  # no weights were copied
    # the in-session model's card does not claim a save that has not happened; a saved one does
    assert "saved:          not yet" in card_text(outline)
    assert "unsaved" not in saved.card and "not yet" not in card_text(saved)
    assert wf.fit_problem(models=("unet", "unet"), num_classes=2, in_channels=1) is None
    assert "2 classes" in wf.fit_problem(num_classes=3)
    assert "RGB" in wf.fit_problem(in_channels=3, image="'photo'")
    assert "models" in wf.fit_problem(models=("unet", "swin_unet"))

    # the next image: a training that starts from the current weights goes on counting
    start = wf.start_point()
    assert start.source == "the current model" and start.iteration == 2
    nxt = Workflow(Task.named(["background", "square"]), base=start)
    list(nxt.train([_pair(48, 44, shift=4, seed=1)], TrainConfig(**{**FAST, "iterations": 1})))
    assert nxt.trainer.iteration == 3
    assert nxt.checkpoint().card["fine_tuned_from"]["images"] == 1


def test_session_trains_several_pairs_and_continues_unless_told_scratch():
    session = TrainingSession()

    def request(pairs, **kw):
        (img, scr), *more = pairs
        args = dict(
            image=img,
            scribbles=scr,
            class_names=["background", "square"],
            models=("unet", "unet"),
            preset="lite",
            device="cpu",
            iterations=1,
            batch_size=2,
            patch_size=32,
            preview_every_seconds=0.0,
            threads=1,
            more=more,
        )
        args.update(kw)
        return TrainRequest(**args)

    two = [_pair(), _pair(48, 44, shift=4, seed=1)]
    assert session.start_text(request(two)) == "from scratch"
    list(session.train(request(two)))
    assert len(session.workflow.inputs) == 2 and session.trainer.iteration == 1
    assert session.workflow.checkpoint().card["trained_on"]["images"] == 2
    # Resume needs the same set of images
    assert "images to train on changed" in session.resume_problem(request(two[:1]))
    # Train on one image continues the trio trained on two
    assert session.start_text(request(two[:1])).startswith("continuing the current model")
    list(session.train(request(two[1:])))
    assert session.trainer.iteration == 2 and len(session.workflow.inputs) == 1
    # a class count the model was not trained for: said before anything runs
    bad = request(two[:1], class_names=["background", "a", "b"])
    problem = session.start_problem(bad, in_channels=1, image="'x'")
    assert "2 classes" in problem and "scratch" in problem
    assert session.start_problem(request(two[:1], start="scratch"), 1, "'x'") is None
    list(session.train(request(two[:1], start="scratch")))
    assert session.trainer.iteration == 1
    assert "unet" in session.model_card() and "model card of the current model" in (
        session.model_card()
    )


def test_predict_folder_is_staged_checked_first_and_stoppable(tmp_path):
    wf = Workflow(Task.named(["background", "square"]))
    list(wf.train([_pair()], TrainConfig(**FAST)))
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        tifffile.imwrite(images / f"case{i}.tif", _pair(36 + 4 * i, 40, seed=i)[0])
    with pytest.raises(InputError, match="holds no image files"):
        next(wf.predict_folder(tmp_path / "empty", tmp_path / "o"))
    with pytest.raises(OutputError, match="would overwrite the input"):
        next(wf.predict_folder(images, images))
    # stopped after the first image: the output folder is not created
    steps = wf.predict_folder(images, tmp_path / "stopped", device="cpu")
    assert next(steps).done == 0 and next(steps).done == 1
    steps.close()
    assert not (tmp_path / "stopped").exists()

    got = list(wf.predict_folder(images, tmp_path / "pred", device="cpu"))
    assert [s.done for s in got] == [0, 1, 2, 2] and got[0].total == 2
    written = got[-1].written
    assert [p.name for p in written] == ["case0.tif", "case1.tif", "review.csv"]
    review = got[-1].review
    assert sorted(r["image"] for r in review) == ["case0.tif", "case1.tif"]
    assert review[0]["agreement"] <= review[1]["agreement"]
    assert (
        (tmp_path / "pred" / "review.csv")
        .read_text()
        .splitlines()[1]
        .startswith(review[0]["image"] + "," + review[0]["prediction"])
    )
    for i, p in enumerate(written[:2]):
        lab = read_labels(p)
        assert lab.shape == (36 + 4 * i, 40) and set(np.unique(lab)) <= {1, 2}
