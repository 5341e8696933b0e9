"""Inference of one network on a stack of slices, tiled for large images."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# Above this many pixels per slice a whole-slice forward pass may not fit in memory:
# MONAI's sliding-window inference predicts overlapping tiles and blends them (Gaussian).
TILE_THRESHOLD_PIXELS = 1024 * 1024
TILE_SIZE = 512


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    tile_size: int | None = None,
) -> np.ndarray:
    """Softmax probabilities (Z, K, H, W) float32 for a normalised (Z, C, H, W) image.

    The model is put in eval mode and restored to its previous mode afterwards, so this can run
    between training steps.
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (Z, C, H, W) image, got shape {image.shape}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        z, _, h, w = image.shape
        tile = tile_size or (TILE_SIZE if h * w > TILE_THRESHOLD_PIXELS else None)
        out = []
        for s in range(0, z, batch_size):
            x = torch.from_numpy(np.ascontiguousarray(image[s : s + batch_size])).to(device)
            if tile is not None and (h > tile or w > tile):
                from monai.inferers import sliding_window_inference

                logits = sliding_window_inference(
                    x, roi_size=(tile, tile), sw_batch_size=batch_size, predictor=model,
                    overlap=0.25, mode="gaussian",
                )
            else:
                logits = model(x)
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(out, axis=0)
    finally:
        model.train(was_training)
