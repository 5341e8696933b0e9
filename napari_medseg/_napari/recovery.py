"""The widget's autosave and its offer to restore after a crash (the format: :mod:`..autosave`).

Every few minutes (:func:`~napari_medseg.autosave.autosave_interval`) the GUI thread copies the
scribble layer and reads the form, and a background thread hashes the image and writes the
snapshot: the GUI thread does no file or tensor work beyond that copy. When the model changed
since the last autosave and the widget is idle, it is first written by a worker of the widget's
own (``_run_task``: Train waits for it, so no step changes the weights while they are saved);
while training runs, the snapshot keeps the last saved model.

At start, a session that ended without a clean exit (its process gone) is offered in a bar at the
top of the panel, with an info notification: Restore *adds* the scribbles as a new Labels
layer, selects the image they were drawn on when it is open (same shape and sha256), puts the
settings back and loads the model; no existing layer is changed. Discard removes it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from napari.layers import Image
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from .. import autosave
from .layers import copy_layer_data, label_colormap, spatial_shape
from .notify import notify

#: How long closing waits for a snapshot being written (s).
CLOSE_WAIT_S = 10.0


class SessionAutosave:
    """Autosaves ``widget``'s session on a timer and offers the newest crashed one back.

    ``interval_s``: seconds between autosaves (default: ``$MEDSEG_AUTOSAVE_SECONDS`` or 180;
    0 switches the timer off, :meth:`save_now` still works). ``root``: the sessions' folder
    (default :func:`~napari_medseg.autosave.autosave_root`).
    """

    def __init__(self, widget, interval_s: float | None = None, root: Path | None = None):
        self.widget = widget
        self.root = autosave.autosave_root() if root is None else Path(root)
        self.interval_s = autosave.autosave_interval() if interval_s is None else interval_s
        self.folder: Path | None = None  # this session's, made at the first save
        self.last_snapshot: Path | None = None
        self.last_error: str | None = None
        self.offered: autosave.SavedSession | None = None
        self.banner: QFrame | None = None
        self._thread: threading.Thread | None = None
        self._taking_model = False
        self._saved_model: tuple | None = None  # which model the snapshots hold
        self._hashes: dict[tuple, str | None] = {}
        self._closed = False
        self.timer = QTimer(widget)
        self.timer.timeout.connect(self.save_now)
        if self.interval_s > 0:
            self.timer.start(max(1, int(self.interval_s * 1000)))
        try:
            self.offer_restore()
        except OSError as e:  # an unreadable data folder must not keep the widget from opening
            notify("warning", f"could not look for autosaved sessions in {self.root} ({e})")

    # ------------------------------------------------------------------ saving
    @property
    def busy(self) -> bool:
        """A snapshot is being written (or its model taken)."""
        return self._taking_model or (self._thread is not None and self._thread.is_alive())

    def wait(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Waits for the snapshot being written (not for a model being taken)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _model_state(self) -> tuple | None:
        """Identifies the session's model: it changed when this changes (None: no model)."""
        wf = self.widget.session.workflow
        if wf is None or not wf.has_model:
            return None
        trainer = wf.trainer
        return (id(wf), id(trainer), getattr(trainer, "iteration", None), id(wf.base))

    def _collect(self) -> tuple[autosave.Snapshot, object] | None:
        """What to save, read on the GUI thread: a copy of the scribbles, the settings, and the
        image layer's array (hashed by the writer thread). None: nothing worth saving yet."""
        w = self.widget
        layer = w.scribble_combo.layer()
        if layer is None:
            return None
        scribbles = copy_layer_data(layer.data)
        if not scribbles.any() and self._model_state() is None:
            return None  # nothing drawn and no model: nothing worth restoring
        image = w.image_combo.layer()
        snapshot = autosave.Snapshot(
            scribbles=scribbles,
            scribbles_name=layer.name,
            scale=tuple(float(v) for v in layer.scale),
            translate=tuple(float(v) for v in layer.translate),
            settings=self._settings(),
        )
        if image is None:
            return snapshot, None
        snapshot.image_name = image.name
        snapshot.image_shape = tuple(int(n) for n in image.data.shape)
        return snapshot, image.data

    def _settings(self) -> dict:
        w = self.widget
        return {
            "class_names": w.class_names(),
            "models": list(w.selected_models()),
            "preset": w.preset_combo.currentText(),
            "device": w.device_combo.currentText(),
            "iterations": w.iterations_spin.value(),
            "lr": w.lr_spin.value(),
            "batch_size": w.batch_spin.value(),
            "patch_size": w.patch_spin.value(),
            "refresh_seconds": w.preview_spin.value(),
            "max_side": w.max_side_spin.value(),
            "shape_prior": w.prior_combo.currentData(),
            "classifier": w.classifier_check.isChecked(),
        }

    def save_now(self) -> bool:
        """Starts one autosave (returns False when there is nothing to save, or one runs)."""
        if self._closed or self.busy:
            return False
        if self.last_error:
            notify("warning", f"autosave failed: {self.last_error}")
            self.last_error = None
        collected = self._collect()
        if collected is None:
            return False
        snapshot, image_data = collected
        try:
            if self.folder is None:
                self.folder = autosave.new_session(self.root)
        except OSError as e:
            self.last_error = f"cannot write to {self.root} ({e})"
            return False
        model = self._model_state()
        w = self.widget
        if model is not None and model != self._saved_model and not w.is_busy:
            # the weights are saved by a worker: tensors stay off the GUI thread, and Train
            # waits for it instead of changing them while they are written
            self._taking_model = True
            pending = self.folder / ".model-pending.pt"
            worker = w._run_task(
                self._save_model,
                lambda path: self._write(snapshot, image_data, path, model),
                pending,
            )
            worker.finished.connect(self._model_taken)
            return True
        self._write(snapshot, image_data, None, None)
        return True

    def _save_model(self, path: Path) -> Path | None:
        """In a worker: the session's model to ``path`` (None, with the reason kept, on error)."""
        try:
            return self.widget.session.save(path)
        except Exception as e:  # noqa: BLE001 - an autosave problem is reported, never raised
            self.last_error = f"the model could not be saved ({e})"
            return None

    def _model_taken(self) -> None:
        self._taking_model = False

    def _write(
        self, snapshot: autosave.Snapshot, image_data, model_file: Path | None, model
    ) -> None:
        """Hashes the image and writes the snapshot in a background thread. ``model``: which
        model ``model_file`` holds (None: the previous snapshot's model is carried over)."""
        keep = self._model_state() is not None

        def run() -> None:
            try:
                snapshot.image_sha256 = self._image_hash(snapshot, image_data)
                self.last_snapshot = autosave.write_snapshot(
                    self.folder, snapshot, model_file, keep_model=keep
                )
                if model_file is not None:
                    self._saved_model = model
            except Exception as e:  # noqa: BLE001 - reported at the next autosave
                self.last_error = f"{type(e).__name__}: {e}"

        # not a napari worker: Qt's pool is the training's (docs/design.md, warm-up)
        self._thread = threading.Thread(target=run, name="napari-medseg autosave", daemon=True)
        self._thread.start()

    def _image_hash(self, snapshot: autosave.Snapshot, data) -> str | None:
        """The image's sha256, computed once per layer array (images are read, not painted)."""
        if data is None:
            return None
        key = (snapshot.image_name, id(data), snapshot.image_shape, str(getattr(data, "dtype", "")))
        if key not in self._hashes:
            self._hashes = {key: autosave.array_sha256(data)}
        return self._hashes[key]

    def close(self) -> None:
        """The widget closes normally: no more autosaves, and the session is not offered."""
        if self._closed:
            return
        self._closed = True
        self.timer.stop()
        self.wait()
        if self.folder is not None:
            try:
                autosave.mark_clean(self.folder)
            except OSError:
                pass

    # ------------------------------------------------------------------ restoring
    def offer_restore(self) -> autosave.SavedSession | None:
        """Shows the newest crashed session (if any) in a bar with Restore and Discard."""
        found = autosave.crashed_sessions(self.root)
        if not found:
            return None
        saved = self.offered = found[0]
        more = f" ({len(found) - 1} older one(s) kept)" if len(found) > 1 else ""
        text = f"napari-medseg did not close normally last time: {saved.describe()}{more}."
        self._show_banner(text)
        notify(
            "info", text + " Press Restore at the top of the napari-medseg panel to get it back."
        )
        return saved

    def _show_banner(self, text: str) -> None:
        banner = QFrame(self.widget)
        banner.setFrameShape(QFrame.Shape.StyledPanel)
        box = QVBoxLayout(banner)
        label = QLabel(text)
        label.setWordWrap(True)
        box.addWidget(label)
        row = QHBoxLayout()
        self.restore_btn = QPushButton("Restore")
        self.restore_btn.setToolTip(
            "Adds the autosaved scribbles as a new layer, puts the settings back and loads the "
            "model; your open layers are not changed"
        )
        self.discard_btn = QPushButton("Discard")
        self.discard_btn.setToolTip("Deletes the autosaved session")
        row.addWidget(self.restore_btn)
        row.addWidget(self.discard_btn)
        box.addLayout(row)
        self.restore_btn.clicked.connect(lambda: self.restore())
        self.discard_btn.clicked.connect(lambda: self.discard_offer())
        self.widget.layout().insertWidget(0, banner)
        self.banner = banner

    def _hide_banner(self) -> None:
        if self.banner is not None:
            self.banner.hide()
            self.banner.deleteLater()
            self.banner = None

    def discard_offer(self) -> None:
        if self.offered is not None:
            autosave.discard(self.offered.folder)
            self.offered = None
        self._hide_banner()

    def restore(self, saved: autosave.SavedSession | None = None):
        """Adds the saved scribbles as a new layer, restores the settings, loads the model.

        Returns the new Labels layer (None when the snapshot cannot be read)."""
        saved = saved or self.offered
        if saved is None:
            return None
        try:
            snap = autosave.read_snapshot(saved.path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            notify("error", f"the autosaved session in {saved.path} cannot be read ({e})")
            return None
        w = self.widget
        self._apply_settings(snap.settings)
        image = self._find_image(snap)
        names = w.class_names()
        name = self._free_name(f"{snap.scribbles_name} (restored)")
        kwargs = {}
        if snap.scale is not None and len(snap.scale) == snap.scribbles.ndim:
            kwargs = {"scale": snap.scale, "translate": snap.translate}
        layer = w.viewer.add_labels(
            snap.scribbles, name=name, colormap=label_colormap(max(len(names), 2)), **kwargs
        )
        if image is not None:
            w.image_combo.setCurrentText(image.name)
        w.scribble_combo.setCurrentText(layer.name)
        where = (
            f"on '{image.name}'"
            if image is not None
            else f"— open the image '{snap.image_name}' {snap.image_shape} it was drawn on"
        )
        notify("info", f"restored the scribbles as '{layer.name}' {where}")
        # the session is not offered again; its folder goes at the next start
        autosave.mark_clean(saved.folder)
        self.offered = None
        self._hide_banner()
        if snap.model is not None:
            w.load_model(str(snap.model))
        return layer

    def _apply_settings(self, s: dict) -> None:
        w = self.widget
        if s.get("class_names"):
            w.classes_edit.setText(", ".join(s["class_names"]))
        if s.get("preset"):  # first: a preset fills in its recipe, the saved values follow
            w.preset_combo.setCurrentText(s["preset"])
        if s.get("models"):
            w.set_models(s["models"])
        if s.get("device"):
            w.device_combo.setCurrentText(s["device"])
        for key, spin in (
            ("iterations", w.iterations_spin),
            ("lr", w.lr_spin),
            ("batch_size", w.batch_spin),
            ("patch_size", w.patch_spin),
            ("refresh_seconds", w.preview_spin),
            ("max_side", w.max_side_spin),
        ):
            if isinstance(s.get(key), int | float):
                spin.setValue(s[key])
        if s.get("shape_prior") is not None:
            index = w.prior_combo.findData(s["shape_prior"])
            if index >= 0:
                w.prior_combo.setCurrentIndex(index)
        if isinstance(s.get("classifier"), bool):
            w.classifier_check.setChecked(s["classifier"])

    def _find_image(self, snap: autosave.Snapshot):
        """The open image layer the scribbles were drawn on: same shape and sha256."""
        candidates = [
            la
            for la in self.widget.viewer.layers
            if isinstance(la, Image)
            and tuple(la.data.shape) == tuple(snap.image_shape or ())
            and spatial_shape(la.data.shape, la.rgb) == tuple(snap.scribbles.shape)
        ]
        if snap.image_name is not None:  # the one of the same name is tried first
            candidates.sort(key=lambda la: la.name != snap.image_name)
        for layer in candidates:
            if snap.image_sha256 is None or autosave.array_sha256(layer.data) == snap.image_sha256:
                return layer
        return None

    def _free_name(self, name: str) -> str:
        existing = {la.name for la in self.widget.viewer.layers}
        if name not in existing:
            return name
        n = 2
        while f"{name} {n}" in existing:
            n += 1
        return f"{name} {n}"
