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
from ..model_library import library_path
from ..slots import slot_keys
from ..user_dirs import model_library_dir
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
from .pairing import image_channels, layer_suffix, scribbles_for, user_images
from .panel import PREDICT_TARGETS, ControlPanel
from .recovery import SessionAutosave
from .session import (
    LayerUpdate,
    TrainingSession,
    start_warm_up,
    user_message,
)
from .start_from import CURRENT

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
        self._task_stoppable = False  # the running task is a folder prediction Stop may end
        self._pbar = None
        self._pbar_total = 0
        self._pbar_time = 0.0
        self._watched_scribbles = None
        self._slot_titles: dict[str, str] = {}
        self._prediction_image: str | None = None  # name of the image the layers belong to
        # the first image that got prediction layers keeps the plain layer names; every other
        # image gets its own set (pairing.layer_suffix)
        self._home: str | None = None
        self._train_suffix = ""  # the trained image's part of the layer names
        self._start_text = ""  # what the running training started from, in words
        self._zero_shot_for: str | None = None  # the image a running zero-shot predicts
        self._zero_shot_again = False  # the image changed while a task ran: look again
        # per image (layer suffix): the model (session.model_stamp) its layers came from
        self._made_with: dict[str, tuple | None] = {}
        self._after_task: Callable[[], None] | None = None  # Train pressed during a zero-shot
        self._task_pbar = None  # napari's progress bar of a several-image prediction
        self._last_update: LayerUpdate | None = None
        self._last_report = None  # the floor's last report: kept on the status line
        self._final_text: str | None = None  # the status line of the run's last update
        self._stopping = False
        self._scribble_timer = _timer(self, SCRIBBLE_THROTTLE_MS, self._send_scribbles)
        # prediction layers are created ahead of Train (see _precreate_layers), once the
        # choices have settled: this timer restarts on every change of image, scribbles, slots
        self._precreate_timer = _timer(self, PRECREATE_DELAY_MS, self._precreate_layers)
        # a model carries from image to image: another image shows its prediction at once
        self._zero_shot_timer = _timer(self, PRECREATE_DELAY_MS, self._zero_shot)
        self.start_box.on_pick = self._pick_model
        self.start_box.on_choice = self._show_card
        self._connect_controls()
        self._connect_viewer()
        self._update_buttons()
        self._show_card()
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
        self.image_combo.currentTextChanged.connect(self._schedule_zero_shot)
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
        self.stop_btn.setEnabled(
            self.is_training or (self._task_stoppable and self._task_worker is not None)
        )
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
        """Train (from what *Start from* says: the current model or new networks) or Resume
        (continue the last run). Pressed while an image's zero-shot prediction runs, it
        starts as soon as that ends."""
        if self._zero_shot_for is not None and self._train_worker is None:
            self._after_task = lambda: self.start_training(resume)
            self.status_label.setText(
                f"Train starts once the prediction of '{self._zero_shot_for}' is done…"
            )
            return None
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
            start = "resuming the last run"
        else:
            problem = self.session.start_problem(request, image_channels(image), f"'{image.name}'")
            if problem:  # said before anything runs
                notify("error", problem)
                return None
            start = self.session.start_text(request)
            notify("info", f"Train on '{image.name}': {start}")
        self._start_text = start
        self._slot_titles = self.slot_titles(request.models, slot_keys(request.models))
        self._prediction_image = image.name
        self._train_suffix = self._suffix(image.name)
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
        self.status_label.setText(f"Preparing the networks ({start})…")
        self._update_buttons()
        # a full garbage collection walks the whole process with the GIL held, and building
        # the networks triggers one: frozen objects are skipped until the run ends (unfreeze
        # in _on_train_finished; docs/design.md "The widget and the GUI thread")
        gc.freeze()
        worker.start()
        return worker

    def stop_training(self) -> None:
        """Stop: training stops after its current step and keeps its model; a folder
        prediction stops after its current image and writes nothing (its output folder is
        filled only at the end)."""
        if not self.is_training and self._task_stoppable and self._task_worker is not None:
            self.session.cancel_task()  # it returns after this image: the staging is dropped
            self.status_label.setText("Stopping the folder prediction after this image…")
            return
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
            suffix = self._train_suffix
            if image is not None:
                layers.rename_placeholders(self._slot_titles, suffix)
                layers.prepare(image, self._slot_titles, self._num_classes(), suffix=suffix)
            # the worker waits for this (behind the layer creations) before its first step
            layers.queue(("layers ready", None), self.session.layers_ready)
            if self._final_text is None and not self._stopping:
                self.status_label.setText(
                    f"Training on {upd.device} ({upd.preset}), {self._start_text}…"
                )
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
                upd,
                image,
                self._slot_titles,
                self._num_classes(),
                self._train_suffix,
                slice_index=upd.slice_index,
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
        # what Train starts from next: the model just trained (it carries to the next image)
        self.start_box.refresh(self.session.has_model, select_current=self.session.has_model)
        self._show_card()
        # the trained image's layers show the weights training ended with
        self._made_with[self._train_suffix] = self.session.model_stamp()
        self._schedule_zero_shot()  # an image chosen while training gets its prediction now

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
        suffix = self._suffix(image.name, claim=False)
        self.prediction_layers.rename_placeholders(titles, suffix)
        self.prediction_layers.prepare(
            image, titles, self._num_classes(), replace=False, suffix=suffix
        )

    def _suffix(self, image_name: str, claim: bool = True) -> str:
        """The image's part of its prediction layers' names (:func:`~.pairing.layer_suffix`).

        The first image to get results (``claim``: Train, Predict) keeps the plain names; when
        it is closed, the next one does.
        """
        if self._home is not None and self._home not in self.viewer.layers:
            self._home = None
        if claim and self._home is None:
            self._home = image_name
        return layer_suffix(image_name, self._home)

    # ------------------------------------------------------------------ predict
    def _run_task(
        self,
        fn: Callable,
        on_done: Callable,
        *args,
        on_yield=None,
        stoppable: bool = False,
        **kwargs,
    ):
        """Runs ``fn`` in a worker; ``stoppable``: a generator that Stop may end early."""
        worker = create_worker(fn, *args, _ignore_errors=True, **kwargs)
        self._task_stoppable = stoppable
        worker.returned.connect(on_done)
        if on_yield is not None:
            worker.yielded.connect(on_yield)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_task_finished)
        self._task_worker = worker
        self._update_buttons()
        worker.start()
        return worker

    def _on_task_finished(self) -> None:
        self._task_worker = None
        self._task_stoppable = False
        self._zero_shot_for = None
        if self._task_pbar is not None:
            pbar, self._task_pbar = self._task_pbar, None
            pbar.close()
        self._update_buttons()
        after, self._after_task = self._after_task, None
        if after is not None:  # Train was pressed while an image's zero-shot ran
            after()
        elif self._zero_shot_again:
            self._zero_shot_again = False
            self._schedule_zero_shot()

    def predict(self, target: str | None = None):
        """Predict the current slice, the whole image/stack, another image layer, every open
        image, or every image file of a folder (*Predict on*)."""
        target = target or self.target_combo.currentText()
        if target == PREDICT_TARGETS[3]:
            return self.predict_every_image()
        if target == PREDICT_TARGETS[4]:
            return self.predict_folder()
        if not self._can_start(
            "wait until training stops (or press Stop) before predicting",
            "no model yet — press Train (or Load model) first",
        ):
            return None
        other = target == PREDICT_TARGETS[2]
        layer = (self.other_image_combo if other else self.image_combo).layer()
        if layer is None:
            notify("error", "choose an image layer to predict on")
            return None
        whole_slice = target == PREDICT_TARGETS[0]
        return self._predict_layer(layer, whole_slice, strokes=not other)

    def _predict_layer(
        self, layer, current_slice: bool, strokes: bool, zero_shot=False, drawn=None
    ):
        """Predicts one image layer in a worker; the result goes to its prediction layers.

        ``strokes``: the chosen scribble layer's strokes take part (the walker's floor), or
        ``drawn``'s when given. ``zero_shot``: shown only if the image is still the chosen
        one when it is done.
        """
        try:
            kind = image_kind(layer.data.shape, layer.rgb)
        except ValueError as e:
            notify("error", str(e))
            return None
        kind = "rgba" if kind == "rgb" and layer.data.shape[-1] == 4 else kind
        slice_index = self._current_slice(layer) if (current_slice and kind == "stack") else None
        suffix = self._suffix(layer.name)
        if self._prediction_image is None:
            self._prediction_image = layer.name
        full = spatial_shape(layer.data.shape, layer.rgb)
        truth = None
        truth_layer = None if zero_shot else self.truth_combo.layer()
        names = self.session.class_names() or self.class_names()
        if (
            truth_layer is not None
            and slice_index is None
            and tuple(truth_layer.data.shape) == full
        ):
            truth = copy_layer_data(truth_layer.data)
        # the strokes drawn on this image: the walker's answer stays part of the ensemble
        if drawn is None:
            drawn = self.scribble_combo.layer() if strokes else None
        scribbles = None
        if drawn is not None and tuple(drawn.data.shape) == full:
            scribbles = copy_layer_data(drawn.data)
        self._slot_titles = self.slot_titles(*self.session.slot_models())
        name = layer.name
        stamp = self.session.model_stamp()
        again = zero_shot and self.prediction_layers.has_results(suffix)
        if again:
            self.status_label.setText(f"Updating '{name}' with the current model…")
        elif zero_shot:
            self.status_label.setText(
                f"Predicting '{name}' with the current model (no strokes yet)…"
            )
        else:
            self.status_label.setText("Predicting…")

        def done(upd: LayerUpdate) -> None:
            if zero_shot and self.image_combo.currentText() != name:
                # the user moved on: nothing is drawn for an image left behind
                self.status_label.setText(f"Prediction of '{name}' dropped (another image).")
                return
            if self._show_prediction(upd, name, len(names), suffix, slice_index):
                if slice_index is None:
                    self._made_with[suffix] = stamp
            if upd.metrics:
                self.show_metrics(upd.metrics, self._slot_titles)
            where = f"slice {slice_index}" if slice_index is not None else f"'{name}'"
            if again:
                text = (
                    f"Updated '{name}' with the current model (it changed since this image "
                    "was last predicted"
                    + (", its strokes kept)." if scribbles is not None else ").")
                )
            elif zero_shot:
                text = (
                    f"Zero-shot prediction of '{name}' by the current model — draw strokes and "
                    "press Train to adapt it to this image."
                )
            else:
                text = f"Predicted {where}."
            self.status_label.setText(text)

        if zero_shot:
            self._zero_shot_for = name
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

    # ------------------------------------------------------------------ the model carries on
    def _schedule_zero_shot(self, *args) -> None:
        self._zero_shot_timer.start()

    def _zero_shot(self) -> None:
        """Shows the chosen image's prediction by the current model, before any stroke.

        For an image without results of its own, and for one whose layers this session's
        model made before it was trained further (or another was loaded): those layers are
        the plugin's, redone with the image's own strokes when it has a scribble layer (the
        floor keeps the walker's answer). Layers of unknown origin (restored, or from an
        earlier session) are left as they are. Never while training, and only for an image
        whose channels the model takes (else the status line says why). While another task
        runs it waits for it; a result for an image the user has left meanwhile is dropped.
        """
        if self.is_training or not self.session.has_model:
            return
        layer = self.image_combo.layer()
        if layer is None or layer.multiscale:
            return
        try:
            image_kind(layer.data.shape, layer.rgb)
        except ValueError:
            return
        suffix = self._suffix(layer.name, claim=False)
        drawn = None
        if self.prediction_layers.has_results(suffix):
            made = self._made_with.get(suffix)
            if made is None or made == self.session.model_stamp():
                return
            drawn = scribbles_for(layer, *self._labels_and_taken())
        problem = self.session.fit_problem(image_channels(layer), f"'{layer.name}'")
        if problem:
            self.status_label.setText(f"No prediction for '{layer.name}': {problem}")
            return
        if self._task_worker is not None:
            self._zero_shot_again = True
            return
        self._predict_layer(layer, current_slice=False, strokes=False, zero_shot=True, drawn=drawn)

    def _show_prediction(
        self,
        upd: LayerUpdate,
        name: str,
        num_classes: int,
        suffix: str,
        slice_index: int | None = None,
        prefix: bool = False,
    ) -> bool:
        """Warnings, then image ``name``'s prediction layers (False: that layer is gone).
        ``prefix``: warnings name the image (several images predicted at once)."""
        for w in upd.warnings:
            notify("warning", f"'{name}': {w}" if prefix else w)
        if name not in self.viewer.layers:
            return False
        self.prediction_layers.show(
            upd, self.viewer.layers[name], self._slot_titles, num_classes, suffix, slice_index
        )
        return True

    def predict_every_image(self):
        """Every open image layer, one after the other in one worker; each gets its own
        prediction layers (with its strokes, when it has a scribble layer)."""
        if not self._can_start(
            "wait until training stops (or press Stop) before predicting",
            "no model yet — press Train (or Load model) first",
        ):
            return None
        labels, taken = self._labels_and_taken()
        items, left = [], []
        for layer in user_images(self.viewer.layers):
            problem = self.session.fit_problem(image_channels(layer), f"'{layer.name}'")
            if problem:
                left.append(problem)
                continue
            kind = image_kind(layer.data.shape, layer.rgb)
            kind = "rgba" if kind == "rgb" and layer.data.shape[-1] == 4 else kind
            drawn = self.scribble_combo.layer() if layer is self.image_combo.layer() else None
            if drawn is None or tuple(drawn.data.shape) != spatial_shape(
                layer.data.shape, layer.rgb
            ):
                drawn = scribbles_for(layer, labels, taken)
            scribbles = None
            if drawn is not None:
                taken.add(drawn.name)
                scribbles = copy_layer_data(drawn.data)
            items.append((layer.name, copy_layer_data(layer.data), kind, scribbles))
        for message in left:
            notify("warning", f"left out: {message}")
        if not items:
            notify("error", "no open image layer the model can predict — open an image first")
            return None
        names = self.session.class_names() or self.class_names()
        self._slot_titles = self.slot_titles(*self.session.slot_models())
        self._task_pbar = progress(total=len(items), desc="medseg: predicting open images")
        self.status_label.setText(f"Predicting {len(items)} open image(s)…")
        shown: list[str] = []
        stamp = self.session.model_stamp()

        def one(result) -> None:
            name, upd, problem = result
            if problem is not None:
                notify("warning", problem)
            else:
                suffix = self._suffix(name)
                if self._show_prediction(upd, name, len(names), suffix, prefix=True):
                    shown.append(name)
                    self._made_with[suffix] = stamp
            # last: the bar's nested event loop may run the worker's end (``done``) now
            pbar = self._task_pbar
            if pbar is not None:
                pbar.update(1)

        def done(_=None) -> None:
            self.status_label.setText(
                f"Predicted {len(shown)} of {len(items)} open image(s): "
                + ", ".join(f"'{n}'" for n in shown)
            )

        return self._run_task(
            self.session.predict_many,
            done,
            items,
            device=self.device_combo.currentText(),
            on_yield=one,
        )

    def predict_folder(self, folder: str | None = None, out: str | None = None):
        """Every image file of ``folder`` → ``out/<stem>.tif`` (the ensemble in label
        values 1..K, with the image's spacing), with napari's progress bar. Asks for the
        folders when not given; the output folder is filled only at the end (staged)."""
        if not self._can_start(
            "wait until training stops (or press Stop) before predicting",
            "no model yet — press Train (or Load model) first",
        ):
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Predict every image of a folder")
            if not folder:
                return None
        if out is None:
            out = QFileDialog.getExistingDirectory(
                self, "Write the label files into (not the image folder)", str(Path(folder).parent)
            )
            if not out:
                return None
        self.status_label.setText(f"Predicting the images of {folder}…")
        from ..workflow import review_hint  # a model exists: the engine is imported already

        def step(item) -> None:
            done_n, total, name, written, review = item
            if self._task_pbar is None and self._task_worker is not None:
                self._task_pbar = progress(total=total, desc="medseg: predicting a folder")
            pbar = self._task_pbar  # the bar's nested event loop may end the task meanwhile
            if pbar is not None and done_n > pbar.n:
                pbar.update(done_n - pbar.n)
            if written is not None:
                hint = review_hint(review or ())
                wrote = f"wrote {total} label file(s) into {out}"
                notify("info", f"{wrote}; {hint}" if hint else wrote)
                self.status_label.setText(f"Predicted {total} image(s) of {folder} into {out}.")
            elif name:
                self.status_label.setText(f"Predicted {done_n}/{total}: {name}")

        self.session.arm_task()
        return self._run_task(
            self.session.predict_folder,
            lambda _=None: None,
            folder,
            out,
            device=self.device_combo.currentText(),
            on_yield=step,
            stoppable=True,
        )

    def evaluate(self):
        """Dice / HD95 of the current prediction layers against the chosen ground truth."""
        if not self._can_start("wait until training stops before evaluating"):
            return None
        truth_layer = self.truth_combo.layer()
        if truth_layer is None:
            notify("error", "choose a ground-truth Labels layer (values 1..K like the scribbles)")
            return None
        # the chosen image's prediction layers
        image = self.image_combo.layer()
        if image is None:
            image = self.prediction_layers.get(self._prediction_image, Image)
        suffix = self._suffix(image.name, claim=False) if image is not None else ""
        labels = self.prediction_layers.labels_of(self._slot_titles, suffix)
        if not labels:
            notify("error", "no prediction layers yet — press Train or Predict first")
            return None
        truth = copy_layer_data(truth_layer.data)
        names = self.session.class_names() or self.class_names()
        spacing = spatial_transform(image)["scale"] if image is not None else None
        from .session import evaluate_labels

        def done(rows: list[dict]) -> None:
            self.show_metrics(rows, self._slot_titles)

        return self._run_task(evaluate_labels, done, labels, truth, names, spacing)

    # ------------------------------------------------------------------ save / load
    def _model_path(self, path: str | None, save: bool) -> str | None:
        """``path``, or the file the user picks in a dialog (None: cancelled). The dialogs
        open in the model library, where *Start from* lists the models."""
        if path is not None:
            return path
        try:
            if save:
                image = self.image_combo.layer()
                suggested = str(library_path(image.name if image is not None else "medseg_model"))
            else:
                suggested = str(model_library_dir(create=True))
        except MedsegError as e:  # no writable user folder: the dialogs still work
            notify("warning", str(e))
            suggested = "medseg_model.pt" if save else ""
        if save:
            path, _ = QFileDialog.getSaveFileName(
                self,
                "Save model (your model library is here)",
                suggested,
                "napari-medseg model (*.pt)",
            )
        else:
            path, _ = QFileDialog.getOpenFileName(
                self, "Load model", suggested, "napari-medseg model (*.pt)"
            )
        return path or None

    def save_to_library(self, name: str):
        """Saves the current model (with its card) into the model library as ``name``."""
        try:
            path = library_path(name)
        except MedsegError as e:
            notify("error", str(e))
            return None
        return self.save_model(str(path))

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
            self.start_box.refresh(self.session.has_model)  # the library may list it now

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

    def _pick_model(self, path: str | None) -> None:
        """*Start from* chose a library model (or *a file…*: ``None``)."""
        self.load_model(path)

    def _show_card(self) -> None:
        """The card box: the current model's card, or what Train starts from."""
        card = self.session.model_card()
        if self.start_box.start() == CURRENT and card:
            self.start_box.show_card(
                "Train continues this model; Predict and new images use it.\n" + card
            )
        elif card:
            self.start_box.show_card(
                "Train builds new networks (scratch). Until then Predict uses the current "
                "model:\n" + card
            )
        else:
            self.start_box.show_card(
                "No model yet: Train builds new networks from your strokes — or pick a saved "
                "model above (Save model stores into this library)."
            )

    def _adopt_checkpoint(self, checkpoint, path: str) -> None:
        """Checks a read checkpoint against the widget's classes and image, then uses it."""
        from ..checkpoints import card_text

        image = self.image_combo.layer()
        try:
            checkpoint.check_compatible(
                num_classes=len(self.class_names()),
                in_channels=None if image is None else image_channels(image),
                image="this image" if image is None else f"'{image.name}'",
            )
        except MedsegError as e:
            notify("error", str(e))
            # the card says what the model is for; the current choice stays in force
            self.start_box.show_card(f"Not loaded — {e}\n{card_text(checkpoint)}")
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
        self.start_box.refresh(True, select_current=True)
        self._show_card()
        self._schedule_zero_shot()  # the chosen image's prediction, if it has none yet

    # ------------------------------------------------------------------ teardown
    def shutdown(self, timeout_ms: int = 10_000) -> None:
        """Stops training and waits for the workers (the viewer is closing)."""
        self.session.request_stop()
        self._scribble_timer.stop()
        self._zero_shot_timer.stop()  # no new prediction for a viewer that is closing
        self._after_task = None
        self.autosave.close()  # a clean exit: the session is not offered for restore
        from napari.qt.threading import WorkerBase

        WorkerBase.await_workers(msecs=timeout_ms)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
