"""Segmentation architectures, one file each, created by name."""

from .registry import (
    ModelInfo,
    PadToMultiple,
    count_parameters,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "ModelInfo",
    "PadToMultiple",
    "count_parameters",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]
