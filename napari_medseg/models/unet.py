"""UNet: the convolutional member of the tri-network, as in WSL4MIS.

The ``paper`` preset reproduces ``UNet`` of WSL4MIS (``code/networks/unet.py``), which the
Weak-Mamba-UNet paper trains beside SwinUNet and MambaUNet:

* five levels with 16, 32, 64, 128, 256 channels;
* each level is a double conv ``conv3x3-BN-LeakyReLU-Dropout-conv3x3-BN-LeakyReLU`` with
  encoder dropout 0.05, 0.1, 0.2, 0.3, 0.5 and no dropout in the decoder;
* 2x2 max-pooling down; up-sampling is ``conv1x1`` (halving channels) followed by bilinear x2
  with ``align_corners=True``. The official params dict says ``'bilinear': False``, but the
  decoder never passes it on and ``UpBlock`` defaults to bilinear, so bilinear is what runs
  (and is what gives the published 1.81 M parameters);
* skip concatenation ``[skip, upsampled]`` and a 3x3 output convolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model


@dataclass(frozen=True)
class UNetConfig:
    channels: tuple[int, ...]
    dropout: tuple[float, ...]


PRESETS = {
    "paper": UNetConfig(channels=(16, 32, 64, 128, 256), dropout=(0.05, 0.1, 0.2, 0.3, 0.5)),
    # Half the channels of the paper net: about 1/4 of its convolution FLOPs and 0.45 M
    # parameters. The CNN is the cheapest member of the trio, so halving it buys most of the
    # CPU budget that the token models need while keeping the same depth and receptive field
    # (scribble supervision relies on the CNN's local prior, not on its width).
    "lite": UNetConfig(channels=(8, 16, 32, 64, 128), dropout=(0.05, 0.1, 0.2, 0.3, 0.5)),
}


class DoubleConv(nn.Sequential):
    """conv3x3-BN-LeakyReLU-Dropout-conv3x3-BN-LeakyReLU (WSL4MIS ``ConvBlock``)."""

    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(),
        )


class Up(nn.Module):
    """conv1x1 to the skip's width, bilinear x2, concatenate ``[skip, up]``, double conv."""

    def __init__(self, c_low: int, c_skip: int, c_out: int):
        super().__init__()
        self.conv1x1 = nn.Conv2d(c_low, c_skip, kernel_size=1)
        self.conv = DoubleConv(2 * c_skip, c_out, 0.0)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(
            self.conv1x1(low), size=skip.shape[-2:], mode="bilinear", align_corners=True
        )
        return self.conv(torch.cat([skip, up], dim=1))


class UNet(nn.Module):
    """Five-level UNet returning logits at the input resolution (H, W multiples of 16)."""

    def __init__(
        self, in_channels: int, num_classes: int, channels: Sequence[int], dropout: Sequence[float]
    ):
        super().__init__()
        if len(channels) != len(dropout):
            raise ValueError("channels and dropout need one entry per level")
        self.size_multiple = 2 ** (len(channels) - 1)
        self.in_conv = DoubleConv(in_channels, channels[0], dropout[0])
        self.down = nn.ModuleList(
            DoubleConv(channels[i - 1], channels[i], dropout[i]) for i in range(1, len(channels))
        )
        self.up = nn.ModuleList(
            Up(channels[i], channels[i - 1], channels[i - 1])
            for i in range(len(channels) - 1, 0, -1)
        )
        self.out_conv = nn.Conv2d(channels[0], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(
                f"UNet needs H and W divisible by {self.size_multiple}, got {h}x{w}; build it "
                "with napari_medseg.models.create_model(...), which pads any size for you"
            )
        feats = [self.in_conv(x)]
        for block in self.down:
            feats.append(block(F.max_pool2d(feats[-1], 2)))
        x = feats.pop()
        for up in self.up:
            x = up(x, feats.pop())
        return self.out_conv(x)


@register_model(
    "unet",
    display_name="UNet",
    family="cnn",
    size_multiple=16,
    description="WSL4MIS UNet (16-256 channels, BN, LeakyReLU, bilinear decoder).",
)
def build_unet(in_channels: int = 1, num_classes: int = 4, preset: str = "lite") -> UNet:
    """WSL4MIS UNet; ``paper`` = 16-256 channels (1.81 M params for 1 -> 4 classes).

    ``lite`` halves every width (see ``PRESETS`` for why): ~0.4x a paper step on CPU.
    """
    cfg = PRESETS[preset]
    return UNet(in_channels, num_classes, cfg.channels, cfg.dropout)
