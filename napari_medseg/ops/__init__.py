"""The selective scan (S6) used by the Mamba blocks, with interchangeable backends."""

from .scan_reference import selective_scan_ref
from .scan_torch import selective_scan_torch
from .selective_scan import available_backends, selective_scan

__all__ = ["available_backends", "selective_scan", "selective_scan_ref", "selective_scan_torch"]
