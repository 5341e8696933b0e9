"""Check an image and its scribbles before training, with messages a user can act on.

Training on bad input fails late and obscurely (a shape error deep in a network, a loss
that never moves because only one class was drawn). :func:`validate_inputs` catches those
cases up front and raises :class:`InputError` saying what is wrong *and* what to do.
It only reads its inputs; nothing is modified in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .normalization import infer_kind

__all__ = [
    "MIN_SIZE",
    "InputError",
    "InputSummary",
    "validate_image",
    "validate_inputs",
    "validate_scribble_update",
]

#: Smallest accepted height/width: below this the down-sampling networks have nothing left.
MIN_SIZE = 8


@dataclass
class InputSummary:
    """What :func:`validate_inputs` found.

    ``class_values`` are the scribbled values (``unlabelled`` excluded), ``counts`` the
    number of scribbled pixels per value, ``slices_with_scribbles`` the indices (along Z)
    of slices holding at least one scribble (``[0]`` for 2-D images).
    """

    kind: str
    image_shape: tuple[int, ...]
    spatial_shape: tuple[int, ...]
    num_slices: int
    unlabelled: int
    class_values: tuple[int, ...]
    counts: dict[int, int]
    labelled_fraction: float
    slices_with_scribbles: list[int]
    warnings: list[str] = field(default_factory=list)


def _check_image(image) -> tuple[np.ndarray, str]:
    if image is None:
        raise InputError("no image was given — select an image layer")
    img = np.asarray(image)
    if img.size == 0:
        raise InputError(f"the image is empty (shape {img.shape}) — load an image with pixels")
    if img.dtype == object or not (
        img.dtype == bool
        or np.issubdtype(img.dtype, np.integer)
        or np.issubdtype(img.dtype, np.floating)
    ):
        raise InputError(
            f"the image has a non-numeric dtype ({img.dtype}) — convert it to a "
            "grey-level or RGB numeric image"
        )
    if img.ndim < 2:
        raise InputError(
            f"the image is {img.ndim}-D (shape {img.shape}) — an image needs at "
            "least height and width"
        )
    if img.ndim >= 4:
        raise InputError(
            f"the image is {img.ndim}-D (shape {img.shape}); only 2-D (H, W), colour (H, W, 3) "
            "and stacks (Z, H, W) are supported — select one time point or channel first "
            "(e.g. image[0]) or split the channels into separate layers"
        )
    kind = infer_kind(img)
    spatial = img.shape[:2] if kind in ("rgb", "rgba") else img.shape[-2:]
    if min(spatial) < MIN_SIZE:
        raise InputError(
            f"the image is too small: {spatial[0]}×{spatial[1]} px (minimum {MIN_SIZE}×"
            f"{MIN_SIZE}) — use a larger image or crop less"
        )
    if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).any():
        raise InputError("the image has no finite value (all NaN/Inf) — check the file")
    return img, kind


def validate_image(image, name: str = "the image") -> str:
    """The image's kind (``gray``, ``rgb``, ``rgba``, ``stack``) when the networks can take it.

    The one check of an image for every use, training and prediction alike: a 3×3 image, an
    all-NaN one or a (32, 32, 2) array are refused here rather than segmented into nonsense.
    ``name`` names the image in the message (a file, a layer).
    """
    try:
        return _check_image(image)[1]
    except InputError as e:
        if name == "the image":
            raise
        raise InputError(f"{name}: {e}") from None


def _check_unlabelled(scr: np.ndarray, unlabelled) -> None:
    """The unlabelled value must be a whole number the scribbles' dtype can hold."""
    if isinstance(unlabelled, bool) or not isinstance(unlabelled, int | np.integer):
        raise InputError(
            f"the unlabelled value must be a whole number, not {unlabelled!r} — give the value "
            "that marks unscribbled pixels (0 in napari, 4 in the ACDC files)"
        )
    if np.issubdtype(scr.dtype, np.integer):
        info = np.iinfo(scr.dtype)
        if not info.min <= int(unlabelled) <= info.max:
            raise InputError(
                f"the unlabelled value {unlabelled} cannot occur in scribbles of dtype "
                f"{scr.dtype} (values {info.min}..{info.max}) — give the value that marks "
                "unscribbled pixels (--unlabelled; 0 in napari, 4 in the ACDC files)"
            )


def _check_scribbles(scribbles, spatial: tuple[int, ...], shape_hint: str = "") -> np.ndarray:
    """The scribble map as integers when it has the spatial shape ``spatial``."""
    if scribbles is None:
        raise InputError("no scribbles were given — add a Labels layer and draw on it")
    scr = np.asarray(scribbles)
    if scr.shape != spatial:
        raise InputError(
            f"shape mismatch: scribbles {scr.shape} vs {shape_hint or f'shape {spatial}'} "
            "— create the Labels layer from this image so that they share the same shape"
        )
    if scr.dtype == bool:
        return scr.astype(np.uint8)
    if np.issubdtype(scr.dtype, np.floating):
        if not np.isfinite(scr).all() or not np.array_equal(scr, np.round(scr)):
            raise InputError(
                f"the scribbles are not whole numbers (dtype {scr.dtype}) — a scribble map "
                "must hold integer class values; use a Labels layer"
            )
        return scr.astype(np.int64)
    if not np.issubdtype(scr.dtype, np.integer):
        raise InputError(
            f"the scribbles have dtype {scr.dtype}; they must be integer class "
            "values — use a Labels layer"
        )
    return scr


def validate_inputs(
    image,
    scribbles,
    unlabelled: int = 0,
    num_classes: int | None = None,
    class_values: Sequence[int] | None = None,
) -> InputSummary:
    """Validate an image and its scribble map; return an :class:`InputSummary`.

    ``scribbles`` must have the image's spatial shape ((H, W) for grey or colour images,
    (Z, H, W) for stacks) and hold whole numbers; pixels equal to ``unlabelled`` carry no
    scribble. At least two classes must be scribbled (one class alone teaches nothing
    about the boundary). If ``num_classes`` is given, scribbled values must lie in
    ``0 .. num_classes-1`` and classes without any scribble are reported in ``warnings``.
    If ``class_values`` declares the classes (a widget with named classes, a checkpoint),
    every scribbled value must be one of them, and classes without a stroke are reported.
    """
    img, kind = _check_image(image)
    spatial = tuple(img.shape[:2]) if kind in ("rgb", "rgba") else tuple(img.shape)
    colour_axis = kind in ("rgb", "rgba") and np.shape(scribbles) == img.shape
    hint = " (the scribbles must not have a colour axis)" if colour_axis else ""
    scr = _check_scribbles(
        scribbles, spatial, f"image {img.shape} (expected scribbles of shape {spatial}){hint}"
    )

    _check_unlabelled(scr, unlabelled)
    labelled = scr != unlabelled
    if not labelled.any():
        raise InputError(
            "the scribbles have no labelled pixels — draw at least one stroke per class "
            f"(pixels equal to {unlabelled} count as unlabelled)"
        )
    if labelled.all():
        raise InputError(
            f"every pixel of the scribbles is labelled (none equals the unlabelled value "
            f"{unlabelled}): this is a dense label map, not scribbles — give the scribble map, "
            "or the value that marks unscribbled pixels (--unlabelled; 0 in napari, 4 in ACDC)"
        )
    values, counts_arr = np.unique(scr[labelled], return_counts=True)
    if values.min() < 0:
        raise InputError(
            f"the scribbles contain negative values ({int(values.min())}) — use "
            "class values 0, 1, 2, …"
        )
    if num_classes is not None and values.max() >= num_classes:
        raise InputError(
            f"scribble value {int(values.max())} is outside the {num_classes} classes "
            f"(0..{num_classes - 1}) — relabel the stroke or raise the number of classes"
        )
    found = tuple(int(v) for v in values)
    if len(found) == 1:
        raise InputError(
            f"scribbles of one class only (class {found[0]}) — draw at least one "
            "stroke of background and of each structure"
        )
    warnings: list[str] = []
    if class_values is not None:
        declared = [int(v) for v in class_values]
        unknown = sorted(set(found) - set(declared))
        if unknown:
            raise InputError(
                f"the scribbles use value(s) {unknown} that are not among the classes "
                f"{declared} — add a class or repaint those strokes"
            )
        missing = [v for v in declared if v not in found]
        if missing:
            warnings.append(
                f"no scribbles for class value(s) {missing}: those classes cannot be learnt — "
                "draw at least one stroke for each"
            )
    if num_classes is not None:
        missing = [c for c in range(num_classes) if c != unlabelled and c not in found]
        if missing:
            warnings.append(
                f"no scribbles for class(es) {missing}: the model cannot learn "
                "them — draw strokes for them or lower the number of classes"
            )
    if scr.ndim == 3:
        slices = [int(z) for z in np.flatnonzero(labelled.reshape(scr.shape[0], -1).any(1))]
        num_slices = scr.shape[0]
    else:
        slices, num_slices = [0], 1
    return InputSummary(
        kind=kind,
        image_shape=tuple(img.shape),
        spatial_shape=spatial,
        num_slices=num_slices,
        unlabelled=int(unlabelled),
        class_values=found,
        counts={int(v): int(c) for v, c in zip(values, counts_arr)},
        labelled_fraction=float(labelled.mean()),
        slices_with_scribbles=slices,
        warnings=warnings,
    )


def validate_scribble_update(
    scribbles, spatial_shape: Sequence[int], class_values: Sequence[int], unlabelled: int = 0
) -> list[str]:
    """Checks scribbles drawn while training on the same image; returns warnings.

    Raises :class:`InputError` when they cannot replace the previous ones (another shape, or
    fewer than two classes left); strokes of values that are no class are a warning only:
    they are ignored and the others used.
    """
    spatial = tuple(int(n) for n in spatial_shape)
    scr = _check_scribbles(scribbles, spatial)
    declared = [int(v) for v in class_values]
    present = [int(v) for v in np.unique(scr) if int(v) != unlabelled]
    warnings = []
    unknown = [v for v in present if v not in declared]
    if unknown:
        warnings.append(
            f"label value(s) {unknown} are not among the classes {declared}; those strokes are "
            "ignored — pick a label from the class list"
        )
    if len([v for v in present if v in declared]) < 2:
        raise InputError(
            "the scribbles now hold fewer than two classes; training keeps the previous "
            "scribbles — draw background and at least one structure"
        )
    return warnings
