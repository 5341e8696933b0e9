"""Issue 12 in the dock widget: the model carries from image to image (zero-shot on another
image, Train continues, several images at once), every open image and a folder are predicted,
and the model library with its cards (run under Xvfb: `xvfb-run -a pytest`)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.gui
if sys.platform.startswith("linux") and not (
    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
):
    pytest.skip("no display: run the GUI tests under xvfb-run", allow_module_level=True)
napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from test_gui_widget import (  # noqa: E402
    TIMEOUT_MS,
    _medseg_labels,
    _messages,
    _tiny_layers,
    _wait_idle,
    _widget,
)

from napari_medseg._napari.panel import TRAIN_ON  # noqa: E402
from napari_medseg._napari.start_from import SCRATCH  # noqa: E402
from napari_medseg._napari.widget import PREDICT_TARGETS  # noqa: E402
from napari_medseg.user_dirs import USER_DATA_ENV  # noqa: E402


@pytest.fixture
def library(tmp_path, monkeypatch):
    monkeypatch.setenv(USER_DATA_ENV, str(tmp_path / "user"))
    return tmp_path / "user" / "models"


def _only_tiny(viewer):
    """The tiny crop and its layers; the full-size sample layers closed (quicker)."""
    img, scr = _tiny_layers(viewer)
    for name in ("MRI T1", "scribbles", "ground truth"):
        viewer.layers.remove(name)
    return img, scr


def _filled(viewer, name):
    return name in viewer.layers and viewer.layers[name].data.min() >= 1


def test_the_model_carries_across_images_and_predicts_every_open_image(
    make_napari_viewer, qtbot, notes, library
):
    viewer = make_napari_viewer()
    img, scr = _only_tiny(viewer)
    w = _widget(viewer, iterations=2)
    w.start_training()
    _wait_idle(qtbot, w)
    trainer = w.session.trainer
    assert trainer.iteration == 2 and w.start_box.start() == "current"
    assert "model card of the current model" in w.start_box.card.toPlainText()
    first = viewer.layers["medseg: ensemble"].data.copy()

    # another image (and its own scribble layer, named as New scribble layer names it)
    viewer.add_image(
        img[:, ::-1].copy(), name="tiny2", metadata=dict(viewer.layers["tiny"].metadata)
    )
    viewer.add_labels(scr[:, ::-1].copy(), name="tiny2 scribbles")
    scribbles_before = {
        n: viewer.layers[n].data.copy() for n in ("tiny scribbles", "tiny2 scribbles")
    }
    w.image_combo.setCurrentText("tiny2")
    assert w.scribble_combo.currentText() == "tiny2 scribbles"
    # its zero-shot prediction appears at once, in its own layers; the model is the same
    qtbot.waitUntil(lambda: _filled(viewer, "medseg: ensemble (tiny2)"), timeout=TIMEOUT_MS)
    _wait_idle(qtbot, w)
    assert w.session.trainer is trainer and trainer.iteration == 2
    assert "zero-shot" in w.status_label.text().lower()
    np.testing.assert_array_equal(viewer.layers["medseg: ensemble"].data, first)
    for name in ("medseg: UNet (tiny2)", "medseg: disagreement (tiny2)"):
        assert viewer.layers[name].data.shape == img.shape

    # Train on the new image continues from the current weights, and says so
    w.iterations_spin.setValue(1)
    w.start_training()
    _wait_idle(qtbot, w)
    assert w.session.trainer.iteration == 3
    assert any("continuing the current model (2 steps" in m for m in _messages(notes, "info"))
    assert w.status_label.text().startswith("Finished"), w.status_label.text()
    np.testing.assert_array_equal(viewer.layers["medseg: ensemble"].data, first)

    # back to the first image: its layers came from the model before that training, so the
    # current model redoes them, with the image's own strokes; the second image's are current
    viewer.layers["medseg: ensemble"].data = np.zeros(img.shape, np.uint8)  # to see it redone
    w.image_combo.setCurrentText("tiny")
    qtbot.waitUntil(lambda: _filled(viewer, "medseg: ensemble"), timeout=TIMEOUT_MS)
    _wait_idle(qtbot, w)
    assert w.status_label.text() == (
        "Updated 'tiny' with the current model (it changed since this image was last "
        "predicted, its strokes kept)."
    )
    tiny2 = viewer.layers["medseg: ensemble (tiny2)"].data.copy()
    viewer.layers["medseg: ensemble (tiny2)"].data = np.zeros(img.shape, np.uint8)
    w.image_combo.setCurrentText("tiny2")
    qtbot.wait(1500)  # the zero-shot timer came due: these layers are the current model's
    _wait_idle(qtbot, w)
    assert not viewer.layers["medseg: ensemble (tiny2)"].data.any()
    viewer.layers["medseg: ensemble (tiny2)"].data = tiny2
    w.image_combo.setCurrentText("tiny")

    # every open image with strokes: both pairs in one training
    w.train_on_combo.setCurrentText(TRAIN_ON[1])
    w.start_training()
    _wait_idle(qtbot, w)
    assert len(w.session.workflow.inputs) == 2 and w.session.trainer.iteration == 4
    assert any("training on 2 image(s)" in m for m in _messages(notes, "info"))

    # Predict on every open image: each image's own layers
    for name in ("medseg: ensemble", "medseg: ensemble (tiny2)"):
        viewer.layers[name].data = np.zeros(img.shape, np.uint8)
    w.predict(PREDICT_TARGETS[3])
    _wait_idle(qtbot, w)
    assert _filled(viewer, "medseg: ensemble") and _filled(viewer, "medseg: ensemble (tiny2)")
    assert w.status_label.text().startswith("Predicted 2 of 2 open image(s)")
    for name, data in scribbles_before.items():  # the user's layers are only read
        assert viewer.layers[name].data.tobytes() == data.tobytes()
    assert not _messages(notes)


def test_no_zero_shot_while_training_one_follows_when_it_ends(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    img, _ = _only_tiny(viewer)
    w = _widget(viewer, iterations=1)
    w.start_training()
    _wait_idle(qtbot, w)
    w.iterations_spin.setValue(100_000)
    w.start_training()
    viewer.add_image(img[:, :, ::-1].copy(), name="other")
    w.image_combo.setCurrentText("other")
    qtbot.wait(1500)  # the zero-shot timer came due while training: nothing ran
    assert w.is_training and "medseg: ensemble (other)" not in viewer.layers
    w.stop_training()
    qtbot.waitUntil(lambda: _filled(viewer, "medseg: ensemble (other)"), timeout=TIMEOUT_MS)
    _wait_idle(qtbot, w)
    assert not _messages(notes)


def test_model_library_cards_and_fit_checks(make_napari_viewer, qtbot, notes, library):
    viewer = make_napari_viewer()
    _only_tiny(viewer)
    w = _widget(viewer, iterations=1)
    assert w.start_box.start() == SCRATCH and "No model yet" in w.start_box.card.toPlainText()
    w.start_training()
    _wait_idle(qtbot, w)
    w.save_to_library("my heart")
    _wait_idle(qtbot, w)
    saved = library / "my heart.pt"
    assert saved.is_file() and w.start_box.library_entries() == [str(saved)]
    from napari_medseg.checkpoints import load_checkpoint

    assert load_checkpoint(saved).card["trained_on"]["images"] == 1  # saved with its card

    # a model whose classes do not fit is refused before anything runs; the card says so
    w.start_box.choose(SCRATCH)
    assert w.start_box.start() == SCRATCH and "scratch" in w.start_box.card.toPlainText()
    w.classes_edit.setText("background, lesion")
    trainer = w.session.trainer
    w.start_box.pick_library_model(saved)
    _wait_idle(qtbot, w)
    assert "4 classes" in _messages(notes)[-1] and "2 class names" in _messages(notes)[-1]
    card = w.start_box.card.toPlainText()
    assert card.startswith("Not loaded") and "model card of the model in my heart.pt" in card
    assert w.session.trainer is trainer and w.session.base is None

    # with the right classes it becomes the current model, card shown
    w.classes_edit.setText("background, CSF, grey matter, white matter")
    notes.clear()
    w.start_box.pick_library_model(saved)
    _wait_idle(qtbot, w)
    assert w.session.base is not None and w.session.trainer is None
    assert w.start_box.start() == "current"
    card = w.start_box.card.toPlainText()
    assert "model card of the model in my heart.pt" in card and "trained on:" in card
    # Train with models the loaded trio does not hold: said before anything runs
    w.set_models(["unet", "unet", "mamba_unet"])
    assert w.start_training() is None and not w.is_busy
    assert "models" in _messages(notes)[-1] and "scratch" in _messages(notes)[-1]
    w.set_models(["unet", "unet", "unet"])
    w.start_training()
    _wait_idle(qtbot, w)
    assert w.session.trainer.iteration == 2
    assert any("fine-tuning my heart.pt" in m for m in _messages(notes, "info"))


def test_predict_a_folder_into_label_files_with_a_progress_bar(
    make_napari_viewer, qtbot, notes, tmp_path, monkeypatch
):
    import tifffile

    import napari_medseg._napari.widget as widget_module
    from napari_medseg.data.readers import read_labels

    viewer = make_napari_viewer()
    img, _ = _only_tiny(viewer)
    w = _widget(viewer, iterations=1)
    w.start_training()
    _wait_idle(qtbot, w)
    folder = tmp_path / "images"
    folder.mkdir()
    for z in range(2):
        tifffile.imwrite(folder / f"slice{z}.tif", img[z])
    bars = []
    original = widget_module.progress

    def recording_progress(*args, **kwargs):
        bar = original(*args, **kwargs)
        bars.append(bar)
        return bar

    monkeypatch.setattr(widget_module, "progress", recording_progress, raising=True)
    before = {la.name for la in viewer.layers}
    w.predict_folder(str(folder), str(tmp_path / "out"))
    _wait_idle(qtbot, w)
    assert [b.total for b in bars] == [2] and bars[0].n == 2
    for z in range(2):
        lab = read_labels(tmp_path / "out" / f"slice{z}.tif")
        assert lab.shape == img.shape[1:] and set(np.unique(lab)) <= {1, 2, 3, 4}
    assert {la.name for la in viewer.layers} == before  # files, not layers
    assert any("wrote 2 label file(s)" in m for m in _messages(notes, "info"))
    assert len((tmp_path / "out" / "review.csv").read_text().splitlines()) == 3  # the rank
    # the image folder itself is refused before any work
    w.predict_folder(str(folder), str(folder))
    _wait_idle(qtbot, w)
    assert "would overwrite the input" in _messages(notes)[-1]
    assert sorted(p.name for p in folder.iterdir()) == ["slice0.tif", "slice1.tif"]
    assert len(_medseg_labels(viewer)) == 4


def test_stop_ends_a_folder_prediction_and_writes_nothing(make_napari_viewer, qtbot, tmp_path):
    import tifffile

    viewer = make_napari_viewer()
    img, _ = _only_tiny(viewer)
    w = _widget(viewer, iterations=1)
    w.start_training()
    _wait_idle(qtbot, w)
    assert not w.stop_btn.isEnabled()
    folder = tmp_path / "images"
    folder.mkdir()
    for z in range(12):
        tifffile.imwrite(folder / f"slice{z:02d}.tif", img[z % img.shape[0]])
    seen = []
    worker = w.predict_folder(str(folder), str(tmp_path / "out"))
    worker.yielded.connect(lambda item: seen.append(item[0]))
    assert w.stop_btn.isEnabled()  # a folder prediction can be stopped
    w.stop_training()
    _wait_idle(qtbot, w)
    assert not (tmp_path / "out").exists()  # stopped: nothing written, no staging left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
    assert not seen or max(seen) < 12
    assert not w.stop_btn.isEnabled()


def test_train_pressed_during_a_zero_shot_starts_right_after_it(
    make_napari_viewer, qtbot, notes, monkeypatch
):
    import threading

    from napari_medseg._napari.session import TrainingSession

    viewer = make_napari_viewer()
    img, scr = _only_tiny(viewer)
    w = _widget(viewer, iterations=1)
    w.start_training()
    _wait_idle(qtbot, w)
    gate = threading.Event()
    predict = TrainingSession.predict

    def gated_predict(self, *args, **kwargs):  # the zero-shot waits until the test says so
        gate.wait(TIMEOUT_MS / 1000)
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(TrainingSession, "predict", gated_predict)
    viewer.add_image(img[:, :, ::-1].copy(), name="other")
    viewer.add_labels(scr[:, :, ::-1].copy(), name="other scribbles")
    w.image_combo.setCurrentText("other")
    qtbot.waitUntil(lambda: w._zero_shot_for == "other", timeout=TIMEOUT_MS)
    assert w.start_training() is None and not w.is_training
    assert "once the prediction of 'other'" in w.status_label.text()
    gate.set()
    qtbot.waitUntil(lambda: w.is_training, timeout=TIMEOUT_MS)
    _wait_idle(qtbot, w)
    assert w.session.trainer.iteration == 2  # it continued the first model, on 'other'
    assert _filled(viewer, "medseg: ensemble (other)")
    assert w.status_label.text().startswith("Finished"), w.status_label.text()
    assert not _messages(notes)
