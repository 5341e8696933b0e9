"""The widget's autosave and restore after a crash, and closing the viewer while training
(issue 13), in a real napari viewer under Xvfb (`xvfb-run -a pytest`)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui
if sys.platform.startswith("linux") and not (
    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
):
    pytest.skip("no display: run the GUI tests under xvfb-run", allow_module_level=True)
napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_medseg import autosave  # noqa: E402
from napari_medseg._napari.widget import MedSegWidget  # noqa: E402
from napari_medseg.checkpoints import load_checkpoint  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_autosave import crash  # noqa: E402

TIMEOUT_MS = 240_000


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.normal(0.2, 0.05, (32, 32)).astype(np.float32)
    img[8:24, 8:24] += 0.6
    return img


def _scribbles() -> np.ndarray:
    scr = np.zeros((32, 32), np.uint8)
    scr[2, 2:30] = 1
    scr[15:17, 12:20] = 2
    return scr


def _open(make_napari_viewer, scribbles=True):
    viewer = make_napari_viewer()
    viewer.add_image(_image(), name="img", scale=(1.0, 0.5))
    if scribbles:
        viewer.add_labels(_scribbles(), name="scribbles", scale=(1.0, 0.5))
    w = MedSegWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image_combo.setCurrentText("img")
    if scribbles:
        w.scribble_combo.setCurrentText("scribbles")
    w.classes_edit.setText("background, lesion")
    w.set_models(["unet", "unet", "unet"])
    w.preset_combo.setCurrentText("lite")
    w.device_combo.setCurrentText("cpu")
    w.iterations_spin.setValue(2)
    w.batch_spin.setValue(2)
    return viewer, w


def _layer_bytes(viewer) -> dict[str, bytes]:
    return {la.name: np.asarray(la.data).tobytes() for la in viewer.layers}


def _snapshot(w):
    snap = w.autosave.last_snapshot
    return None if snap is None or not snap.exists() else autosave.read_snapshot(snap)


def test_the_session_is_autosaved_on_a_timer_then_marked_clean(
    make_napari_viewer, qtbot, notes, monkeypatch
):
    monkeypatch.setenv(autosave.INTERVAL_ENV, "0.2")
    viewer, w = _open(make_napari_viewer)
    before = _layer_bytes(viewer)
    qtbot.waitUntil(lambda: _snapshot(w) is not None, timeout=30_000)
    snap = _snapshot(w)
    np.testing.assert_array_equal(snap.scribbles, _scribbles())  # a copy of the user's strokes
    assert (snap.scribbles_name, snap.image_name, snap.image_shape) == (
        "scribbles",
        "img",
        (32, 32),
    )
    assert snap.image_sha256 == autosave.array_sha256(_image())
    assert snap.scale == (1.0, 0.5) and snap.model is None
    assert snap.settings["class_names"] == ["background", "lesion"]
    assert snap.settings["models"] == ["unet"] * 3 and snap.settings["iterations"] == 2
    # the user draws more: the next autosave has it
    viewer.layers["scribbles"].data[20, 20:24] = 2
    viewer.layers["scribbles"].refresh()
    qtbot.waitUntil(lambda: (s := _snapshot(w)) is not None and s.scribbles[20, 21] == 2,
                    timeout=30_000)  # fmt: skip
    # after training, the model is in the next snapshot (saved by a worker, intact)
    w.start_training()
    qtbot.waitUntil(lambda: not w.is_busy and w.session.has_model, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: (s := _snapshot(w)) is not None and s.model is not None,
                    timeout=60_000)  # fmt: skip
    saved = load_checkpoint(_snapshot(w).model)
    assert saved.models == ("unet", "unet", "unet") and saved.num_classes == 2
    assert _layer_bytes(viewer)["scribbles"] != before["scribbles"]  # only the user's stroke
    folder = w.autosave.folder
    w.close()  # a clean exit
    assert (folder / autosave.CLEAN_MARKER).exists()
    assert autosave.crashed_sessions() == []
    assert not [m for s, m in notes if "error" in s or "warning" in s], notes


def test_a_crashed_session_is_offered_and_restored_as_new_layers(
    make_napari_viewer, qtbot, notes, monkeypatch
):
    # a first viewer autosaves its strokes and a trained model, then "crashes"
    monkeypatch.setenv(autosave.INTERVAL_ENV, "0.2")
    viewer, w = _open(make_napari_viewer)
    viewer.layers["scribbles"].data[20, 20:24] = 2
    drawn = viewer.layers["scribbles"].data.copy()
    w.iterations_spin.setValue(3)
    w.classifier_check.setChecked(False)
    w.start_training()
    qtbot.waitUntil(lambda: not w.is_busy and w.session.has_model, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: (s := _snapshot(w)) is not None and s.model is not None,
                    timeout=60_000)  # fmt: skip
    w.autosave.timer.stop()
    w.autosave.wait()
    crash(w.autosave.folder)  # its process is gone, no clean exit

    # the next start: the same image is open again, with a scribble layer of its own
    monkeypatch.setenv(autosave.INTERVAL_ENV, "0")
    notes.clear()
    viewer2 = make_napari_viewer()
    viewer2.add_image(_image(), name="img again", scale=(1.0, 0.5))
    viewer2.add_labels(np.zeros((32, 32), np.uint8), name="fresh")
    w2 = MedSegWidget(viewer2)
    viewer2.window.add_dock_widget(w2)
    assert w2.autosave.banner is not None and w2.autosave.offered is not None
    assert any("did not close normally" in m for s, m in notes if "info" in s), notes
    before = _layer_bytes(viewer2)

    w2.autosave.restore_btn.click()
    qtbot.waitUntil(lambda: not w2.is_busy, timeout=TIMEOUT_MS)
    restored = viewer2.layers["scribbles (restored)"]
    np.testing.assert_array_equal(restored.data, drawn)
    assert tuple(restored.scale) == (1.0, 0.5)
    # nothing that was open changed; the scribbles are a new layer
    after = _layer_bytes(viewer2)
    assert {k: after[k] for k in before} == before
    # the image it was drawn on (same pixels, another name) and the settings are back
    assert w2.image_combo.currentText() == "img again"
    assert w2.scribble_combo.currentText() == "scribbles (restored)"
    assert w2.class_names() == ["background", "lesion"]
    assert w2.selected_models() == ("unet", "unet", "unet") and w2.iterations_spin.value() == 3
    assert not w2.classifier_check.isChecked()
    # and the model: Predict can use it at once
    assert w2.session.base is not None and w2.session.base.num_classes == 2
    assert w2.autosave.banner is None and autosave.crashed_sessions() == []
    assert not [m for s, m in notes if "error" in s], notes


def test_discard_removes_the_crashed_session(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setenv(autosave.INTERVAL_ENV, "0")
    viewer, w = _open(make_napari_viewer)
    assert w.autosave.save_now()
    w.autosave.wait()
    crash(w.autosave.folder)
    viewer2 = make_napari_viewer()
    w2 = MedSegWidget(viewer2)
    folder = w2.autosave.offered.folder
    w2.autosave.discard_btn.click()
    assert not folder.exists() and w2.autosave.banner is None
    assert list(viewer2.layers) == []


def test_nothing_is_saved_before_anything_is_drawn(make_napari_viewer, monkeypatch):
    monkeypatch.setenv(autosave.INTERVAL_ENV, "0")
    viewer, w = _open(make_napari_viewer, scribbles=False)
    assert w.new_scribble_layer() is not None
    assert not w.autosave.save_now() and w.autosave.folder is None


def test_closing_the_viewer_mid_training_never_crashes(make_napari_viewer, qtbot, notes):
    """The user closes the whole napari window while the trio trains: training stops (napari
    closes no dock widget with its window: the widget notices), the worker thread ends,
    nothing is reported as an error, and the session counts as closed, not crashed."""
    viewer, w = _open(make_napari_viewer)
    w.iterations_spin.setValue(100_000)
    assert w.autosave.save_now()  # a session to be marked clean
    w.autosave.wait()
    folder = w.autosave.folder
    worker = w.start_training()
    qtbot.waitUntil(lambda: w.session.trainer is not None and w.session.trainer.iteration >= 1,
                    timeout=TIMEOUT_MS)  # fmt: skip
    trainer = w.session.trainer
    viewer.close()
    # the widget itself may be deleted with the window: its worker is what must end
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    it = trainer.iteration
    qtbot.wait(500)
    assert trainer.iteration == it  # no step after the close
    assert not [t for t in threading.enumerate() if "autosave" in t.name and t.is_alive()]
    assert (folder / autosave.CLEAN_MARKER).exists()
    assert not [m for s, m in notes if "error" in s], notes
