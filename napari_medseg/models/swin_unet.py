"""SwinUNet: the shifted-window transformer member of the tri-network (Swin-Unet, Cao et al.).

The ``paper`` preset reproduces ``SwinTransformerSys`` as configured by
``swin_tiny_patch4_window7_224_lite.yaml`` (the configuration WSL4MIS and Weak-Mamba-UNet use):
patch 4, embed dim 96, encoder depths [2, 2, 2, 2], heads [3, 6, 12, 24], window 7, MLP ratio
4, qkv bias, stochastic depth 0.2, patch merging down, patch expanding up, linear skip fusion.

About the decoder depths: the yaml lists ``DECODER_DEPTHS`` and ``SwinTransformerSys`` has a
``depths_decoder=[1, 2, 2, 2]`` argument, but neither matters: the wrapper never passes the
yaml value, and the constructor only prints ``depths_decoder`` — every ``BasicLayer_up`` is
built with the *encoder* ``depths``. The decoder that actually runs therefore has 2 blocks at
each of its three levels (384, 192 and 96 channels) and none at the bottleneck level, where
the first "up layer" is a bare patch expansion. That is what this module builds; it is the
configuration that has the published 27.17 M parameters (a [1, 2, 2, 2] decoder would drop
one 96-channel block, ~0.11 M).

Differences from the official code, all needed for arbitrary image sizes:

* The official blocks fix their input resolution (224 / 4 = 56 at the first stage). Here each
  block pads its feature map at the bottom/right to a multiple of the window, masks the padded
  tokens out as attention *keys*, and crops back, so ``size_multiple`` is 32 (patch 4 x three
  merges) instead of 224.
* The cyclic shift is applied per axis, and only along an axis longer than the window (the
  official code disables the shift when ``min(H, W) <= window``; at 224 input both rules agree).
  Shifted windows get the usual "same region" mask; both masks use -100 like the official code,
  so rows whose keys are all masked (padded queries only) stay finite.
* The official gray-to-RGB repeat is not done: ``in_channels`` sets the patch embedding's
  input channels directly. ``load_pretrained`` sums a 3-channel pretrained patch embedding
  over its input channels for 1-channel models, which is exactly equivalent to repeating gray.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._token_unet import DropPath, TokenUNet, init_transformer_weights, pad_to_multiple_hw
from .registry import register_model

MASKED = -100.0


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window: int
    mlp_ratio: float
    drop_path: float


PRESETS = {
    "paper": SwinConfig(
        embed_dim=96,
        depths=(2, 2, 2, 2),
        num_heads=(3, 6, 12, 24),
        window=7,
        mlp_ratio=4.0,
        drop_path=0.2,
    ),
    # Lite, for interactive CPU training at ~128^2 crops (token maps 32, 16, 8, 4):
    # * embed 32 with 16-channel heads ([2, 4, 8, 16] heads) keeps every linear ~9x cheaper
    #   than at 96 channels, and heads of 16 channels are the smallest that stay expressive;
    # * one block per stage, but depth-2 stages at the two finest levels so that each of them
    #   still has one regular and one shifted-window block (otherwise no information would
    #   cross window borders there);
    # * window 8 instead of 7: it divides the power-of-two maps of 128/256 crops, so nothing is
    #   padded (window 7 on a 32x32 map pads to 35x35, 20% wasted tokens, plus masking);
    # * MLP ratio 2 halves the MLP, which dominates the FLOPs at this width.
    "lite": SwinConfig(
        embed_dim=32,
        depths=(2, 2, 1, 1),
        num_heads=(2, 4, 8, 16),
        window=8,
        mlp_ratio=2.0,
        drop_path=0.1,
    ),
}


def _partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, Hp, Wp, C) -> (B, nW, ws*ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def _unpartition(x: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_partition`."""
    b, _, _, c = x.shape
    x = x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


_MASK_CACHE: dict[tuple, torch.Tensor | None] = {}


def window_attention_mask(
    h: int, w: int, ws: int, shift_h: int, shift_w: int, device: torch.device
) -> torch.Tensor | None:
    """Additive (nW, N, N) mask for a map of h x w real tokens padded up to window multiples.

    Key token j is hidden from query i (value -100) when j is padding or when i and j come from
    different sides of a cyclic-shift seam. Returns None when nothing needs masking.
    """
    hp, wp = h + (-h) % ws, w + (-w) % ws
    if hp == h and wp == w and not shift_h and not shift_w:
        return None
    key = (h, w, ws, shift_h, shift_w, str(device))
    if key not in _MASK_CACHE:
        if len(_MASK_CACHE) > 64:
            _MASK_CACHE.clear()
        rows = torch.arange(hp, device=device)
        cols = torch.arange(wp, device=device)
        # Rolled position r holds the token from (r + shift) mod size; tokens past
        # size - shift have wrapped around from the other edge.
        wrap_r = rows >= hp - shift_h if shift_h else torch.zeros_like(rows, dtype=torch.bool)
        wrap_c = cols >= wp - shift_w if shift_w else torch.zeros_like(cols, dtype=torch.bool)
        region = wrap_r[:, None].long() * 2 + wrap_c[None, :].long()
        pad = ((rows + shift_h) % hp >= h)[:, None] | ((cols + shift_w) % wp >= w)[None, :]
        region = _partition(region[None, :, :, None], ws)[0, :, :, 0]  # (nW, N)
        pad = _partition(pad[None, :, :, None], ws)[0, :, :, 0]
        allowed = (region[:, :, None] == region[:, None, :]) & ~pad[:, None, :]
        mask = torch.zeros(allowed.shape, device=device).masked_fill_(~allowed, MASKED)
        _MASK_CACHE[key] = mask
    return _MASK_CACHE[key]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws x ws windows with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window = window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]) + (window - 1)  # (2, N, N), >= 0
        index = rel[0] * (2 * window - 1) + rel[1]
        # Derived from the window size: not saved, so checkpoints stay size-agnostic.
        self.register_buffer("relative_position_index", index, persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, nW, N, C); mask: additive (nW, N, N) or None."""
        b, nw, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(b * nw, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, h).permute(2, 0, 1)  # (h, N, N)
        if mask is not None:
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).unsqueeze(0)  # (1, nW, h, N, N)
            bias = bias.expand(b, -1, -1, -1, -1).reshape(b * nw, h, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, nw, n, c))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP, on (B, H, W, C) maps of any size."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        shifted: bool,
        mlp_ratio: float,
        drop_path: float,
    ):
        super().__init__()
        self.window = window
        self.shift = window // 2 if shifted else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, hidden))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        sh = self.shift if h > ws else 0
        sw = self.shift if w > ws else 0
        y, _, _ = pad_to_multiple_hw(self.norm1(x), ws)
        hp, wp = y.shape[1:3]
        if sh or sw:
            y = torch.roll(y, shifts=(-sh, -sw), dims=(1, 2))
        mask = window_attention_mask(h, w, ws, sh, sw, x.device)
        y = _unpartition(self.attn(_partition(y, ws), mask), ws, hp, wp)
        if sh or sw:
            y = torch.roll(y, shifts=(sh, sw), dims=(1, 2))
        x = x + self.drop_path(y[:, :h, :w])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinUNet(TokenUNet):
    """Swin-Unet on (B, in_channels, H, W) with H, W multiples of 32; returns logits."""

    def __init__(self, in_channels: int, num_classes: int, cfg: SwinConfig):
        if len(cfg.num_heads) != len(cfg.depths):
            raise ValueError("num_heads needs one entry per stage")

        def make_block(stage: int, index: int, dim: int, dp: float) -> nn.Module:
            # Odd blocks of a stage use shifted windows, as in Swin.
            return SwinBlock(
                dim,
                cfg.num_heads[stage],
                cfg.window,
                shifted=index % 2 == 1,
                mlp_ratio=cfg.mlp_ratio,
                drop_path=dp,
            )

        super().__init__(
            in_channels,
            num_classes,
            cfg.embed_dim,
            cfg.depths,
            make_block,
            patch=4,
            drop_path=cfg.drop_path,
        )
        init_transformer_weights(self)


@register_model(
    "swin_unet",
    display_name="SwinUNet",
    family="transformer",
    size_multiple=32,
    description="Swin-Unet (shifted-window transformer U-Net, patch 4, window 7).",
)
def build_swin_unet(in_channels: int = 1, num_classes: int = 4, preset: str = "lite") -> SwinUNet:
    """Swin-Unet; ``paper`` = the official Swin-T U-Net (27.17 M params for 4 classes).

    ``lite`` (embed 32, depths 2-2-1-1, window 8, MLP ratio 2; reasons at ``PRESETS``) costs
    ~0.5-0.7x a paper-UNet training step on CPU.
    """
    return SwinUNet(in_channels, num_classes, PRESETS[preset])
