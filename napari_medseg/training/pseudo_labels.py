"""Pseudo labels: the randomly weighted ensemble of Weak-Mamba-UNet and random-walker seeds."""

from __future__ import annotations

import numpy as np
import torch


def random_simplex_weights(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Weights drawn uniformly on the (n-1)-simplex (a flat Dirichlet), one draw per iteration.

    The paper draws α, β, γ at random so that no single network dominates the pseudo label.
    Normalised exponentials give exactly the uniform distribution on the simplex.
    """
    e = -torch.log(torch.rand(n, generator=generator).clamp_min(1e-12))
    return e / e.sum()


def ensemble_pseudo_label(probs: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """argmax(α·pA + β·pB + γ·pC), detached: the pseudo label supervises, it is not trained."""
    mix = sum(w * p.detach() for w, p in zip(weights.tolist(), probs))
    return mix.argmax(dim=1)


def random_walker_probabilities(
    image: np.ndarray, seeds: np.ndarray, num_classes: int, beta: float = 130.0
) -> np.ndarray:
    """Class probabilities (Z, K, H, W) float32 of scikit-image's random walker, slice by slice.

    image: (Z, C, H, W) float in [0, 1]; seeds: (Z, H, W) class indices, -1 unlabelled. Where
    the walker has nothing to go on it says so with uniform probabilities instead of guessing:
    a slice without strokes, the unlabelled pixels of a slice with strokes of one class only
    (one class gives no boundary), and a degenerate (constant) slice where the solver fails.
    A slice drawn everywhere is its strokes (scikit-image would return labels, not
    probabilities, for it).
    Classes without strokes on a slice get probability 0 there; seeds keep their class.
    """
    from skimage.segmentation import random_walker

    z_count, h, w = seeds.shape
    out = np.full((z_count, num_classes, h, w), 1.0 / num_classes, dtype=np.float32)
    for z in range(z_count):
        s = seeds[z]
        present = np.unique(s[s >= 0])
        if present.size >= 2 and (s < 0).any():  # a fully drawn slice has nothing to solve
            # random_walker wants labels 1..k with 0 unknown
            rw_seeds = np.zeros(s.shape, dtype=np.int32)
            for i, c in enumerate(present):
                rw_seeds[s == c] = i + 1
            img = image[z]
            chan = img.shape[0] > 1
            try:
                # "bf" (a direct sparse solve) is faster and more predictable than the
                # iterative solvers on slice-sized problems, which sometimes converge slowly
                prob = random_walker(
                    np.moveaxis(img, 0, -1) if chan else img[0],
                    rw_seeds,
                    beta=beta,
                    mode="bf",
                    channel_axis=-1 if chan else None,
                    return_full_prob=True,
                )
            except Exception:  # noqa: BLE001 - degenerate slice: seeds only, uniform elsewhere
                prob = None
            if prob is not None:
                out[z] = 0.0
                out[z, present] = prob
        for c in present:  # strokes are certain, whatever the solver did
            mask = s == c
            out[z][:, mask] = 0.0
            out[z, c][mask] = 1.0
    return out


def random_walker_labels(
    image: np.ndarray,
    seeds: np.ndarray,
    num_classes: int,
    beta: float = 130.0,
    min_confidence: float = 0.0,
) -> np.ndarray:
    """Dense labels from scribbles by scikit-image's random walker, slice by slice.

    A known lever of the scribble-supervision family: a few seconds of diffusion give every
    pixel a plausible class, which the networks use as a weak extra target early in training.

    image: (Z, C, H, W) float in [0, 1]; seeds: (Z, H, W) with class indices, -1 unlabelled.
    Returns (Z, H, W) int64 class indices; slices whose seeds miss a class keep what the
    present classes give; slices without any seed, and the unscribbled pixels of a slice with
    strokes of one class only, are -1 (ignored: one class says nothing of a boundary). With
    ``min_confidence`` > 0, pixels whose winning probability is below it are -1 as well: the
    walker is least reliable exactly there, and the networks decide those pixels themselves.
    """
    prob = random_walker_probabilities(image, seeds, num_classes, beta)
    out = prob.argmax(axis=1).astype(np.int64)
    if min_confidence > 0:
        out[prob.max(axis=1) < min_confidence] = -1
    out[(prob.max(axis=1) <= 1.0 / num_classes + 1e-6) & (seeds < 0)] = -1  # no information
    return out
