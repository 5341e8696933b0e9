"""Noticing that the napari window closes, which napari does not tell its dock widgets.

Closing the viewer hides the main window and its docks; the dock widgets get no ``closeEvent``.
A training worker would then go on in Qt's thread pool behind a closed window (and an autosaved
session would look crashed at the next start). :class:`CloseWithWindow` watches the main window
that holds the widget (found again whenever the widget is re-parented: docked, floated,
undocked) and calls back once the window has really closed — a close the window refused (a
"quit?" dialog answered No) leaves it visible, and nothing happens.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QMainWindow, QWidget


def _main_window(widget: QWidget) -> QMainWindow | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QMainWindow):
        parent = parent.parentWidget()
    return parent


class CloseWithWindow(QObject):
    """Calls ``on_close()`` once, after the main window holding ``widget`` has closed."""

    def __init__(self, widget: QWidget, on_close: Callable[[], None]):
        super().__init__(widget)
        self._widget = widget
        self._on_close = on_close
        self._window: QMainWindow | None = None
        self.fired = False
        widget.installEventFilter(self)
        self._attach()

    def _attach(self) -> None:
        window = _main_window(self._widget)
        if window is self._window:
            return
        if self._window is not None:
            self._window.removeEventFilter(self)
        self._window = window
        if window is not None:
            window.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        kind = event.type()
        if obj is self._widget and kind in (QEvent.Type.ParentChange, QEvent.Type.Show):
            self._attach()
            # docking puts the widget in its dock before the dock is in the window: look again
            QTimer.singleShot(0, self._attach)
        elif obj is self._window and kind == QEvent.Type.Close:
            # the window's own handler may still refuse the close: look once it has run
            QTimer.singleShot(0, self._check)
        return False

    def _check(self) -> None:
        window = self._window
        if self.fired or window is None or window.isVisible():
            return
        self.fired = True
        self._on_close()
