"""The model library: a folder of saved trios (``<name>.pt``, each with its model card).

*Save model* stores there by default and the widget's *Start from* lists what is there, so a
trio trained on one image (or a dataset, ``napari-medseg train --data``) is one click away on
the next. The folder is :func:`napari_medseg.user_dirs.model_library_dir`; every function also
takes another folder. Only names are listed here: reading a model (and its card) is
:func:`napari_medseg.checkpoints.load_checkpoint`'s, in a worker.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import OutputError
from .user_dirs import model_library_dir

SUFFIX = ".pt"


def library_models(folder: str | os.PathLike | None = None) -> list[Path]:
    """The ``.pt`` files of the library, by name (none when the folder does not exist)."""
    root = Path(folder) if folder is not None else model_library_dir()
    try:
        files = [p for p in root.iterdir() if p.suffix == SUFFIX and p.is_file()]
    except OSError:  # missing or unreadable: an empty library, not an error
        return []
    return sorted(files, key=lambda p: p.name.lower())


def library_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """Where a model called ``name`` is stored in the library (the folder is created).

    Characters that are not safe in a file name on every platform become ``_`` (trimmed at
    the ends); a name that is left empty is refused.
    """
    stem = name.strip()
    if stem.endswith(SUFFIX):
        stem = stem[: -len(SUFFIX)]
    stem = re.sub(r'[\\/:*?"<>|\x00-\x1f]+', "_", stem).strip(" ._")
    if not stem:
        raise OutputError(f"{name!r} is not a usable model name — give a name such as 'cardiac'")
    root = Path(folder) if folder is not None else model_library_dir(create=True)
    if folder is not None:
        root.mkdir(parents=True, exist_ok=True)
    return root / f"{stem}{SUFFIX}"
