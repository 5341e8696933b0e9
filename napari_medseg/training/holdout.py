"""Held-out strokes: a share of the user's scribbles that no network (and no teacher) sees.

Why: on the image being annotated there is no ground truth, yet the trainer must decide how far
to trust each network against the random walker (docs/design.md "The anytime floor"). Pixels
the networks never trained on, and that the walker teaching them never had as seeds, are the
only label-free test of generalisation. Strokes are cut into square tiles and whole tiles are
held out, so a held-out piece is a stretch of stroke (its neighbours in the same tile go with
it) rather than isolated pixels that the surrounding training pixels would give away.

Everything works in class indices (-1 unlabelled) on (Z, H, W) arrays, never in place.
"""

from __future__ import annotations

import numpy as np

#: Share of each class's stroke tiles (per slice) held out by default.
HOLDOUT_FRACTION = 0.2
#: A class keeps all its strokes on a slice where they cover fewer tiles than this.
MIN_TILES = 3


def default_tile(shape_hw: tuple[int, int]) -> int:
    """Tile side in pixels: 1/16 of the longest side (16 px on a 256² MRI slice), ≥ 4."""
    return max(4, int(round(max(shape_hw) / 16)))


def split_strokes(
    seeds: np.ndarray,
    fraction: float = HOLDOUT_FRACTION,
    seed: int = 0,
    tile: int | None = None,
    min_tiles: int = MIN_TILES,
) -> tuple[np.ndarray, np.ndarray]:
    """(training seeds, held-out seeds) of a (Z, H, W) index map; -1 where not in the part.

    Per slice and class, ``fraction`` of the tiles that hold the class's strokes (at least
    one when the class covers ``min_tiles`` tiles or more) are held out; a class with fewer
    tiles keeps all its strokes for training. Deterministic for a given ``seed``.
    """
    seeds = np.asarray(seeds)
    train = seeds.copy()
    held = np.full(seeds.shape, -1, dtype=seeds.dtype)
    if fraction <= 0 or seeds.size == 0:
        return train, held
    rng = np.random.default_rng(seed)
    _, h, w = seeds.shape
    t = tile or default_tile((h, w))
    tiles_x = (w + t - 1) // t
    tile_id = (np.arange(h)[:, None] // t) * tiles_x + (np.arange(w)[None, :] // t)
    for z in range(seeds.shape[0]):
        s = seeds[z]
        for c in np.unique(s[s >= 0]):
            mask = s == c
            ids = np.unique(tile_id[mask])
            if ids.size < min_tiles:
                continue
            k = min(ids.size - 1, max(1, int(round(fraction * ids.size))))
            out = mask & np.isin(tile_id, rng.choice(ids, size=k, replace=False))
            held[z][out] = c
            train[z][out] = -1
    return train, held


def heldout_agreement(prediction: np.ndarray, heldout: np.ndarray) -> float | None:
    """Mean over classes of the share of held-out stroke pixels predicted as their class.

    A per-class mean (balanced accuracy), so a long background stroke does not drown a thin
    structure's. None when nothing is held out.
    """
    heldout = np.asarray(heldout)
    mask = heldout >= 0
    if not mask.any():
        return None
    pred = np.asarray(prediction)[mask]
    truth = heldout[mask]
    return float(np.mean([np.mean(pred[truth == c] == c) for c in np.unique(truth)]))
