"""The *Start from* box: what Train starts from, the model library, the model card.

Choices: *scratch* (new networks), *current model* (the trio trained or loaded in this
session: Train continues it, so it carries from image to image), every model of the library
(:mod:`napari_medseg.model_library`, where *Save model* stores) and *a file…*. Picking a
library model or a file loads it (in a worker, :class:`~.widget.MedSegWidget`) and, when its
classes and channels fit, makes it the current model; the card shows what
``napari-medseg info`` prints, or why the model does not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import QComboBox, QGroupBox, QPlainTextEdit, QVBoxLayout

from ..model_library import library_models
from .tooltips import TOOLTIPS

SCRATCH = "scratch"
CURRENT = "current"
FILE = "file"
#: How the fixed choices read in the combo box.
LABELS = {SCRATCH: "scratch (new networks)", CURRENT: "current model", FILE: "a file…"}


class _FreshCombo(QComboBox):
    """A combo box that lists its choices again each time it opens (models saved meanwhile
    by the CLI or another viewer appear)."""

    def __init__(self, before_popup: Callable[[], None]):
        super().__init__()
        self._before_popup = before_popup

    def showPopup(self) -> None:  # noqa: N802 - Qt API
        self._before_popup()
        super().showPopup()


class StartFromBox(QGroupBox):
    """The combo box and the card. The widget sets ``on_pick(path | None)``, which loads a
    model (None: asks for a file), and ``on_choice()``, called when scratch or the current
    model is chosen."""

    def __init__(self, parent=None):
        super().__init__("Start from", parent)
        layout = QVBoxLayout(self)
        self.combo = _FreshCombo(lambda: self.refresh(self._has_model))
        self.combo.setToolTip(TOOLTIPS["start_from"])
        self.card = QPlainTextEdit()
        self.card.setReadOnly(True)
        self.card.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.card.setMaximumHeight(130)
        self.card.setToolTip(TOOLTIPS["model_card"])
        layout.addWidget(self.combo)
        layout.addWidget(self.card)
        self.on_pick: Callable[[str | None], None] | None = None
        self.on_choice: Callable[[], None] | None = None
        self._has_model = False
        self._choice = SCRATCH  # the last fixed choice: restored after a pick
        self.combo.activated.connect(self._activated)
        self.refresh(False)

    # ------------------------------------------------------------------ state
    def start(self) -> str:
        """What Train starts from: ``"current"`` or ``"scratch"``."""
        return CURRENT if self._has_model and self._choice == CURRENT else SCRATCH

    def refresh(self, has_model: bool, select_current: bool = False) -> None:
        """Lists the choices again (the library may have changed); keeps the choice, and
        selects the current model when one appears or ``select_current``."""
        appeared = has_model and not self._has_model
        self._has_model = has_model
        if has_model and (appeared or select_current):
            self._choice = CURRENT
        if not has_model:
            self._choice = SCRATCH
        combo = self.combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(LABELS[SCRATCH], SCRATCH)
        if has_model:
            combo.addItem(LABELS[CURRENT], CURRENT)
        models = library_models()
        if models:
            combo.insertSeparator(combo.count())
        for path in models:
            combo.addItem(f"library: {path.stem}", str(path))
        combo.addItem(LABELS[FILE], FILE)
        combo.setCurrentIndex(max(0, combo.findData(self._choice)))
        combo.blockSignals(False)

    def choose(self, choice: str) -> None:
        """Selects scratch or the current model, as the user would."""
        index = self.combo.findData(choice)
        if index >= 0:
            self.combo.setCurrentIndex(index)
            self._activated(index)

    def library_entries(self) -> list[str]:
        """The library models listed (their paths), in order."""
        return [
            self.combo.itemData(i)
            for i in range(self.combo.count())
            if self.combo.itemData(i) not in (None, SCRATCH, CURRENT, FILE)
        ]

    def show_card(self, text: str) -> None:
        self.card.setPlainText(text)

    # ------------------------------------------------------------------ user picks
    def pick_library_model(self, path: str | Path) -> None:
        """As if the user chose this library entry (or any model file)."""
        if self.on_pick is not None:
            self.on_pick(str(path))
        self.combo.setCurrentIndex(max(0, self.combo.findData(self._choice)))

    def _activated(self, index: int) -> None:
        data = self.combo.itemData(index)
        if data in (SCRATCH, CURRENT):  # nothing to load: the card follows the choice
            self._choice = data
            if self.on_choice is not None:
                self.on_choice()
            return
        # a model to load: the combo goes back to the choice in force until it is loaded
        self.combo.setCurrentIndex(max(0, self.combo.findData(self._choice)))
        if self.on_pick is not None:
            self.on_pick(None if data == FILE else str(data))
