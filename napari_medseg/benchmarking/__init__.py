"""Measurements of the models themselves (size, compute, speed), separate from accuracy."""

from .model_efficiency import (
    PUBLISHED,
    EfficiencyRow,
    PublishedClaim,
    count_flops,
    measure_model,
    run_model_efficiency,
    scan_flops,
    to_markdown,
)

__all__ = [
    "PUBLISHED",
    "EfficiencyRow",
    "PublishedClaim",
    "count_flops",
    "measure_model",
    "run_model_efficiency",
    "scan_flops",
    "to_markdown",
]
