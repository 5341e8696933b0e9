"""Registry of segmentation architectures, looked up by name.

Every architecture file registers ``factory(in_channels, num_classes, preset) -> nn.Module``
with :func:`register_model`. :func:`create_model` wraps the result in :class:`PadToMultiple` so
that any H x W works: the image is padded (reflect) to the multiple the network needs and the
logits are cropped back, which keeps per-architecture code free of size bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, choices_error
from ..presets import PRESETS


@dataclass(frozen=True)
class ModelInfo:
    name: str
    display_name: str
    family: str
    factory: Callable[..., nn.Module]
    size_multiple: int
    presets: tuple[str, ...] = PRESETS
    description: str = ""


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    display_name: str,
    family: str,
    size_multiple: int,
    presets: tuple[str, ...] = PRESETS,
    description: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``factory(in_channels, num_classes, preset)`` under ``name``."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(
            name=name,
            display_name=display_name,
            family=family,
            factory=factory,
            size_multiple=size_multiple,
            presets=tuple(presets),
            description=description,
        )
        return factory

    return deco


def _ensure_loaded() -> None:
    # Importing the package registers every architecture; done lazily to avoid import cycles.
    from . import _builtin  # noqa: F401


def list_models() -> list[str]:
    """Names of every registered architecture, in registration order."""
    _ensure_loaded()
    return list(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise choices_error("model", name, _REGISTRY) from None


class PadToMultiple(nn.Module):
    """Pads the input to ``multiple`` (and to at least ``multiple``) and crops the logits back."""

    def __init__(self, net: nn.Module, multiple: int):
        super().__init__()
        self.net = net
        self.multiple = int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph = (-h) % m if h >= m else m - h
        pw = (-w) % m if w >= m else m - w
        if ph or pw:
            # reflect needs pad < size; fall back to replicate for tiny images
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        out = self.net(x)
        return out[..., :h, :w]


def create_model(
    name: str, in_channels: int = 1, num_classes: int = 4, preset: str = "lite"
) -> nn.Module:
    """Builds a registered architecture that accepts any H x W.

    ``in_channels`` is 1 for MRI/CT slices and 3 for RGB photographs; ``num_classes`` includes
    the background.
    """
    info = model_info(name)
    if preset not in info.presets:
        raise ConfigError(
            f"model {name!r} has no preset {preset!r}; choose one of: {', '.join(info.presets)}"
        )
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2 (background plus at least one structure), got {num_classes}"
        )
    net = info.factory(in_channels=in_channels, num_classes=num_classes, preset=preset)
    return PadToMultiple(net, info.size_multiple)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
