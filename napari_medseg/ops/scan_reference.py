"""Plain sequential selective scan: the ground truth the fast backends are tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _expand_bc(x: torch.Tensor, d: int) -> torch.Tensor:
    """(B, N, L) -> (B, 1, N, L); (B, G, N, L) -> (B, D, N, L) by repeating each group."""
    if x.dim() == 3:
        return x.unsqueeze(1)
    b, g, n, l = x.shape
    return x.repeat_interleave(d // g, dim=1)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Same semantics as ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``.

    u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L) or (B, G, N, L); D, delta_bias: (D,).
    Real-valued A only. Computes in the dtype of ``u`` promoted with float32.
    """
    dtype_in = u.dtype
    dt = torch.promote_types(u.dtype, torch.float32)
    u = u.to(dt)
    delta = delta.to(dt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dt)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    bsz, d, L = u.shape
    n = A.shape[1]
    Bm = _expand_bc(B.to(dt), d)
    Cm = _expand_bc(C.to(dt), d)
    A = A.to(dt)
    x = u.new_zeros(bsz, d, n)
    ys = []
    for i in range(L):
        dA = torch.exp(delta[:, :, i, None] * A)  # (B, D, N)
        dBu = delta[:, :, i, None] * Bm[:, :, :, i] * u[:, :, i, None]
        x = dA * x + dBu
        ys.append((x * Cm[:, :, :, i]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.to(dt)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dt))
    y = y.to(dtype_in)
    return (y, x) if return_last_state else y
