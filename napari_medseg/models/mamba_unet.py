"""MambaUNet: the state-space member of the tri-network (Mamba-UNet, Wang et al. 2024).

The ``paper`` preset reproduces ``VSSM`` of the official ``mamba_sys.py`` as configured by
``vmamba_tiny.yaml``: patch 4, dims [96, 192, 384, 768], depths [2, 2, 2, 2], d_state 16,
SS2D with expand 2, depthwise 3x3 conv, dt_rank = ceil(dim / 16), four-direction cross scan,
out LayerNorm and SiLU(z) gating; VSS blocks are ``x + DropPath(SS2D(LN(x)))`` with *no* MLP
(the early VMamba block Mamba-UNet builds on); patch merging down, patch expanding up, linear
skip fusion, and — as in the Swin-Unet code it was derived from — decoder stages that repeat
the encoder depths (2 blocks at 384, 192 and 96 channels, none at the bottleneck level).
Stochastic depth 0.2 as in the yaml. Published size: 19.12 M parameters for 4 classes.

The selective scan is :func:`napari_medseg.ops.selective_scan`, so the backend (CUDA kernel,
chunked PyTorch scan, sequential reference) is chosen in one place. The four directions are
scanned in one call as 4*d_inner channels with B and C grouped per direction, exactly the
layout of the official ``forward_corev0``; parameters have the official names and shapes
(``x_proj_weight``, ``dt_projs_weight``, ``dt_projs_bias``, ``A_logs``, ``Ds``) so published
checkpoints load with :func:`napari_medseg.models.pretrained.load_pretrained`.

Differences from the official code: no gray-to-RGB repeat (``in_channels`` sets the patch
embedding directly; ``load_pretrained`` sums a 3-channel embedding for 1-channel models, which
is equivalent), and maps may have any H, W that are multiples of 32 (the scan has no fixed
length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import selective_scan
from ._token_unet import DropPath, TokenUNet, init_transformer_weights
from .registry import register_model

DIRECTIONS = 4


@dataclass(frozen=True)
class MambaConfig:
    embed_dim: int
    depths: tuple[int, ...]
    d_state: int
    expand: float
    drop_path: float


PRESETS = {
    "paper": MambaConfig(embed_dim=96, depths=(2, 2, 2, 2), d_state=16, expand=2.0, drop_path=0.2),
    # Lite, for interactive CPU training at ~128^2 crops (token maps 32, 16, 8, 4). On a CPU
    # the selective scan is ~80% of the step and costs O(B * 4 * d_inner * d_state * L), so
    # d_inner * d_state is the knob:
    # * embed 32 cuts every projection ~9x against 96;
    # * expand 1 (d_inner 32) and d_state 4: later official VMamba configurations run with
    #   ssm_ratio 1-2 and d_state as low as 1, so a narrow, small-state scan is a known-good
    #   trade, and the four directions already give every token four contexts. Measured
    #   (batch 8, 128^2, shared 2-core CPU, alone / beside a paper UNet step): expand 2 and
    #   d_state 8 cost ~2.0x (1 thread) to ~3x (2 threads) a paper-UNet step; expand 2 and
    #   d_state 4 ~1.55x to ~2.4x; this preset ~0.9x to ~1.4x, which keeps the whole lite
    #   trio under its 3x budget with either thread count;
    # * depths [1, 1, 1, 1]: one VSS block already mixes the whole map (unlike a window
    #   block), and the decoder repeats them, so every level but the deepest has two scans.
    "lite": MambaConfig(embed_dim=32, depths=(1, 1, 1, 1), d_state=4, expand=1.0, drop_path=0.1),
}


class SS2D(nn.Module):
    """2D selective scan: in_proj, depthwise conv + SiLU, four-direction S6, gate, out_proj."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: float = 2.0,
        d_conv: int = 3,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        d_inner = int(expand * d_model)
        self.d_inner = d_inner
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        k = DIRECTIONS

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner)
        # Per-direction projections x -> (dt_rank | B | C), stacked: (K, R + 2N, d_inner).
        bound = d_inner**-0.5  # nn.Linear's default range, as the official code keeps it
        self.x_proj_weight = nn.Parameter(
            torch.empty(k, self.dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound)
        )
        # dt projection (K, d_inner, R): uniform(+-R^-0.5) weights, and a bias whose softplus
        # is log-uniform in [dt_min, dt_max] (Mamba's init), so that every channel starts with
        # a different memory length.
        std = self.dt_rank**-0.5
        self.dt_projs_weight = nn.Parameter(
            torch.empty(k, d_inner, self.dt_rank).uniform_(-std, std)
        )
        dt = torch.exp(
            torch.rand(k, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1
        # S4D-real init A = -(1..N) per channel, stored as log; D = 1 (skip connection).
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def _cross_scan(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D, H, W) -> (B, H, W, D), the sum of the four directional scans."""
        b, d, h, w = x.shape
        L = h * w
        k = DIRECTIONS
        rows = x.flatten(2)  # row-major order
        cols = x.transpose(2, 3).flatten(2)  # column-major order
        xs = torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)  # (B, K, D, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, bs, cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        ys = selective_scan(
            xs.float().reshape(b, k * d, L),
            dts.float().reshape(b, k * d, L),
            -torch.exp(self.A_logs.float()),
            bs.float().contiguous(),
            cs.float().contiguous(),
            D=self.Ds.float(),
            delta_bias=self.dt_projs_bias.float().reshape(-1),
            delta_softplus=True,
        ).view(b, k, d, L)
        y_rows = ys[:, 0] + ys[:, 2].flip(-1)
        y_cols = ys[:, 1] + ys[:, 3].flip(-1)
        y = y_rows.view(b, d, h, w) + y_cols.view(b, d, w, h).transpose(2, 3)
        return y.permute(0, 2, 3, 1).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        xi, z = self.in_proj(x).chunk(2, dim=-1)
        xi = F.silu(self.conv2d(xi.permute(0, 3, 1, 2)))
        y = self.out_norm(self._cross_scan(xi)) * F.silu(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """``x + DropPath(SS2D(LayerNorm(x)))`` — the MLP-free VSS block of Mamba-UNet."""

    def __init__(self, dim: int, d_state: int, expand: float, drop_path: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = SS2D(dim, d_state=d_state, expand=expand)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.self_attention(self.ln_1(x)))


class MambaUNet(TokenUNet):
    """Mamba-UNet on (B, in_channels, H, W) with H, W multiples of 32; returns logits."""

    def __init__(self, in_channels: int, num_classes: int, cfg: MambaConfig):
        def make_block(stage: int, index: int, dim: int, dp: float) -> nn.Module:
            return VSSBlock(dim, cfg.d_state, cfg.expand, dp)

        super().__init__(
            in_channels,
            num_classes,
            cfg.embed_dim,
            cfg.depths,
            make_block,
            patch=4,
            drop_path=cfg.drop_path,
        )
        # Only nn.Linear / LayerNorm are re-initialised; the SSM parameters keep their init.
        init_transformer_weights(self)


@register_model(
    "mamba_unet",
    display_name="MambaUNet",
    family="mamba",
    size_multiple=32,
    description="Mamba-UNet (VMamba VSS blocks with 2D cross scan, patch 4).",
)
def build_mamba_unet(in_channels: int = 1, num_classes: int = 4, preset: str = "lite") -> MambaUNet:
    """Mamba-UNet; ``paper`` = the official VSSM U-Net (19.12 M params for 4 classes).

    ``lite`` (embed 32, expand 1, d_state 4, depth 1 per stage; reasons at ``PRESETS``) costs
    ~0.9-1.4x a paper-UNet training step on CPU with the chunked scan.
    """
    return MambaUNet(in_channels, num_classes, PRESETS[preset])
