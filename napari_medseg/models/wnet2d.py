"""WNet2D: a W-shaped dual-path network with multi-scale local/global blocks and a Mamba bottom.

Re-implemented from the description in Li, Xin, Li & Chao (2025), "WNet2D: Enhanced Dual-Path
Architecture with Multi-Scale LSB, Improved GSB, and Mamba SSM for Efficient Medical Image
Segmentation" (IEEE Access; https://github.com/mu1sd/WNet2D). The design follows the
W-shaped dual-path layout of nnWNet: two U-nets in sequence, where every level runs

* a **local path** -- MS-LSB (multi-scale local scope block): three depthwise convolutions with
  kernels 3/5/7 and dilation 2 (receptive fields 5/9/13), concatenated, fused by a 1x1 conv
  + BN + GELU, with a residual connection. It keeps edges and texture sharp;
* a **global path** -- E-GSB (enhanced global scope block): parallel 3x3/5x5/7x7 average pooling
  (stride 1), a 1x1 fuse + norm + GELU, then a GELU MLP (ratio 4), each with a residual. Cheap
  token mixing that gives every level smoothed context.

The global outputs of one U become the skip inputs of the next U (encoder-1 -> decoder-1 ->
encoder-2 -> decoder-2), which is what makes the "W". At the deepest stage of the second encoder
the global path is a stack of Mamba (S6) blocks over the raster-flattened feature map, with a
fixed 2-D sine-cosine position code so that the 1-D scan knows where each token sits. The scan
always goes through :func:`napari_medseg.ops.selective_scan` (mamba-ssm's CUDA kernel when
installed, a pure-PyTorch scan otherwise); there is deliberately no convolutional stand-in, so
the network is the same model on every machine.

Presets (measured with 3 input channels and 2 classes; FLOPs = 2 x MACs from
``torch.utils.flop_counter.FlopCounterMode`` at 1x3x512x512, scan FLOPs added analytically, see
``napari_medseg.benchmarking.model_efficiency``):

* ``paper``: local widths 16-32-64-128-256, global widths 8-16-32-64-128 (the nnWNet widths),
  2 Mamba blocks (d_model 128, d_state 16, expand 2). **4.06 M parameters** -- the paper's
  "~4 M". **53.9 GFLOPs** at 512x512 (+0.08 GFLOPs of selective scan). The paper's "~30 M
  FLOPs at 512x512" cannot be met by any network that convolves the full-resolution image with a
  handful of channels (one 3->16 3x3 conv at 512x512 is already 0.23 GFLOPs; the W layout runs
  four full-resolution stages), so we matched the parameter claim and report the FLOPs we get.
  The public ``model.py`` is a 3-level 0.29 M "minimal" model, not the paper's network.
* ``lite``: local widths 8-16-32-64-128, global widths 4-8-16-32-64, 1 Mamba block (d_model 64).
  **1.04 M parameters**, **15.4 GFLOPs** at 512x512 (+0.02 scan) -- for interactive CPU use.

Where the FLOPs go: the 3x3 convs of the up/down steps, spread evenly over the five levels
(widths double as the area quarters); the E-GSB and Mamba paths are about 15 % of the total.
The E-GSB average pooling is computed as separable box convolutions (faster on the CPU), which
FlopCounterMode counts: 1.5 GFLOPs of the paper total (0.8 of lite) that a pooling-is-free
count would leave out.

Input sizes must be multiples of 16 (four stride-2 stages); :func:`create_model` pads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from napari_medseg.ops import selective_scan

from .registry import register_model

__all__ = ["EGSB", "MSLSB", "MambaMixer", "WNet2D", "WNet2DConfig", "wnet2d_config"]


# ----------------------------------------------------------------------------- building blocks


def _to_phases(x: torch.Tensor, d: int) -> torch.Tensor:
    """(B, C, H, W) -> (d*d*B, C, H/d, W/d): the d x d polyphase components as a batch."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // d, d, w // d, d).permute(3, 5, 0, 1, 2, 4)
    return x.reshape(d * d * b, c, h // d, w // d)


def _from_phases(x: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of :func:`_to_phases`."""
    db, c, h, w = x.shape
    b = db // (d * d)
    x = x.reshape(d, d, b, c, h, w).permute(2, 3, 4, 0, 5, 1)
    return x.reshape(b, c, h * d, w * d)


class MSLSB(nn.Module):
    """Multi-scale local scope block: depthwise dilated 3/5/7 convs, 1x1 fuse, residual.

    Why the polyphase path: on the CPU, PyTorch's dilated depthwise 7x7 convolution falls off
    the oneDNN fast path and is 5-10x slower than the other two branches. A dilation-d conv is
    exactly an undilated conv applied to each of the d x d polyphase sub-images, and everything
    else in this block is per-pixel (1x1 convs, BatchNorm over the same set of values, GELU,
    residual), so on the CPU (and for even H, W) the whole block runs in the polyphase domain
    with one rearrangement in and one out. Same weights, same result up to float rounding.
    """

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 2):
        super().__init__()
        self.dilation = dilation
        self.branches = nn.ModuleList(
            nn.Conv2d(
                in_ch,
                in_ch,
                k,
                padding=dilation * (k // 2),
                dilation=dilation,
                groups=in_ch,
                bias=False,
            )
            for k in (3, 5, 7)
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(3 * in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.GELU()
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation
        h, w = x.shape[-2:]
        if d == 1 or x.device.type != "cpu" or h % d or w % d:
            y = self.fuse(torch.cat([b(x) for b in self.branches], dim=1))
            return y + self.skip(x)
        x = _to_phases(x, d)
        feats = [
            F.conv2d(x, b.weight, None, padding=b.kernel_size[0] // 2, groups=b.groups)
            for b in self.branches
        ]
        y = self.fuse(torch.cat(feats, dim=1)) + self.skip(x)
        return _from_phases(y, d)


def _box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Stride-1 k x k mean over the valid pixels only, i.e. ``avg_pool2d(count_include_pad=False)``.

    Computed as a separable depthwise box sum divided by the number of valid pixels, because
    ``avg_pool2d`` with stride 1 is several times slower on the CPU than two small depthwise
    convolutions. FlopCounterMode therefore counts 2 x 2k FLOPs per output element for it.
    """
    c, (h, w), r = x.shape[1], x.shape[-2:], k // 2
    row = torch.ones(c, 1, 1, k, device=x.device, dtype=x.dtype)
    s = F.conv2d(x, row, padding=(0, r), groups=c)
    s = F.conv2d(s, row.transpose(2, 3), padding=(r, 0), groups=c)

    def valid(n: int) -> torch.Tensor:
        i = torch.arange(n, device=x.device)
        return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(x.dtype)

    return s / (valid(h)[:, None] * valid(w)[None, :])


class EGSB(nn.Module):
    """Enhanced global scope block: 3/5/7 average pooling -> 1x1 fuse -> GELU MLP, residual.

    The public reference puts a separate 1x1 conv after each pooling branch before the 1x1 fuse;
    pooling and both 1x1 convs are linear, so that product of maps is no more expressive than
    the fuse alone and only adds 3*C^2 parameters per block. We fuse the pooled maps directly.
    Pooling is stride-1 average pooling that ignores the padding (``count_include_pad=False``,
    so borders are not darkened), computed by :func:`_box_mean`.
    The fuse is normalised with a one-group GroupNorm (a per-sample layer norm) because this path
    also runs in the low-resolution deep levels, where BatchNorm statistics over a small
    interactive batch are noisy.
    """

    def __init__(self, in_ch: int, out_ch: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.kernels = (3, 5, 7)
        self.fuse = nn.Sequential(
            nn.Conv2d(3 * in_ch, out_ch, 1, bias=False), nn.GroupNorm(1, out_ch), nn.GELU()
        )
        hidden = int(out_ch * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Conv2d(out_ch, hidden, 1), nn.GELU(), nn.Conv2d(hidden, out_ch, 1)
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fuse(torch.cat([_box_mean(x, k) for k in self.kernels], dim=1))
        y = y + self.mlp(y)
        return y + self.skip(x)


def _conv_bn_gelu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.GELU(),
    )


class _Up(nn.Module):
    """Bilinear x2 then 3x3 conv: no checkerboard artefacts, unlike transposed convs."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = _conv_bn_gelu(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class _LocalStage(nn.Module):
    """MS-LSB followed by a resampling step: stride-2 conv ('down'), x2 upsampling ('up')."""

    def __init__(self, in_ch: int, hidden: int, out_ch: int, mode: str):
        super().__init__()
        self.lsb = MSLSB(in_ch, hidden)
        if mode == "down":
            self.resample = _conv_bn_gelu(hidden, out_ch, stride=2)
        elif mode == "up":
            self.resample = _Up(hidden, out_ch)
        else:
            raise ValueError(f"mode must be 'down' or 'up', got {mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resample(self.lsb(x))


# ----------------------------------------------------------------------------- Mamba


class MambaMixer(nn.Module):
    """Selective state-space mixer (Mamba-1) over a (B, L, C) token sequence.

    Same parameterisation as ``mamba_ssm.modules.mamba_simple.Mamba`` (in/out projections,
    causal depthwise conv, input-dependent dt/B/C, A = -exp(A_log), skip D, SiLU gate), written
    against our scan dispatcher so that it runs without mamba-ssm.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        d_inner = expand * d_model
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # S4D-real initialisation: A_n = -n, so the state keeps a spread of time scales.
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(d_inner))
        self._init_dt()

    @torch.no_grad()
    def _init_dt(self, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        # Step sizes log-uniform in [dt_min, dt_max] after softplus, as in the Mamba paper, so
        # that the scan neither forgets instantly nor integrates forever at initialisation.
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=1e-4)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, D, L) each
        u = F.silu(self.conv1d(u)[..., :L])
        dt, b, c = self.x_proj(u.transpose(1, 2)).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # bias is applied in the scan
        y = selective_scan(
            u.contiguous(),
            delta.contiguous(),
            -torch.exp(self.A_log.float()),
            b.transpose(1, 2).contiguous(),
            c.transpose(1, 2).contiguous(),
            D=self.D.float(),
            z=z.contiguous(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2))


def _sincos_2d(h: int, w: int, dim: int, device, dtype) -> torch.Tensor:
    """Fixed 2-D sine-cosine position code, (1, dim, h, w); works for any h, w."""
    q = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(q, device=device, dtype=torch.float32) / q))
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * omega  # (h, q)
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * omega  # (w, q)
    pe = torch.cat(
        [
            xs.sin()[None].expand(h, w, q),
            xs.cos()[None].expand(h, w, q),
            ys.sin()[:, None].expand(h, w, q),
            ys.cos()[:, None].expand(h, w, q),
        ],
        dim=-1,
    )
    return pe.permute(2, 0, 1)[None].to(dtype)


class MambaStage(nn.Module):
    """Global path of the deepest level: 1x1 projection, position code, pre-norm Mamba blocks."""

    def __init__(self, in_ch: int, dim: int, depth: int, d_state: int):
        super().__init__()
        if dim % 4:
            raise ValueError(f"Mamba stage width must be a multiple of 4, got {dim}")
        self.proj = nn.Conv2d(in_ch, dim, 1)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.mixers = nn.ModuleList(MambaMixer(dim, d_state=d_state) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        b, c, h, w = x.shape
        x = x + _sincos_2d(h, w, c, x.device, x.dtype)
        seq = x.flatten(2).transpose(1, 2)  # (B, HW, C), raster order
        for norm, mixer in zip(self.norms, self.mixers):
            seq = seq + mixer(norm(seq))
        return seq.transpose(1, 2).reshape(b, c, h, w)


# ----------------------------------------------------------------------------- network


@dataclass(frozen=True)
class WNet2DConfig:
    local: tuple[int, int, int, int, int]
    glob: tuple[int, int, int, int, int]
    mamba_depth: int
    d_state: int = 16


_PRESETS = {
    "lite": WNet2DConfig(local=(8, 16, 32, 64, 128), glob=(4, 8, 16, 32, 64), mamba_depth=1),
    "paper": WNet2DConfig(local=(16, 32, 64, 128, 256), glob=(8, 16, 32, 64, 128), mamba_depth=2),
}


def wnet2d_config(preset: str) -> WNet2DConfig:
    try:
        return _PRESETS[preset]
    except KeyError:
        raise ValueError(f"WNet2D has no preset {preset!r}; use 'lite' or 'paper'") from None


class WNet2D(nn.Module):
    """Two chained U-nets whose levels each carry a local (MS-LSB) and a global (E-GSB) path.

    Data flow, with ``c[i]``/``g[i]`` the local/global widths of level i (0 = full resolution):

    1. encoder 1: ``g1e[i] = EGSB(x_i)``, ``x_{i+1} = down(MSLSB(x_i))``;
    2. decoder 1: ``y_i = [up(MSLSB(y_{i+1})), g1e[i]]``, ``g1d[i] = EGSB(y_i)``, ``y_4 = x_4``;
    3. encoder 2: ``g2e[i] = EGSB(e_i)``, ``e_{i+1} = [down(MSLSB(e_i)), g1d[i+1]]``, ``e_0 = y_0``;
    4. bottom:    ``z_4 = [MSLSB(e_4), Mamba(e_4)]``;
    5. decoder 2: ``z_i = [up(MSLSB(z_{i+1})), g2e[i]]``; logits = 1x1(MSLSB(z_0)).
    """

    def __init__(self, in_channels: int, num_classes: int, config: WNet2DConfig):
        super().__init__()
        c, g = config.local, config.glob
        n = len(c) - 1  # number of stride-2 stages
        cat = [c[i] + g[i] for i in range(n + 1)]
        self.stem = nn.Sequential(_conv_bn_gelu(in_channels, c[0]), _conv_bn_gelu(c[0], c[0]))
        # U 1
        self.enc1_local = nn.ModuleList(_LocalStage(c[i], c[i], c[i + 1], "down") for i in range(n))
        self.enc1_global = nn.ModuleList(EGSB(c[i], g[i]) for i in range(n))
        self.dec1_local = nn.ModuleList(
            _LocalStage(c[n] if i == n - 1 else cat[i + 1], c[i + 1], c[i], "up") for i in range(n)
        )
        self.dec1_global = nn.ModuleList(
            EGSB(c[n] if i == n else cat[i], g[i]) for i in range(1, n + 1)
        )
        # U 2
        self.enc2_local = nn.ModuleList(
            _LocalStage(cat[i], c[i], c[i + 1], "down") for i in range(n)
        )
        self.enc2_global = nn.ModuleList(EGSB(cat[i], g[i]) for i in range(n))
        self.bottom_local = MSLSB(cat[n], c[n])
        self.bottom_global = MambaStage(cat[n], g[n], config.mamba_depth, config.d_state)
        self.dec2_local = nn.ModuleList(
            _LocalStage(cat[i + 1], c[i + 1], c[i], "up") for i in range(n)
        )
        self.head = nn.Sequential(MSLSB(cat[0], c[0]), nn.Conv2d(c[0], num_classes, 1))
        self.levels = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.levels
        x = self.stem(x)
        g1e = []
        for i in range(n):
            g1e.append(self.enc1_global[i](x))
            x = self.enc1_local[i](x)
        g1d = [None] * (n + 1)
        g1d[n] = self.dec1_global[n - 1](x)
        y = x
        for i in reversed(range(n)):
            y = torch.cat([self.dec1_local[i](y), g1e[i]], dim=1)
            if i > 0:
                g1d[i] = self.dec1_global[i - 1](y)
        e = y
        g2e = []
        for i in range(n):
            g2e.append(self.enc2_global[i](e))
            e = torch.cat([self.enc2_local[i](e), g1d[i + 1]], dim=1)
        z = torch.cat([self.bottom_local(e), self.bottom_global(e)], dim=1)
        for i in reversed(range(n)):
            z = torch.cat([self.dec2_local[i](z), g2e[i]], dim=1)
        return self.head(z)


@register_model(
    "wnet2d",
    display_name="WNet2D",
    family="mamba",
    size_multiple=16,
    description="W-shaped dual-path CNN (MS-LSB local / E-GSB global) with a Mamba bottom "
    "(Li et al. 2025). paper: 4.06 M params; lite: 1.04 M.",
)
def build_wnet2d(in_channels: int, num_classes: int, preset: str = "lite") -> nn.Module:
    return WNet2D(in_channels, num_classes, wnet2d_config(preset))
