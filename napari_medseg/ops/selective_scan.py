"""Dispatcher: mamba-ssm's CUDA kernel when usable, else the pure-PyTorch scan.

(Placeholder until the chunked backend lands: falls back to the sequential reference.)
"""

from __future__ import annotations

from .scan_reference import selective_scan_ref


def available_backends() -> list[str]:
    return ["reference"]


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend: str = "auto"):
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                              return_last_state)
