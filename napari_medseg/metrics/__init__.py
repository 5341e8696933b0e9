"""Segmentation metrics: per-class overlap and surface distances, and the polyp set.

:mod:`.multiclass` scores label maps class by class in 2-D or 3-D (Dice, IoU, HD95, ASD...),
what the widget, the CLI and the ACDC protocol report; its names are re-exported here.
:mod:`.binary` holds the ten numbers the polyp / salient-object papers report on a
probability map (MAE, F-measures, S- and E-measure...), used by the Kvasir/PH2 benchmarks.
"""

from .multiclass import (
    METRIC_NAMES,
    binary_metrics,
    evaluate_segmentation,
    image_diagonal,
    summarize,
    summarize_by_class,
    surface_distances,
    write_metrics_csv,
)

__all__ = [
    "METRIC_NAMES",
    "binary_metrics",
    "evaluate_segmentation",
    "image_diagonal",
    "summarize",
    "summarize_by_class",
    "surface_distances",
    "write_metrics_csv",
]
