"""Dispatcher: mamba-ssm's fused CUDA kernel when it can run, else the pure-PyTorch chunked scan.

mamba-ssm is an *optional* extra (``pip install napari-medseg[cuda]``): it cannot even be
imported without a CUDA toolkit, so it is imported lazily, only when CUDA tensors arrive (or a
caller asks for it by name), and any import failure just means "not available".
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .scan_reference import selective_scan_ref
from .scan_torch import selective_scan_torch

BACKENDS = ("auto", "mamba_ssm", "torch", "reference")


@functools.lru_cache(maxsize=1)
def _load_mamba() -> tuple[Callable | None, str]:
    """``(selective_scan_fn, "")`` if mamba-ssm imports, else ``(None, why)``.

    Any exception counts as unavailable: without CUDA the package fails with OSError or
    RuntimeError from its compiled extension, not only with ImportError.
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # every failure mode means "not usable here"
        return None, f"{type(exc).__name__}: {exc}"
    return selective_scan_fn, ""


def available_backends() -> list[str]:
    """Backends that can run on this machine, fastest first (excluding ``"auto"``).

    ``"mamba_ssm"`` is listed only when a CUDA device is visible *and* the package imports.
    """
    out = ["torch", "reference"]
    if torch.cuda.is_available() and _load_mamba()[0] is not None:
        out.insert(0, "mamba_ssm")
    return out


def _all_cuda(*tensors: torch.Tensor | None) -> bool:
    return all(t is None or t.is_cuda for t in tensors)


def selective_scan(
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
    backend: str = "auto",
):
    """Selective scan (S6) with ``mamba_ssm`` ``selective_scan_fn`` semantics.

    u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L) or (B, G, N, L) (G groups of D/G
    channels); D, delta_bias: (D,). Returns y (B, D, L) in u's dtype, plus the final state
    (B, D, N) if ``return_last_state``.

    backend:
        ``"auto"``: mamba-ssm's CUDA kernel if it imports and every tensor is on CUDA, else the
        pure-PyTorch chunked scan (any device). ``"torch"``, ``"reference"`` (slow, sequential,
        for testing) or ``"mamba_ssm"`` force one; forcing an unavailable one raises.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of {BACKENDS}")
    args = (u, delta, A, B, C, D, z, delta_bias)
    if backend == "auto":
        fn = _load_mamba()[0] if _all_cuda(*args) else None
        backend = "mamba_ssm" if fn is not None else "torch"
    if backend == "mamba_ssm":
        fn, why = _load_mamba()
        if fn is None:
            raise RuntimeError(
                "selective-scan backend 'mamba_ssm' is not available "
                f"({why}). Install it on a CUDA machine with `pip install mamba-ssm` "
                "(or `pip install napari-medseg[cuda]`), or use backend='torch'."
            )
        if not _all_cuda(*args):
            raise RuntimeError(
                "selective-scan backend 'mamba_ssm' needs every tensor on a CUDA device; "
                "move the inputs with .cuda() or use backend='torch'."
            )
        return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    impl = selective_scan_torch if backend == "torch" else selective_scan_ref
    return impl(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus=delta_softplus,
        return_last_state=return_last_state,
    )
