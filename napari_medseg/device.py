"""Chooses where tensors live: CUDA when present, then Apple's MPS, else the CPU."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turns a user's choice into a usable device, with an actionable error when it is not."""
    if isinstance(device, torch.device):
        return device
    choice = (device or "auto").lower()
    if choice not in DEVICE_CHOICES and not choice.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; choose one of: {', '.join(DEVICE_CHOICES)}")
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_ok:
            return torch.device("mps")
        return torch.device("cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is visible; use --device cpu")
    if choice == "mps" and not mps_ok:
        raise ValueError("device 'mps' was requested but Apple MPS is not available; use cpu")
    return torch.device(choice)


def default_preset(device: torch.device) -> str:
    """``paper`` networks are affordable on a GPU; on a CPU only ``lite`` trains interactively."""
    return "paper" if device.type in ("cuda",) else "lite"
