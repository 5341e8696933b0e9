"""The bad-input matrix in the widget (issue 13): the same refusals as the CLI and the API, shown
as an error notification, with the user's layers left as they were (bytes compared)."""

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

from napari_medseg._napari.widget import MedSegWidget  # noqa: E402

TIMEOUT_MS = 240_000


def _image(case: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if case == "tiny":
        return rng.random((3, 3)).astype(np.float32)
    if case == "all_nan":
        return np.full((32, 32), np.nan, np.float32)
    if case == "two_columns":
        return rng.random((32, 32, 2)).astype(np.float32)
    return rng.random((32, 32)).astype(np.float32)


def _scribbles(case: str, shape) -> np.ndarray:
    scr = np.zeros(shape, np.uint8)
    if case == "dense":
        scr[...] = 1
        scr[..., shape[-2] // 2 :, :] = 2
    else:
        scr.reshape(-1, *shape[-2:])[:, 0, 0] = 1
        scr.reshape(-1, *shape[-2:])[:, -1, -1] = 2
    return scr


def _viewer(make_napari_viewer, case):
    viewer = make_napari_viewer()
    image = _image(case)
    viewer.add_image(image, name="img")
    viewer.add_labels(_scribbles(case, image.shape), name="scribbles")
    w = MedSegWidget(viewer)
    w.image_combo.setCurrentText("img")
    w.scribble_combo.setCurrentText("scribbles")
    w.classes_edit.setText("background, lesion")
    w.set_models(["unet", "unet", "unet"])
    w.device_combo.setCurrentText("cpu")
    w.iterations_spin.setValue(1)
    return viewer, w


def _layer_bytes(viewer) -> dict[str, bytes]:
    return {la.name: np.asarray(la.data).tobytes() for la in viewer.layers}


def _assert_error(notes, *words):
    errors = [m for s, m in notes if "error" in s]
    assert errors, f"no error notification (got {notes})"
    text = errors[-1].lower()
    for word in words:
        assert word.lower() in text, text
    assert "unexpected" not in text, text


@pytest.mark.parametrize(
    "case, words",
    [
        ("dense", ("dense label map",)),
        ("tiny", ("too small",)),
        ("all_nan", ("no finite value",)),
        ("two_columns", ("too small",)),
    ],
)
def test_train_refuses_with_a_notification(make_napari_viewer, qtbot, notes, case, words):
    viewer, w = _viewer(make_napari_viewer, case)
    before = _layer_bytes(viewer)
    w.start_training()
    qtbot.waitUntil(lambda: not w.is_busy, timeout=TIMEOUT_MS)
    _assert_error(notes, *words)
    assert _layer_bytes(viewer) == before
    assert w.train_btn.isEnabled()


@pytest.mark.parametrize(
    "case, words", [("tiny", ("too small",)), ("all_nan", ("no finite value",))]
)
def test_predict_with_a_loaded_model_refuses_what_training_refuses(
    make_napari_viewer, qtbot, notes, tmp_path, case, words
):
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
    viewer, w = _viewer(make_napari_viewer, case)
    w.load_model(str(path))
    qtbot.waitUntil(lambda: not w.is_busy, timeout=TIMEOUT_MS)
    assert w.session.base is not None
    before = _layer_bytes(viewer)
    w.predict()
    qtbot.waitUntil(lambda: not w.is_busy, timeout=TIMEOUT_MS)
    _assert_error(notes, *words)
    assert _layer_bytes(viewer) == before


def test_tampered_model_is_refused_on_load(make_napari_viewer, qtbot, notes, tmp_path):
    import torch

    from napari_medseg.checkpoints import save_checkpoint
    from napari_medseg.training import TrainConfig, TriNetTrainer

    seeds = np.full((1, 32, 32), -1, np.int64)
    seeds[0, 3, :] = 0
    seeds[0, 20, 10:20] = 1
    trainer = TriNetTrainer(
        [np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)],
        [seeds],
        2,
        TrainConfig(models=("unet", "unet", "unet"), preset="lite", device="cpu"),
    )
    path = save_checkpoint(trainer.state_dict(), tmp_path / "m.pt")
    state = torch.load(path, weights_only=True)
    key = sorted(state["slots"][1]["state_dict"])[0]
    state["slots"][1]["state_dict"][key].view(-1)[0] += 1.0
    torch.save(state, path)
    viewer, w = _viewer(make_napari_viewer, "ok")
    w.load_model(str(path))
    qtbot.waitUntil(lambda: not w.is_busy, timeout=TIMEOUT_MS)
    _assert_error(notes, "altered")
    assert w.session.base is None


def test_deleting_the_layers_and_closing_mid_training_never_crashes(
    make_napari_viewer, qtbot, notes
):
    """The user deletes the image and the scribbles while the trio trains, then closes the
    widget: training stops, no error and no unexpected exception is shown."""
    viewer, w = _viewer(make_napari_viewer, "ok")
    viewer.window.add_dock_widget(w)
    w.iterations_spin.setValue(100_000)
    w.start_training()
    qtbot.waitUntil(lambda: w.session.trainer is not None and w.session.trainer.iteration >= 1,
                    timeout=TIMEOUT_MS)  # fmt: skip
    viewer.layers.remove("scribbles")
    qtbot.wait(300)
    viewer.layers.remove("img")
    qtbot.wait(300)
    assert w.is_training  # a copy of the data trains on
    w.close()  # closeEvent → shutdown: stop and wait for the worker
    qtbot.waitUntil(lambda: not w.is_busy, timeout=TIMEOUT_MS)
    errors = [m for s, m in notes if "error" in s]
    assert not errors, errors
