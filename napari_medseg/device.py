"""Chooses where tensors live: CUDA when present, then Apple's MPS, else the CPU.

torch is imported when a device is resolved, not with the module: the CLI's parser and the
widget's form list :data:`DEVICE_CHOICES` without paying for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError, choices_error

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def _unavailable(choice: str, why: str) -> ConfigError:
    return ConfigError(
        f"device {choice!r} is not available on this computer ({why}) — choose 'auto' or 'cpu'"
    )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turns a user's choice into a usable device, with an actionable error when it is not."""
    import torch

    if isinstance(device, torch.device):
        return device
    choice = (device or "auto").lower()
    if choice not in DEVICE_CHOICES and not choice.startswith("cuda:"):
        raise choices_error("device", device, DEVICE_CHOICES)
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_ok:
            return torch.device("mps")
        return torch.device("cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise _unavailable(choice, "no CUDA GPU is visible")
    if choice == "mps" and not mps_ok:
        raise _unavailable(choice, "Apple MPS is not available")
    return torch.device(choice)
