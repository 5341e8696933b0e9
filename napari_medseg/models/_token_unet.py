"""Shared skeleton of the token-space U-Nets (SwinUNet and MambaUNet).

Swin-Unet and Mamba-UNet share everything but their blocks: a 4x4 patch embedding, three
patch-merging steps, a bottleneck, a mirrored patch-expanding decoder with linear skip fusion
and a final 4x patch expansion plus 1x1 classifier. Writing that skeleton once keeps the two
architecture files about their blocks, and keeps them comparable.

Tokens stay channels-last, ``(B, H, W, C)``, throughout. Module attribute names follow the
official code (``patch_embed``, ``layers``, ``layers_up``, ``concat_back_dim``, ``norm``,
``norm_up``, ``up``, ``output``) so that published checkpoints map onto these models with
:func:`napari_medseg.models.pretrained.load_pretrained`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BlockFactory = Callable[[int, int, int, float], nn.Module]
"""``make_block(stage, index_in_stage, dim, drop_path) -> nn.Module`` on ``(B, H, W, dim)``."""


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample during training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution, then LayerNorm; returns channels-last."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2x2 space-to-depth, LayerNorm, linear 4C -> 2C (the official concatenation order)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(x))


def _depth_to_space(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``b h w (p1 p2 c) -> b (h p1) (w p2) c``, the layout the official expand layers use."""
    b, h, w, c = x.shape
    c_out = c // (scale * scale)
    x = x.view(b, h, w, scale, scale, c_out).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * scale, w * scale, c_out)


class PatchExpand(nn.Module):
    """Linear C -> 2C, then depth-to-space x2 (giving C/2 channels), then LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_depth_to_space(self.expand(x), 2))


class FinalPatchExpand(nn.Module):
    """Linear C -> scale^2 C, depth-to-space x scale (keeping C channels), LayerNorm."""

    def __init__(self, dim: int, scale: int = 4):
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, scale * scale * dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_depth_to_space(self.expand(x), self.scale))


class EncoderStage(nn.Module):
    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class DecoderStage(nn.Module):
    def __init__(self, blocks: Sequence[nn.Module], upsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.upsample is None else self.upsample(x)


class TokenUNet(nn.Module):
    """Patch-embed / merge encoder, patch-expand decoder, blocks supplied by ``make_block``.

    Stage ``i`` of the encoder works at ``embed_dim * 2**i`` channels and ``1 / (patch * 2**i)``
    resolution. Like the official Swin-Unet and Mamba-UNet code, the decoder stage at
    resolution level ``i`` (``i < n - 1``) repeats the encoder depth ``depths[i]`` and reuses the
    encoder's stochastic-depth rates for that level; the deepest level has no decoder blocks
    (the bottleneck output is expanded straight away).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        embed_dim: int,
        depths: Sequence[int],
        make_block: BlockFactory,
        patch: int = 4,
        drop_path: float = 0.0,
    ):
        super().__init__()
        n = len(depths)
        if n < 2:
            raise ValueError("a token U-Net needs at least two stages")
        dims = [embed_dim * 2**i for i in range(n)]
        self.patch = patch
        self.size_multiple = patch * 2 ** (n - 1)
        dpr = torch.linspace(0, drop_path, sum(depths)).tolist()
        starts = [sum(depths[:i]) for i in range(n)]

        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch)
        self.layers = nn.ModuleList(
            EncoderStage(
                [make_block(i, j, dims[i], dpr[starts[i] + j]) for j in range(depths[i])],
                PatchMerging(dims[i]) if i < n - 1 else None,
            )
            for i in range(n)
        )
        self.norm = nn.LayerNorm(dims[-1])

        layers_up: list[nn.Module] = [PatchExpand(dims[-1])]
        concat: list[nn.Module] = [nn.Identity()]
        for level in range(n - 2, -1, -1):
            concat.append(nn.Linear(2 * dims[level], dims[level]))
            layers_up.append(
                DecoderStage(
                    [
                        make_block(level, j, dims[level], dpr[starts[level] + j])
                        for j in range(depths[level])
                    ],
                    PatchExpand(dims[level]) if level > 0 else None,
                )
            )
        self.layers_up = nn.ModuleList(layers_up)
        self.concat_back_dim = nn.ModuleList(concat)
        self.norm_up = nn.LayerNorm(embed_dim)
        self.up = FinalPatchExpand(embed_dim, scale=patch)
        self.output = nn.Conv2d(embed_dim, num_classes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"{type(self).__name__} needs H and W divisible by {m}, got {h}x{w}; build it "
                "with napari_medseg.models.create_model(...), which pads any size for you"
            )
        x = self.patch_embed(x)
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        x = self.norm(x)
        x = self.layers_up[0](x)
        for i in range(1, len(self.layers_up)):
            x = self.concat_back_dim[i](torch.cat([x, skips[-1 - i]], dim=-1))
            x = self.layers_up[i](x)
        x = self.up(self.norm_up(x))
        return self.output(x.permute(0, 3, 1, 2))


def init_transformer_weights(module: nn.Module) -> None:
    """Official Swin/VMamba init: truncated-normal(0.02) linears with zero bias, unit LayerNorm.

    Parameters that are not ``nn.Linear`` weights (Mamba's stacked projections, A_log, D, the
    relative position table) keep the initialisation their own module gave them.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def pad_to_multiple_hw(x: torch.Tensor, m: int) -> tuple[torch.Tensor, int, int]:
    """Zero-pads a channels-last map at the bottom/right so H and W are multiples of ``m``."""
    h, w = x.shape[1:3]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    return x, ph, pw
