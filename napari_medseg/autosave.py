"""The widget's session autosave: what a crash must not take with it, and how to find it again.

Minutes of drawing are the user's work, and the viewer can die with them (a driver crash, the
machine's memory, a power cut). Every few minutes the widget writes a *snapshot* of the session
into the user's data folder (:func:`autosave_root`): a copy of the scribbles, the image they
were drawn on (its name, shape and sha256, not its pixels: the user has the file), the form's
settings and, when there is one, the trained model. At the next start, a session whose process
is gone without marking a clean exit is offered for restore.

No Qt and no napari here (the Qt part is :mod:`napari_medseg._napari.recovery`), so that the
format is testable on its own and the writing can run off the GUI thread.

Layout::

    <root>/session-<time>-<pid>/     one per widget
        owner.json                    process id and host (is the session still running?)
        clean-exit                    written when the widget closed normally
        snapshot-000007/              the newest complete snapshot (older ones are removed)
            scribbles.npy  model.pt  session.json (written last: a snapshot without it is
                                                    incomplete and ignored)

A snapshot is written into a hidden folder and renamed into place, so a crash while saving
leaves the previous snapshot as it was. Restoring only reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .checkpoints import Checkpoint, save_checkpoint

#: Overrides the folder autosaved sessions go to (tests point it at a temporary folder).
DIR_ENV = "MEDSEG_AUTOSAVE_DIR"
#: Overrides the autosave interval in seconds; 0 switches autosave off.
INTERVAL_ENV = "MEDSEG_AUTOSAVE_SECONDS"
DEFAULT_INTERVAL_S = 180.0
FORMAT = "napari-medseg-session"
VERSION = 1
SESSION_FILE = "session.json"
SCRIBBLES_FILE = "scribbles.npy"
MODEL_FILE = "model.pt"
CLEAN_MARKER = "clean-exit"
OWNER_FILE = "owner.json"
_SNAPSHOT = "snapshot-"


def autosave_root() -> Path:
    """Where sessions are autosaved: ``$MEDSEG_AUTOSAVE_DIR``, else ``autosave`` in the user's
    napari-medseg folder (:func:`~napari_medseg.user_dirs.user_data_dir`, beside the model
    library)."""
    from .user_dirs import user_data_dir

    env = os.environ.get(DIR_ENV)
    if env:
        return Path(env).expanduser()
    return user_data_dir() / "autosave"


def autosave_interval(default: float = DEFAULT_INTERVAL_S) -> float:
    """Seconds between autosaves: ``$MEDSEG_AUTOSAVE_SECONDS`` when it is a number >= 0."""
    text = os.environ.get(INTERVAL_ENV)
    if text:
        try:
            value = float(text)
        except ValueError:
            return default
        if value >= 0 and np.isfinite(value):
            return value
    return default


def array_sha256(array) -> str | None:
    """sha256 of an in-memory array's bytes with its dtype and shape (None: not in memory,
    e.g. a lazy dask/zarr layer, which is not read just to be hashed)."""
    if not isinstance(array, np.ndarray):
        return None
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return h.hexdigest()


@dataclass
class Snapshot:
    """What one autosave holds. ``scribbles`` is a private copy of the scribble layer;
    ``scale``/``translate`` place it on the image's grid; ``settings`` are the form's choices
    (class names, preset, models...); ``model`` is the saved trio's file (read side only)."""

    scribbles: np.ndarray | None  # None: only the record was read (see read_snapshot)
    scribbles_name: str
    image_name: str | None = None
    image_shape: tuple[int, ...] | None = None
    image_sha256: str | None = None
    scale: tuple[float, ...] | None = None
    translate: tuple[float, ...] | None = None
    settings: dict = field(default_factory=dict)
    saved_at: float = 0.0
    model: Path | None = None
    strokes: int = 0  # scribbled pixels (non-zero values of the layer)


@dataclass
class SavedSession:
    """A session folder found on disk, with its newest complete snapshot."""

    folder: Path
    path: Path  # the snapshot's folder
    snapshot: Snapshot  # its record (the scribbles are read on restore)
    pid: int | None
    host: str | None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.snapshot.saved_at))
        model = ", the model" if self.snapshot.model is not None else ""
        return (
            f"the scribbles '{self.snapshot.scribbles_name}' "
            f"({self.snapshot.strokes} pixels drawn){model} and the settings, autosaved {when}"
        )


# ---------------------------------------------------------------------- writing
def new_session(root: Path | None = None) -> Path:
    """Creates this process's session folder (with its owner) and returns it."""
    root = autosave_root() if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(tempfile.mkdtemp(prefix=f"session-{stamp}-{os.getpid()}-", dir=root))
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    atomic_write(folder / OWNER_FILE, lambda tmp: Path(tmp).write_text(json.dumps(owner)))
    return folder


def _snapshots(folder: Path) -> list[Path]:
    """Complete snapshots, oldest first."""
    found = [
        p
        for p in folder.glob(f"{_SNAPSHOT}*")
        if p.is_dir() and (p / SESSION_FILE).is_file() and p.name[len(_SNAPSHOT) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(_SNAPSHOT) :]))


def write_snapshot(
    folder: Path,
    snapshot: Snapshot,
    model: Checkpoint | Path | None = None,
    keep_model: bool = True,
) -> Path:
    """Writes ``snapshot`` as the session's newest; returns its folder.

    ``model``: the model now, as a checkpoint (saved here with its content hash) or a file
    already saved (moved in; the widget saves it in a worker, where tensors may be touched).
    Without one, ``keep_model`` carries the previous snapshot's model file over (hard link,
    else copy): the model did not change, or could not be taken while training ran. Older
    snapshots are removed afterwards.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    previous = _snapshots(folder)
    number = int(previous[-1].name[len(_SNAPSHOT) :]) + 1 if previous else 1
    tmp = Path(tempfile.mkdtemp(prefix=f".{_SNAPSHOT}", dir=folder))
    try:
        scribbles = np.ascontiguousarray(snapshot.scribbles)
        np.save(tmp / SCRIBBLES_FILE, scribbles, allow_pickle=False)
        saved_model = None
        if isinstance(model, Checkpoint):
            save_checkpoint(model, tmp / MODEL_FILE)
            saved_model = MODEL_FILE
        elif model is not None:
            os.replace(model, tmp / MODEL_FILE)
            saved_model = MODEL_FILE
        elif keep_model and previous and (previous[-1] / MODEL_FILE).is_file():
            try:
                os.link(previous[-1] / MODEL_FILE, tmp / MODEL_FILE)
            except OSError:
                shutil.copy2(previous[-1] / MODEL_FILE, tmp / MODEL_FILE)
            saved_model = MODEL_FILE
        record = {
            "format": FORMAT,
            "version": VERSION,
            "saved_at": time.time(),
            "scribbles": {
                "file": SCRIBBLES_FILE,
                "name": snapshot.scribbles_name,
                "shape": list(scribbles.shape),
                "dtype": scribbles.dtype.str,
                "sha256": array_sha256(scribbles),
                "strokes": int(np.count_nonzero(scribbles)),
                "scale": None if snapshot.scale is None else [float(v) for v in snapshot.scale],
                "translate": (
                    None if snapshot.translate is None else [float(v) for v in snapshot.translate]
                ),
            },
            "image": {
                "name": snapshot.image_name,
                "shape": None if snapshot.image_shape is None else list(snapshot.image_shape),
                "sha256": snapshot.image_sha256,
            },
            "settings": dict(snapshot.settings),
            "model": saved_model,
        }
        (tmp / SESSION_FILE).write_text(json.dumps(record, indent=1))  # last: completes it
        final = folder / f"{_SNAPSHOT}{number:06d}"
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in previous:
        shutil.rmtree(old, ignore_errors=True)
    return final


def mark_clean(folder: Path) -> None:
    """The widget closed normally: its session is not offered for restore."""
    folder = Path(folder)
    if folder.is_dir():
        (folder / CLEAN_MARKER).write_text(str(time.time()))


def discard(folder: Path) -> None:
    """Removes a session folder (the user declined to restore it, or it was restored)."""
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------- reading
def read_snapshot(path: Path, arrays: bool = True) -> Snapshot:
    """Reads one snapshot folder (``arrays=False``: its record only, for the restore offer);
    ValueError when it is not a complete, intact one."""
    path = Path(path)
    record = json.loads((path / SESSION_FILE).read_text())
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a napari-medseg session snapshot")
    scr = record["scribbles"]
    scribbles = None
    if arrays:
        scribbles = np.load(path / scr["file"], allow_pickle=False)
        if scr.get("sha256") and array_sha256(scribbles) != scr["sha256"]:
            raise ValueError(f"{path / scr['file']} changed after it was saved")
    elif not (path / scr["file"]).is_file():
        raise ValueError(f"{path / scr['file']} is missing")
    image = record.get("image") or {}
    model = record.get("model")
    return Snapshot(
        scribbles=scribbles,
        scribbles_name=str(scr.get("name") or "scribbles"),
        image_name=image.get("name"),
        image_shape=tuple(image["shape"]) if image.get("shape") is not None else None,
        image_sha256=image.get("sha256"),
        scale=tuple(scr["scale"]) if scr.get("scale") is not None else None,
        translate=tuple(scr["translate"]) if scr.get("translate") is not None else None,
        settings=dict(record.get("settings") or {}),
        saved_at=float(record.get("saved_at", 0.0)),
        model=(path / model) if model and (path / model).is_file() else None,
        strokes=int(scr.get("strokes", 0)),
    )


def _owner(folder: Path) -> tuple[int | None, str | None]:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        return int(owner["pid"]), str(owner.get("host") or "")
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _running(pid: int | None, host: str | None) -> bool:
    """Whether the session's process still runs (a live session is not a crashed one). A
    process on another host cannot be asked: its session counts as not running."""
    if pid is None or (host and host != socket.gethostname()):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def crashed_sessions(root: Path | None = None) -> list[SavedSession]:
    """Sessions that ended without a clean exit and whose process is gone, newest first.

    Along the way, removes the folders of sessions that exited cleanly (and of ended sessions
    that never saved a snapshot); a damaged snapshot is skipped, not offered.
    """
    root = autosave_root() if root is None else Path(root)
    found: list[SavedSession] = []
    if not root.is_dir():
        return found
    for folder in root.glob("session-*"):
        if not folder.is_dir():
            continue
        pid, host = _owner(folder)
        if _running(pid, host):
            continue
        snapshots = _snapshots(folder)
        if (folder / CLEAN_MARKER).exists() or not snapshots:
            if not host or host == socket.gethostname():  # another host's may still run
                discard(folder)
            continue
        for snap in reversed(snapshots):
            try:
                snapshot = read_snapshot(snap, arrays=False)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            found.append(SavedSession(folder, snap, snapshot, pid, host))
            break
    found.sort(key=lambda s: s.snapshot.saved_at, reverse=True)
    return found
