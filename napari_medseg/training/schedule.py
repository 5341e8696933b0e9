"""Poly learning-rate schedule, driven by iterations or by elapsed time."""

from __future__ import annotations


def poly_lr(base_lr: float, progress: float, power: float = 0.9) -> float:
    """lr = base · (1 − progress)^power with progress in [0, 1].

    Progress is iterations/total for an iteration budget and elapsed/allowed for a time budget,
    so a time-limited run still anneals to ~0 by its end.
    """
    p = min(max(progress, 0.0), 1.0)
    return base_lr * (1.0 - p) ** power
