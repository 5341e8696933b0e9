"""The interactive protocol's glue: a user's image + scribble map → what the trainer takes.

Users label in *values* (napari: 0 = unlabelled, 1..K classes; ACDC: 0..3 with 4 unlabelled);
networks work in class *indices* 0..K-1. :class:`InteractiveTask` keeps the mapping so that
predictions go back to the user in the values they drew with, in the image's own layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

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
    def in_channels(self) -> int:
        return int(self.images[0].shape[1])

    def to_values(self, indices: np.ndarray) -> np.ndarray:
        """Per-slice class indices (N, H, W) → user values in the image's layout."""
        lut = np.asarray(self.class_values)
        dtype = np.uint8 if lut.max() < 256 else np.uint16
        return restore_layout(lut[np.asarray(indices)].astype(dtype), self.kind)

    def seeds_from(self, scribbles: np.ndarray) -> list[np.ndarray]:
        """Seeds for new scribbles of the same image (the user kept drawing)."""
        return [scribbles_to_seeds(scribbles, self.class_values, self.unlabelled, self.kind)]


def scribbles_to_seeds(
    scribbles: np.ndarray, class_values: Sequence[int], unlabelled: int, kind: str
) -> np.ndarray:
    """User values → class indices with -1 for unlabelled, always (N, H, W); never in place."""
    scr = np.asarray(scribbles)
    scr = scr[None] if kind != "stack" else scr
    seeds = np.full(scr.shape, -1, dtype=np.int64)
    for i, v in enumerate(class_values):
        seeds[scr == v] = i
    return seeds


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
    summary = validate_inputs(image, scribbles, unlabelled)
    warnings = list(summary.warnings)
    if class_values is None:
        values = tuple(summary.class_values)
    else:
        values = tuple(int(v) for v in class_values)
        if unlabelled in values:
            raise InputError(
                f"the value {unlabelled} marks unlabelled pixels and cannot also be a class"
            )
        unknown = sorted(set(summary.class_values) - set(values))
        if unknown:
            raise InputError(
                f"the scribbles use value(s) {unknown} that are not among the classes "
                f"{list(values)} — add a class or repaint those strokes"
            )
        missing = [v for v in values if v not in summary.class_values]
        if missing:
            warnings.append(
                f"no scribbles for class value(s) {missing}: those classes cannot be learnt — "
                "draw at least one stroke for each"
            )
    if len(values) < 2:
        raise InputError("at least two classes are needed (background and one structure)")
    norm = normalize_image(image, "auto" if kind == "auto" else kind)
    warnings.extend(norm.warnings)
    seeds = scribbles_to_seeds(scribbles, values, unlabelled, norm.kind)
    return InteractiveTask(
        images=[norm.data],
        seeds=[seeds],
        num_classes=len(values),
        class_values=values,
        kind=norm.kind,
        spatial_shape=norm.spatial_shape,
        unlabelled=int(unlabelled),
        warnings=warnings,
    )
