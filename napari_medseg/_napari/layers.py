"""Conventions shared by every napari layer the plugin reads or writes (no Qt here).

One convention everywhere, the one the user paints with: in a Labels layer value 0 means
"nothing" (unlabelled scribble), value ``v`` (1..K) is class ``v - 1`` and
``class_names[v - 1]`` names it. Scribbles, predictions, the bundled samples' truth and the
ACDC reader's layers all follow it, so a class has the same colour in every layer and a
prediction can be compared with (or copied into) the scribbles without renumbering. The
networks work in class indices 0..K-1; :class:`napari_medseg.data.classes.ClassMap` maps
between the two (``ClassMap.numbered(K)`` is this convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Default class names: MRI (cardiac ACDC classes) and colour photographs (one lesion).
MRI_CLASS_NAMES: tuple[str, ...] = ("background", "RV", "Myo", "LV")
RGB_CLASS_NAMES: tuple[str, ...] = ("background", "lesion")

#: Prefix of every layer the plugin creates, so they are easy to find (and to replace).
PREFIX = "medseg: "

# Colour of class index i; background is blue so that background strokes stay visible on
# dark MRI, the structures get well separated hues.
CLASS_COLORS: tuple[str, ...] = (
    "#3b7ddd",  # background
    "#e6194b",  # red
    "#3cb44b",  # green
    "#ffe119",  # yellow
    "#f58231",  # orange
    "#911eb4",  # purple
    "#42d4f4",  # cyan
    "#f032e6",  # magenta
    "#bfef45",  # lime
    "#9a6324",  # brown
)


def class_color(index: int) -> str:
    return CLASS_COLORS[index % len(CLASS_COLORS)]


def label_color_dict(num_classes: int, show_background: bool = True) -> dict:
    """napari ``DirectLabelColormap`` colours for values 0..K (0 transparent).

    Prediction layers pass ``show_background=False`` so the background class (value 1) is
    transparent too and only the segmented structures cover the image.
    """
    colors: dict = {None: (0.5, 0.5, 0.5, 1.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for i in range(num_classes):
        colors[i + 1] = class_color(i)
    if not show_background:
        colors[1] = (0.0, 0.0, 0.0, 0.0)
    return colors


def label_colormap(num_classes: int, show_background: bool = True):
    """A napari colormap object (imported lazily: this module stays importable without napari)."""
    from napari.utils import DirectLabelColormap

    return DirectLabelColormap(color_dict=label_color_dict(num_classes, show_background))


def image_kind(data_shape: Sequence[int], rgb: bool) -> str:
    """``gray`` (H, W), ``rgb`` (H, W, 3/4) or ``stack`` (Z, H, W); ValueError otherwise."""
    nd = len(data_shape)
    if nd == 2:
        return "gray"
    if nd == 3 and rgb:
        return "rgb"
    if nd == 3:
        return "stack"
    raise ValueError(
        f"the image layer has shape {tuple(data_shape)}: only 2-D grayscale, 2-D RGB and 3-D "
        "stacks of slices (Z, H, W) are supported — pick one channel or time point first"
    )


def spatial_shape(data_shape: Sequence[int], rgb: bool) -> tuple[int, ...]:
    """Shape of a Labels layer matching an image (the colour axis dropped)."""
    return tuple(data_shape[:-1]) if rgb else tuple(data_shape)


def spatial_transform(layer) -> dict:
    """scale/translate of an image layer without its colour axis, for matching Labels layers."""
    nd = len(spatial_shape(layer.data.shape, getattr(layer, "rgb", False)))
    return {
        "scale": tuple(layer.scale)[-nd:],
        "translate": tuple(layer.translate)[-nd:],
    }


def default_class_names(rgb: bool) -> tuple[str, ...]:
    return RGB_CLASS_NAMES if rgb else MRI_CLASS_NAMES


def parse_class_names(text: str) -> list[str]:
    """'background, RV, Myo' → ['background', 'RV', 'Myo'] (blank entries dropped)."""
    return [n.strip() for n in text.replace(";", ",").split(",") if n.strip()]


def slot_display_names(models: Sequence[str], display: Sequence[str]) -> list[str]:
    """Layer titles for the slots; a repeated architecture gets ' 2', ' 3', …"""
    out, seen = [], {}
    for name, disp in zip(models, display):
        seen[name] = seen.get(name, 0) + 1
        out.append(disp if seen[name] == 1 else f"{disp} {seen[name]}")
    return out


def copy_layer_data(data) -> np.ndarray:
    """An independent numpy copy of layer data (dask/zarr included) — never a view.

    The worker thread must never see the live array the user keeps painting into.
    """
    return np.array(data, copy=True)
