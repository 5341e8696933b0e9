"""The user's label values and the networks' class indices, and names for image channels.

Users label in *values* (napari: 0 = unlabelled, 1..K the classes; ACDC: 0..3 with 4 for
unlabelled; any values a scribble file holds); networks work in class *indices* 0..K-1.
:class:`ClassMap` is the one conversion between the two, both ways. Values are saved in label
maps of 8 or 16 bits, so a class value above 65535 is refused up front instead of wrapping
around silently when predictions are written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: The largest class value a label map (uint16) can hold.
MAX_CLASS_VALUE = 65535

#: Names of the image kinds the networks take, by channel count.
_CHANNEL_KINDS = {1: "grayscale", 3: "RGB"}


def channel_kind(channels: int) -> str:
    """``grayscale`` (1 channel), ``RGB`` (3) or ``N-channel``: for messages about images."""
    return _CHANNEL_KINDS.get(int(channels), f"{int(channels)}-channel")


@dataclass(frozen=True)
class ClassMap:
    """Class values (index i has value ``values[i]``) and the value that marks no label."""

    values: tuple[int, ...]
    unlabelled: int = 0

    def __post_init__(self) -> None:
        values = tuple(int(v) for v in self.values)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "unlabelled", int(self.unlabelled))
        bad = [v for v in values if not 0 <= v <= MAX_CLASS_VALUE]
        if bad:
            raise InputError(
                f"class value(s) {bad} are outside 0..{MAX_CLASS_VALUE}, the values a label map "
                "can hold — renumber the classes"
            )
        if len(set(values)) != len(values):
            raise InputError(f"class values {list(values)} repeat — give each class one value")
        if self.unlabelled in values:
            raise InputError(
                f"the value {self.unlabelled} marks unlabelled pixels and cannot also be a class"
            )

    @classmethod
    def numbered(cls, num_classes: int) -> ClassMap:
        """The napari convention: values 1..K, 0 unlabelled (``class_names[v - 1]`` names v)."""
        return cls(tuple(range(1, int(num_classes) + 1)), 0)

    @property
    def num_classes(self) -> int:
        return len(self.values)

    @property
    def dtype(self) -> np.dtype:
        """The narrowest label dtype that holds every value."""
        return np.dtype(np.uint8 if max(self.values, default=0) <= 255 else np.uint16)

    def to_indices(self, labels: np.ndarray) -> np.ndarray:
        """User values → int64 class indices; unlabelled and unknown values → -1. A copy."""
        labels = np.asarray(labels)
        out = np.full(labels.shape, -1, dtype=np.int64)
        for i, v in enumerate(self.values):
            out[labels == v] = i
        return out

    def to_values(self, indices: np.ndarray) -> np.ndarray:
        """Class indices → user values, in :attr:`dtype`."""
        lut = np.asarray(self.values, dtype=self.dtype)
        return lut[np.asarray(indices)]
