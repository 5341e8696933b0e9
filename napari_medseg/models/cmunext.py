"""CMUNeXt: a fully convolutional U-net of large-kernel depthwise + inverted-bottleneck blocks.

Re-implemented from Tang, Ding, Wang, Ning & Zhou, "CMUNeXt: An Efficient Medical Image
Segmentation Network based on Large Kernel and Skip Fusion" (ISBI 2024, arXiv:2308.01239), with
the layer layout of the official code (https://github.com/FengheTan9/CMUNeXt) so that parameter
counts match the published ones.

* **CMUNeXt block**: ``depth`` x [residual(depthwise k x k conv -> GELU -> BN), 1x1 expand x4
  -> GELU -> BN, 1x1 project -> GELU -> BN], then a 3x3 conv-BN-ReLU that changes the width.
  The large depthwise kernel mixes distant positions cheaply (a poor man's global context); the
  inverted bottleneck mixes channels.
* **Skip-Fusion**: the concatenated skip + upsampled features go through a two-group 3x3 conv
  (each group sees half of the concatenation) and an inverted bottleneck, instead of plain convs,
  so encoder and decoder features are mixed before the channel count is reduced.
* Encoder: stem 3x3 conv, five CMUNeXt blocks with 2x2 max pooling between them; decoder:
  bilinear x2 + 3x3 conv, Skip-Fusion, four times; 1x1 head.

Variants (dims / depths / kernels, all from the official code):

=========  ======================  ===============  ===============  =========================
name       dims                    depths           kernels          params (3 in, 1 class)
=========  ======================  ===============  ===============  =========================
cmunext_s  8, 16, 32, 64, 128      1, 1, 1, 1, 1    3, 3, 7, 7, 9    0.418 M (published 0.42 M)
cmunext    16, 32, 128, 160, 256   1, 1, 1, 3, 1    3, 3, 7, 7, 7    3.149 M (published 3.15 M)
cmunext_l  32, 64, 128, 256, 512   1, 1, 1, 6, 3    3, 3, 7, 7, 7    8.287 M (published 8.29 M)
=========  ======================  ===============  ===============  =========================

Measured FLOPs (2 x MACs, FlopCounterMode, 3 in / 2 classes, paper preset): CMUNeXt-S 2.03 /
8.10 GFLOPs, CMUNeXt 14.46 / 57.85, CMUNeXt-L 33.71 / 134.84 at 256x256 / 512x512. (Papers that
report "GFLOPs" from thop-style counters usually mean MACs, i.e. half of these.)

Presets: ``paper`` is the published variant exactly. ``lite`` keeps the widths and kernels (so
weights are structurally comparable and the receptive field stays large) but uses one CMUNeXt
repeat per stage: for CMUNeXt-S, which already has one repeat everywhere, lite == paper; for
CMUNeXt it drops two deep repeats (2.87 M params), for CMUNeXt-L seven (6.51 M params). With
``num_classes`` output classes the head has ``dims[0] * num_classes + num_classes`` parameters,
so the 2-class models differ from the table by ``dims[0] + 1``.

Input sizes must be multiples of 16 (four poolings); :func:`create_model` pads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["CMUNeXt", "CMUNeXtBlock", "CMUNeXtConfig", "SkipFusion", "cmunext_config"]


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU())


def _pw_gelu_bn(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 1), nn.GELU(), nn.BatchNorm2d(out_ch)]


class _DepthwiseResidual(nn.Module):
    def __init__(self, ch: int, kernel: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, kernel, padding=kernel // 2, groups=ch),
            nn.GELU(),
            nn.BatchNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CMUNeXtBlock(nn.Module):
    """``depth`` x (large-kernel depthwise residual + inverted bottleneck), then a width change."""

    def __init__(self, in_ch: int, out_ch: int, depth: int = 1, kernel: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers.append(_DepthwiseResidual(in_ch, kernel))
            layers += _pw_gelu_bn(in_ch, 4 * in_ch) + _pw_gelu_bn(4 * in_ch, in_ch)
        self.mix = nn.Sequential(*layers)
        self.out = _conv_bn_relu(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mix(x))


class SkipFusion(nn.Module):
    """Two-group 3x3 conv over [skip, upsampled], then an inverted bottleneck to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=2),
            nn.GELU(),
            nn.BatchNorm2d(in_ch),
            *_pw_gelu_bn(in_ch, 4 * out_ch),
            *_pw_gelu_bn(4 * out_ch, out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Up(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = _conv_bn_relu(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


@dataclass(frozen=True)
class CMUNeXtConfig:
    dims: tuple[int, int, int, int, int]
    depths: tuple[int, int, int, int, int]
    kernels: tuple[int, int, int, int, int]


_VARIANTS = {
    "cmunext_s": CMUNeXtConfig((8, 16, 32, 64, 128), (1, 1, 1, 1, 1), (3, 3, 7, 7, 9)),
    "cmunext": CMUNeXtConfig((16, 32, 128, 160, 256), (1, 1, 1, 3, 1), (3, 3, 7, 7, 7)),
    "cmunext_l": CMUNeXtConfig((32, 64, 128, 256, 512), (1, 1, 1, 6, 3), (3, 3, 7, 7, 7)),
}


def cmunext_config(variant: str, preset: str) -> CMUNeXtConfig:
    """The published configuration (``paper``) or its one-repeat-per-stage version (``lite``)."""
    if variant not in _VARIANTS:
        raise ValueError(f"unknown CMUNeXt variant {variant!r}; choose one of {list(_VARIANTS)}")
    cfg = _VARIANTS[variant]
    if preset == "paper":
        return cfg
    if preset == "lite":
        return CMUNeXtConfig(cfg.dims, (1, 1, 1, 1, 1), cfg.kernels)
    raise ValueError(f"CMUNeXt has no preset {preset!r}; use 'lite' or 'paper'")


class CMUNeXt(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, config: CMUNeXtConfig):
        super().__init__()
        d, n = config.dims, len(config.dims)
        self.stem = _conv_bn_relu(in_channels, d[0])
        self.encoders = nn.ModuleList(
            CMUNeXtBlock(d[max(i - 1, 0)], d[i], config.depths[i], config.kernels[i])
            for i in range(n)
        )
        # decoder stage i brings level i+1 up to level i
        self.ups = nn.ModuleList(_Up(d[i + 1], d[i]) for i in range(n - 1))
        self.fusions = nn.ModuleList(SkipFusion(2 * d[i], d[i]) for i in range(n - 1))
        self.head = nn.Conv2d(d[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        x = self.stem(x)
        for i, enc in enumerate(self.encoders):
            if i:
                x = F.max_pool2d(x, 2)
            x = enc(x)
            skips.append(x)
        for i in reversed(range(len(self.ups))):
            x = self.fusions[i](torch.cat([skips[i], self.ups[i](x)], dim=1))
        return self.head(x)


def _register(name: str, display: str, published: str) -> None:
    @register_model(
        name,
        display_name=display,
        family="cnn",
        size_multiple=16,
        description=f"Large-kernel depthwise U-net with Skip-Fusion (Tang et al. 2024); "
        f"paper = published {display} ({published} params), lite = one repeat per stage.",
    )
    def factory(in_channels: int, num_classes: int, preset: str = "lite") -> nn.Module:
        return CMUNeXt(in_channels, num_classes, cmunext_config(name, preset))


_register("cmunext_s", "CMUNeXt-S", "0.42 M")
_register("cmunext", "CMUNeXt", "3.15 M")
_register("cmunext_l", "CMUNeXt-L", "8.29 M")
