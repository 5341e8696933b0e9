"""Writing a file so that a crash never leaves half of it under the real name.

Every file the package writes for a user (checkpoints, label TIFFs, metric tables) goes to a
temporary file in the target's folder, which then replaces the target with :func:`os.replace`
(atomic on one file system). A full disk or a killed process leaves the previous file intact
and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Calls ``write(tmp)`` with a temporary path beside ``path``, then renames it to ``path``.

    ``suffix``: the temporary file's ending, for writers that choose a format by extension
    (``".tif"``). The folder is created when missing. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
