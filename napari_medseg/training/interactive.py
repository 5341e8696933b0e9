"""The interactive protocol's glue: a user's image + scribble map → what the trainer takes.

Users label in *values* (napari: 0 = unlabelled, 1..K classes; ACDC: 0..3 with 4 unlabelled);
networks work in class *indices* 0..K-1. :class:`InteractiveTask` keeps the mapping
(:class:`~napari_medseg.data.classes.ClassMap`) so that predictions go back to the user in the
values they drew with, in the image's own layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.classes import ClassMap
from ..data.normalization import normalize_image, restore_layout
from ..data.validation import InputError, validate_inputs

__all__ = ["InputError", "InteractiveTask", "prepare_interactive", "scribbles_to_seeds"]


@dataclass
class InteractiveTask:
    images: list[np.ndarray]  # [(N, C, H, W) float32]
    seeds: list[np.ndarray]  # [(N, H, W) int64, -1 = unlabelled]
    num_classes: int
    class_values: tuple[int, ...]
    kind: str
    spatial_shape: tuple[int, ...]
    unlabelled: int
    warnings: list[str] = field(default_factory=list)

    @property
    def classes(self) -> ClassMap:
        return ClassMap(self.class_values, self.unlabelled)

    def to_values(self, indices: np.ndarray) -> np.ndarray:
        """Per-slice class indices (N, H, W) → user values in the image's layout."""
        return restore_layout(self.classes.to_values(indices), self.kind)

    def seeds_from(self, scribbles: np.ndarray) -> list[np.ndarray]:
        """Seeds for new scribbles of the same image (the user kept drawing)."""
        return [scribbles_to_seeds(scribbles, self.class_values, self.unlabelled, self.kind)]


def scribbles_to_seeds(
    scribbles: np.ndarray, class_values: Sequence[int], unlabelled: int, kind: str
) -> np.ndarray:
    """User values → class indices with -1 for unlabelled, always (N, H, W); never in place."""
    scr = np.asarray(scribbles)
    scr = scr[None] if kind != "stack" else scr
    return ClassMap(tuple(class_values), unlabelled).to_indices(scr)


def prepare_interactive(
    image: np.ndarray,
    scribbles: np.ndarray,
    unlabelled: int = 0,
    class_values: Sequence[int] | None = None,
    kind: str = "auto",
) -> InteractiveTask:
    """Validates and normalises one image (2-D, RGB or a stack) with its scribbles.

    ``class_values`` fixes the classes (and so the network outputs) when the user declared
    them, e.g. a widget with four named classes; otherwise the scribbled values are the classes.
    Raises :class:`InputError` with a message saying what to fix.
    """
    if class_values is not None:
        ClassMap(tuple(class_values), unlabelled)  # refuses values it cannot hold, up front
    summary = validate_inputs(image, scribbles, unlabelled, class_values=class_values)
    values = tuple(summary.class_values if class_values is None else class_values)
    classes = ClassMap(values, unlabelled)
    norm = normalize_image(image, kind)
    seeds = scribbles_to_seeds(scribbles, classes.values, classes.unlabelled, norm.kind)
    return InteractiveTask(
        images=[norm.data],
        seeds=[seeds],
        num_classes=classes.num_classes,
        class_values=classes.values,
        kind=norm.kind,
        spatial_shape=norm.spatial_shape,
        unlabelled=classes.unlabelled,
        warnings=[*summary.warnings, *norm.warnings],
    )
