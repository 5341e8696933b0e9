"""``napari-medseg`` command line: the same workflow as the widget, for scripts and datasets.

:mod:`.parser` (arguments), :mod:`.commands` (one function per sub-command, each driving
:class:`napari_medseg.workflow.Workflow` or a tool), :mod:`.demo` (the headless demo),
:mod:`.progress` (the progress bar), :mod:`.interrupt` (Ctrl-C stops training and keeps its
work), :mod:`.main` (the entry point and its error policy).
"""

from .main import main

__all__ = ["main"]
