"""Check an image and its scribbles before training, with messages a user can act on.

Training on bad input fails late and obscurely (a shape error deep in a network, a loss
that never moves because only one class was drawn). :func:`validate_inputs` catches those
cases up front and raises :class:`InputError` saying what is wrong *and* what to do.
It only reads its inputs; nothing is modified in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .normalization import infer_kind

__all__ = ["MIN_SIZE", "InputError", "InputSummary", "validate_inputs"]

#: Smallest accepted height/width: below this the down-sampling networks have nothing left.
MIN_SIZE = 8


class InputError(ValueError):
    """The image or the scribbles cannot be used; the message says how to fix it."""


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


def validate_inputs(
    image,
    scribbles,
    unlabelled: int = 0,
    num_classes: int | None = None,
) -> InputSummary:
    """Validate an image and its scribble map; return an :class:`InputSummary`.

    ``scribbles`` must have the image's spatial shape ((H, W) for grey or colour images,
    (Z, H, W) for stacks) and hold whole numbers; pixels equal to ``unlabelled`` carry no
    scribble. At least two classes must be scribbled (one class alone teaches nothing
    about the boundary). If ``num_classes`` is given, scribbled values must lie in
    ``0 .. num_classes-1`` and classes without any scribble are reported in ``warnings``.
    """
    img, kind = _check_image(image)
    spatial = tuple(img.shape[:2]) if kind in ("rgb", "rgba") else tuple(img.shape)
    if scribbles is None:
        raise InputError("no scribbles were given — add a Labels layer and draw on it")
    scr = np.asarray(scribbles)
    if scr.shape != spatial:
        hint = ""
        if kind in ("rgb", "rgba") and scr.shape == img.shape:
            hint = " (the scribbles must not have a colour axis)"
        raise InputError(
            f"shape mismatch: scribbles {scr.shape} vs image {img.shape} (expected scribbles "
            f"of shape {spatial}){hint} — create the Labels layer from this image so that "
            "they share the same shape"
        )
    if scr.dtype == bool:
        scr = scr.astype(np.uint8)
    elif np.issubdtype(scr.dtype, np.floating):
        if not np.isfinite(scr).all() or not np.array_equal(scr, np.round(scr)):
            raise InputError(
                f"the scribbles are not whole numbers (dtype {scr.dtype}) — a scribble map "
                "must hold integer class values; use a Labels layer"
            )
        scr = scr.astype(np.int64)
    elif not np.issubdtype(scr.dtype, np.integer):
        raise InputError(
            f"the scribbles have dtype {scr.dtype}; they must be integer class "
            "values — use a Labels layer"
        )

    labelled = scr != unlabelled
    if not labelled.any():
        raise InputError(
            "the scribbles have no labelled pixels — draw at least one stroke per class "
            f"(pixels equal to {unlabelled} count as unlabelled)"
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
    class_values = tuple(int(v) for v in values)
    if len(class_values) == 1:
        raise InputError(
            f"scribbles of one class only (class {class_values[0]}) — draw at least one "
            "stroke of background and of each structure"
        )
    warnings: list[str] = []
    if num_classes is not None:
        missing = [c for c in range(num_classes) if c != unlabelled and c not in class_values]
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
        class_values=class_values,
        counts={int(v): int(c) for v, c in zip(values, counts_arr)},
        labelled_fraction=float(labelled.mean()),
        slices_with_scribbles=slices,
        warnings=warnings,
    )
