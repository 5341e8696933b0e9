"""The napari dock widget: draw scribbles, train the trio, watch and use its predictions.

Threading rule: the GUI thread never runs a network. Train/Resume, Predict, Evaluate, Save
and Load all run in napari ``thread_worker`` threads (:mod:`.session`); the GUI thread only
copies layer data out (so the worker never sees an array the user is painting into) and
hands finished arrays to :class:`~.layer_manager.PredictionLayers`. The scribble layer is only
ever read. The controls are :class:`~.panel.ControlPanel`'s; this class wires them up.

Every problem is reported as a napari notification that says what to do; nothing raised in a
worker reaches the viewer (``_ignore_errors`` + our own ``errored`` handler).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog

from ..errors import MedsegError
from ..slots import slot_keys
from .closing import CloseWithWindow
from .layer_manager import PredictionLayers
from .layers import (
    copy_layer_data,
    default_class_names,
    image_kind,
    label_colormap,
    spatial_shape,
    spatial_transform,
)
from .notify import notify
from .panel import PREDICT_TARGETS, ControlPanel
from .recovery import SessionAutosave
from .session import (
    LayerUpdate,
    TrainingSession,
    start_warm_up,
    user_message,
)

#: The scribble copy sent to the trainer waits this long after the last stroke (ms).
SCRIBBLE_THROTTLE_MS = 400
#: napari's progress bar repaints (and runs a nested event loop) on every change: at most
#: this often while training (s).
PROGRESS_INTERVAL_S = 1.0
#: The empty prediction layers appear this long after the image/scribble/model choice settles.
PRECREATE_DELAY_MS = 300

__all__ = ["PREDICT_TARGETS", "MedSegWidget"]


def _timer(parent, interval_ms: int, slot: Callable[[], None], single_shot: bool = True) -> QTimer:
    timer = QTimer(parent)
    timer.setSingleShot(single_shot)
    timer.setInterval(interval_ms)
    timer.timeout.connect(slot)
    return timer


class MedSegWidget(ControlPanel):
    """Scribble-supervised segmentation with three networks that teach each other."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self.session = TrainingSession()
        self.prediction_layers = PredictionLayers(self.viewer, self)
        self._train_worker = None
        self._task_worker = None
        self._pbar = None
        self._pbar_total = 0
        self._pbar_time = 0.0
        self._watched_scribbles = None
        self._slot_titles: dict[str, str] = {}
        self._prediction_image: str | None = None  # name of the image the layers belong to
        self._last_update: LayerUpdate | None = None
        self._last_report = None  # the floor's last report: kept on the status line
        self._final_text: str | None = None  # the status line of the run's last update
        self._stopping = False
        self._scribble_timer = _timer(self, SCRIBBLE_THROTTLE_MS, self._send_scribbles)
        # prediction layers are created ahead of Train (see _precreate_layers), once the
        # choices have settled: this timer restarts on every change of image, scribbles, slots
        self._precreate_timer = _timer(self, PRECREATE_DELAY_MS, self._precreate_layers)
        self._connect_controls()
        self._connect_viewer()
        self._update_buttons()
        self.autosave = SessionAutosave(self)  # every few minutes; offers a crashed session
        CloseWithWindow(self, self.shutdown)  # napari closes no dock widget with its window
        start_warm_up()

    # ================================================================== wiring
    def _connect_controls(self) -> None:
        self.new_scribbles_btn.clicked.connect(self.new_scribble_layer)
        self.train_btn.clicked.connect(lambda: self.start_training(resume=False))
        self.resume_btn.clicked.connect(lambda: self.start_training(resume=True))
        self.stop_btn.clicked.connect(self.stop_training)
        self.predict_btn.clicked.connect(lambda: self.predict())
        self.save_btn.clicked.connect(lambda: self.save_model())
        self.load_btn.clicked.connect(lambda: self.load_model())
        self.evaluate_btn.clicked.connect(lambda: self.evaluate())
        self.image_combo.currentTextChanged.connect(self._on_image_changed)
        self.scribble_combo.currentTextChanged.connect(self._watch_scribbles)
        for combo in (self.image_combo, self.scribble_combo, *self.slot_combos):
            combo.currentTextChanged.connect(self._schedule_precreate)
        self._on_image_changed(self.image_combo.currentText())
        self._pick_scribble_layer()
        self._watch_scribbles()
        self._schedule_precreate()

    def _watch_scribbles(self, *args) -> None:
        """Follows the chosen scribble layer's paint/data events (for live training)."""
        old = self._watched_scribbles
        if old is not None:
            for ev in (old.events.paint, old.events.data):
                try:
                    ev.disconnect(self._on_scribbles_changed)
                except (TypeError, ValueError, RuntimeError):
                    pass
        layer = self.scribble_combo.layer()
        self._watched_scribbles = layer
        if layer is not None:
            layer.events.paint.connect(self._on_scribbles_changed)
            layer.events.data.connect(self._on_scribbles_changed)

    def _on_scribbles_changed(self, event=None) -> None:
        if self.is_training and not self._scribble_timer.isActive():
            self._scribble_timer.start()

    def _send_scribbles(self) -> None:
        layer = self._watched_scribbles
        if layer is not None and self.is_training:
            self.session.submit_scribbles(copy_layer_data(layer.data))

    # ================================================================== state
    @property
    def is_training(self) -> bool:
        return self._train_worker is not None

    @property
    def is_busy(self) -> bool:
        return self._train_worker is not None or self._task_worker is not None

    @property
    def layers_pending(self) -> bool:
        """Prediction-layer operations still queued (see :class:`PredictionLayers`)."""
        return self.prediction_layers.pending

    def _update_buttons(self) -> None:
        busy = self.is_busy
        self.train_btn.setEnabled(not busy)
        self.resume_btn.setEnabled(not busy and self.session.has_model)
        self.stop_btn.setEnabled(self.is_training)
        for b in (self.predict_btn, self.save_btn, self.evaluate_btn, self.load_btn):
            b.setEnabled(not busy)

    def _can_start(self, when_busy: str, without_model: str | None = None) -> bool:
        """Whether an action may start now; otherwise says why (busy, or no model yet)."""
        if self.is_busy:
            notify("warning", when_busy)
            return False
        if without_model is not None and not self.session.has_model:
            notify("error", without_model)
            return False
        return True

    def _num_classes(self) -> int:
        return len(self.session.class_names() or self.class_names())

    # ================================================================== actions
    def new_scribble_layer(self) -> Labels | None:
        """Adds an empty Labels layer with the image's spatial shape and scale."""
        image = self.image_combo.layer()
        if image is None:
            notify(
                "error",
                "select an image layer first (File › Open, or File › Open Sample "
                "› napari-medseg), then add a scribble layer",
            )
            return None
        if image.multiscale:
            notify("error", "multiscale images are not supported — open a single-resolution image")
            return None
        shape = spatial_shape(image.data.shape, image.rgb)
        names = self.class_names() or list(default_class_names(image.rgb))
        layer = self.viewer.add_labels(
            np.zeros(shape, dtype=np.uint8),
            name=f"{image.name} scribbles",
            colormap=label_colormap(len(names)),
            **spatial_transform(image),
        )
        layer.brush_size = max(3, min(shape[-2:]) // 64)
        layer.selected_label = 1
        layer.mode = "paint"
        self.scribble_combo.setCurrentText(layer.name)
        second = names[1] if len(names) > 1 else "…"
        notify("info", f"draw with label 1 for {names[0]}, 2 for {second}, … (0 erases)")
        return layer

    def start_training(self, resume: bool = False):
        """Train (new trainer; fine-tunes a loaded model) or Resume (continue the last one)."""
        if not self._can_start("already busy — press Stop first, or wait for the current task"):
            return None
        prepared = self._train_request()
        if prepared is None:
            return None
        request, image, _ = prepared
        if resume:
            problem = self.session.resume_problem(request)
            if problem:
                notify("error", problem)
                return None
        elif self.session.base is not None:
            notify("info", "fine-tuning the loaded model on these scribbles")
        self._slot_titles = self.slot_titles(request.models, slot_keys(request.models))
        self._prediction_image = image.name
        # napari's progress bar comes with the worker's "ready" update (see _on_train_update)
        self._pbar = None
        self._pbar_total = request.iterations
        worker = create_worker(self.session.train, request, resume=resume, _ignore_errors=True)
        worker.yielded.connect(self._on_train_update)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_train_finished)
        self._train_worker = worker
        self._final_text = None
        self._last_report = None
        self._stopping = False
        self._pbar_time = 0.0
        self.status_label.setText("Preparing the networks…")
        self._update_buttons()
        # a full garbage collection walks the whole process with the GIL held, and building
        # the networks triggers one: frozen objects are skipped until the run ends (unfreeze
        # in _on_train_finished; docs/design.md "The widget and the GUI thread")
        gc.freeze()
        worker.start()
        return worker

    def stop_training(self) -> None:
        if self.is_training:
            self.session.request_stop()
            self._stopping = True
            if self._final_text is None:
                self.status_label.setText("Stopping after the current step…")

    def _on_train_update(self, upd: LayerUpdate) -> None:
        """Shows one worker update: status line, prediction layers (queued), metrics.

        napari's progress bar runs a nested event loop when it changes, so a later update, or
        the worker's ``finished``, can be handled while this one still runs: the progress bar
        comes last, and once the final status line is shown no earlier update replaces it.
        """
        for w in upd.warnings:
            notify("warning", w)
        if upd.stage == "preparing":
            return
        layers = self.prediction_layers
        if upd.stage == "ready":
            if self._pbar is None:
                # created here, not on the click: the worker now waits for the layers, whereas
                # before "ready" it builds the networks and holds the GIL (docs/design.md)
                self._pbar = progress(total=self._pbar_total, desc="medseg: training")
            image = layers.get(self._prediction_image, Image)
            if image is not None:
                layers.rename_placeholders(self._slot_titles)
                layers.prepare(image, self._slot_titles, self._num_classes())
            # the worker waits for this (behind the layer creations) before its first step
            layers.queue(("layers ready", None), self.session.layers_ready)
            if self._final_text is None and not self._stopping:
                self.status_label.setText(f"Training on {upd.device} ({upd.preset})…")
            return
        self._last_update = upd
        if upd.report is not None:
            self._last_report = upd.report
        text = self._progress_text(upd)
        if upd.done:
            self._final_text = ("Stopped" if upd.stopped else "Finished") + f" — {text}"
            self.status_label.setText(self._final_text)
        elif self._final_text is None and not self._stopping:
            self.status_label.setText(text)
        image = layers.get(self._prediction_image, Image)
        if upd.labels is not None and image is not None:
            layers.show(
                upd, image, self._slot_titles, self._num_classes(), slice_index=upd.slice_index
            )
        if upd.metrics:
            self.show_metrics(upd.metrics, self._slot_titles)
        self._update_progress(upd)

    def _progress_text(self, upd: LayerUpdate) -> str:
        loss = upd.losses.get("total", float("nan"))
        per_model = " · ".join(
            f"{self._slot_titles.get(k, k)} {v:.3f}" for k, v in upd.losses.items() if k != "total"
        )
        text = (
            f"iteration {upd.run_step}/{upd.run_total} · loss {loss:.3f} · "
            f"{upd.iterations_per_second:.2f} it/s · {upd.device} {upd.preset}\n"
            f"losses: {per_model}"
        )
        if self._last_report is not None:  # how far the ensemble trusts the networks yet
            text += "\nensemble: " + self._last_report.summary(self._slot_titles)
        return text

    def _update_progress(self, upd: LayerUpdate) -> None:
        """napari's progress bar, at most every PROGRESS_INTERVAL_S (it processes events)."""
        pbar = self._pbar
        now = time.perf_counter()
        if pbar is None or (not upd.done and now - self._pbar_time < PROGRESS_INTERVAL_S):
            return
        self._pbar_time = now
        loss = upd.losses.get("total", float("nan"))
        pbar.set_description(f"medseg: loss {loss:.3f}, {upd.iterations_per_second:.2f} it/s")
        step = min(upd.run_step, upd.run_total)
        if self._pbar is pbar and step > pbar.n:  # the nested event loop may have closed it
            pbar.update(step - pbar.n)

    def _on_train_finished(self) -> None:
        gc.unfreeze()  # what became garbage during the run can be collected again
        self._train_worker = None
        self._scribble_timer.stop()
        if self._pbar is not None:
            pbar, self._pbar = self._pbar, None
            pbar.close()
        if self._final_text is not None:
            # the run's last update may have been handled before an earlier one finished
            self.status_label.setText(self._final_text)
        self._stopping = False
        self._update_buttons()

    def _on_error(self, exc: BaseException) -> None:
        notify("error", user_message(exc))
        self.status_label.setText(f"Error: {user_message(exc)}")

    # ------------------------------------------------------------------ layers ahead of Train
    def _schedule_precreate(self, *args) -> None:
        self._precreate_timer.start()

    def _precreate_layers(self) -> None:
        """Creates the empty prediction layers as soon as an image and its scribbles are chosen.

        Creating five napari layers is what froze the viewer longest when Train was pressed
        (benchmarks/bench_gui_responsiveness.py); done here, while the user is still drawing,
        Train only writes into them. Layers made here and still empty follow the model slots
        (renamed when a slot changes), and layers holding results are never touched.
        """
        if self.is_busy:
            return
        image, scribbles = self.image_combo.layer(), self.scribble_combo.layer()
        if image is None or scribbles is None or image.multiscale:
            return
        try:
            full = spatial_shape(image.data.shape, image.rgb)
            image_kind(image.data.shape, image.rgb)
        except ValueError:
            return
        if tuple(scribbles.data.shape) != tuple(full):
            return
        models = self.selected_models()
        titles = self.slot_titles(models, slot_keys(models))
        self.prediction_layers.rename_placeholders(titles)
        self.prediction_layers.prepare(image, titles, self._num_classes(), replace=False)

    # ------------------------------------------------------------------ predict
    def _run_task(self, fn: Callable, on_done: Callable, *args, **kwargs):
        worker = create_worker(fn, *args, _ignore_errors=True, **kwargs)
        worker.returned.connect(on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_task_finished)
        self._task_worker = worker
        self._update_buttons()
        worker.start()
        return worker

    def _on_task_finished(self) -> None:
        self._task_worker = None
        self._update_buttons()

    def predict(self, target: str | None = None):
        """Predict the current slice, the whole image/stack, or another image layer."""
        if not self._can_start(
            "wait until training stops (or press Stop) before predicting",
            "no model yet — press Train (or Load model) first",
        ):
            return None
        target = target or self.target_combo.currentText()
        other = target == PREDICT_TARGETS[2]
        layer = (self.other_image_combo if other else self.image_combo).layer()
        if layer is None:
            notify("error", "choose an image layer to predict on")
            return None
        try:
            kind = image_kind(layer.data.shape, layer.rgb)
        except ValueError as e:
            notify("error", str(e))
            return None
        kind = "rgba" if kind == "rgb" and layer.data.shape[-1] == 4 else kind
        slice_index = (
            self._current_slice(layer)
            if (target == PREDICT_TARGETS[0] and kind == "stack")
            else None
        )
        suffix = (
            ""
            if layer.name == self._prediction_image or self._prediction_image is None
            else f" ({layer.name})"
        )
        if self._prediction_image is None:
            self._prediction_image = layer.name
        truth = None
        truth_layer = self.truth_combo.layer()
        names = self.session.class_names() or self.class_names()
        if (
            truth_layer is not None
            and slice_index is None
            and tuple(truth_layer.data.shape) == spatial_shape(layer.data.shape, layer.rgb)
        ):
            truth = copy_layer_data(truth_layer.data)
        # the strokes drawn on this image: the walker's answer stays part of the ensemble
        strokes = self.scribble_combo.layer() if not other else None
        scribbles = None
        if strokes is not None and tuple(strokes.data.shape) == spatial_shape(
            layer.data.shape, layer.rgb
        ):
            scribbles = copy_layer_data(strokes.data)
        self._slot_titles = self.slot_titles(*self.session.slot_models())
        self.status_label.setText("Predicting…")

        def done(upd: LayerUpdate) -> None:
            for w in upd.warnings:
                notify("warning", w)
            if layer.name in self.viewer.layers:
                self.prediction_layers.show(
                    upd, layer, self._slot_titles, len(names), suffix, slice_index
                )
            if upd.metrics:
                self.show_metrics(upd.metrics, self._slot_titles)
            where = f"slice {slice_index}" if slice_index is not None else f"'{layer.name}'"
            self.status_label.setText(f"Predicted {where}.")

        return self._run_task(
            self.session.predict,
            done,
            copy_layer_data(layer.data),
            kind,
            slice_index=slice_index,
            truth=truth,
            class_names=names,
            spacing=spatial_transform(layer)["scale"],
            device=self.device_combo.currentText(),
            scribbles=scribbles,
        )

    def evaluate(self):
        """Dice / HD95 of the current prediction layers against the chosen ground truth."""
        if not self._can_start("wait until training stops before evaluating"):
            return None
        truth_layer = self.truth_combo.layer()
        if truth_layer is None:
            notify("error", "choose a ground-truth Labels layer (values 1..K like the scribbles)")
            return None
        labels = self.prediction_layers.labels_of(self._slot_titles)
        if not labels:
            notify("error", "no prediction layers yet — press Train or Predict first")
            return None
        truth = copy_layer_data(truth_layer.data)
        names = self.session.class_names() or self.class_names()
        image = self.prediction_layers.get(self._prediction_image, Image)
        spacing = spatial_transform(image)["scale"] if image is not None else None
        from .session import evaluate_labels

        def done(rows: list[dict]) -> None:
            self.show_metrics(rows, self._slot_titles)

        return self._run_task(evaluate_labels, done, labels, truth, names, spacing)

    # ------------------------------------------------------------------ save / load
    def _model_path(self, path: str | None, save: bool) -> str | None:
        """``path``, or the file the user picks in a dialog (None: cancelled)."""
        if path is not None:
            return path
        if save:
            path, _ = QFileDialog.getSaveFileName(
                self, "Save model", "medseg_model.pt", "napari-medseg model (*.pt)"
            )
        else:
            path, _ = QFileDialog.getOpenFileName(
                self, "Load model", "", "napari-medseg model (*.pt)"
            )
        return path or None

    def save_model(self, path: str | None = None):
        if not self._can_start(
            "press Stop (or wait for training to finish) before saving",
            "there is no model to save yet — press Train first",
        ):
            return None
        path = self._model_path(path, save=True)
        if path is None:
            return None
        names = self.class_names()

        def done(p) -> None:
            notify("info", f"model saved to {p}")
            self.status_label.setText(f"Saved {Path(p).name}")

        return self._run_task(self.session.save, done, path, names)

    def load_model(self, path: str | None = None):
        if not self._can_start("press Stop (or wait for training to finish) before loading"):
            return None
        path = self._model_path(path, save=False)
        if path is None:
            return None

        def done(checkpoint) -> None:
            self._adopt_checkpoint(checkpoint, str(path))

        return self._run_task(self.session.read_checkpoint, done, path)

    def _adopt_checkpoint(self, checkpoint, path: str) -> None:
        """Checks a read checkpoint against the widget's classes and image, then uses it."""
        image = self.image_combo.layer()
        try:
            checkpoint.check_compatible(
                num_classes=len(self.class_names()),
                in_channels=None if image is None else (3 if image.rgb else 1),
                image="this image" if image is None else f"'{image.name}'",
            )
        except MedsegError as e:
            notify("error", str(e))
            return
        self.set_models(checkpoint.models)
        if checkpoint.preset:
            self.preset_combo.setCurrentText(checkpoint.preset)
        self.session.adopt(checkpoint, path)
        self._slot_titles = self.slot_titles(*self.session.slot_models())
        notify(
            "info",
            f"loaded {Path(path).name}: {', '.join(self._slot_titles.values())} "
            f"({checkpoint.preset}). Predict uses it; Train fine-tunes it on your scribbles.",
        )
        self.status_label.setText(f"Loaded {Path(path).name}")
        self._update_buttons()

    # ------------------------------------------------------------------ teardown
    def shutdown(self, timeout_ms: int = 10_000) -> None:
        """Stops training and waits for the workers (the viewer is closing)."""
        self.session.request_stop()
        self._scribble_timer.stop()
        self.autosave.close()  # a clean exit: the session is not offered for restore
        from napari.qt.threading import WorkerBase

        WorkerBase.await_workers(msecs=timeout_ms)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
