"""Working resolution: train and predict below the image's native size when it is large.

On a CPU the cost of a step grows with the pixels it sees, and a 1920×1080 endoscopy frame or a
256² MRI slice rarely needs every pixel to place a boundary within a pixel or two of the truth.
Images are shrunk by one factor (longest side ≤ ``max_side``); scribbles are shrunk so that no
stroke disappears (a pixel is labelled when any pixel of its footprint was); probabilities are
interpolated back to the native grid before the argmax.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def working_scale(shape_hw: tuple[int, int], max_side: int | None) -> float:
    """Factor ≤ 1 applied to both axes so that the longest side fits ``max_side``."""
    if not max_side:
        return 1.0
    return min(1.0, float(max_side) / float(max(shape_hw)))


def scaled_size(shape_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    return (max(1, round(shape_hw[0] * scale)), max(1, round(shape_hw[1] * scale)))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(Z, C, H, W) float32 → (Z, C, h, w) by area averaging (no aliasing when shrinking)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return F.interpolate(t, size=size, mode="area").numpy()


def resize_seeds(seeds: np.ndarray, size: tuple[int, int], num_classes: int) -> np.ndarray:
    """(Z, H, W) class indices with -1 unlabelled → (Z, h, w), keeping every stroke.

    Each output pixel takes the class most present in its footprint among the labelled pixels;
    it stays unlabelled only when its footprint holds no stroke at all.
    """
    if tuple(seeds.shape[-2:]) == tuple(size):
        return seeds
    t = torch.from_numpy(np.ascontiguousarray(seeds, dtype=np.int64))
    onehot = F.one_hot(t.clamp_min(0), num_classes).permute(0, 3, 1, 2).float()
    onehot = onehot * (t >= 0).unsqueeze(1).float()
    # adaptive max-pool keeps 1-px strokes; the area average then breaks ties by majority
    present = F.adaptive_max_pool2d(onehot, size)
    share = F.interpolate(onehot, size=size, mode="area") + 1e-6 * present
    out = share.argmax(1)
    out[present.amax(1) == 0] = -1
    return out.numpy()


def upsample_probabilities(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(Z, K, h, w) → (Z, K, H, W) by bilinear interpolation (a smooth boundary, not blocks)."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    t = torch.from_numpy(np.ascontiguousarray(probs))
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False).numpy()
