"""Writing a file so that a crash never leaves half of it under the real name.

Every file the package writes for a user (checkpoints, label TIFFs, metric tables) goes to a
temporary file in the target's folder, which then replaces the target with :func:`os.replace`
(atomic on one file system). A full disk or a killed process leaves the previous file intact
and no temporary file behind.

``tempfile`` creates its files with mode 0600 whatever the user's umask; the finished file gets
the mode an ordinary ``open()`` would have given it (0666 less the umask), or the mode of the
file it replaces, so that a shared folder stays readable by the people it is shared with.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but harmless here)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` (0666) or ``mkdir()`` (0777) would give under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Calls ``write(tmp)`` with a temporary path beside ``path``, then renames it to ``path``.

    ``suffix``: the temporary file's ending, for writers that choose a format by extension
    (``".tif"``). The folder is created when missing. The file gets the replaced file's mode,
    else the umask's default. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        try:
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = default_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
