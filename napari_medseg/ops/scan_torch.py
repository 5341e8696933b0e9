"""Pure-PyTorch selective scan: chunked, numerically stable, cheap forward *and* backward on CPU.

The recurrence (per batch b, channel d, state n) is

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,     y_t = sum_n C_t * h_t

Why this shape of algorithm (docs/scan.md has the full argument):

* **Stability.** Every exponential is of a non-positive number (for A <= 0): the per-step
  log-decay ``delta_t * A`` and a chunk's whole log-decay ``A * sum_{t in chunk} delta_t``,
  i.e. a difference of cumulative log-decays, summed directly over its own span. States are
  only ever multiplied by factors in [0, 1] and added to, exactly as in the sequential
  recurrence; nothing like ``exp(-cumsum)`` is formed, so ``delta * |A|`` of 100 or 1e4 just
  makes a decay underflow towards 0 instead of overflowing to inf and producing NaN.
* **Speed.** L is cut into ``nc`` chunks of length ``T ~ sqrt(L)`` laid out as (T, ..., nc),
  so one vectorised step advances *every* chunk (and all b, d, n) at once. Pass 1 runs the
  chunks from a zero state keeping only the running state; a short scan over the ``nc``
  chunk boundaries turns those end states into each chunk's true entry state; pass 2 reruns
  the chunks in place from that state. About ``2T + nc`` Python-level steps instead of L,
  O(L) work. The big (T, B, block, N, nc) tensors are built block of channels by block into
  reused buffers, so they stay in cache and the allocator never page-faults.
* **Memory.** A custom autograd function saves O(B*D*L) tensors and the chunk-entry states
  (nc, B, D, N), never anything of size (B, D, N, L). Its backward recomputes the states
  block by block from the saved entry states (one pass) and gets the adjoint from the same
  two-pass chunked scan run in reverse.

Real ``A`` only; complex ``A`` (S4D-style) is rejected with an error.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["selective_scan_torch", "default_chunk_size"]

# Target size (elements) of one (T, B, block, N, nc) work buffer on the CPU. Four of them are
# live in the backward pass; 2**20 floats = 4 MiB each keeps the working set in a typical L3 while
# leaving few enough blocks that per-op Python overhead stays small. Tuned on a 2-core EPYC.
_BLOCK_ELEMS = 1 << 20
# Elsewhere (CUDA, MPS) caches matter less than kernel-launch count: use whole-D blocks.
_BLOCK_ELEMS_ACCEL = 1 << 26


def default_chunk_size(L: int) -> int:
    """Chunk length that roughly balances in-chunk steps against chunk-carry steps (~sqrt(L))."""
    return max(1, min(L, int(round(math.sqrt(L)))))


def _to_chunks(x: torch.Tensor, T: int, nc: int) -> torch.Tensor:
    """(..., L) -> contiguous (T, ..., nc), zero-padded to T * nc (time l = k * T + t).

    Putting the in-chunk position t first makes every per-step slice ``x[t]`` contiguous. The
    move is one 2-D transpose of (prod(...) * nc, T), which torch does ~3x faster than the
    equivalent N-d permute.
    """
    lead, L = x.shape[:-1], x.shape[-1]
    if T * nc != L:
        x = F.pad(x, (0, T * nc - L))
    return x.reshape(-1, T).t().contiguous().view(T, *lead, nc)


def _from_chunks(x: torch.Tensor, L: int) -> torch.Tensor:
    """Inverse of :func:`_to_chunks`: (T, ..., nc) -> contiguous (..., L)."""
    T, lead, nc = x.shape[0], x.shape[1:-1], x.shape[-1]
    x = x.reshape(T, -1).t().contiguous().view(*lead, nc * T)
    return x if nc * T == L else x[..., :L].contiguous()


def _blocks(d: int, g: int, block: int) -> list[tuple[int, int, int]]:
    """Channel blocks ``(d0, d1, group)`` that never straddle a B/C group."""
    dg = d // g
    out = []
    for gi in range(g):
        for d0 in range(gi * dg, (gi + 1) * dg, block):
            out.append((d0, min(d0 + block, (gi + 1) * dg), gi))
    return out


def _buffer(buf: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return buf[: math.prod(shape)].view(shape)


def _exp_decay(logdecay: torch.Tensor) -> torch.Tensor:
    """In-place ``exp`` of a log-decay (<= 0 for A <= 0), floored at e^-80 (float32).

    A decay below e^-80 ~ 1.8e-35 is numerically invisible next to the fresh input it is added
    to, but letting float32 ``exp`` see arguments below ~-87 sends it down a scalar slow path
    (~20-40x slower on x86), which would make very large ``delta * |A|`` needlessly expensive.
    """
    floor = -80.0 if logdecay.dtype in (torch.float32, torch.float16, torch.bfloat16) else -700.0
    return logdecay.clamp_min_(floor).exp_()


def _carry_forward(ptot: torch.Tensor, hend: torch.Tensor) -> torch.Tensor:
    """States entering each chunk: cin[k] = ptot[k-1] * cin[k-1] + hend[k-1], cin[0] = 0.

    ptot, hend: (nc, ...); ptot[k] is chunk k's whole decay, hend[k] its zero-start end state.
    """
    cin = torch.zeros_like(hend)
    c, p, e = cin.unbind(0), ptot.unbind(0), hend.unbind(0)
    for k in range(1, len(c)):
        torch.addcmul(e[k - 1], p[k - 1], c[k - 1], out=c[k])
    return cin


def _carry_backward(ptot: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Adjoint arriving at each chunk's last step from the chunk after it; cr[-1] = 0.

    first[k] = dA at chunk k's first step times chunk k's zero-start adjoint there, so that
    cr[k] = first[k+1] + ptot[k+1] * cr[k+1].
    """
    cr = torch.zeros_like(first)
    c, p, f = cr.unbind(0), ptot.unbind(0), first.unbind(0)
    for k in range(len(c) - 2, -1, -1):
        torch.addcmul(f[k + 1], p[k + 1], c[k + 1], out=c[k])
    return cr


def _chunk_ends(xs, dAs, reverse: bool, tmp: torch.Tensor) -> torch.Tensor:
    """Zero-start scan of every chunk at once, keeping only the running state.

    xs, dAs: per-step slices (B, db, N, nc) of the inputs and decays. Returns the state after
    each chunk's last step (forward) or the adjoint at its first step (reverse), without
    writing to ``xs``: the carries are learned first, so the real in-place scan can start
    from the correct state and no correction pass over the whole block is needed.
    """
    T = len(xs)
    a, b = tmp.unbind(0)
    if reverse:
        a.copy_(xs[T - 1])
        for t in range(T - 2, -1, -1):
            torch.addcmul(xs[t], dAs[t + 1], a, out=b)
            a, b = b, a
    else:
        a.copy_(xs[0])
        for t in range(1, T):
            torch.addcmul(xs[t], dAs[t], a, out=b)
            a, b = b, a
    return a


class _Geometry:
    """Chunking and channel blocking shared by forward and backward."""

    def __init__(self, bsz, d, n, g, L, chunk_size, device: torch.device):
        self.bsz, self.d, self.n, self.g, self.L = bsz, d, n, g, L
        T = chunk_size or default_chunk_size(L)
        self.T = T = max(1, min(int(T), L))
        self.nc = -(-L // T)
        per_channel = T * self.nc * bsz * n
        budget = _BLOCK_ELEMS if device.type == "cpu" else _BLOCK_ELEMS_ACCEL
        block = max(1, min(d // g, budget // per_channel))
        self.blocks = _blocks(d, g, block)
        self.buf_elems = per_channel * block
        self.slice_elems = self.nc * bsz * n * block


def _states(geo, dl, du, ptot_b, Ab, Bg, out_dA, out_h, tmp, cin_b=None):
    """All states h of one channel block, in place in ``out_h``; returns (dA, h, cin_b).

    dl, du: (T, B, db, nc) delta and delta*u; ptot_b: (nc, B, db, N) whole-chunk decays;
    Ab: (db, N); Bg: (T, B, 1, N, nc). With ``cin_b`` (nc, B, db, N), the chunk-entry states
    saved by the forward pass, the carry pass is skipped.
    """
    dA = _exp_decay(torch.mul(dl.unsqueeze(3), Ab.unsqueeze(-1), out=out_dA))  # exp(delta*A)
    h = torch.mul(du.unsqueeze(3), Bg, out=out_h)  # delta * B * u
    hs, dAs = h.unbind(0), dA.unbind(0)
    if geo.nc > 1:
        if cin_b is None:
            hend = _chunk_ends(hs, dAs, False, tmp)
            cin_b = _carry_forward(ptot_b, hend.movedim(-1, 0).contiguous())
        hs[0].addcmul_(dAs[0], cin_b.movedim(0, -1))
    for t in range(1, geo.T):
        hs[t].addcmul_(dAs[t], hs[t - 1])
    return dA, h, cin_b


def _whole_chunk_decay(dlc: torch.Tensor, A32: torch.Tensor) -> torch.Tensor:
    """exp(A * sum of each chunk's deltas) <= 1, as (nc, B, D, N)."""
    return _exp_decay(dlc.sum(0).movedim(-1, 0).unsqueeze(-1) * A32)


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size):
        ctx.set_materialize_grads(False)
        bsz, d, L = u.shape
        n = A.shape[1]
        grouped = B.dim() == 4
        dev = u.device
        geo = _Geometry(bsz, d, n, B.shape[1] if grouped else 1, L, chunk_size, dev)
        T, nc = geo.T, geo.nc
        ct = torch.promote_types(u.dtype, torch.float32)

        u32 = u.to(ct)
        dlt = delta.to(ct)
        if delta_bias is not None:
            dlt = dlt + delta_bias.to(ct)[:, None]
        if delta_softplus:
            dlt = F.softplus(dlt)
        A32 = A.to(ct)
        uc = _to_chunks(u32, T, nc)  # (T, B, D, nc); padding is 0
        dlc = _to_chunks(dlt, T, nc)  # padding delta = 0 -> decay 1, input 0: state unchanged
        duc = dlc * uc
        Bc = _to_chunks((B if grouped else B.unsqueeze(1)).to(ct), T, nc)  # (T, B, G, N, nc)
        Cc = _to_chunks((C if grouped else C.unsqueeze(1)).to(ct), T, nc)
        ptot = _whole_chunk_decay(dlc, A32) if nc > 1 else None

        buf = torch.empty(2 * geo.buf_elems + 2 * geo.slice_elems, dtype=ct, device=dev)
        b_dA, b_h, b_tmp = buf.split([geo.buf_elems, geo.buf_elems, 2 * geo.slice_elems])
        ys = torch.empty(T, bsz, d, nc, dtype=ct, device=dev)
        cin = torch.empty(nc, bsz, d, n, dtype=ct, device=dev) if nc > 1 else None
        last = torch.empty(bsz, d, n, dtype=ct, device=dev)
        for d0, d1, gi in geo.blocks:
            shape = (T, bsz, d1 - d0, n, nc)
            dA, h, cb = _states(
                geo,
                dlc[:, :, d0:d1],
                duc[:, :, d0:d1],
                None if ptot is None else ptot[:, :, d0:d1],
                A32[d0:d1],
                Bc[:, :, gi : gi + 1],
                _buffer(b_dA, shape),
                _buffer(b_h, shape),
                _buffer(b_tmp, (2,) + shape[1:]),
            )
            if cin is not None:
                cin[:, :, d0:d1] = cb
            # Padded steps have decay 1 and input 0, so the very last slot holds h_{L-1}.
            last[:, d0:d1] = h[T - 1, ..., nc - 1]
            # y = sum_n C h, using the spent decay buffer as scratch.
            torch.sum(torch.mul(h, Cc[:, :, gi : gi + 1], out=dA), dim=3, out=ys[:, :, d0:d1])
        y = _from_chunks(ys, L)
        ypre = y if D is None else torch.addcmul(y, u32, D.to(ct)[:, None])
        out = ypre if z is None else ypre * F.silu(z.to(ct))

        ctx.geo, ctx.grouped, ctx.softplus = geo, grouped, delta_softplus
        ctx.dtypes = [None if x is None else x.dtype for x in (u, delta, A, B, C, D, z, delta_bias)]
        # Chunk-layout copies instead of the raw inputs: the backward needs no re-layout.
        ctx.save_for_backward(uc, dlc, A, Bc, Cc, D, z, cin, ypre if z is not None else None)
        return out.to(u.dtype), last

    @staticmethod
    @once_differentiable  # the backward works in place in scratch buffers: no double backward
    def backward(ctx, gout, glast):
        uc, dlc, A, Bc, Cc, D, z, cin, ypre = ctx.saved_tensors
        geo, grouped = ctx.geo, ctx.grouped
        T, nc, bsz, d, n, L = geo.T, geo.nc, geo.bsz, geo.d, geo.n, geo.L
        ct, dev = uc.dtype, uc.device
        A32 = A.to(ct)
        duc = dlc * uc
        ptot = _whole_chunk_decay(dlc, A32) if nc > 1 else None

        # Output head: out = (y + D u) * silu(z).
        gz = None
        if gout is None:
            gy = torch.zeros(bsz, d, L, dtype=ct, device=dev)
        elif z is not None:
            gout = gout.to(ct)
            z32 = z.to(ct)
            sz = torch.sigmoid(z32)
            gz = gout * ypre * sz * (1 + z32 * (1 - sz))
            gy = gout * z32 * sz
        else:
            gy = gout.to(ct)
        gyc = _to_chunks(gy, T, nc)  # (T, B, D, nc)

        gBc = torch.zeros(T, bsz, geo.g, n, nc, dtype=ct, device=dev)
        gCc = torch.zeros(T, bsz, geo.g, n, nc, dtype=ct, device=dev)
        gduc = torch.empty(T, bsz, d, nc, dtype=ct, device=dev)  # dLoss / d(delta * u)
        gdlA = torch.empty(T, bsz, d, nc, dtype=ct, device=dev)  # sum_n A * Q
        gA = torch.empty(d, n, dtype=ct, device=dev)

        buf = torch.empty(4 * geo.buf_elems + 2 * geo.slice_elems, dtype=ct, device=dev)
        b_dA, b_h, b_P, b_lam, b_tmp = buf.split([geo.buf_elems] * 4 + [2 * geo.slice_elems])
        for d0, d1, gi in geo.blocks:
            shape = (T, bsz, d1 - d0, n, nc)
            P, lam = _buffer(b_P, shape), _buffer(b_lam, shape)
            tmp = _buffer(b_tmp, (2,) + shape[1:])
            Ab = A32[d0:d1]
            Bg, Cg = Bc[:, :, gi : gi + 1], Cc[:, :, gi : gi + 1]
            dl, du, gyb = dlc[:, :, d0:d1], duc[:, :, d0:d1], gyc[:, :, d0:d1].unsqueeze(3)
            cin_b = None if cin is None else cin[:, :, d0:d1]
            dA, h, _ = _states(
                geo, dl, du, None, Ab, Bg, _buffer(b_dA, shape), _buffer(b_h, shape), tmp, cin_b
            )

            # dLoss/dC: sum over the block's channels of gy * h.
            gCc[:, :, gi] += torch.mul(h, gyb, out=P).sum(2)

            # Adjoint lam_t = C_t gy_t + dA_{t+1} lam_{t+1}: the same chunked scan, reversed.
            torch.mul(Cg, gyb, out=lam)
            if glast is not None:
                lam[T - 1, ..., nc - 1] += glast[:, d0:d1].to(ct)
            lams, dAs = lam.unbind(0), dA.unbind(0)
            if nc > 1:
                first = _chunk_ends(lams, dAs, True, tmp).mul_(dAs[0])
                cr = _carry_backward(ptot[:, :, d0:d1], first.movedim(-1, 0).contiguous())
                lams[T - 1].add_(cr.movedim(0, -1))
            for t in range(T - 2, -1, -1):
                lams[t].addcmul_(dAs[t + 1], lams[t + 1])

            # Q_t = lam_t * dA_t * h_{t-1}: the gradient w.r.t. the log-decay delta_t * A.
            dA[1:].mul_(h[:-1])
            if cin_b is None:
                dAs[0].zero_()
            else:
                dAs[0].mul_(cin_b.movedim(0, -1))
            Q = dA.mul_(lam)
            torch.sum(torch.mul(Q, Ab.unsqueeze(-1), out=P), dim=3, out=gdlA[:, :, d0:d1])
            gA[d0:d1] = torch.mul(Q, dl.unsqueeze(3), out=P).sum(4).sum((0, 1))

            # Input term w = (delta * u) * B: gradients to delta * u and to B.
            torch.sum(torch.mul(lam, Bg, out=P), dim=3, out=gduc[:, :, d0:d1])
            gBc[:, :, gi] += torch.mul(lam, du.unsqueeze(3), out=P).sum(2)

        # Back through delta * u and the D skip; all still in chunk layout.
        gdltc = torch.addcmul(gdlA, gduc, uc)
        guc = gduc.mul_(dlc)
        if D is not None:
            guc.addcmul_(gyc, D.to(ct)[:, None])
        gD = (gyc * uc).sum((0, 1, 3)) if D is not None else None
        if ctx.softplus:  # d softplus(x)/dx = sigmoid(x) = 1 - exp(-softplus(x))
            gdltc.mul_(torch.expm1(dlc.neg()).neg_())
        gdelta = _from_chunks(gdltc, L)
        gbias = gdelta.sum((0, 2)) if ctx.dtypes[7] is not None else None
        gu = _from_chunks(guc, L)
        gB = _from_chunks(gBc, L)
        gC = _from_chunks(gCc, L)
        if not grouped:
            gB, gC = gB.squeeze(1), gC.squeeze(1)

        grads = (gu, gdelta, gA, gB, gC, gD, gz, gbias)
        return tuple(
            None if g is None or dt is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes)
        ) + (None, None)


def _check(u, delta, A, B, C, D, z, delta_bias) -> None:
    if A.is_complex() or B.is_complex() or C.is_complex():
        raise NotImplementedError(
            "the torch selective scan supports real A, B, C only; complex A (S4D-style) "
            "needs mamba-ssm's CUDA kernel (backend='mamba_ssm')"
        )
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(
            f"u and delta must both be (B, D, L); got {tuple(u.shape)}, {tuple(delta.shape)}"
        )
    bsz, d, L = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (D, N) = ({d}, N); got {tuple(A.shape)}")
    n = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        ok = (x.dim() == 3 and tuple(x.shape) == (bsz, n, L)) or (
            x.dim() == 4 and x.shape[0] == bsz and x.shape[2:] == (n, L) and d % x.shape[1] == 0
        )
        if not ok:
            raise ValueError(
                f"{name} must be (B, N, L) = ({bsz}, {n}, {L}) or (B, G, N, L) with G dividing "
                f"D={d}; got {tuple(x.shape)} (input-independent (D, N) {name} is unsupported)"
            )
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1]:
        # Different group counts are legal in principle but mamba-ssm rejects them too.
        raise ValueError("B and C must have the same number of groups")
    if B.dim() != C.dim():
        raise ValueError("B and C must both be (B, N, L) or both be (B, G, N, L)")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None and tuple(x.shape) != (d,):
            raise ValueError(f"{name} must be (D,) = ({d},); got {tuple(x.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must be (B, D, L) like u; got {tuple(z.shape)}")
    if L == 0:
        raise ValueError("sequence length L must be >= 1")


def selective_scan_torch(
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
    chunk_size: int | None = None,
):
    """Chunked selective scan with ``mamba_ssm`` ``selective_scan_fn`` semantics.

    u, delta, z: (B, D, L); A: (D, N) real; B, C: (B, N, L) or (B, G, N, L);
    D, delta_bias: (D,). Computes in float32 (float64 for float64 input) and returns the
    dtype of ``u``; the optional last state (B, D, N) stays in the compute dtype, as in
    mamba-ssm. ``chunk_size`` overrides the ~sqrt(L) default (results do not depend on it
    beyond rounding).
    """
    _check(u, delta, A, B, C, D, z, delta_bias)
    out, last = _SelectiveScanFn.apply(
        u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), chunk_size
    )
    return (out, last) if return_last_state else out
