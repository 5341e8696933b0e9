"""The user's own napari-medseg folder: the model library, and whatever else a surface keeps
between sessions (the widget's autosave, for one).

One place decides where it is, so that the CLI, the widget and the tests agree:
``$MEDSEG_USER_DATA_DIR`` when set (tests point it at a temporary folder), else the platform's
per-user data folder — ``%LOCALAPPDATA%`` on Windows, ``~/Library/Application Support`` on
macOS, ``$XDG_DATA_HOME`` (default ``~/.local/share``) elsewhere — with ``napari-medseg``
appended. Nothing is created until a caller asks for it (``create=True``): listing an empty
library must not leave folders behind in a read-only home.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import OutputError

#: Overrides the user data folder (tests, portable installs, shared lab machines).
USER_DATA_ENV = "MEDSEG_USER_DATA_DIR"
APP_NAME = "napari-medseg"


def _platform_data_root() -> Path:
    home = Path.home()
    if sys.platform.startswith("win"):
        return Path(os.environ.get("LOCALAPPDATA") or os.environ.get("APPDATA") or home)
    if sys.platform == "darwin":
        return home / "Library" / "Application Support"
    return Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")


def _ensure(folder: Path, create: bool) -> Path:
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(
                f"{folder} cannot be created ({e.strerror or e}) — set {USER_DATA_ENV} to a "
                "folder you can write to"
            ) from None
    return folder


def user_data_dir(create: bool = False) -> Path:
    """napari-medseg's per-user folder (see the module's docstring for where it is)."""
    given = os.environ.get(USER_DATA_ENV, "").strip()
    folder = Path(given).expanduser() if given else _platform_data_root() / APP_NAME
    return _ensure(folder, create)


def model_library_dir(create: bool = False) -> Path:
    """The model library: trios saved by *Save model*, listed by the widget's *Start from*."""
    return _ensure(user_data_dir() / "models", create)
