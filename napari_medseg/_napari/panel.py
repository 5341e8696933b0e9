"""The dock widget's form: its controls, their defaults, and reading the user's choices.

:class:`ControlPanel` builds the controls, keeps the layer pickers in sync with the viewer
and reads the user's choices (into a :class:`~.session.TrainRequest`, checking what is cheap
to check on the GUI thread); what the buttons do (workers, layers, progress) is
:class:`napari_medseg._napari.widget.MedSegWidget`'s, which extends it. Choices come from the
modules that define them: presets and their recipes (:mod:`napari_medseg.presets`), devices,
registered architectures.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
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

from ..errors import MedsegError
from ..presets import PRESETS, RECIPES, default_preset
from .layers import (
    MRI_CLASS_NAMES,
    PREFIX,
    RGB_CLASS_NAMES,
    copy_layer_data,
    default_class_names,
    image_kind,
    parse_class_names,
    slot_display_names,
    spatial_shape,
    spatial_transform,
)
from .notify import notify
from .pairing import image_channels, scribbles_for, user_images
from .pickers import LayerCombo
from .session import TrainRequest, shape_prior_for
from .start_from import StartFromBox
from .tooltips import TOOLTIPS, metric_tooltip

DEFAULT_SLOTS = ("unet", "swin_unet", "mamba_unet")
PREDICT_TARGETS = (
    "current slice",
    "whole image / stack",
    "another image layer",
    "every open image",
    "a folder on disk",
)
#: What Train trains on: the chosen image, or every open image with strokes.
TRAIN_ON = ("this image", "every open image with strokes")
#: The shape priors the widget offers: (label, value for TrainRequest.shape_prior).
SHAPE_PRIORS = (("none", "none"), ("cardiac short axis (LV, Myo)", "cardiac"))


def _gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - torch missing or broken: CPU defaults
        return False


def _spin(cls, lo, hi, value, step=None, decimals=None, special=None, suffix=None, tip=None):
    box = cls()
    if decimals is not None:
        box.setDecimals(decimals)
    box.setRange(lo, hi)
    if step is not None:
        box.setSingleStep(step)
    if special is not None:
        box.setSpecialValueText(special)
    if suffix is not None:
        box.setSuffix(suffix)
    if tip is not None:
        box.setToolTip(tip)
    box.setValue(value)
    return box


class ControlPanel(QWidget):
    """Data, models, buttons, prediction and metrics: every control of the dock widget."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.last_metrics: list[dict] = []
        root = QVBoxLayout(self)
        root.addWidget(self._data_box())
        self.start_box = StartFromBox()
        root.addWidget(self.start_box)
        root.addWidget(self._model_box())
        root.addLayout(self._buttons())
        self.status_label = QLabel("Draw scribbles (label 1 = first class), then press Train.")
        self.status_label.setWordWrap(True)
        root.addWidget(self.status_label)
        root.addWidget(self._predict_box())
        root.addStretch(1)

    # ------------------------------------------------------------------ building
    def _data_box(self) -> QGroupBox:
        box = QGroupBox("Data")
        form = QFormLayout(box)
        self.image_combo = LayerCombo(self.viewer, Image, exclude_prefix=True)
        self.scribble_combo = LayerCombo(self.viewer, Labels, exclude_prefix=True)
        self.new_scribbles_btn = QPushButton("New scribble layer")
        self.new_scribbles_btn.setToolTip(TOOLTIPS["new_scribbles"])
        row = QHBoxLayout()
        row.addWidget(self.scribble_combo, 1)
        row.addWidget(self.new_scribbles_btn)
        self.classes_edit = QLineEdit(", ".join(MRI_CLASS_NAMES))
        self.classes_edit.setToolTip(TOOLTIPS["classes"])
        self.truth_combo = LayerCombo(self.viewer, Labels, allow_none=True, exclude_prefix=True)
        self.truth_combo.setToolTip(TOOLTIPS["truth"])
        self.prior_combo = QComboBox()
        for label, value in SHAPE_PRIORS:
            self.prior_combo.addItem(label, value)
        self.prior_combo.setToolTip(TOOLTIPS["shape_prior"])
        self.classifier_check = QCheckBox("walker + pixel classifier")
        self.classifier_check.setChecked(True)
        self.classifier_check.setToolTip(TOOLTIPS["classifier"])
        self.train_on_combo = QComboBox()
        self.train_on_combo.addItems(list(TRAIN_ON))
        self.train_on_combo.setToolTip(TOOLTIPS["train_on"])
        form.addRow("Image", self.image_combo)
        form.addRow("Scribbles", row)
        form.addRow("Train on", self.train_on_combo)
        form.addRow("Classes", self.classes_edit)
        form.addRow("Shape prior", self.prior_combo)
        form.addRow("Classical answer", self.classifier_check)
        form.addRow("Ground truth", self.truth_combo)
        return box

    def _model_box(self) -> QGroupBox:
        from ..device import DEVICE_CHOICES
        from ..models import list_models, model_info

        box = QGroupBox("Models")
        grid = QGridLayout(box)
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
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setCurrentText(default_preset("cuda" if _gpu_available() else "cpu"))
        self.preset_combo.setToolTip(TOOLTIPS["preset"])
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.iterations_spin = _spin(QSpinBox, 1, 1_000_000, 300)
        self.lr_spin = _spin(QDoubleSpinBox, 1e-5, 1.0, 0.01, step=0.001, decimals=5)
        self.batch_spin = _spin(QSpinBox, 1, 256, 8)
        # 0 trains on whole slices (the lite preset's choice: exactly what prediction sees)
        self.patch_spin = _spin(
            QSpinBox, 0, 1024, 0, step=16, special="whole slice", tip=TOOLTIPS["patch"]
        )
        self.preview_spin = _spin(
            QDoubleSpinBox, 0.5, 600.0, 3.0, suffix=" s", tip=TOOLTIPS["refresh"]
        )
        self.max_side_spin = _spin(
            QSpinBox, 0, 8192, 0, step=64, special="native", tip=TOOLTIPS["max_side"]
        )
        rows = (
            ("Preset", self.preset_combo, "Device", self.device_combo),
            ("Iterations", self.iterations_spin, "Learning rate", self.lr_spin),
            ("Batch", self.batch_spin, "Patch", self.patch_spin),
            ("Refresh every", self.preview_spin, "Max side", self.max_side_spin),
        )
        for r, (left, a, right, b) in enumerate(rows, start=len(DEFAULT_SLOTS)):
            grid.addWidget(QLabel(left), r, 0)
            grid.addWidget(a, r, 1)
            grid.addWidget(QLabel(right), r, 2)
            grid.addWidget(b, r, 3)
        self.preset_combo.currentTextChanged.connect(self.apply_preset_defaults)
        self.apply_preset_defaults(self.preset_combo.currentText())
        return box

    def _buttons(self) -> QHBoxLayout:
        buttons = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        self.stop_btn = QPushButton("Stop")
        self.resume_btn = QPushButton("Resume")
        self.train_btn.setToolTip(TOOLTIPS["train"])
        self.resume_btn.setToolTip(TOOLTIPS["resume"])
        for b in (self.train_btn, self.stop_btn, self.resume_btn):
            buttons.addWidget(b)
        return buttons

    def _predict_box(self) -> QGroupBox:
        box = QGroupBox("Predict and evaluate")
        form = QFormLayout(box)
        self.target_combo = QComboBox()
        self.target_combo.addItems(list(PREDICT_TARGETS))
        self.target_combo.setToolTip(TOOLTIPS["predict_on"])
        self.other_image_combo = LayerCombo(self.viewer, Image, exclude_prefix=True)
        self.predict_btn = QPushButton("Predict")
        row = QHBoxLayout()
        row.addWidget(self.target_combo, 1)
        row.addWidget(self.predict_btn)
        form.addRow("On", row)
        form.addRow("Other image", self.other_image_combo)
        io_row = QHBoxLayout()
        self.save_btn = QPushButton("Save model")
        self.load_btn = QPushButton("Load model")
        self.evaluate_btn = QPushButton("Evaluate")
        self.evaluate_btn.setToolTip(TOOLTIPS["evaluate"])
        for b in (self.save_btn, self.load_btn, self.evaluate_btn):
            io_row.addWidget(b)
        form.addRow(io_row)
        self.metrics_table = QTableWidget(0, 0)
        self.metrics_table.setMinimumHeight(90)
        form.addRow(self.metrics_table)
        return box

    # ------------------------------------------------------------------ following the viewer
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
        # the image's own scribble layer, when it has one (New scribble layer's name)
        if self.scribble_combo.findText(f"{layer.name} scribbles") >= 0:
            self.scribble_combo.setCurrentText(f"{layer.name} scribbles")
        current = parse_class_names(self.classes_edit.text())
        meta_names = (layer.metadata or {}).get("class_names")
        if tuple(current) in (MRI_CLASS_NAMES, RGB_CLASS_NAMES) or not current:
            names = meta_names or default_class_names(bool(getattr(layer, "rgb", False)))
            self.classes_edit.setText(", ".join(names))

    # ------------------------------------------------------------------ reading and setting
    def apply_preset_defaults(self, preset: str) -> None:
        """Learning rate, batch, patch and working size follow the preset's training recipe."""
        recipe = RECIPES.get(preset)
        if not recipe:
            return
        self.lr_spin.setValue(recipe["lr"])
        self.batch_spin.setValue(recipe["batch_size"])
        self.patch_spin.setValue(recipe["patch_size"])
        self.max_side_spin.setValue(recipe["max_side"] or 0)

    def class_names(self) -> list[str]:
        return parse_class_names(self.classes_edit.text())

    def selected_models(self) -> tuple[str, ...]:
        return tuple(c.currentData() for c in self.slot_combos)

    def set_models(self, names) -> None:
        for combo, name in zip(self.slot_combos, names):
            idx = combo.findData(name)
            if idx >= 0:
                combo.setCurrentIndex(idx)

    @staticmethod
    def slot_titles(models, keys) -> dict[str, str]:
        """Layer titles of the slots, by slot key ('UNet', 'UNet 2', …)."""
        from ..models import model_info

        titles = slot_display_names(models, [model_info(m).display_name for m in models])
        return dict(zip(keys, titles))

    def show_metrics(self, rows: list[dict], titles: dict[str, str]) -> None:
        """One row per network (and the ensemble), one column per structure: Dice / HD95."""
        models = list(dict.fromkeys(r["model"] for r in rows))
        classes = list(dict.fromkeys(r["name"] for r in rows))
        table = self.metrics_table
        table.clear()
        table.setRowCount(len(models))
        table.setColumnCount(len(classes))
        table.setHorizontalHeaderLabels([f"{c}\nDice / HD95" for c in classes])
        table.setVerticalHeaderLabels([titles.get(m, m) for m in models])
        for r in rows:
            item = QTableWidgetItem(f"{r['dice']:.3f} / {r['hd95']:.1f}")
            item.setToolTip(metric_tooltip(r))
            table.setItem(models.index(r["model"]), classes.index(r["name"]), item)
        table.resizeColumnsToContents()
        self.last_metrics = rows

    def _current_slice(self, layer: Image) -> int:
        point = layer.world_to_data(self.viewer.dims.point)
        z = int(round(float(point[0])))
        return int(np.clip(z, 0, layer.data.shape[0] - 1))

    def _checked_image(self, layer) -> bool:
        """Whether ``layer`` is an image the networks take; notifies why not."""
        if layer.multiscale:
            notify("error", "multiscale images are not supported — open a single-resolution image")
            return False
        try:
            image_kind(layer.data.shape, layer.rgb)
        except ValueError as e:
            notify("error", str(e))
            return False
        return True

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
        if not self._checked_image(image):
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
        except MedsegError as e:
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
            classifier=self.classifier_check.isChecked(),
            truth=truth,
            spacing=tuple(spatial_transform(image)["scale"]),
            preview_slice=self._current_slice(image) if kind == "stack" else None,
            wait_for_layers=True,
            start=self.start_box.start(),
        )
        if self.train_on_combo.currentText() == TRAIN_ON[1]:
            request.more = self._more_pairs(image, scribbles)
        return request, image, scribbles

    def _labels_and_taken(self) -> tuple[list[Labels], set[str]]:
        """The viewer's Labels layers, and the names no image may take as its strokes (the
        ground-truth layer) — what :func:`~.pairing.scribbles_for` is asked with."""
        labels = [la for la in self.viewer.layers if isinstance(la, Labels)]
        truth = self.truth_combo.layer()
        return labels, ({truth.name} if truth is not None else set())

    def _more_pairs(self, image: Image, scribbles: Labels) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of every other open image with strokes and of its scribble layer
        (:func:`~.pairing.scribbles_for`); says which were left out and why."""
        labels, taken = self._labels_and_taken()
        taken.add(scribbles.name)
        pairs, used, left = [], [], []
        for other in user_images(self.viewer.layers):
            if other is image:
                continue
            if image_channels(other) != image_channels(image):
                left.append(f"'{other.name}' (RGB and grey images cannot be mixed)")
                continue
            found = scribbles_for(other, labels, taken)
            if found is None or not np.asarray(found.data).any():
                left.append(f"'{other.name}' (no scribble layer with strokes)")
                continue
            taken.add(found.name)
            pairs.append((copy_layer_data(other.data), copy_layer_data(found.data)))
            used.append(f"'{other.name}' + '{found.name}'")
        names = ", ".join([f"'{image.name}' + '{scribbles.name}'", *used])
        notify("info", f"training on {1 + len(pairs)} image(s): {names}")
        if left:
            notify(
                "info",
                "left out: " + ", ".join(left) + " — a scribble layer named '<image> "
                "scribbles' is found for its image",
            )
        return pairs
