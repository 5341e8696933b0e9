"""Res2Net-v1b encoder (Gao et al., TPAMI 2021) as used by MSNet / M2SNet.

Why a local implementation: the MSNet reference code builds Res2Net-50 with ImageNet weights
fetched from the network and moves tensors to CUDA inside constructors. Here the encoder is
trained from scratch by default, runs on CPU, never downloads anything, and accepts any number of
input channels (1 for MRI/CT slices, 3 for RGB endoscopy).

Architecture (the "v1b" variant the medical-segmentation papers use):

* deep stem: three 3x3 convolutions (stride 2 on the first) then BN/ReLU and a 3x3 max-pool;
* four stages of ``Bottle2neck`` blocks; each block splits its 1x1-reduced features into
  ``scale`` groups of ``width`` channels and processes them hierarchically (group i is added to
  the output of group i-1 before its own 3x3 convolution), which gives one block several
  receptive fields -- the "multi-scale inside a block" idea;
* the shortcut of a down-sampling block average-pools before its 1x1 convolution (v1b) instead
  of using a strided 1x1 convolution, so no input pixel is skipped.

Parameter and buffer names follow the widely distributed ``res2net50_v1b_26w_4s`` state dict
(``conv1.0.weight``, ``layer1.0.convs.0.weight``, ``layer1.0.downsample.1.weight`` ...), so a user
who already has that file can load it with :meth:`Res2NetEncoder.load_pretrained`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Res2NetConfig:
    """Shape of a Res2Net-v1b encoder.

    ``stem`` are the output channels of the three stem convolutions (the last one is also the
    channel count of the stride-4 feature ``x1``); ``planes`` the bottleneck planes per stage
    (stage outputs are ``4 * planes``); ``blocks`` the number of blocks per stage.
    """

    stem: tuple[int, int, int] = (32, 32, 64)
    planes: tuple[int, int, int, int] = (64, 128, 256, 512)
    blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    base_width: int = 26
    scale: int = 4

    @property
    def out_channels(self) -> tuple[int, int, int, int, int]:
        """Channels of (x1, x2, x3, x4, x5): stride 4, 4, 8, 16, 32."""
        e = Bottle2neck.expansion
        return (self.stem[2], *(p * e for p in self.planes))


#: Res2Net-50-v1b 26w x 4s, the encoder of the published MSNet / M2SNet.
RES2NET50_26W_4S = Res2NetConfig()


class Bottle2neck(nn.Module):
    """Res2Net bottleneck: 1x1 reduce -> hierarchical 3x3 over ``scale`` groups -> 1x1 expand."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        base_width: int = 26,
        scale: int = 4,
        first: bool = False,
    ):
        super().__init__()
        if scale < 2:
            raise ValueError(f"Res2Net needs scale >= 2, got {scale}")
        width = int(math.floor(planes * (base_width / 64.0)))
        if width < 1:
            raise ValueError(f"planes={planes} with base_width={base_width} gives zero width")
        self.width = width
        self.scale = scale
        # The first block of a stage changes resolution/width, so its groups are not chained
        # (their inputs are not comparable) and the untouched last group is average-pooled to
        # the new resolution instead of passed through.
        self.first = first
        self.conv1 = nn.Conv2d(inplanes, width * scale, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
            for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale - 1))
        self.pool = nn.AvgPool2d(kernel_size=3, stride=stride, padding=1) if first else None
        self.conv3 = nn.Conv2d(width * scale, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        groups = torch.split(out, self.width, dim=1)
        outs = []
        y = groups[0]  # running output of the previous group (chained within a normal block)
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            inp = groups[i] if (i == 0 or self.first) else y + groups[i]
            y = self.relu(bn(conv(inp)))
            outs.append(y)
        last = groups[-1]
        outs.append(self.pool(last) if self.pool is not None else last)
        out = self.bn3(self.conv3(torch.cat(outs, dim=1)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Res2NetEncoder(nn.Module):
    """Res2Net-v1b trunk without the ImageNet classifier; returns the five MSNet features.

    ``forward`` returns ``(x1, x2, x3, x4, x5)`` at strides 4, 4, 8, 16, 32 where ``x1`` is the
    max-pooled stem output and ``x2..x5`` are the outputs of stages 1-4.
    """

    def __init__(self, in_channels: int = 3, config: Res2NetConfig = RES2NET50_26W_4S):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.config = config
        s0, s1, s2 = config.stem
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, s0, 3, 2, 1, bias=False),
            nn.BatchNorm2d(s0),
            nn.ReLU(inplace=True),
            nn.Conv2d(s0, s1, 3, 1, 1, bias=False),
            nn.BatchNorm2d(s1),
            nn.ReLU(inplace=True),
            nn.Conv2d(s1, s2, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(s2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = s2
        for i, (planes, n) in enumerate(zip(config.planes, config.blocks)):
            stage, inplanes = self._make_stage(inplanes, planes, n, stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", stage)
        self._init_weights()

    def _make_stage(
        self, inplanes: int, planes: int, n: int, stride: int
    ) -> tuple[nn.Sequential, int]:
        if n < 1:
            raise ValueError(f"every Res2Net stage needs >= 1 block, got {n}")
        outplanes = planes * Bottle2neck.expansion
        downsample = None
        if stride != 1 or inplanes != outplanes:
            downsample = nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(inplanes, outplanes, kernel_size=1, bias=False),
                nn.BatchNorm2d(outplanes),
            )
        cfg = self.config
        blocks = [
            Bottle2neck(inplanes, planes, stride, downsample, cfg.base_width, cfg.scale, True)
        ]
        blocks += [
            Bottle2neck(outplanes, planes, 1, None, cfg.base_width, cfg.scale) for _ in range(1, n)
        ]
        return nn.Sequential(*blocks), outplanes

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> tuple[int, int, int, int, int]:
        return self.config.out_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x1 = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x2 = self.layer1(x1)
        x3 = self.layer2(x2)
        x4 = self.layer3(x3)
        x5 = self.layer4(x4)
        return x1, x2, x3, x4, x5

    def load_pretrained(self, path: str | os.PathLike, strict: bool = True) -> list[str]:
        """Loads Res2Net weights from a local state-dict file; nothing is ever downloaded.

        The file may be a bare state dict or one wrapped under ``"state_dict"``/``"model"``;
        ``module.`` prefixes (DataParallel) and the ImageNet classifier (``fc.*``) are dropped.
        When the file's stem convolution has a different number of input channels than this
        encoder it is adapted (see :func:`adapt_first_conv`). Returns the names of the keys
        that were skipped. Loading uses ``torch.load(weights_only=True)``, so the file cannot
        run code. ImageNet weights expect inputs normalised roughly like ImageNet images
        (zero mean, unit variance per channel); the summed 1-channel stem expects the same.
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no Res2Net weight file at {os.fspath(path)!r}; pass the path of a local "
                "state dict (e.g. res2net50_v1b_26w_4s-*.pth) -- weights are never downloaded"
            )
        obj = torch.load(path, map_location="cpu", weights_only=True)
        state = _unwrap_state_dict(obj)
        skipped = [k for k in state if k.startswith("fc.")]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        key = "conv1.0.weight"
        if key in state and state[key].shape[1] != self.in_channels:
            state[key] = adapt_first_conv(state[key], self.in_channels)
        own = self.state_dict()
        bad = [
            f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and own[k].shape != v.shape
        ]
        if bad:
            raise ValueError(
                "the weight file does not match this Res2Net configuration (is it a "
                "Res2Net-50-v1b 26w_4s file and the model built with the 'paper' preset?); "
                "mismatched: " + "; ".join(bad[:5])
            )
        try:
            result = self.load_state_dict(state, strict=strict)
        except RuntimeError as err:
            raise ValueError(
                f"the weight file does not fit this Res2Net encoder ({err}); use a Res2Net-v1b "
                "state dict of the same depth/width, or pass strict=False to load what matches"
            ) from None
        return skipped + list(result.unexpected_keys)


def _unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(
            "the file is not a state dict of tensors; save one with torch.save(model.state_dict())"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapts stem weights ``(out, c_file, k, k)`` to ``in_channels`` inputs.

    * one input channel: sum over the file's channels, so a grey image fed as ``g`` gives the
      same response as the RGB image ``(g, g, g)`` gave the pretrained network;
    * otherwise: cycle the file's channels and rescale by ``c_file / in_channels`` so that the
      expected activation magnitude is preserved.
    """
    c_file = weight.shape[1]
    if in_channels == c_file:
        return weight.clone()
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_channels / c_file)
    w = weight.repeat(1, reps, 1, 1)[:, :in_channels]
    return w * (c_file / in_channels)


def res2net_encoder(
    in_channels: int = 3,
    config: Res2NetConfig = RES2NET50_26W_4S,
    pretrained: str | os.PathLike | None = None,
) -> Res2NetEncoder:
    """Builds a Res2Net-v1b encoder, optionally loading a *local* weight file."""
    enc = Res2NetEncoder(in_channels, config)
    if pretrained is not None:
        enc.load_pretrained(pretrained)
    return enc
