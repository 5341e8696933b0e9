"""``napari-medseg gui``: napari with a sample and the widget docked, in one command.

Fails fast with :class:`GuiUnavailableError` when napari/Qt is not installed or there is no
display, *before* any window is attempted, so ``make demo`` can fall back to the headless demo
instead of crashing inside Qt (a Qt abort on a missing display cannot be caught).
"""

from __future__ import annotations

import os
import sys


class GuiUnavailableError(RuntimeError):
    """The GUI cannot start here; the message says why and what to do instead."""


def _check_display() -> None:
    if sys.platform.startswith("linux"):
        platform = os.environ.get("QT_QPA_PLATFORM", "")
        if platform in ("offscreen", "minimal"):
            return
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise GuiUnavailableError(
                "no display found (DISPLAY/WAYLAND_DISPLAY unset): run on a desktop, through "
                "`xvfb-run -a napari-medseg gui`, or use the headless `napari-medseg demo`"
            )


def _check_imports() -> None:
    try:
        import napari  # noqa: F401
        import qtpy  # noqa: F401
        from qtpy import QtWidgets  # noqa: F401
    except Exception as e:  # ImportError, or qtpy's QtBindingsNotFoundError
        raise GuiUnavailableError(
            f"napari or a Qt binding is not installed ({e}); install them with "
            "`pip install 'napari-medseg[gui]'` (napari + PyQt6) or use the headless "
            "`napari-medseg demo`"
        ) from None


def open_viewer(sample: str | None = "mri", show: bool = True):
    """Creates a viewer with the sample's layers and the widget docked; returns both."""
    _check_imports()
    _check_display()
    import napari

    from .sample import mri_sample, rgb_sample
    from .widget import MedSegWidget

    viewer = napari.Viewer(title="napari-medseg", show=show)
    if sample is not None:
        loaders = {"mri": mri_sample, "rgb": rgb_sample}
        if sample not in loaders:
            viewer.close()
            raise ValueError(f"unknown sample {sample!r}; choose one of: mri, rgb (or None)")
        for data, meta, kind in loaders[sample]():
            getattr(viewer, f"add_{kind}")(data, **meta)
    widget = MedSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Scribble segmentation", area="right")
    return viewer, widget


def launch_gui(sample: str | None = "mri") -> None:
    """Opens napari with the sample (``"mri"``, ``"rgb"`` or None) and blocks until closed."""
    open_viewer(sample, show=True)
    import napari

    napari.run()
