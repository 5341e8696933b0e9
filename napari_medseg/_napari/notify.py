"""One place for every message the plugin shows the user (napari notifications)."""

from __future__ import annotations

from napari.utils import notifications


def notify(level: str, message: str) -> None:
    """Shows ``message`` as an error, a warning or (any other level) an info notification.

    The notification functions are looked up at call time so that tests can capture them.
    """
    fn = {"error": notifications.show_error, "warning": notifications.show_warning}.get(
        level, notifications.show_info
    )
    fn(f"napari-medseg: {message}")
