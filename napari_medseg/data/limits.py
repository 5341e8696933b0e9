"""How large an image a reader may allocate, decided from a file's header before reading it.

A header can declare any size: a 200-byte file may claim 100000×100000 pixels. Every reader
(TIFF, PNG, JPEG, NIfTI, HDF5, DICOM) asks :func:`guard_size` first, so the user hears why
instead of the machine running out of memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError

#: Environment variable overriding the largest image (in bytes of pixel data) a reader accepts.
MAX_BYTES_ENV = "MEDSEG_MAX_IMAGE_BYTES"


def max_image_bytes() -> int:
    """The most pixel data a reader will allocate: ``$MEDSEG_MAX_IMAGE_BYTES``, else half of
    the memory available now (a file's header can declare any size; the allocation must not
    take the machine down before the user hears why)."""
    env = os.environ.get(MAX_BYTES_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    return 8 << 30


def guard_size(path: Path, shape, dtype, stored_bytes: int | None = None) -> None:
    """Refuses, from the header alone, pixel data too large to allocate or larger than an
    uncompressed file can hold (``stored_bytes``: what the file has room for)."""
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise InputError(f"{path}: the header declares a negative size {shape} — it is corrupt")
    declared = int(np.prod(shape, dtype=np.float64) * np.dtype(dtype).itemsize)
    if stored_bytes is not None and declared > stored_bytes:
        raise InputError(
            f"{path} declares {declared:,} bytes of pixels ({'×'.join(map(str, shape))}, "
            f"{np.dtype(dtype)}) but holds only {max(stored_bytes, 0):,} — the file is truncated "
            "or corrupt; export it again"
        )
    limit = max_image_bytes()
    if declared > limit:
        raise InputError(
            f"{path} declares an image of {'×'.join(map(str, shape))} {np.dtype(dtype)} "
            f"({declared / 2**30:.1f} GiB), more than the {limit / 2**30:.1f} GiB this computer "
            f"can spare — crop or downsample it first (or set {MAX_BYTES_ENV})"
        )
