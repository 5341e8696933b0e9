"""The napari dock widget: draw scribbles, train the trio, watch and use its predictions.

Threading rule: the GUI thread never runs a network. Train/Resume, Predict, Evaluate, Save
and Load all run in napari ``thread_worker`` threads (:mod:`napari_medseg._session`); the GUI
thread only copies layer data out (so the worker never sees an array the user is painting
into) and assigns finished uint8 arrays to layers. The scribble layer is only ever read.

Every problem is reported as a napari notification that says what to do; nothing raised in a
worker reaches the viewer (``_ignore_errors`` + our own ``errored`` handler).
"""

from __future__ import annotations

import gc
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import notifications, progress
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._layers import (
    MRI_CLASS_NAMES,
    PREFIX,
    RGB_CLASS_NAMES,
    copy_layer_data,
    default_class_names,
    image_kind,
    label_colormap,
    parse_class_names,
    slot_display_names,
    spatial_shape,
    spatial_transform,
)
from ._session import (
    GuiError,
    LayerUpdate,
    TrainingSession,
    TrainRequest,
    shape_prior_for,
    start_warm_up,
    user_message,
)
from .slots import slot_keys

NONE = "(none)"
DEFAULT_SLOTS = ("unet", "swin_unet", "mamba_unet")
PREDICT_TARGETS = ("current slice", "whole image / stack", "another image layer")
#: The scribble copy sent to the trainer waits this long after the last stroke (ms).
SCRIBBLE_THROTTLE_MS = 400
#: napari's progress bar repaints (and runs a nested event loop) on every change: at most
#: this often while training (s).
PROGRESS_INTERVAL_S = 1.0
#: The empty prediction layers appear this long after the image/scribble/model choice settles.
PRECREATE_DELAY_MS = 300
#: Metadata flag of a prediction layer that was created ahead of Train and is still empty.
PLACEHOLDER = "medseg_placeholder"


def notify(level: str, message: str) -> None:
    """One place for every user message (looked up at call time so tests can capture it)."""
    fn = {"error": notifications.show_error, "warning": notifications.show_warning}.get(
        level, notifications.show_info
    )
    fn(f"napari-medseg: {message}")


def _gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - torch missing or broken: CPU defaults
        return False


def _write_in_place(layer, data: np.ndarray, index: int | None = None) -> bool:
    """Copies ``data`` into the layer's own array (all of it, or slice ``index``).

    Refreshes the layer only when a value changed, and returns False where writing in place
    is impossible (not a writable numpy array, another shape, a narrower dtype): then the
    caller assigns ``layer.data``. Assigning makes napari re-check dims and extent and
    repaint the layer list even for a hidden layer; a refresh is all an in-place write needs,
    and napari skips it for hidden layers (and refreshes them when they are shown).
    """
    arr = layer.data
    data = np.asarray(data)
    if not isinstance(arr, np.ndarray) or not arr.flags.writeable:
        return False
    target = arr if index is None else arr[index]
    if target.shape != data.shape or not np.can_cast(data.dtype, target.dtype, "safe"):
        return False
    if np.array_equal(target, data):
        return True
    np.copyto(target, data)
    layer.refresh()
    return True


def _defer_editing_overlays(layer) -> None:
    """Delays a Labels layer's brush and polygon overlays until an editing mode is chosen.

    napari builds them (vispy visuals) when the layer is added because they count as
    visible even while no tool uses them — about a third of the cost of adding a Labels
    layer. Prediction layers are rarely edited; the overlays appear on the first switch to
    an editing mode. Uses napari's private ``_overlays``; does nothing where it differs.
    """
    overlays = getattr(layer, "_overlays", None)
    if overlays is None:
        return
    keys = [
        k
        for k in ("polygon", "brush_stroke")
        if k in overlays and getattr(overlays[k], "visible", False) is True
    ]
    if not keys:
        return
    for k in keys:
        overlays[k].visible = False

    def reveal(event=None) -> None:
        if str(layer.mode) in ("pan_zoom", "transform"):
            return
        layer.events.mode.disconnect(reveal)
        for k in keys:
            overlays[k].visible = True

    layer.events.mode.connect(reveal)


class _LayerCombo(QComboBox):
    """Names of the viewer's layers of one type, kept in sync with the layer list."""

    def __init__(self, viewer, layer_type, allow_none: bool = False, exclude_prefix: bool = False):
        super().__init__()
        self.viewer = viewer
        self.layer_type = layer_type
        self.allow_none = allow_none
        self.exclude_prefix = exclude_prefix
        self.refresh()

    def refresh(self) -> None:
        current = self.currentText()
        names = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, self.layer_type)
            and not (self.exclude_prefix and layer.name.startswith(PREFIX))
        ]
        if self.allow_none:
            names = [NONE, *names]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if current not in names:
            self.currentTextChanged.emit(self.currentText())

    def layer(self):
        name = self.currentText()
        if not name or name == NONE or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        return layer if isinstance(layer, self.layer_type) else None


class MedSegWidget(QWidget):
    """Scribble-supervised segmentation with three networks that teach each other."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = TrainingSession()
        self._train_worker = None
        self._task_worker = None
        self._pbar = None
        self._pbar_total = 0
        self._watched_scribbles = None
        self._slot_titles: dict[str, str] = {}
        self._prediction_image: str | None = None  # name of the image the layers belong to
        self._last_update: LayerUpdate | None = None
        self._final_text: str | None = None  # the status line of the run's last update
        self._stopping = False
        self._pbar_time = 0.0
        self._scribble_timer = QTimer(self)
        self._scribble_timer.setSingleShot(True)
        self._scribble_timer.setInterval(SCRIBBLE_THROTTLE_MS)
        self._scribble_timer.timeout.connect(self._send_scribbles)
        self._layer_ops: OrderedDict = OrderedDict()
        self._layer_timer = QTimer(self)
        self._layer_timer.setInterval(0)
        self._layer_timer.timeout.connect(self._run_layer_op)
        # prediction layers are created ahead of Train (see _precreate_layers), once the
        # choices have settled: this timer restarts on every change of image, scribbles, slots
        self._precreate_timer = QTimer(self)
        self._precreate_timer.setSingleShot(True)
        self._precreate_timer.setInterval(PRECREATE_DELAY_MS)
        self._precreate_timer.timeout.connect(self._precreate_layers)
        self._build()
        self._connect_viewer()
        self._update_buttons()
        start_warm_up()

    # ================================================================== layout

    def _apply_preset_defaults(self, preset: str) -> None:
        """Learning rate, batch, patch and working size follow the preset's training recipe."""
        from .training.trainer import PRESET_DEFAULTS

        d = PRESET_DEFAULTS.get(preset)
        if not d:
            return
        self.lr_spin.setValue(d["lr"])
        self.batch_spin.setValue(d["batch_size"])
        self.patch_spin.setValue(d["patch_size"])
        self.max_side_spin.setValue(d["max_side"] or 0)

    def _build(self) -> None:
        from .device import DEVICE_CHOICES
        from .models import list_models, model_info

        root = QVBoxLayout(self)

        data_box = QGroupBox("Data")
        form = QFormLayout(data_box)
        self.image_combo = _LayerCombo(self.viewer, Image, exclude_prefix=True)
        self.scribble_combo = _LayerCombo(self.viewer, Labels, exclude_prefix=True)
        self.new_scribbles_btn = QPushButton("New scribble layer")
        self.new_scribbles_btn.setToolTip("Adds an empty Labels layer matching the image")
        row = QHBoxLayout()
        row.addWidget(self.scribble_combo, 1)
        row.addWidget(self.new_scribbles_btn)
        self.classes_edit = QLineEdit(", ".join(MRI_CLASS_NAMES))
        self.classes_edit.setToolTip(
            "Class names separated by commas. Label 1 in the scribble layer is the first class "
            "(background), label 2 the second, …; label 0 means 'not scribbled'."
        )
        self.truth_combo = _LayerCombo(self.viewer, Labels, allow_none=True, exclude_prefix=True)
        self.truth_combo.setToolTip("Optional ground truth (values 1..K) for Dice and HD95")
        form.addRow("Image", self.image_combo)
        form.addRow("Scribbles", row)
        form.addRow("Classes", self.classes_edit)
        self.prior_combo = QComboBox()
        self.prior_combo.addItem("none", "none")
        self.prior_combo.addItem("cardiac short axis (LV, Myo)", "cardiac")
        self.prior_combo.setToolTip(
            "Anatomical rules applied to every prediction and to the networks' target. "
            "Cardiac: the class named LV is a convex cavity (papillary muscles included), the "
            "class named Myo is no thicker than twice its strokes' distance from the cavity "
            "(draw its strokes along the middle of the wall), and a class without strokes on a "
            "scribbled slice is absent there (scribble every structure a slice shows)"
        )
        form.addRow("Shape prior", self.prior_combo)
        form.addRow("Ground truth", self.truth_combo)
        root.addWidget(data_box)

        model_box = QGroupBox("Models")
        grid = QGridLayout(model_box)
        names = list_models()
        self.slot_combos: list[QComboBox] = []
        for i, default in enumerate(DEFAULT_SLOTS):
            combo = QComboBox()
            for n in names:
                combo.addItem(model_info(n).display_name, n)
            if default in names:
                combo.setCurrentIndex(names.index(default))
            grid.addWidget(QLabel(f"Model {i + 1}"), i, 0)
            grid.addWidget(combo, i, 1, 1, 3)
            self.slot_combos.append(combo)
        r = len(DEFAULT_SLOTS)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(["lite", "paper"])
        self.preset_combo.setCurrentText("paper" if _gpu_available() else "lite")
        self.preset_combo.setToolTip(
            "lite: small networks that train interactively on a CPU; "
            "paper: the published sizes (use a GPU)"
        )
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        grid.addWidget(QLabel("Preset"), r, 0)
        grid.addWidget(self.preset_combo, r, 1)
        grid.addWidget(QLabel("Device"), r, 2)
        grid.addWidget(self.device_combo, r, 3)
        self.iterations_spin = QSpinBox()
        self.iterations_spin.setRange(1, 1_000_000)
        self.iterations_spin.setValue(300)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setSingleStep(0.001)
        self.lr_spin.setValue(0.01)
        grid.addWidget(QLabel("Iterations"), r + 1, 0)
        grid.addWidget(self.iterations_spin, r + 1, 1)
        grid.addWidget(QLabel("Learning rate"), r + 1, 2)
        grid.addWidget(self.lr_spin, r + 1, 3)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setValue(8)
        self.patch_spin = QSpinBox()
        self.patch_spin.setRange(0, 1024)
        self.patch_spin.setSingleStep(16)
        # 0 trains on whole slices (the lite preset's choice: exactly what prediction sees)
        self.patch_spin.setSpecialValueText("whole slice")
        self.patch_spin.setToolTip("crop size in px at the working resolution; 0 = whole slices")
        self.patch_spin.setValue(0)
        grid.addWidget(QLabel("Batch"), r + 2, 0)
        grid.addWidget(self.batch_spin, r + 2, 1)
        grid.addWidget(QLabel("Patch"), r + 2, 2)
        grid.addWidget(self.patch_spin, r + 2, 3)
        self.preview_spin = QDoubleSpinBox()
        self.preview_spin.setRange(0.5, 600.0)
        self.preview_spin.setValue(3.0)
        self.preview_spin.setSuffix(" s")
        self.preview_spin.setToolTip("How often the prediction layers refresh while training")
        grid.addWidget(QLabel("Refresh every"), r + 3, 0)
        grid.addWidget(self.preview_spin, r + 3, 1)
        self.max_side_spin = QSpinBox()
        self.max_side_spin.setRange(0, 8192)
        self.max_side_spin.setSingleStep(64)
        self.max_side_spin.setSpecialValueText("native")
        self.max_side_spin.setToolTip(
            "Train and predict at a reduced size (longest side in pixels) — much faster on a "
            "CPU for large photographs; predictions are brought back to the full size"
        )
        grid.addWidget(QLabel("Max side"), r + 3, 2)
        grid.addWidget(self.max_side_spin, r + 3, 3)
        self.preset_combo.currentTextChanged.connect(self._apply_preset_defaults)
        self._apply_preset_defaults(self.preset_combo.currentText())
        root.addWidget(model_box)

        buttons = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        self.stop_btn = QPushButton("Stop")
        self.resume_btn = QPushButton("Resume")
        self.train_btn.setToolTip("Start training (fine-tunes a loaded model, if any)")
        self.resume_btn.setToolTip("Continue the last training with the current scribbles")
        for b in (self.train_btn, self.stop_btn, self.resume_btn):
            buttons.addWidget(b)
        root.addLayout(buttons)
        self.status_label = QLabel("Draw scribbles (label 1 = first class), then press Train.")
        self.status_label.setWordWrap(True)
        root.addWidget(self.status_label)

        pred_box = QGroupBox("Predict and evaluate")
        pform = QFormLayout(pred_box)
        self.target_combo = QComboBox()
        self.target_combo.addItems(list(PREDICT_TARGETS))
        self.other_image_combo = _LayerCombo(self.viewer, Image, exclude_prefix=True)
        self.predict_btn = QPushButton("Predict")
        prow = QHBoxLayout()
        prow.addWidget(self.target_combo, 1)
        prow.addWidget(self.predict_btn)
        pform.addRow("On", prow)
        pform.addRow("Other image", self.other_image_combo)
        io_row = QHBoxLayout()
        self.save_btn = QPushButton("Save model")
        self.load_btn = QPushButton("Load model")
        self.evaluate_btn = QPushButton("Evaluate")
        self.evaluate_btn.setToolTip(
            "Dice / HD95 of the prediction layers against the ground truth"
        )
        for b in (self.save_btn, self.load_btn, self.evaluate_btn):
            io_row.addWidget(b)
        pform.addRow(io_row)
        self.metrics_table = QTableWidget(0, 0)
        self.metrics_table.setMinimumHeight(90)
        pform.addRow(self.metrics_table)
        root.addWidget(pred_box)
        root.addStretch(1)

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

    # ================================================================== viewer wiring
    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved):
            ev.connect(self._refresh_layers)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        events.inserted.connect(self._on_layer_inserted)

    def _on_layer_inserted(self, event) -> None:
        event.value.events.name.connect(self._refresh_layers)

    def _refresh_layers(self, event=None) -> None:
        value = getattr(event, "value", None) if event is not None else None
        if getattr(value, "name", "").startswith(PREFIX) and getattr(event, "type", "") in (
            "inserted",
            "removed",
        ):
            return  # no combo lists the plugin's own layers
        for combo in (
            self.image_combo,
            self.scribble_combo,
            self.truth_combo,
            self.other_image_combo,
        ):
            combo.refresh()
        self._pick_scribble_layer()

    def _pick_scribble_layer(self) -> None:
        """Prefers a layer called '…scribbles' that matches the image."""
        names = [self.scribble_combo.itemText(i) for i in range(self.scribble_combo.count())]
        current = self.scribble_combo.currentText()
        if "scribble" in current.lower():
            return
        for n in names:
            if "scribble" in n.lower():
                self.scribble_combo.setCurrentText(n)
                return

    def _on_image_changed(self, name: str) -> None:
        layer = self.image_combo.layer()
        if layer is None:
            return
        current = parse_class_names(self.classes_edit.text())
        meta_names = (layer.metadata or {}).get("class_names")
        if tuple(current) in (MRI_CLASS_NAMES, RGB_CLASS_NAMES) or not current:
            names = meta_names or default_class_names(bool(getattr(layer, "rgb", False)))
            self.classes_edit.setText(", ".join(names))

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

    def _update_buttons(self) -> None:
        busy = self.is_busy
        self.train_btn.setEnabled(not busy)
        self.resume_btn.setEnabled(not busy and self.session.has_model)
        self.stop_btn.setEnabled(self.is_training)
        for b in (self.predict_btn, self.save_btn, self.evaluate_btn):
            b.setEnabled(not busy)
        self.load_btn.setEnabled(not busy)

    def class_names(self) -> list[str]:
        return parse_class_names(self.classes_edit.text())

    def selected_models(self) -> tuple[str, ...]:
        return tuple(c.currentData() for c in self.slot_combos)

    def set_models(self, names) -> None:
        for combo, name in zip(self.slot_combos, names):
            idx = combo.findData(name)
            if idx >= 0:
                combo.setCurrentIndex(idx)

    def _slot_titles_for(self, models, keys) -> dict[str, str]:
        from .models import model_info

        titles = slot_display_names(models, [model_info(m).display_name for m in models])
        return dict(zip(keys, titles))

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

    def _train_request(self) -> tuple[TrainRequest, Image, Labels] | None:
        """Validates the cheap things on the GUI thread and copies the layers out."""
        image = self.image_combo.layer()
        if image is None:
            notify(
                "error",
                "no image selected — open an image (or File › Open Sample › "
                "napari-medseg) and choose it under 'Image'",
            )
            return None
        if image.multiscale:
            notify("error", "multiscale images are not supported — open a single-resolution image")
            return None
        try:
            image_kind(image.data.shape, image.rgb)
        except ValueError as e:
            notify("error", str(e))
            return None
        scribbles = self.scribble_combo.layer()
        if scribbles is None:
            notify(
                "error",
                "no scribble layer — press 'New scribble layer', draw a stroke of "
                "background (label 1) and of each structure, then press Train",
            )
            return None
        expected = spatial_shape(image.data.shape, image.rgb)
        if tuple(scribbles.data.shape) != tuple(expected):
            notify(
                "error",
                f"shape mismatch: scribble layer '{scribbles.name}' is "
                f"{tuple(scribbles.data.shape)} but image '{image.name}' needs {expected} — "
                "press 'New scribble layer' to create one that matches the image",
            )
            return None
        names = self.class_names()
        if len(names) < 2:
            notify(
                "error",
                "give at least two class names separated by commas, e.g. 'background, lesion'",
            )
            return None
        try:
            shape_prior_for(self.prior_combo.currentData(), names)
        except GuiError as e:
            notify("error", str(e))
            return None
        truth_layer = self.truth_combo.layer()
        truth = None
        if truth_layer is not None:
            if tuple(truth_layer.data.shape) != tuple(expected):
                notify(
                    "warning",
                    f"ground truth '{truth_layer.name}' has shape "
                    f"{tuple(truth_layer.data.shape)}, not {expected}; it is ignored",
                )
            else:
                truth = copy_layer_data(truth_layer.data)
        kind = image_kind(image.data.shape, image.rgb)
        request = TrainRequest(
            image=copy_layer_data(image.data),
            scribbles=copy_layer_data(scribbles.data),
            class_names=names,
            models=self.selected_models(),
            preset=self.preset_combo.currentText(),
            device=self.device_combo.currentText(),
            iterations=self.iterations_spin.value(),
            lr=self.lr_spin.value(),
            batch_size=self.batch_spin.value(),
            patch_size=self.patch_spin.value(),
            preview_every_seconds=self.preview_spin.value(),
            max_side=self.max_side_spin.value(),
            shape_prior=self.prior_combo.currentData(),
            truth=truth,
            spacing=tuple(spatial_transform(image)["scale"]),
            preview_slice=self._current_slice(image) if kind == "stack" else None,
            wait_for_layers=True,
        )
        return request, image, scribbles

    def start_training(self, resume: bool = False):
        """Train (new trainer; fine-tunes a loaded model) or Resume (continue the last one)."""
        if self.is_busy:
            notify("warning", "already busy — press Stop first, or wait for the current task")
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
        elif self.session.loaded_state is not None:
            notify("info", "fine-tuning the loaded model on these scribbles")
        self._slot_titles = self._slot_titles_for(request.models, slot_keys(request.models))
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
        self._stopping = False
        self._pbar_time = 0.0
        self.status_label.setText("Preparing the networks…")
        self._update_buttons()
        # Python's full garbage collections walk every object of the process (napari, torch,
        # the layers): 200–400 ms with the GIL held, and the worker's allocations (building
        # the networks) triggered one right after Train — a 400 ms freeze. Frozen objects are
        # skipped until the run ends (unfreeze in _on_train_finished).
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
        if upd.stage == "ready":
            if self._pbar is None:
                # created here, not on the click: the worker now waits for the layers, whereas
                # before "ready" it builds the networks, and napari's progress widgets set up
                # while another thread holds the GIL froze the viewer for ~400 ms
                self._pbar = progress(total=self._pbar_total, desc="medseg: training")
            image = self._layer_or_none(self._prediction_image, Image)
            if image is not None:
                self._rename_placeholders(self._slot_titles)
                self._prepare_layers(image)
            # the worker waits for this (behind the layer creations) before its first step
            self._queue_layer_op(("layers ready", None), self.session.layers_ready)
            if self._final_text is None and not self._stopping:
                self.status_label.setText(f"Training on {upd.device} ({upd.preset})…")
            return
        self._last_update = upd
        text = self._progress_text(upd)
        if upd.done:
            self._final_text = ("Stopped" if upd.stopped else "Finished") + f" — {text}"
            self.status_label.setText(self._final_text)
        elif self._final_text is None and not self._stopping:
            self.status_label.setText(text)
        image = self._layer_or_none(self._prediction_image, Image)
        if upd.labels is not None and image is not None:
            self._show_prediction(upd, image, slice_index=upd.slice_index)
        if upd.metrics:
            self._show_metrics(upd.metrics)
        self._update_progress(upd)

    def _progress_text(self, upd: LayerUpdate) -> str:
        loss = upd.losses.get("total", float("nan"))
        per_model = " · ".join(
            f"{self._slot_titles.get(k, k)} {v:.3f}" for k, v in upd.losses.items() if k != "total"
        )
        return (
            f"iteration {upd.run_step}/{upd.run_total} · loss {loss:.3f} · "
            f"{upd.iterations_per_second:.2f} it/s · {upd.device} {upd.preset}\n"
            f"losses: {per_model}"
        )

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

    # ------------------------------------------------------------------ layers
    def _layer_or_none(self, name: str | None, kind):
        if name is None or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        return layer if isinstance(layer, kind) else None

    def _set_labels(
        self,
        name: str,
        data: np.ndarray,
        image: Image,
        num_classes: int,
        visible: bool,
        slice_index: int | None,
    ) -> None:
        """Shows ``data`` (the whole image, or one slice) in the Labels layer ``name``.

        An existing layer of the right shape gets the data written into its own array (see
        :func:`_write_in_place`); only a missing or mismatched layer is (re)created.
        """
        layer = self._layer_or_none(name, Labels)
        full = spatial_shape(image.data.shape, image.rgb)
        if layer is not None and tuple(layer.data.shape) == tuple(full):
            if layer.metadata.get("medseg_classes") != num_classes:
                layer.colormap = label_colormap(num_classes, show_background=False)
                layer.metadata["medseg_classes"] = num_classes
            layer.metadata.pop(PLACEHOLDER, None)
            if _write_in_place(layer, data, slice_index):
                return
            if slice_index is not None:
                base = np.array(layer.data, copy=True)
                base[slice_index] = data
                data = base
            layer.data = data
            return
        if slice_index is not None:
            base = np.zeros(full, dtype=data.dtype)
            base[slice_index] = data
            data = base
        if layer is not None:
            self.viewer.layers.remove(layer)
        layer = Labels(
            data,
            name=name,
            colormap=label_colormap(num_classes, show_background=False),
            opacity=0.6,
            visible=visible,
            metadata={"medseg_classes": num_classes, PLACEHOLDER: not data.any()},
            **spatial_transform(image),
        )
        _defer_editing_overlays(layer)
        self._add_prediction_layer(layer)

    def _add_prediction_layer(self, layer) -> None:
        """Adds a layer without making it the active one.

        napari activates every new layer, which would swap the layer controls (a costly
        repaint) and, worse, send the user's next brush stroke into a prediction layer while
        they keep drawing scribbles during training.
        """
        layers = self.viewer.layers
        activate = getattr(layers, "_activate_on_insert", None)  # private; absent: activate
        if activate is not None:
            layers._activate_on_insert = False
        try:
            layers.append(layer)
        finally:
            if activate is not None:
                layers._activate_on_insert = activate

    def _prepare_layers(
        self, image: Image, titles: dict[str, str] | None = None, replace: bool = True
    ) -> None:
        """Queues the creation of the (empty) prediction layers that do not exist yet.

        Adding a napari layer is the most expensive thing the GUI thread does here (vispy
        visuals, layer controls, a repaint: 100–500 ms on a software-GL machine), so it
        happens ahead of Train (:meth:`_precreate_layers`) and, for what is still missing, on
        the worker's "ready" update, one layer per event-loop pass (:meth:`_queue_layer_op`),
        before the first step. ``replace``: also recreate layers whose shape belongs to
        another image (only Train does that; choosing an image never drops a result).
        """
        full = spatial_shape(image.data.shape, image.rgb)

        def wanted(name: str, kind) -> bool:
            layer = self._layer_or_none(name, kind)
            if layer is None and name not in self.viewer.layers:
                return True  # missing
            return replace and (layer is None or tuple(layer.data.shape) != tuple(full))

        k = len(self.session.class_names() or self.class_names())
        titles = self._slot_titles if titles is None else titles
        names = [(f"{PREFIX}{t}", False) for t in titles.values()]
        names.append((f"{PREFIX}ensemble", True))
        for name, visible in names:
            if wanted(name, Labels):
                self._queue_layer_op(
                    (name, None),
                    partial(
                        self._set_labels, name, np.zeros(full, np.uint8), image, k, visible, None
                    ),
                )
        name = f"{PREFIX}disagreement"
        if wanted(name, Image):
            self._queue_layer_op(
                (name, None),
                partial(self._set_disagreement, name, np.zeros(full, np.float32), image, None),
            )

    def _rename_placeholders(self, titles: dict[str, str]) -> None:
        """Empty layers made ahead of Train for a slot whose model changed take the new name."""
        wanted = [f"{PREFIX}{t}" for t in titles.values()]
        spare = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Labels)
            and layer.metadata.get(PLACEHOLDER)
            and layer.name not in (*wanted, f"{PREFIX}ensemble")
        ]
        for name in wanted:
            if spare and name not in self.viewer.layers:
                spare.pop(0).name = name

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
        titles = self._slot_titles_for(models, slot_keys(models))
        self._rename_placeholders(titles)
        self._prepare_layers(image, titles, replace=False)

    def _show_prediction(
        self, upd: LayerUpdate, image: Image, suffix: str = "", slice_index: int | None = None
    ) -> None:
        """Queues one layer operation per prediction layer (see :meth:`_queue_layer_op`)."""
        k = len(self.session.class_names() or self.class_names())
        items = [
            (f"{PREFIX}{self._slot_titles.get(key, key)}{suffix}", data, False)
            for key, data in upd.labels.items()
        ]
        items.append((f"{PREFIX}ensemble{suffix}", upd.ensemble, True))
        for name, data, visible in items:
            self._queue_layer_op(
                (name, slice_index),
                partial(self._set_labels, name, data, image, k, visible, slice_index),
            )
        name = f"{PREFIX}disagreement{suffix}"
        self._queue_layer_op(
            (name, slice_index),
            partial(self._set_disagreement, name, upd.disagreement, image, slice_index),
        )

    def _queue_layer_op(self, key, op: Callable[[], None]) -> None:
        """Runs layer updates one per event-loop pass, newest data per layer only.

        Creating a napari layer (or uploading its data) costs tens to hundreds of ms in the GUI
        thread, most of it rendering; doing five in one slot was the longest freeze measured
        by benchmarks/bench_gui_responsiveness.py. One per pass lets Qt repaint and handle
        input in between; a newer prediction replaces a still-queued older one.
        """
        self._layer_ops.pop(key, None)
        self._layer_ops[key] = op
        if not self._layer_timer.isActive():
            self._layer_timer.start()

    def _run_layer_op(self) -> None:
        if not self._layer_ops:
            self._layer_timer.stop()
            return
        _, op = self._layer_ops.popitem(last=False)
        try:
            op()
        except Exception as e:  # noqa: BLE001 - a layer the user removed/edited must not crash
            notify("warning", f"could not update a prediction layer ({e})")
        if not self._layer_ops:
            self._layer_timer.stop()
        else:  # re-armed behind the timers that came due meanwhile: one op per pass
            self._layer_timer.start()

    @property
    def layers_pending(self) -> bool:
        return bool(self._layer_ops)

    def _set_disagreement(
        self, name: str, dis: np.ndarray, image: Image, slice_index: int | None
    ) -> None:
        layer = self._layer_or_none(name, Image)
        full = spatial_shape(image.data.shape, image.rgb)
        if layer is not None and tuple(layer.data.shape) == tuple(full):
            # in place: no contrast-limit or dims recomputation, nothing at all while hidden
            if _write_in_place(layer, dis, slice_index):
                return
            if slice_index is not None:
                base = np.array(layer.data, dtype=np.float32, copy=True)
                base[slice_index] = dis
                dis = base
            layer.data = dis
            return
        if slice_index is not None:
            base = np.zeros(full, dtype=np.float32)
            base[slice_index] = dis
            dis = base
        if layer is not None:
            self.viewer.layers.remove(layer)
        self._add_prediction_layer(
            Image(
                dis,
                name=name,
                colormap="magma",
                contrast_limits=(0.0, 1.0),
                blending="additive",
                opacity=0.7,
                visible=False,
                **spatial_transform(image),
            )
        )

    def _show_metrics(self, rows: list[dict]) -> None:
        """One row per network (and the ensemble), one column per structure: Dice / HD95."""
        models = list(dict.fromkeys(r["model"] for r in rows))
        classes = list(dict.fromkeys(r["name"] for r in rows))
        table = self.metrics_table
        table.clear()
        table.setRowCount(len(models))
        table.setColumnCount(len(classes))
        table.setHorizontalHeaderLabels([f"{c}\nDice / HD95" for c in classes])
        table.setVerticalHeaderLabels([self._slot_titles.get(m, m) for m in models])
        for r in rows:
            item = QTableWidgetItem(f"{r['dice']:.3f} / {r['hd95']:.1f}")
            item.setToolTip(
                f"{r['name']}: Dice {r['dice']:.4f}, HD95 {r['hd95']:.2f} "
                "(in the image's scale units; background not scored)"
            )
            table.setItem(models.index(r["model"]), classes.index(r["name"]), item)
        table.resizeColumnsToContents()
        self.last_metrics = rows

    # ------------------------------------------------------------------ predict
    def _current_slice(self, layer: Image) -> int:
        point = layer.world_to_data(self.viewer.dims.point)
        z = int(round(float(point[0])))
        return int(np.clip(z, 0, layer.data.shape[0] - 1))

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
        if self.is_busy:
            notify("warning", "wait until training stops (or press Stop) before predicting")
            return None
        if not self.session.has_model:
            notify("error", "no model yet — press Train (or Load model) first")
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
        self._title_slots_from_session()
        self.status_label.setText("Predicting…")

        def done(upd: LayerUpdate) -> None:
            for w in upd.warnings:
                notify("warning", w)
            if layer.name in self.viewer.layers:
                self._show_prediction(upd, layer, suffix=suffix, slice_index=slice_index)
            if upd.metrics:
                self._show_metrics(upd.metrics)
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
        )

    def _title_slots_from_session(self) -> None:
        if self.session.trainer is not None:
            tr = self.session.trainer
            self._slot_titles = self._slot_titles_for(tr.config.models, tr.keys)
        elif self.session.loaded_state is not None:
            slots = self.session.loaded_state["slots"]
            self._slot_titles = self._slot_titles_for(
                [s["name"] for s in slots], [s["key"] for s in slots]
            )

    def evaluate(self):
        """Dice / HD95 of the current prediction layers against the chosen ground truth."""
        if self.is_busy:
            notify("warning", "wait until training stops before evaluating")
            return None
        truth_layer = self.truth_combo.layer()
        if truth_layer is None:
            notify("error", "choose a ground-truth Labels layer (values 1..K like the scribbles)")
            return None
        labels = {}
        for key, title in self._slot_titles.items():
            layer = self._layer_or_none(f"{PREFIX}{title}", Labels)
            if layer is not None:
                labels[key] = copy_layer_data(layer.data)
        ens = self._layer_or_none(f"{PREFIX}ensemble", Labels)
        if ens is not None:
            labels["ensemble"] = copy_layer_data(ens.data)
        if not labels:
            notify("error", "no prediction layers yet — press Train or Predict first")
            return None
        truth = copy_layer_data(truth_layer.data)
        names = self.session.class_names() or self.class_names()
        image = self._layer_or_none(self._prediction_image, Image)
        spacing = spatial_transform(image)["scale"] if image is not None else None
        from ._session import evaluate_labels

        return self._run_task(evaluate_labels, self._show_metrics, labels, truth, names, spacing)

    # ------------------------------------------------------------------ save / load
    def save_model(self, path: str | None = None):
        if self.is_busy:
            notify("warning", "press Stop (or wait for training to finish) before saving")
            return None
        if not self.session.has_model:
            notify("error", "there is no model to save yet — press Train first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Save model", "medseg_model.pt", "napari-medseg model (*.pt)"
            )
            if not path:
                return None
        names = self.class_names()

        def done(p) -> None:
            notify("info", f"model saved to {p}")
            self.status_label.setText(f"Saved {Path(p).name}")

        return self._run_task(self.session.save, done, path, names)

    def load_model(self, path: str | None = None):
        if self.is_busy:
            notify("warning", "press Stop (or wait for training to finish) before loading")
            return None
        if path is None:
            path, _ = QFileDialog.getOpenFileName(
                self, "Load model", "", "napari-medseg model (*.pt)"
            )
            if not path:
                return None

        def done(state: dict) -> None:
            self._adopt_checkpoint(state, str(path))

        return self._run_task(self.session.read_checkpoint, done, path)

    def _adopt_checkpoint(self, state: dict, path: str) -> None:
        """Checks a read checkpoint against the widget's classes and image, then uses it."""
        meta = state.get("metadata", {})
        saved_names = list(meta.get("class_names") or [])
        k = int(state["num_classes"])
        names = self.class_names()
        if k != len(names):
            hint = f" ({', '.join(saved_names)})" if saved_names else ""
            notify(
                "error",
                f"the model in {Path(path).name} was trained for {k} classes{hint} but "
                f"{len(names)} class names are set — enter {k} class names (or load another "
                "model)",
            )
            return
        image = self.image_combo.layer()
        if image is not None:
            channels = 3 if image.rgb else 1
            if int(state["in_channels"]) != channels:
                kinds = {1: "grayscale", 3: "RGB"}
                notify(
                    "error",
                    f"the model in {Path(path).name} expects "
                    f"{kinds.get(int(state['in_channels']))} images but '{image.name}' is "
                    f"{kinds[channels]} — select a matching image layer first",
                )
                return
        models = [s["name"] for s in state["slots"]]
        from .models import list_models

        unknown = [m for m in models if m not in list_models()]
        if unknown:
            notify(
                "error",
                f"the model uses architectures {unknown} that this version does not "
                "provide — update napari-medseg",
            )
            return
        self.set_models(models)
        preset = state["slots"][0].get("preset")
        if preset:
            self.preset_combo.setCurrentText(preset)
        self.session.adopt(state, path)
        self._title_slots_from_session()
        notify(
            "info",
            f"loaded {Path(path).name}: {', '.join(self._slot_titles.values())} "
            f"({preset}). Predict uses it; Train fine-tunes it on your scribbles.",
        )
        self.status_label.setText(f"Loaded {Path(path).name}")
        self._update_buttons()

    # ------------------------------------------------------------------ teardown
    def shutdown(self, timeout_ms: int = 10_000) -> None:
        """Stops training and waits for the workers (the viewer is closing)."""
        self.session.request_stop()
        self._scribble_timer.stop()
        from napari.qt.threading import WorkerBase

        WorkerBase.await_workers(msecs=timeout_ms)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
