"""The napari plugin: the only part of the package that imports Qt or napari.

:mod:`.widget` (the dock widget's wiring) on :mod:`.panel` (its form), with
:mod:`.layer_manager` (the prediction layers), :mod:`.pickers` (layer combo boxes),
:mod:`.tooltips`, :mod:`.notify` (messages) and :mod:`.session` (what its workers run, Qt-free,
through :class:`napari_medseg.workflow.Workflow`); the npe2 contributions :mod:`.reader`,
:mod:`.writer`, :mod:`.sample`; :mod:`.launcher` (``napari-medseg gui``); :mod:`.layers` (the
label-layer conventions).
"""
