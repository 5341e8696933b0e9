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
    present classes give, and slices without any seed are -1 (ignored). With
    ``min_confidence`` > 0, pixels whose winning probability is below it are -1 as well: the
    walker is least reliable exactly there, and the networks decide those pixels themselves.
    """
    from skimage.segmentation import random_walker

    out = np.full(seeds.shape, -1, dtype=np.int64)
    for z in range(seeds.shape[0]):
        s = seeds[z]
        present = np.unique(s[s >= 0])
        if present.size == 0:
            continue
        if present.size == 1:
            out[z] = present[0]
            continue
        # random_walker wants labels 1..k with 0 unknown
        lut = {int(c): i + 1 for i, c in enumerate(present)}
        rw_seeds = np.zeros(s.shape, dtype=np.int32)
        for c, i in lut.items():
            rw_seeds[s == c] = i
        img = image[z]
        chan = img.shape[0] > 1
        data = np.moveaxis(img, 0, -1) if chan else img[0]
        try:
            # "bf" (a direct sparse solve) is faster and more predictable than the iterative
            # solvers on slice-sized problems, which sometimes converge slowly
            res = random_walker(
                data,
                rw_seeds,
                beta=beta,
                mode="bf",
                channel_axis=-1 if chan else None,
                return_full_prob=min_confidence > 0,
            )
        except Exception:  # degenerate slices (constant image): fall back to seeds only
            continue
        if min_confidence > 0:
            seg = res.argmax(axis=0) + 1
            lab = present[np.clip(seg - 1, 0, present.size - 1)]
            lab[res.max(axis=0) < min_confidence] = -1
            lab[s >= 0] = s[s >= 0]
            out[z] = lab
        else:
            out[z] = present[np.clip(res - 1, 0, present.size - 1)]
    return out
