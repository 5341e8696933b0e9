"""npe2 sample-data contributions: the bundled samples as napari layers.

The data and their description live in :mod:`napari_medseg.sample_data` (engine side); this
module only adds what a viewer needs: the scribble layer named ``scribbles`` so the widget
finds it, and class colours that match the prediction layers.
"""

from __future__ import annotations

from typing import Any

from .layers import label_color_dict


def _layers(name: str) -> list[tuple[Any, dict, str]]:
    from ..sample_data import as_layer_data, load_sample

    sample = load_sample(name)
    k = int(sample["num_classes"])
    out = []
    for data, meta, kind in as_layer_data(sample):
        meta = dict(meta)
        if kind == "labels":
            is_truth = meta["name"].endswith("truth")
            if not is_truth:
                meta["name"] = "scribbles"
            else:
                meta["name"] = "ground truth"
            meta["colormap"] = label_color_dict(k, show_background=not is_truth)
            if not is_truth:
                meta["opacity"] = 1.0
        out.append((data, meta, kind))
    return out


def mri_sample() -> list[tuple[Any, dict, str]]:
    """Brain MRI stack (5 slices) with scribbles and a hidden ground truth."""
    return _layers("mri")


def rgb_sample() -> list[tuple[Any, dict, str]]:
    """Synthetic RGB dermoscopy image with scribbles and a hidden ground truth."""
    return _layers("rgb")
