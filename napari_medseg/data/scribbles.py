"""Simulate scribbles from dense masks, for datasets that only ship dense labels.

The recipe follows the skeleton idea of the WSL4MIS scribble generator (a scribble is a
piece of the medial axis of an object, drawn well inside it) but is written for modern
scikit-image: ``skeletonize`` returns a *boolean* image there, and code that looks for
skeleton pixels equal to 255/1 of an integer image silently gets no scribble at all. Here
skeletons are used as booleans throughout and every class present in a slice is
guaranteed at least one stroke in that slice.

Per 2-D slice, per class, per connected component:

1. erode the component a little (``erosion_radius``, reduced automatically for thin
   objects) so the stroke stays away from the uncertain boundary;
2. skeletonize the eroded component; for compact objects whose skeleton is only a few
   pixels (a disk's is a point), use the segment of the major axis inside the object;
3. keep a random connected piece of the skeleton: starting from a random skeleton pixel,
   the first ``fraction`` × (skeleton length) pixels in breadth-first order along the
   skeleton (so the piece is one connected stroke, growing to both sides of the start);
4. optionally widen the stroke to ``stroke_width`` and clip it to the component.

The background is scribbled on a ring around the foreground (pixels between
``ring[0]`` and ``ring[1]`` px from it), as an annotator would trace around an organ,
rather than on the medial axis of the whole background (usually the image corners). Where
a slice has no foreground the whole background is used.

Output values: scribbled pixels hold ``class value + offset``; every other pixel holds
``unlabelled``. By default ``unlabelled`` is one more than the largest output class
value — the ACDC convention (classes 0..3, unlabelled 4). For the napari convention
(0 = unlabelled) pass ``offset=1, unlabelled=0``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.measure import label as cc_label
from skimage.measure import regionprops
from skimage.morphology import disk, skeletonize

__all__ = ["simulate_scribbles"]

_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """``binary_dilation(mask, disk(radius))``, by a distance transform.

    The same pixels (a pixel is within the disk of a mask pixel exactly when its Euclidean
    distance to it is ≤ radius), but linear in the image size: the morphological dilation
    costs image size × disk area, which on a full-resolution endoscopy frame was most of the
    time a dataset spent reading (a ring of radius 10 around the polyp, ~1 s a frame).
    """
    out = np.zeros(mask.shape, bool)
    where = np.argwhere(mask)
    if not len(where):
        return out
    # only the mask's bounding box grown by the radius can change
    lo = np.maximum(where.min(0) - radius, 0)
    hi = np.minimum(where.max(0) + radius + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out[box] = ndi.distance_transform_edt(~mask[box]) <= radius
    return out


def _erode_keep_nonempty(comp: np.ndarray, radius: int) -> np.ndarray:
    """Erode by the largest radius ≤ ``radius`` that leaves something of the component."""
    for r in range(radius, 0, -1):
        core = ndi.binary_erosion(comp, structure=disk(r))
        if core.any():
            return core
    return comp


def _bfs_piece(skel: np.ndarray, start: tuple[int, int], n_keep: int) -> np.ndarray:
    """First ``n_keep`` skeleton pixels reached from ``start`` (8-connected BFS)."""
    h, w = skel.shape
    kept = np.zeros_like(skel, dtype=bool)
    kept[start] = True
    count = 1
    queue = deque([start])
    while queue and count < n_keep:
        y, x = queue.popleft()
        for dy, dx in _NEIGHBOURS:
            ny, nx = y + dy, x + dx
            if 0 <= ny < h and 0 <= nx < w and skel[ny, nx] and not kept[ny, nx]:
                kept[ny, nx] = True
                count += 1
                queue.append((ny, nx))
                if count >= n_keep:
                    break
    return kept


def _axis_line_if_compact(core: np.ndarray, skel: np.ndarray) -> np.ndarray:
    """Major-axis segment of ``core`` when its skeleton is only a few pixels long.

    The medial axis of a round object (e.g. the left-ventricle cavity) shrinks to almost a
    point, which would give a dot instead of a stroke; an annotator would draw across the
    object instead, so we use the segment of its major axis that lies inside it.
    """
    props = regionprops(core.astype(np.uint8))
    if not props:
        return np.zeros_like(core)
    p = props[0]
    major = float(p.axis_major_length)
    if skel.sum() >= max(3.0, 0.5 * major):
        return np.zeros_like(core)
    cy, cx = p.centroid
    dy, dx = np.cos(p.orientation), np.sin(p.orientation)
    half = 0.5 * major
    h, w = core.shape
    y0, y1 = np.clip([cy - half * dy, cy + half * dy], 0, h - 1)
    x0, x1 = np.clip([cx - half * dx, cx + half * dx], 0, w - 1)
    line = np.zeros_like(core)
    rr, cc = draw_line(int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1)))
    line[rr, cc] = True
    return line & core


def _component_stroke(
    comp: np.ndarray,
    rng: np.random.Generator,
    erosion_radius: int,
    fraction: tuple[float, float],
    stroke_radius: int,
) -> np.ndarray:
    """A scribble (bool, same shape as ``comp``) lying inside the component ``comp``."""
    core = _erode_keep_nonempty(comp, erosion_radius)
    skel = skeletonize(core).astype(bool)
    if not skel.any():  # degenerate shapes: fall back to the core pixel nearest its centre
        coords = np.argwhere(core)
        centre = coords.mean(axis=0)
        skel = np.zeros_like(core)
        skel[tuple(coords[np.argmin(((coords - centre) ** 2).sum(1))])] = True
    skel |= _axis_line_if_compact(core, skel)
    coords = np.argwhere(skel)
    frac = float(rng.uniform(*fraction)) if fraction[1] > fraction[0] else float(fraction[0])
    n_keep = max(1, int(round(frac * len(coords))))
    start = tuple(int(v) for v in coords[rng.integers(len(coords))])
    stroke = _bfs_piece(skel, start, n_keep)
    if stroke_radius > 0:
        stroke = ndi.binary_dilation(stroke, structure=disk(stroke_radius)) & comp
    return stroke


def _scribble_region(
    target: np.ndarray,
    rng: np.random.Generator,
    min_component_size: int,
    erosion_radius: int,
    fraction: tuple[float, float],
    stroke_radius: int,
) -> np.ndarray:
    """Strokes for every large-enough component of ``target`` (at least one component)."""
    out = np.zeros(target.shape, dtype=bool)
    labels = cc_label(target, connectivity=2)
    props = regionprops(labels)
    if not props:
        return out
    chosen = [p for p in props if p.area >= min_component_size]
    if not chosen:  # never leave a present class without a stroke: take its largest piece
        chosen = [max(props, key=lambda p: p.area)]
    pad = 1 + stroke_radius
    for p in chosen:
        y0, x0, y1, x1 = p.bbox
        comp = np.pad(p.image, pad)
        stroke = _component_stroke(comp, rng, erosion_radius, fraction, stroke_radius)
        stroke = stroke[pad:-pad, pad:-pad]
        out[y0:y1, x0:x1] |= stroke
    return out


def _slice_scribbles(
    mask: np.ndarray,
    out: np.ndarray,
    classes: Sequence[int],
    background: int | None,
    offset: int,
    rng: np.random.Generator,
    params: dict,
    ring: tuple[int, int],
) -> None:
    fg = (mask != background) if background is not None else None
    for c in classes:
        region = mask == c
        if not region.any():
            continue
        target = region
        if background is not None and c == background and fg is not None and fg.any():
            outer = _dilate_disk(fg, ring[1]) if ring[1] > 0 else fg
            inner = _dilate_disk(fg, ring[0]) if ring[0] > 0 else fg
            band = outer & ~inner & region
            if band.any():
                target = band
        stroke = _scribble_region(target, rng, **params) & region
        out[stroke] = c + offset


def simulate_scribbles(
    mask: np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    background: int | None = 0,
    unlabelled: int | None = None,
    offset: int = 0,
    rng: np.random.Generator | int | None = None,
    erosion_radius: int = 2,
    fraction: float | tuple[float, float] = (0.3, 0.7),
    stroke_width: int = 1,
    ring: tuple[int, int] = (3, 10),
    min_component_size: int = 10,
) -> np.ndarray:
    """Scribbles (uint16) from a dense integer mask (H, W) or (Z, H, W), slice by slice.

    Args:
        mask: dense label map; 3-D masks are treated as a stack of 2-D slices.
        classes: class values to scribble (default: every value in ``mask``).
        background: value of the background class, scribbled on a ring around the
            foreground; ``None`` treats every class as an object.
        unlabelled: value of pixels without scribble; default ``max(classes) + offset + 1``.
        offset: added to class values in the output (``offset=1, unlabelled=0`` gives the
            napari convention where 0 means "no label").
        rng: ``np.random.Generator`` or seed; the same seed gives the same scribbles.
        erosion_radius: px eroded before skeletonizing (reduced for thin objects).
        fraction: fraction of each skeleton kept, or a (low, high) range to draw it from.
        stroke_width: stroke width in px; odd widths (1, 3, 5 …), even ones round down.
        ring: (inner, outer) distance in px of the background band from the foreground.
        min_component_size: components smaller than this (px) are skipped, except that a
            class present in a slice always gets a stroke on its largest component.
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be 2-D (H, W) or 3-D (Z, H, W), got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != bool:
        if not np.array_equal(mask, np.round(mask)):
            raise ValueError(f"mask must hold integer class values (dtype {mask.dtype})")
    mask = mask.astype(np.int64)
    if classes is None:
        classes = [int(v) for v in np.unique(mask)]
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("no classes to scribble: the mask is empty")
    out_values = [c + offset for c in classes]
    if min(out_values) < 0:
        raise ValueError(f"output class values must be ≥ 0 (got {min(out_values)}); raise offset")
    if unlabelled is None:
        unlabelled = max(out_values) + 1
    if unlabelled in out_values:
        raise ValueError(
            f"unlabelled value {unlabelled} collides with a class value {sorted(out_values)}; "
            "choose another unlabelled value or shift the classes with offset"
        )
    if max(max(out_values), unlabelled) > np.iinfo(np.uint16).max or unlabelled < 0:
        raise ValueError("class and unlabelled values must fit in 0..65535")
    if isinstance(fraction, (int, float)):
        fraction = (float(fraction), float(fraction))
    lo, hi = float(fraction[0]), float(fraction[1])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if ring[0] < 0 or ring[1] <= ring[0]:
        raise ValueError(f"ring must be (inner, outer) with 0 <= inner < outer, got {ring}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    params = dict(
        min_component_size=max(1, int(min_component_size)),
        erosion_radius=max(0, int(erosion_radius)),
        fraction=(lo, hi),
        stroke_radius=max(0, (int(stroke_width) - 1) // 2),
    )
    out = np.full(mask.shape, unlabelled, dtype=np.uint16)
    slices = mask[None] if mask.ndim == 2 else mask
    out_slices = out[None] if mask.ndim == 2 else out
    for z in range(slices.shape[0]):
        _slice_scribbles(
            slices[z],
            out_slices[z],
            classes,
            background,
            offset,
            rng,
            params,
            (int(ring[0]), int(ring[1])),
        )
    return out
