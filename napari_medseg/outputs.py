"""Where a run's files go: checked before the work starts, staged, moved into place at the end.

A training run can take minutes, so an output folder that cannot be used (a file, a symbolic
link loop, a folder without write permission) must be found *before* it, not when the trained
networks are about to be saved. And a run that is killed half-way must leave the output
folder as it was: no new label maps beside an old ``model.pt``, no temporary files.

:class:`StagedOutputs` does both. It checks the folder, creates a hidden staging folder beside
it (``.<name>.medseg-staging-XXXX``: same file system, so the final moves are renames), hands out
paths inside it, and :meth:`~StagedOutputs.commit` moves the files into place at the end: the
whole folder in one rename when the target does not exist yet, else file by file (after removing
the files an earlier run wrote there and this one does not, listed in :data:`MANIFEST`). A
staging folder left behind by a killed process is removed by the next run into the same folder.
An output that would replace one of the run's inputs is refused before anything is computed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .atomic import atomic_write, default_mode
from .errors import OutputError

#: Lists the files the last run wrote in an output folder (so the next one replaces them all).
MANIFEST = ".napari-medseg-outputs.json"
_STAGING = ".medseg-staging-"
_PID_FILE = "pid"


def _resolve(path: Path, option: str) -> Path:
    try:
        return path.expanduser().resolve(strict=False)
    except (RuntimeError, OSError) as e:  # RuntimeError: "Symlink loop from ..."
        raise OutputError(
            f"{option} {path} cannot be used ({e}) — it is a symbolic link loop or unreadable; "
            "choose another folder"
        ) from None


def check_output_folder(folder: str | os.PathLike, option: str = "--out") -> Path:
    """The resolved folder, or an :class:`OutputError` saying why it cannot hold outputs.

    Refuses a file, a dangling symbolic link, a symbolic link loop and a path below a file.
    Whether the folder is writable is found by :class:`StagedOutputs` (it creates a folder).
    """
    given = Path(folder)
    if str(folder).strip() == "":
        raise OutputError(f"{option} is empty — give an output folder")
    if given.is_symlink() and not given.exists():
        target = _resolve(given, option)
        raise OutputError(
            f"{option} {given} is a symbolic link to {target}, which does not exist — "
            "create that folder or choose another one"
        )
    resolved = _resolve(given, option)
    if resolved.exists() and not resolved.is_dir():
        raise OutputError(
            f"{option} {given} is a file, not a folder — give a folder for the outputs "
            "(it is created when missing)"
        )
    ancestor = resolved.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(
            f"{option} {given} cannot be created: {ancestor} is a file — choose another folder"
        )
    return resolved


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Removes staging folders of ``target`` whose process is gone (a killed run); returns them."""
    removed = []
    parent = target.parent
    if not parent.is_dir():
        return removed
    for p in parent.glob(f".{target.name}{_STAGING}*"):
        try:
            pid = int((p / _PID_FILE).read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and (pid == os.getpid() or _pid_alive(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


class StagedOutputs:
    """The outputs of one run into ``folder``: checked now, written aside, moved in by commit().

    ``inputs``: the run's input files; an output that would replace one is refused.
    Use as a context manager: leaving it with an exception (Ctrl-C included) removes the staging
    folder and leaves ``folder`` as it was.
    """

    def __init__(
        self, folder: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), option="--out"
    ):
        self.option = option
        self.given = Path(folder)
        self.target = check_output_folder(folder, option)
        self.inputs = [Path(p) for p in inputs if p]
        self._resolved_inputs = []
        for inp in self.inputs:
            try:
                self._resolved_inputs.append((inp, inp.expanduser().resolve()))
            except (RuntimeError, OSError):
                self._resolved_inputs.append((inp, inp))
        self.names: list[str] = []
        self.committed = False
        #: an earlier run's outputs kept in the folder (not replaced by this run): model files
        self.stale: list[Path] = []
        #: an earlier run's label maps removed from the folder (this run wrote none of that name)
        self.removed: list[Path] = []
        #: folders above the target this run created (removed again if it writes nothing)
        self._created: list[Path] = []
        try:
            missing = self.target.parent
            while not missing.exists() and missing != missing.parent:
                self._created.append(missing)
                missing = missing.parent
            self.target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(self.target)
            self.staging = Path(
                tempfile.mkdtemp(prefix=f".{self.target.name}{_STAGING}", dir=self.target.parent)
            )
            (self.staging / _PID_FILE).write_text(str(os.getpid()))
            if self.target.is_dir():  # the final moves need write access there too
                fd, probe = tempfile.mkstemp(prefix=".medseg-probe-", dir=self.target)
                os.close(fd)
                os.unlink(probe)
        except OSError as e:
            self.discard()
            raise OutputError(
                f"{option} {self.given} cannot be written ({e.strerror or e}) — choose a folder "
                "you can write to"
            ) from None

    # ------------------------------------------------------------------ before the work
    def check_names(self, names: Iterable[str]) -> None:
        """Refuses, before any work, outputs that would replace an input file."""
        for name in names:
            final = self.target / name
            for inp, resolved in self._resolved_inputs:
                if final == resolved or _same_file(final, resolved):
                    raise OutputError(
                        f"{self.option} {self.given} would overwrite the input {inp} with the "
                        f"output {name} — choose another {self.option} folder (inputs are never "
                        "written over)"
                    )

    def path(self, name: str) -> Path:
        """Where to write output ``name`` now (inside the staging folder)."""
        if "/" in name or os.sep in name or name in ("", ".", "..", MANIFEST, _PID_FILE):
            raise ValueError(f"an output name must be a plain file name, not {name!r}")
        self.check_names([name])
        if name not in self.names:
            self.names.append(name)
        return self.staging / name

    # ------------------------------------------------------------------ at the end
    def commit(self) -> list[Path]:
        """Moves every staged file into ``folder``; returns their final paths."""
        self.check_names(self.names)
        (self.staging / _PID_FILE).unlink(missing_ok=True)
        manifest = {"written_by": "napari-medseg", "files": list(self.names)}
        (self.staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for p in self.staging.iterdir():
            os.chmod(p, default_mode())
        os.chmod(self.staging, default_mode(directory=True))
        if not self.target.exists():
            os.rename(self.staging, self.target)
        else:
            self._replace_into_existing()
        self.committed = True
        return [self.target / n for n in self.names]

    def _replace_into_existing(self) -> None:
        old: list[str] = []
        try:
            old = [str(n) for n in json.loads((self.target / MANIFEST).read_text())["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            old = []
        kept = []  # an earlier run's files still here: listed again, so they stay known
        for name in old:  # an earlier run's outputs that this run does not replace
            stale = self.target / name
            if name in self.names or "/" in name or not stale.is_file():
                continue
            kept.append(name)
            if any(_same_file(stale, r) for _, r in self._resolved_inputs):
                continue  # an input of this run (the model it predicts with, say)
            if stale.suffix.lower() in (".tif", ".tiff"):
                stale.unlink(missing_ok=True)
                self.removed.append(stale)
                kept.remove(name)
            else:
                self.stale.append(stale)
        for name in self.names:
            os.replace(self.staging / name, self.target / name)
        manifest = {"written_by": "napari-medseg", "files": [*self.names, *kept]}
        atomic_write(
            self.target / MANIFEST,
            lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)),
        )
        shutil.rmtree(self.staging, ignore_errors=True)

    def discard(self) -> None:
        """Removes the staging folder and what it holds, and the folders above the target
        that this run created when they are empty again (the target is untouched)."""
        staging = getattr(self, "staging", None)
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        for folder in getattr(self, "_created", []):  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty (someone else wrote there) or already gone
                break

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.committed:
            self.discard()
        return False


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """The resolved path of an output *file*, refused when it is a folder or its folder
    cannot be (a file, a symbolic link loop)."""
    given = Path(path)
    resolved = _resolve(given, option)
    if resolved.is_dir():
        raise OutputError(f"{option} {given} is a folder — give a file name for the output")
    check_output_folder(resolved.parent, option)
    return resolved
