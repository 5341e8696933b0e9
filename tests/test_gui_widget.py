"""The dock widget in a real napari viewer (pytest-qt, run under Xvfb: `xvfb-run -a pytest`).

Tiny on purpose: a 2×64×54 crop of the MRI sample (every third pixel), three lite UNets (the
reference selective scan makes MambaUNet slow on a CPU), batch 2, patch 32.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.gui
if sys.platform.startswith("linux") and not (
    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
):
    # Qt aborts the whole process without a display: run these under `xvfb-run -a pytest`
    pytest.skip("no display: run the GUI tests under xvfb-run", allow_module_level=True)
napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_medseg._napari.widget import PREDICT_TARGETS, MedSegWidget  # noqa: E402

TIMEOUT_MS = 240_000  # generous: the CI machine may be shared


def _messages(notes, severity="error"):
    return [m for s, m in notes if severity in s]


def _tiny_layers(viewer):
    """Opens the MRI sample through the npe2 contribution and adds a tiny crop of it."""
    viewer.open_sample("napari-medseg", "mri")
    names = [layer.name for layer in viewer.layers]
    assert names == ["MRI T1", "scribbles", "ground truth"]
    img = viewer.layers["MRI T1"].data[1:3, ::3, ::3].copy()
    scr = viewer.layers["scribbles"].data[1:3, ::3, ::3].copy()
    truth = viewer.layers["ground truth"].data[1:3, ::3, ::3].copy()
    meta = dict(viewer.layers["MRI T1"].metadata)
    viewer.add_image(img, name="tiny", metadata=meta)
    viewer.add_labels(scr, name="tiny scribbles")
    viewer.add_labels(truth, name="tiny truth")
    return img, scr


def _widget(viewer, iterations=3):
    w = MedSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image_combo.setCurrentText("tiny")
    w.scribble_combo.setCurrentText("tiny scribbles")
    w.set_models(["unet", "unet", "unet"])
    w.preset_combo.setCurrentText("lite")
    w.device_combo.setCurrentText("cpu")
    w.iterations_spin.setValue(iterations)
    w.batch_spin.setValue(2)
    w.patch_spin.setValue(32)
    return w


def _wait_idle(qtbot, w, timeout=TIMEOUT_MS):
    qtbot.waitUntil(lambda: not w.is_busy and not w.layers_pending, timeout=timeout)


def _medseg_labels(viewer):
    from napari.layers import Labels

    return [la for la in viewer.layers if la.name.startswith("medseg: ") and isinstance(la, Labels)]


def test_sample_and_widget_defaults(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medseg", "mri")
    w = MedSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.image_combo.currentText() == "MRI T1"
    assert w.scribble_combo.currentText() == "scribbles"
    assert [c.currentText() for c in w.slot_combos] == ["UNet", "SwinUNet", "MambaUNet"]
    assert w.class_names() == ["background", "CSF", "grey matter", "white matter"]
    from napari_medseg.models import list_models

    assert w.slot_combos[0].count() == len(list_models())
    assert w.preset_combo.currentText() in ("lite", "paper")
    # a new scribble layer matches the image (spatial shape, scale) and is empty
    layer = w.new_scribble_layer()
    assert layer.data.shape == viewer.layers["MRI T1"].data.shape
    assert tuple(layer.scale) == tuple(viewer.layers["MRI T1"].scale)
    assert layer.data.max() == 0
    # an RGB image switches the default classes
    viewer.open_sample("napari-medseg", "rgb")
    w.classes_edit.setText("background, RV, Myo, LV")
    w.image_combo.setCurrentText("Dermoscopy")
    assert w.class_names() == ["background", "lesion"]


def test_train_live_stop_save_load_finetune(make_napari_viewer, qtbot, notes, tmp_path):
    viewer = make_napari_viewer()
    img, _ = _tiny_layers(viewer)
    w = _widget(viewer, iterations=100_000)
    w.truth_combo.setCurrentText("tiny truth")
    scr_layer = viewer.layers["tiny scribbles"]
    before = scr_layer.data.copy()

    w.start_training()
    assert w.is_training and not w.train_btn.isEnabled() and w.stop_btn.isEnabled()

    def stack_prediction_shown():  # the first preview covers one slice, the next all of them
        ens = w.prediction_layers.get("medseg: ensemble", napari.layers.Labels)
        return ens is not None and ens.data.min() > 0 and not w.layers_pending

    qtbot.waitUntil(stack_prediction_shown, timeout=TIMEOUT_MS)
    names = {la.name for la in _medseg_labels(viewer)}
    assert names == {"medseg: UNet", "medseg: UNet 2", "medseg: UNet 3", "medseg: ensemble"}
    for la in _medseg_labels(viewer):
        assert la.data.shape == img.shape and la.data.dtype == np.uint8
        assert set(np.unique(la.data)) <= {1, 2, 3, 4}
    dis = viewer.layers["medseg: disagreement"].data
    assert dis.shape == img.shape and 0.0 <= dis.min() and dis.max() <= 1.0
    assert scr_layer.data.tobytes() == before.tobytes()  # untouched while training

    # the user keeps drawing: a stroke of class value 3 is picked up by the next steps
    scr_layer.brush_size = 3
    scr_layer.paint((0, 5, 5), 3)
    drawn = scr_layer.data.copy()
    qtbot.waitUntil(lambda: w.session.trainer._native_seeds[0][0, 5, 5] == 2, timeout=TIMEOUT_MS)

    t0 = time.perf_counter()
    w.stop_training()
    _wait_idle(qtbot, w)
    stop_seconds = time.perf_counter() - t0
    assert stop_seconds < 60, f"Stop took {stop_seconds:.1f} s"
    # after Stop no further step runs, and the status line says so
    assert w.status_label.text().startswith("Stopped — iteration"), w.status_label.text()
    it_after_stop = w.session.trainer.iteration
    qtbot.wait(500)
    assert w.session.trainer.iteration == it_after_stop and not w.is_training
    assert w.status_label.text().startswith("Stopped — iteration")
    assert scr_layer.data.dtype == drawn.dtype
    assert scr_layer.data.tobytes() == drawn.tobytes()  # the plugin never wrote to it
    assert not _messages(notes)

    # predict the whole stack with the trained trio, then save, load and predict again
    w.predict(PREDICT_TARGETS[1])
    _wait_idle(qtbot, w)
    trained = {la.name: la.data.copy() for la in _medseg_labels(viewer)}
    assert w.last_metrics and {r["model"] for r in w.last_metrics} >= {"ensemble", "unet"}
    assert all(0.0 <= r["dice"] <= 1.0 for r in w.last_metrics)
    path = tmp_path / "trio.pt"
    w.save_model(str(path))
    _wait_idle(qtbot, w)
    assert path.is_file()
    assert any("saved" in m for m in _messages(notes, "info"))
    iteration = w.session.trainer.iteration

    w.load_model(str(path))
    _wait_idle(qtbot, w)
    assert w.session.trainer is None and w.session.base is not None
    viewer.layers["medseg: ensemble"].data = np.zeros(img.shape, np.uint8)
    w.predict(PREDICT_TARGETS[1])
    _wait_idle(qtbot, w)
    for la in _medseg_labels(viewer):
        np.testing.assert_array_equal(la.data, trained[la.name])

    # current slice only: the other slice keeps what was there
    viewer.layers["medseg: ensemble"].data = np.zeros(img.shape, np.uint8)
    viewer.dims.set_current_step(0, 1)
    w.predict(PREDICT_TARGETS[0])
    _wait_idle(qtbot, w)
    ens = viewer.layers["medseg: ensemble"].data
    assert ens[0].max() == 0
    np.testing.assert_array_equal(ens[1], trained["medseg: ensemble"][1])

    # another image layer gets its own prediction layers
    viewer.add_image(img[:, ::-1].copy(), name="other")
    w.other_image_combo.setCurrentText("other")
    w.predict(PREDICT_TARGETS[2])
    _wait_idle(qtbot, w)
    assert viewer.layers["medseg: ensemble (other)"].data.shape == img.shape

    # Train after Load fine-tunes the loaded weights
    w.iterations_spin.setValue(1)
    w.start_training()
    _wait_idle(qtbot, w)
    assert w.session.trainer is not None and w.session.trainer.iteration == iteration + 1
    assert any("fine-tuning" in m for m in _messages(notes, "info"))
    assert not _messages(notes)
    assert scr_layer.data.tobytes() == drawn.tobytes()


def test_train_creates_empty_layers_then_previews_the_slice_on_screen(
    make_napari_viewer, qtbot, notes, monkeypatch
):
    """Train adds the (empty) prediction layers before the first step, leaving the scribble
    layer active; the first preview is the slice on screen, the whole stack comes later."""
    import threading

    from napari_medseg.training import TriNetTrainer

    gate = threading.Event()
    steps = TriNetTrainer.steps

    def gated_steps(self, *args, **kwargs):  # no step before the test says so
        gate.wait(TIMEOUT_MS / 1000)
        yield from steps(self, *args, **kwargs)

    monkeypatch.setattr(TriNetTrainer, "steps", gated_steps)
    viewer = make_napari_viewer()
    img, _ = _tiny_layers(viewer)
    w = _widget(viewer, iterations=100_000)
    w.preview_spin.setValue(600.0)  # only the first preview comes before Stop
    scr_layer = viewer.layers["tiny scribbles"]
    viewer.layers.selection.active = scr_layer
    viewer.dims.set_current_step(0, 1)
    z = w._current_slice(viewer.layers["tiny"])
    assert z == 1
    w.start_training()
    expected = {"medseg: UNet", "medseg: UNet 2", "medseg: UNet 3", "medseg: ensemble"}

    def layers_ready():
        names = {la.name for la in viewer.layers}
        return expected <= names and "medseg: disagreement" in names and not w.layers_pending

    qtbot.waitUntil(layers_ready, timeout=TIMEOUT_MS)
    assert w.session.trainer.iteration == 0 and w.is_training
    import gc

    assert gc.get_freeze_count() > 0  # full collections skip the viewer's heap while training
    assert {la.name for la in _medseg_labels(viewer)} == expected
    for la in _medseg_labels(viewer):
        assert la.data.shape == img.shape and la.data.max() == 0
        assert la.visible == (la.name == "medseg: ensemble")
    assert viewer.layers["medseg: disagreement"].data.shape == img.shape
    assert viewer.layers.selection.active is scr_layer  # the user keeps drawing scribbles
    # the label-editing overlays come with the first editing tool (napari's _overlays)
    ens_layer = viewer.layers["medseg: ensemble"]
    assert not ens_layer._overlays["brush_stroke"].visible
    ens_layer.mode = "paint"
    assert ens_layer._overlays["brush_stroke"].visible and ens_layer._overlays["polygon"].visible
    ens_layer.mode = "pan_zoom"

    gate.set()
    # the walker's answer fills the ensemble first, the networks' layers follow after a step
    qtbot.waitUntil(
        lambda: all(la.data.max() > 0 for la in _medseg_labels(viewer)) and not w.layers_pending,
        timeout=TIMEOUT_MS,
    )
    for la in _medseg_labels(viewer):
        assert la.data[z].min() >= 1 and la.data[1 - z].max() == 0, la.name
    assert viewer.layers["medseg: disagreement"].data[1 - z].max() == 0
    assert viewer.layers.selection.active is scr_layer
    w.stop_training()
    _wait_idle(qtbot, w)
    assert gc.get_freeze_count() == 0  # and are collectable again once it ends
    assert w.status_label.text().startswith("Stopped — iteration"), w.status_label.text()
    assert ens_layer.data[1 - z].max() == 0  # a stopped run ends without a new prediction
    assert not _messages(notes)


def test_prediction_layers_are_made_before_train_and_follow_the_slots(
    make_napari_viewer, qtbot, notes
):
    """Once an image and its scribbles are chosen the empty prediction layers exist, so Train
    creates none (layer creation was the longest GUI freeze); a slot change renames its empty
    layer; choosing another image never drops a result."""
    from napari_medseg._napari.layer_manager import PLACEHOLDER

    viewer = make_napari_viewer()
    img, _ = _tiny_layers(viewer)
    w = _widget(viewer, iterations=2)
    expected = {"medseg: UNet", "medseg: UNet 2", "medseg: UNet 3", "medseg: ensemble"}

    def made(names):
        have = {la.name for la in _medseg_labels(viewer)}
        return have == names and "medseg: disagreement" in viewer.layers and not w.layers_pending

    qtbot.waitUntil(lambda: made(expected), timeout=TIMEOUT_MS)
    for la in _medseg_labels(viewer):
        assert la.data.shape == img.shape and la.data.max() == 0 and la.metadata[PLACEHOLDER]
    assert viewer.layers.selection.active.name == "tiny truth"  # not a prediction layer

    w.set_models(["unet", "mamba_unet", "unet"])
    renamed = {"medseg: UNet", "medseg: MambaUNet", "medseg: UNet 2", "medseg: ensemble"}
    qtbot.waitUntil(lambda: made(renamed), timeout=TIMEOUT_MS)
    w.set_models(["unet", "unet", "unet"])
    qtbot.waitUntil(lambda: made(expected), timeout=TIMEOUT_MS)
    before = {la.name: la for la in _medseg_labels(viewer)}

    inserted = []
    viewer.layers.events.inserted.connect(lambda e: inserted.append(e.value.name))
    w.start_training()
    _wait_idle(qtbot, w)
    assert inserted == []  # Train only wrote into the layers made beforehand
    for la in _medseg_labels(viewer):
        assert la is before[la.name] and la.data.min() >= 1 and not la.metadata.get(PLACEHOLDER)
    result = viewer.layers["medseg: ensemble"].data.copy()

    # another image: its own layers (the trained model's zero-shot prediction), the results
    # of the first stay as they are
    w.image_combo.setCurrentText("MRI T1")
    w.scribble_combo.setCurrentText("scribbles")
    own = {f"{name} (MRI T1)" for name in (*expected, "medseg: disagreement")}
    qtbot.waitUntil(lambda: set(inserted) == own, timeout=TIMEOUT_MS)
    _wait_idle(qtbot, w)
    assert viewer.layers["medseg: ensemble (MRI T1)"].data.min() >= 1
    np.testing.assert_array_equal(viewer.layers["medseg: ensemble"].data, result)
    assert not _messages(notes)


def test_prediction_layers_are_updated_in_place(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((2, 16, 12), np.float32), name="img")
    w = MedSegWidget(viewer)
    name = "medseg: test"

    def full(value):
        return np.full((2, 16, 12), value, np.uint8)

    w.prediction_layers.set_labels(name, full(1), image, 4, False, None)
    layer = viewer.layers[name]
    arr = layer.data
    data_events, refreshes = [], []
    layer.events.data.connect(data_events.append)
    refresh = layer.refresh
    layer.refresh = lambda *a, **k: (refreshes.append(1), refresh(*a, **k))
    w.prediction_layers.set_labels(name, full(2), image, 4, False, None)
    assert layer.data is arr and (arr == 2).all()
    assert not data_events and len(refreshes) == 1
    w.prediction_layers.set_labels(
        name, full(2), image, 4, False, None
    )  # unchanged: nothing to redraw
    assert len(refreshes) == 1
    w.prediction_layers.set_labels(name, full(3)[0], image, 4, False, 1)  # one slice
    assert layer.data is arr and (arr[1] == 3).all() and (arr[0] == 2).all()
    assert not data_events
    # a layer of another shape is replaced by one that matches the image
    layer.data = np.zeros((2, 8, 8), np.uint8)
    w.prediction_layers.set_labels(name, full(1), image, 4, False, None)
    assert viewer.layers[name].data.shape == (2, 16, 12)
    # the disagreement image too
    w.prediction_layers.set_disagreement(
        "medseg: dis", np.zeros((2, 16, 12), np.float32), image, None
    )
    dis = viewer.layers["medseg: dis"]
    before = dis.data
    w.prediction_layers.set_disagreement(
        "medseg: dis", np.full((16, 12), 0.5, np.float32), image, 0
    )
    assert dis.data is before and (before[0] == 0.5).all() and (before[1] == 0).all()
    assert dis.contrast_limits == [0.0, 1.0]


def test_rgb_image_trains_to_2d_layers(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medseg", "rgb")
    img = viewer.layers["Dermoscopy"].data[::4, ::4].copy()
    scr = viewer.layers["scribbles"].data[::4, ::4].copy()
    viewer.add_image(img, name="tiny", rgb=True)
    viewer.add_labels(scr, name="tiny scribbles")
    w = _widget(viewer, iterations=2)
    assert w.class_names() == ["background", "lesion"]
    w.max_side_spin.setValue(32)  # train at half size; layers still come back full size
    w.start_training()
    _wait_idle(qtbot, w)
    assert w.status_label.text().startswith("Finished — iteration 2/2")
    assert w.session.trainer.scale == pytest.approx(0.5)
    assert not _messages(notes), notes
    assert len(_medseg_labels(viewer)) == 4
    for la in _medseg_labels(viewer):
        assert la.data.shape == img.shape[:2]
        assert set(np.unique(la.data)) <= {1, 2}
    assert viewer.layers["tiny scribbles"].data.tobytes() == scr.tobytes()


def test_dicom_series_opens_with_its_spacing_and_trains(make_napari_viewer, qtbot, notes, tmp_path):
    """A DICOM folder through the plugin's reader: one volume at the headers' scale, trainable,
    and evaluated with distances in mm (the layer scale reaches the metrics)."""
    pytest.importorskip("pydicom")
    from dicom_files import write_series

    from napari_medseg._napari.session import evaluate_labels

    rng = np.random.default_rng(0)
    vol = rng.normal(300, 20, (3, 40, 36)).clip(0).astype(np.uint16)
    vol[:, 10:30, 10:26] += 400
    write_series(tmp_path / "series", vol, spacing=(3.0, 0.8, 0.6), order=[2, 0, 1])
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "series"), plugin="napari-medseg")
    (layer,) = viewer.layers
    assert layer.name == "series" and layer.data.shape == (3, 40, 36)
    np.testing.assert_array_equal(layer.data, vol)
    assert tuple(layer.scale) == pytest.approx((3.0, 0.8, 0.6))

    w = MedSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image_combo.setCurrentText("series")
    scr_layer = w.new_scribble_layer()
    assert tuple(scr_layer.scale) == pytest.approx((3.0, 0.8, 0.6))
    scr = np.zeros(vol.shape, np.uint8)
    scr[:, 2:4, 2:30] = 1
    scr[:, 18:20, 14:22] = 2
    scr_layer.data = scr
    truth = np.ones(vol.shape, np.uint8)
    truth[:, 10:30, 10:26] = 2
    viewer.add_labels(truth, name="truth", scale=layer.scale)
    w.scribble_combo.setCurrentText(scr_layer.name)
    w.truth_combo.setCurrentText("truth")
    w.classes_edit.setText("background, square")
    w.set_models(["unet", "unet", "unet"])
    w.preset_combo.setCurrentText("lite")
    w.device_combo.setCurrentText("cpu")
    w.iterations_spin.setValue(2)
    w.batch_spin.setValue(2)
    w.patch_spin.setValue(32)
    w.start_training()
    _wait_idle(qtbot, w)
    assert w.status_label.text().startswith("Finished — iteration 2/2"), w.status_label.text()
    assert not _messages(notes), notes
    for la in _medseg_labels(viewer):
        assert la.data.shape == vol.shape
        assert tuple(la.scale) == pytest.approx((3.0, 0.8, 0.6))

    # a known prediction: the truth moved 2 columns right, i.e. 2 x 0.6 mm
    viewer.layers["medseg: ensemble"].data = np.roll(truth, 2, axis=2)
    w.evaluate()
    _wait_idle(qtbot, w)
    (shown,) = [r for r in w.last_metrics if r["model"] == "ensemble"]
    assert shown["hd95"] == pytest.approx(1.2)
    in_voxels = evaluate_labels({"e": np.roll(truth, 2, axis=2)}, truth, ["background", "square"])
    assert in_voxels[0]["hd95"] == pytest.approx(2.0)


# ---------------------------------------------------------------- errors → notifications
def _assert_error(notes, *words):
    errors = _messages(notes)
    assert errors, f"no error notification (got {notes})"
    text = errors[-1].lower()
    for word in words:
        assert word.lower() in text, text


def test_error_no_image(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    w = MedSegWidget(viewer)
    assert w.start_training() is None
    _assert_error(notes, "no image")
    w.new_scribble_layer()
    _assert_error(notes, "select an image layer")
    w.predict()
    _assert_error(notes, "no model")
    w.save_model("unused.pt")
    _assert_error(notes, "no model to save")


def test_the_classical_answer_box_reaches_the_training_request(make_napari_viewer):
    viewer = make_napari_viewer()
    _tiny_layers(viewer)
    w = _widget(viewer)
    assert w.classifier_check.isChecked()  # on by default, as in the engine
    request, _, _ = w._train_request()
    assert request.classifier is True
    w.classifier_check.setChecked(False)
    request, _, _ = w._train_request()
    assert request.classifier is False


def test_error_cardiac_prior_without_lv_and_myo_classes(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    _tiny_layers(viewer)
    w = _widget(viewer)
    w.classes_edit.setText("background, tumour")
    w.prior_combo.setCurrentIndex(w.prior_combo.findData("cardiac"))
    assert w.start_training() is None
    _assert_error(notes, "named 'LV'", "choose no prior")
    assert not w.is_busy


def test_error_no_scribble_layer_and_shape_mismatch(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    w = MedSegWidget(viewer)
    w.start_training()
    _assert_error(notes, "no scribble layer", "new scribble layer")
    viewer.add_labels(np.zeros((30, 32), np.uint8), name="scribbles")
    w.scribble_combo.setCurrentText("scribbles")
    w.start_training()
    _assert_error(notes, "shape mismatch", "new scribble layer")
    assert not w.is_busy


@pytest.mark.parametrize(
    "case, words",
    [
        ("empty", ("no labelled pixels",)),
        ("one_class", ("one class only",)),
        ("unknown_value", ("not among the classes",)),
    ],
)
def test_error_bad_scribbles(make_napari_viewer, qtbot, notes, case, words):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((32, 32)).astype(np.float32), name="img")
    scr = np.zeros((32, 32), np.uint8)
    if case == "one_class":
        scr[3, :] = 1
    if case == "unknown_value":
        scr[3, :] = 1
        scr[9, :] = 7
    viewer.add_labels(scr, name="scribbles")
    w = MedSegWidget(viewer)
    w.classes_edit.setText("background, lesion")
    before = viewer.layers["scribbles"].data.copy()
    w.start_training()
    _wait_idle(qtbot, w)
    _assert_error(notes, *words)
    assert viewer.layers["scribbles"].data.tobytes() == before.tobytes()
    assert not [la for la in viewer.layers if la.name.startswith("medseg: ")]


def _two_class_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((32, 32)).astype(np.float32), name="img")
    scr = np.zeros((32, 32), np.uint8)
    scr[3, :] = 1
    scr[20, 10:20] = 2
    viewer.add_labels(scr, name="scribbles")
    w = MedSegWidget(viewer)
    w.classes_edit.setText("background, lesion")
    w.set_models(["unet", "unet", "unet"])
    w.batch_spin.setValue(2)
    w.patch_spin.setValue(32)
    w.iterations_spin.setValue(1)
    return viewer, w


def test_error_out_of_memory_is_advice(make_napari_viewer, qtbot, notes, monkeypatch):
    import torch

    import napari_medseg.workflow as workflow

    class Boom:
        def __init__(self, *a, **k):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(workflow, "TriNetTrainer", Boom)
    viewer, w = _two_class_viewer(make_napari_viewer)
    w.start_training()
    _wait_idle(qtbot, w)
    _assert_error(notes, "out of memory", "lite", "cpu")
    assert w.train_btn.isEnabled()


def test_error_unavailable_device(make_napari_viewer, qtbot, notes):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    viewer, w = _two_class_viewer(make_napari_viewer)
    w.device_combo.setCurrentText("cuda")
    w.start_training()
    _wait_idle(qtbot, w)
    _assert_error(notes, "not available", "cpu")


def test_error_class_count_mismatch_on_load(make_napari_viewer, qtbot, notes, tmp_path):
    from napari_medseg.checkpoints import save_checkpoint
    from napari_medseg.training import TrainConfig, TriNetTrainer

    seeds = np.full((1, 32, 32), -1, np.int64)
    seeds[0, 3, :] = 0
    seeds[0, 20, 10:20] = 1
    image = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    trainer = TriNetTrainer(
        [image],
        [seeds],
        2,
        TrainConfig(models=("unet", "unet", "unet"), preset="lite", device="cpu"),
        metadata={"class_names": ["background", "lesion"]},
    )
    path = save_checkpoint(trainer.state_dict(), tmp_path / "two.pt")
    viewer, w = _two_class_viewer(make_napari_viewer)
    w.classes_edit.setText("background, RV, Myo")
    w.load_model(str(path))
    _wait_idle(qtbot, w)
    _assert_error(notes, "2 classes", "background, lesion", "3 class names")
    assert w.session.base is None
    # a file that is not a checkpoint
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    w.load_model(str(bad))
    _wait_idle(qtbot, w)
    _assert_error(notes, "could not be read")
    # the right class count loads and sets the slots from the file
    w.classes_edit.setText("background, lesion")
    w.load_model(str(path))
    _wait_idle(qtbot, w)
    assert w.session.base is not None
    assert w.selected_models() == ("unet", "unet", "unet")


def test_preset_recipe_fills_the_fields_including_whole_slices(make_napari_viewer):
    from napari_medseg.presets import RECIPES

    viewer = make_napari_viewer()
    w = MedSegWidget(viewer)
    for preset in ("paper", "lite"):
        w.preset_combo.setCurrentText(preset)
        d = RECIPES[preset]
        assert w.patch_spin.value() == d["patch_size"]
        assert w.batch_spin.value() == d["batch_size"]
        assert w.lr_spin.value() == pytest.approx(d["lr"])
    # lite trains on whole slices: the box says so instead of showing a 0-px crop
    assert w.patch_spin.value() == 0 and w.patch_spin.text() == "whole slice"
