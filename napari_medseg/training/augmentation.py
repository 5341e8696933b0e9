"""Batch augmentation on tensors: rot90 + flip and small rotations.

Labels are rotated with nearest sampling and the border uncovered by a rotation is filled with
``IGNORE_INDEX`` so that no pixel is ever scribbled by the augmentation itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .losses import IGNORE_INDEX


def _rot_flip(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    t = torch.rot90(t, k, dims=(-2, -1))
    return torch.flip(t, dims=(-1,)) if flip else t


def augment_batch(
    images: torch.Tensor,
    labels: list[torch.Tensor],
    generator: torch.Generator,
    max_rotation_deg: float = 20.0,
    p_rotate: float = 0.5,
    intensity: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Augments (B, C, H, W) images and any number of (B, H, W) label maps identically.

    Square crops keep their shape under rot90; non-square inputs only get flips and rot180.
    """
    b, _, h, w = images.shape
    out_img = []
    out_lab: list[list[torch.Tensor]] = [[] for _ in labels]
    for i in range(b):
        k = int(torch.randint(0, 4, (1,), generator=generator))
        if h != w:
            k = 2 * (k % 2)
        flip = bool(torch.randint(0, 2, (1,), generator=generator))
        out_img.append(_rot_flip(images[i], k, flip))
        for j, lab in enumerate(labels):
            out_lab[j].append(_rot_flip(lab[i], k, flip))
    images = torch.stack(out_img)
    labels = [torch.stack(x) for x in out_lab]

    # small rotations, per sample
    angles = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_rotation_deg)
    apply = torch.rand(b, generator=generator) < p_rotate
    angles = torch.where(apply, angles, torch.zeros_like(angles))
    if bool(apply.any()):
        cos, sin = torch.cos(angles), torch.sin(angles)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        theta = theta.to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        new_labels = []
        for lab in labels:
            # shift so that "outside the image" (zero padding) and ignored pixels (-1 -> 1)
            # are both below 2, then map them back to IGNORE_INDEX after sampling
            shifted = (lab.to(images.dtype) + 2).unsqueeze(1)
            rot = (
                F.grid_sample(
                    shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False
                )
                .squeeze(1)
                .round()
                .long()
            )
            rot = torch.where(rot >= 2, rot - 2, torch.full_like(rot, IGNORE_INDEX))
            new_labels.append(rot)
        labels = new_labels

    if intensity:
        # mild gamma and contrast jitter: slices of one volume differ in brightness
        gamma = torch.exp((torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 0.5)
        gamma = gamma.to(images.device, images.dtype)
        lo = images.amin(dim=(1, 2, 3), keepdim=True)
        hi = images.amax(dim=(1, 2, 3), keepdim=True)
        span = (hi - lo).clamp_min(1e-6)
        images = ((images - lo) / span).clamp(0, 1) ** gamma * span + lo
    return images, labels
