"""Noticing that the napari window closes, which napari does not tell its dock widgets.

Closing the viewer hides the main window and its docks; the dock widgets get no ``closeEvent``.
A training worker would then go on in Qt's thread pool behind a closed window (and an autosaved
session would look crashed at the next start). :class:`CloseWithWindow` watches the main window
that holds the widget (found again whenever the widget is re-parented: docked, floated,
undocked) and calls back when it closes: at once when code closes it (``viewer.close()``, after
which napari may delete the window and the widget with it), after the window's own handler
when the user does (a "close?" dialog answered No leaves the window open, and nothing happens).
"""

from __future__ import annotations

import weakref
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
        # weak: a closed viewer must not be kept alive by its widget's watcher
        self._window: weakref.ref[QMainWindow] | None = None
        self.fired = False
        widget.installEventFilter(self)
        self._attach()

    def _current(self) -> QMainWindow | None:
        return self._window() if self._window is not None else None

    def _attach(self) -> None:
        window = _main_window(self._widget)
        current = self._current()
        if window is current:
            return
        if current is not None:
            current.removeEventFilter(self)
        self._window = weakref.ref(window) if window is not None else None
        if window is not None:
            window.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        kind = event.type()
        if obj is self._widget and kind in (QEvent.Type.ParentChange, QEvent.Type.Show):
            self._attach()
            # docking puts the widget in its dock before the dock is in the window: look again
            QTimer.singleShot(0, self._attach)
        elif self._window is not None and obj is self._current() and kind == QEvent.Type.Close:
            if event.spontaneous():
                # the user's click: napari may still ask "close?" — look once it has answered
                QTimer.singleShot(0, self._check)
            else:
                # closed by code (viewer.close()): nothing refuses it, and napari may delete
                # the window, and this widget with it, before a deferred look could run
                self._fire()
        return False

    def _check(self) -> None:
        if self.fired or self._window is None:
            return
        window = self._current()  # None: napari let go of it, the window is gone
        if window is not None and window.isVisible():
            return
        self._fire()

    def _fire(self) -> None:
        if self.fired:
            return
        self.fired = True
        self._window = None
        self._on_close()
