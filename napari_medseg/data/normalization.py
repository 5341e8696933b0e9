"""Intensity normalisation and channels-first layout for the networks.

Two families of images reach the engine:

* grey-level scans (MRI, CT, ultrasound; 2-D (H, W) or stacks (Z, H, W)) of arbitrary
  range and dtype. Their intensities are clipped to a percentile window (default 0.5–99.5,
  computed once over the whole image or volume so that all slices share one scale) and
  mapped to [0, 1]. Percentiles rather than min/max because a handful of hot voxels would
  otherwise squash the tissue contrast into a tiny range.
* colour photographs (dermoscopy, endoscopy; (H, W, 3)) that must stay RGB: uint8 is
  divided by 255 (what pretrained weights expect); other integer types (e.g. 16-bit) are
  divided by the image's maximum, one factor for all channels so colours keep their ratios.

Non-finite values never crash: NaN and -Inf take the lower bound of the finite values,
+Inf the upper one, and a message saying so is returned in the ``warnings`` list so that the
surface shows it, once (it is logged at debug level only: a warning-level log record would
print it a second time on the command line).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "KINDS",
    "NormalizedImage",
    "infer_kind",
    "normalize_image",
    "percentile_normalize",
    "restore_layout",
    "scale_rgb",
    "to_channels_first",
]

logger = logging.getLogger(__name__)

Kind = Literal["gray", "rgb", "rgba", "stack"]
KINDS: tuple[str, ...] = ("gray", "rgb", "rgba", "stack")


def infer_kind(image: np.ndarray) -> str:
    """Decide the layout of an image from its shape.

    (H, W) → ``"gray"``; (H, W, 3) → ``"rgb"``; (H, W, 4) → ``"rgba"``; any other 3-D
    shape → ``"stack"`` (Z, H, W). A trailing axis of 3 or 4 is read as colour because images
    narrower than 8 px are rejected anyway. Channels-first colour (3, H, W) is *not*
    guessed (it is indistinguishable from a 3-slice stack); pass ``kind="rgb"`` after moving
    the channel axis last if that is what you have.
    """
    shape = np.shape(image)
    if len(shape) == 2:
        return "gray"
    if len(shape) == 3:
        if shape[-1] == 3:
            return "rgb"
        if shape[-1] == 4:
            return "rgba"
        return "stack"
    raise ValueError(
        f"cannot interpret an image of shape {tuple(shape)}: expected (H, W), (H, W, 3), "
        "(H, W, 4) or a stack (Z, H, W); for 4-D data pick one time point or channel first"
    )


def _resolve_kind(image: np.ndarray, kind: str) -> str:
    if kind == "auto":
        return infer_kind(image)
    if kind not in KINDS:
        raise ValueError(f"kind must be 'auto' or one of {KINDS}, got {kind!r}")
    expected_ndim = 2 if kind == "gray" else 3
    if image.ndim != expected_ndim or (kind in ("rgb", "rgba") and image.shape[-1] != len(kind)):
        raise ValueError(f"an image of kind {kind!r} cannot have shape {image.shape}")
    return kind


def _warn(warnings: list[str], message: str) -> None:
    warnings.append(message)
    logger.debug(message)


def _replace_nonfinite(
    x: np.ndarray, lo: float, hi: float, warnings: list[str], what: str
) -> np.ndarray:
    """Replace NaN/-Inf by ``lo`` and +Inf by ``hi`` (in a copy) and report how many."""
    finite = np.isfinite(x)
    if finite.all():
        return x
    n_nan = int(np.isnan(x).sum())
    n_pinf = int(np.isposinf(x).sum())
    n_ninf = int(np.isneginf(x).sum())
    x = x.copy()
    x[np.isnan(x) | np.isneginf(x)] = lo
    x[np.isposinf(x)] = hi
    parts = [f"{n} {name}" for n, name in ((n_nan, "NaN"), (n_pinf, "+Inf"), (n_ninf, "-Inf")) if n]
    _warn(
        warnings,
        f"{what}: replaced {', '.join(parts)} value(s): NaN/-Inf by the lowest "
        f"and +Inf by the highest finite intensity ({lo:g} / {hi:g})",
    )
    return x


def percentile_normalize(
    image: np.ndarray,
    lower: float = 0.5,
    upper: float = 99.5,
    warnings: list[str] | None = None,
) -> np.ndarray:
    """Clip to the [lower, upper] percentiles of the finite values and scale to [0, 1].

    Works on any shape (statistics are global); returns a new float32 array. A constant
    image gives all zeros; an image without any finite value gives zeros and a warning.
    ``lower=0, upper=100`` is plain min–max scaling.
    """
    if warnings is None:
        warnings = []
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
    x = np.asarray(image)
    if x.dtype == bool:
        return x.astype(np.float32)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"image dtype {x.dtype} is not numeric — convert it to numbers first")
    x = x.astype(np.float32 if x.dtype.itemsize <= 2 else np.float64, copy=True)
    finite = np.isfinite(x)
    if not finite.any():
        _warn(warnings, "image has no finite value (all NaN/Inf): it was replaced by zeros")
        return np.zeros(x.shape, np.float32)
    values = x[finite] if not finite.all() else x
    lo, hi = (float(v) for v in np.percentile(values, [lower, upper]))
    x = _replace_nonfinite(x, lo, hi, warnings, "image")
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    np.clip(x, lo, hi, out=x)
    x -= lo
    x /= hi - lo
    return x.astype(np.float32, copy=False)


def scale_rgb(image: np.ndarray, warnings: list[str] | None = None) -> np.ndarray:
    """Colour image (…, 3) → float32 in [0, 1], keeping channel ratios.

    uint8 → /255. Other unsigned/positive integers (16-bit cameras, 12-bit data in a
    uint16) → divided by the image maximum. Floats already inside [0, 1] are kept; other
    floats and signed data are min–max scaled with one shared range for all channels.
    """
    if warnings is None:
        warnings = []
    x = np.asarray(image)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if x.dtype == bool:
        return x.astype(np.float32)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"image dtype {x.dtype} is not numeric — convert it to numbers first")
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        _warn(warnings, "image has no finite value (all NaN/Inf): it was replaced by zeros")
        return np.zeros(x.shape, np.float32)
    lo, hi = float(x[finite].min()), float(x[finite].max())
    x = _replace_nonfinite(x, lo, hi, warnings, "colour image")
    if np.issubdtype(np.asarray(image).dtype, np.integer) and lo >= 0:
        out = x / hi if hi > 0 else x
    elif lo >= 0 and hi <= 1:
        out = x
    elif hi > lo:
        out = (x - lo) / (hi - lo)
    else:
        out = np.zeros_like(x)
    return out.astype(np.float32)


def to_channels_first(image: np.ndarray, kind: str = "auto") -> np.ndarray:
    """Move to the channels-first layout the networks take (no intensity change).

    * gray (H, W) → (1, H, W)
    * rgb (H, W, 3) → (3, H, W)
    * rgba (H, W, 4) → (3, H, W): the alpha channel is dropped — it carries transparency,
      not tissue, and the networks are built for 1 or 3 channels.
    * stack (Z, H, W) → (Z, 1, H, W), i.e. Z slices of (1, H, W) segmented one at a time.

    Returns a new contiguous array; the input is never modified.
    """
    x = np.asarray(image)
    kind = _resolve_kind(x, kind)
    if kind == "gray":
        return np.ascontiguousarray(x[None]).copy()
    if kind in ("rgb", "rgba"):
        return np.ascontiguousarray(np.moveaxis(x[..., :3], -1, 0))
    return np.ascontiguousarray(x[:, None]).copy()


@dataclass
class NormalizedImage:
    """Network-ready slices plus what is needed to map predictions back.

    ``data`` is float32 (N, C, H, W): N = 1 for 2-D images, Z for stacks; C = 1 for grey,
    3 for colour. ``spatial_shape`` is (H, W) or (Z, H, W), the shape of a label map that
    matches the original image.
    """

    data: np.ndarray
    kind: str
    spatial_shape: tuple[int, ...]
    warnings: list[str] = field(default_factory=list)


def normalize_image(
    image: np.ndarray, kind: str = "auto", lower: float = 0.5, upper: float = 99.5
) -> NormalizedImage:
    """Normalise intensities and return (N, C, H, W) float32 slices (see module docstring)."""
    x = np.asarray(image)
    kind = _resolve_kind(x, kind)
    warnings: list[str] = []
    if kind in ("rgb", "rgba"):
        if kind == "rgba":
            _warn(warnings, "RGBA image: the alpha channel was dropped, RGB was kept")
        scaled = scale_rgb(x[..., :3], warnings)
        spatial = tuple(x.shape[:2])
    else:
        scaled = percentile_normalize(x, lower, upper, warnings)
        spatial = tuple(x.shape)
    chw = to_channels_first(scaled, "rgb" if kind == "rgba" else kind)
    data = chw[None] if kind != "stack" else chw
    return NormalizedImage(np.ascontiguousarray(data, np.float32), kind, spatial, warnings)


def restore_layout(labels: np.ndarray, kind: str) -> np.ndarray:
    """Per-slice predictions (N, H, W) → the label layout of the original image.

    2-D kinds give (H, W) (N must be 1); stacks give (Z, H, W).
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected per-slice labels (N, H, W), got shape {labels.shape}")
    if kind == "stack":
        return labels
    if kind in ("gray", "rgb", "rgba"):
        if labels.shape[0] != 1:
            raise ValueError(f"a 2-D {kind} image has one slice, got {labels.shape[0]}")
        return labels[0]
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def describe_normalisation(channels: int) -> str:
    """How :func:`normalize_image` scales an image of ``channels`` channels (model cards)."""
    if int(channels) == 3:
        return (
            "colour: 8-bit values / 255 (other integer types / the image's maximum; "
            "floats outside [0, 1] min-max scaled)"
        )
    return (
        "grey: clipped to the 0.5-99.5th percentiles of the image (a stack: of the whole "
        "stack), then scaled to [0, 1]"
    )
