"""Segmentation metrics: per-class overlap and surface distances, and the polyp set.

:mod:`.multiclass` scores label maps class by class in 2-D or 3-D (Dice, IoU, HD95, ASD...),
what the widget, the CLI and the ACDC protocol report; its names are re-exported here.
:mod:`.binary` holds the ten numbers the polyp / salient-object papers report on a
probability map (MAE, F-measures, S- and E-measure...), used by the Kvasir/PH2 benchmarks.
"""

from . import multiclass
from .multiclass import *  # noqa: F403 - the public names of napari_medseg.metrics

__all__ = list(multiclass.__all__)
