"""Which layers belong together: an image, its scribble layer, its prediction layers.

With one model carried from image to image, several images are open at once; these rules
decide, without asking, which scribble layer holds an image's strokes ("Train on: every open
image with strokes", "Predict on: every open image") and which prediction layers are an
image's. No Qt here; the arguments are napari layers (or anything with ``name``, ``data``,
``rgb``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .layers import PREFIX, image_kind, spatial_shape


def layer_suffix(image_name: str, home: str | None) -> str:
    """The image's part of its prediction layers' names.

    The first image that got prediction layers (``home``) keeps the plain names
    (``medseg: ensemble``); every other image gets its own set (``medseg: ensemble (name)``),
    so that choosing, training on or predicting another image never overwrites a result.
    """
    return "" if home is None or image_name == home else f" ({image_name})"


def user_images(layers: Iterable) -> list:
    """The viewer's image layers the networks can take (single resolution, 2-D, RGB or a
    stack), the plugin's own layers left out."""
    from napari.layers import Image

    found = []
    for layer in layers:
        if not isinstance(layer, Image) or layer.name.startswith(PREFIX) or layer.multiscale:
            continue
        try:
            image_kind(layer.data.shape, layer.rgb)
        except ValueError:
            continue
        found.append(layer)
    return found


def image_channels(layer) -> int:
    """Colour channels the networks see for an image layer (RGB and RGBA: 3)."""
    return 3 if getattr(layer, "rgb", False) else 1


def scribbles_for(image, labels_layers: Sequence, taken: Iterable[str] = ()):
    """The Labels layer that holds ``image``'s strokes, or None.

    ``<image name> scribbles`` (what *New scribble layer* creates) when it matches the image's
    shape; else the one layer called ``…scribble…`` of that shape not ``taken`` by another
    image — none when there are several (a guess could train on another image's strokes).
    """
    shape = tuple(spatial_shape(image.data.shape, getattr(image, "rgb", False)))
    taken = set(taken)
    fits = [
        la
        for la in labels_layers
        if not la.name.startswith(PREFIX) and la.name not in taken and tuple(la.data.shape) == shape
    ]
    named = [la for la in fits if la.name == f"{image.name} scribbles"]
    if named:
        return named[0]
    loose = [la for la in fits if "scribble" in la.name.lower()]
    return loose[0] if len(loose) == 1 else None
