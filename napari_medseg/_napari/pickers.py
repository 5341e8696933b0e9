"""Layer pickers: combo boxes listing the viewer's layers of one type, kept in sync."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from .layers import PREFIX

#: The entry of an optional picker that selects no layer.
NONE = "(none)"


class LayerCombo(QComboBox):
    """Names of the viewer's layers of one type (optionally without the plugin's own)."""

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
        """The chosen layer, or None (nothing chosen, or it was removed meanwhile)."""
        name = self.currentText()
        if not name or name == NONE or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        return layer if isinstance(layer, self.layer_type) else None
