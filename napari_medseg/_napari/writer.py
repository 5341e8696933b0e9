"""npe2 writer: a Labels layer (scribbles, a prediction, a correction) as an integer TIFF.

Delegates to :func:`napari_medseg.data.readers.write_labels`, which writes atomically (a
crash never leaves half a file where a good one was) and keeps the layer's pixel spacing as
ImageJ metadata so the file opens at the right scale again.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def write_labels_layer(path: str, data: Any, meta: dict) -> list[str]:
    from ..data.readers import write_labels

    arr = np.asarray(data)
    scale = meta.get("scale")
    spacing = None
    if scale is not None and len(scale) == arr.ndim and any(float(s) != 1.0 for s in scale):
        spacing = tuple(float(s) for s in scale)
    return [str(write_labels(path, arr, spacing=spacing))]
