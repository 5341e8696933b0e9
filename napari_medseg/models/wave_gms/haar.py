"""Fixed, differentiable 2-D Haar wavelet transform (orthonormal), written as strided convolutions.

Wave-GMS feeds its image encoder with a multi-level Haar decomposition instead of raw pixels: each
level halves the resolution and splits the signal into one low-pass (LL) and three detail
(horizontal, vertical, diagonal) sub-bands. Because the transform is a fixed orthonormal
convolution it costs no parameters, passes gradients, and is exactly invertible by the transposed
convolution with the same kernel (used here for :func:`haar_idwt`, mainly to test the forward
transform).

Layout: for an input ``(B, C, H, W)`` the output is ``(B, 4 * C, H / 2, W / 2)`` ordered
sub-band-major, i.e. ``[LL(C), LH(C), HL(C), HH(C)]`` so that ``y[:, :C]`` is the low-pass image
that the next level decomposes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUBBANDS = ("LL", "LH", "HL", "HH")


def _haar_kernel(channels: int, like: torch.Tensor) -> torch.Tensor:
    """(4 * channels, 1, 2, 2) grouped-conv kernel; rows are the four orthonormal Haar filters."""
    k = torch.tensor(
        [
            [[1.0, 1.0], [1.0, 1.0]],  # LL: local mean (x2)
            [[1.0, -1.0], [1.0, -1.0]],  # LH: difference across columns (vertical edges)
            [[1.0, 1.0], [-1.0, -1.0]],  # HL: difference across rows (horizontal edges)
            [[1.0, -1.0], [-1.0, 1.0]],  # HH: diagonal detail
        ],
        dtype=like.dtype,
        device=like.device,
    ).mul_(0.5)
    return k.unsqueeze(1).repeat(channels, 1, 1, 1)


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """One level of the 2-D Haar DWT: (B, C, H, W) -> (B, 4C, H/2, W/2), H and W even."""
    if x.ndim != 4:
        raise ValueError(f"haar_dwt expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(
            f"haar_dwt needs even height and width, got {h}x{w}; pad the image first "
            "(create_model does this automatically)"
        )
    y = F.conv2d(x, _haar_kernel(c, x), stride=2, groups=c)  # channel-major: c0[LL..HH], c1[..]
    return y.view(b, c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)


def haar_idwt(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`haar_dwt`: (B, 4C, h, w) -> (B, C, 2h, 2w)."""
    if y.ndim != 4 or y.shape[1] % 4:
        raise ValueError(
            f"haar_idwt expects (B, 4C, h, w) sub-band stacks, got shape {tuple(y.shape)}"
        )
    b, c4, h, w = y.shape
    c = c4 // 4
    y = y.view(b, 4, c, h, w).transpose(1, 2).reshape(b, c4, h, w)
    # The filters are orthonormal, so the adjoint (transposed conv) is the inverse.
    return F.conv_transpose2d(y, _haar_kernel(c, y), stride=2, groups=c)


def haar_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Multi-level decomposition: one ``(B, 4C, H/2^l, W/2^l)`` stack per level ``l = 1..levels``.

    Level ``l`` decomposes the low-pass band of level ``l - 1``. Each stack is divided by ``2^l``
    so the LL band equals the local mean of the image (an orthonormal LL grows by 2 per level),
    which keeps all levels on the input's intensity scale, as in Wave-GMS.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    m = 2**levels
    if x.shape[-2] % m or x.shape[-1] % m:
        raise ValueError(
            f"a {levels}-level Haar pyramid needs H and W divisible by {m}, "
            f"got {x.shape[-2]}x{x.shape[-1]}"
        )
    c = x.shape[1]
    out = []
    low = x
    for level in range(1, levels + 1):
        bands = haar_dwt(low)
        out.append(bands / (2.0**level))
        low = bands[:, :c]
    return out
