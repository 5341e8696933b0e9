"""A dataset folder to train on: many images with their scribbles, and the dense labels that
score them.

Three layouts, recognised from what the folder holds:

* ``scribbles``: ``images/`` + ``scribbles/`` with the same file stems (the user's strokes, in
  any values; ``--unlabelled`` says which value means "not drawn", default 0). Dense labels in
  the scribbles' values, in ``labels/`` or ``masks/``, are optional: with them the validation
  files are scored.
* ``masks``: ``images/`` + ``masks/`` (dense labels only, as Kvasir-SEG or PH2 ship): strokes
  are simulated from each mask by :func:`~napari_medseg.data.scribbles.simulate_scribbles`,
  seeded by the collection's seed and the file's stem, so that the same folder always gives
  the same strokes. The classes are the masks' values as they are (0/255 stays 0/255, so
  predictions compare with the masks directly); lossy JPEG masks are thresholded to 0/255.
* ``acdc``: ACDC-style HDF5 volumes (``image``, ``scribble`` and ``label`` datasets, as in the
  WSL4MIS preprocessed ACDC): trained on ``scribble`` (4 = unlabelled), validated on
  ``label``; files named ``patientNNN_frameMM.h5`` are grouped by patient.

A ``split.json`` in the folder with a ``"train"`` list of stems restricts training (and
validation) to those files — the other stems are a test set no training should see.

Opening a collection lists the files and reads their labels once (classes and sizes: the
working resolution depends on them); images are read only when asked for, one at a time,
so a set of hundreds of large frames is never all in memory at full resolution.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, MedsegError
from .readers import ACDC_CLASS_NAMES, ACDC_UNLABELLED, load_image, read_acdc_volume, read_labels

__all__ = [
    "LAYOUTS",
    "Collection",
    "CollectionItem",
    "DatasetError",
    "Sample",
    "files_by_stem",
    "image_files",
    "open_collection",
]

#: The folder layouts :func:`open_collection` recognises.
LAYOUTS = ("scribbles", "masks", "acdc")

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz")
_LOSSY = (".jpg", ".jpeg")
_ACDC_PATIENT = re.compile(r"^(patient\d+)_frame\d+$", re.IGNORECASE)
_EXPECTED = (
    "expected one of: 'images/' + 'scribbles/' with the same file stems; 'images/' + 'masks/' "
    "(with --simulate-scribbles); or ACDC-style .h5 volumes (datasets image, scribble, label)"
)


class DatasetError(MedsegError):
    """A dataset folder that cannot be trained on; the message names the folder."""


@dataclass(frozen=True)
class CollectionItem:
    """One file of the collection (an image, or an ACDC volume).

    ``group``: the unit of the validation split (the patient for ACDC, else the stem);
    ``shape``: the spatial shape of its labels ((H, W) or (Z, H, W)), read when opening.
    """

    name: str
    group: str
    image: Path
    scribbles: Path | None
    truth: Path | None
    shape: tuple[int, ...]


@dataclass
class Sample:
    """One item read: the image as stored, its strokes and dense labels in the task's values."""

    name: str
    image: np.ndarray
    scribbles: np.ndarray | None
    truth: np.ndarray | None
    spacing: tuple[float, ...] | None = None


@dataclass
class Collection:
    """A dataset folder: its layout, its files and the task they define.

    ``class_values``/``unlabelled``: the classes in the files' own values; ``kind``: how images
    are laid out (``"stack"`` for volumes, ``"auto"`` to infer per image); ``seed``: the
    simulated strokes' seed; ``warnings``: files left out and why.
    """

    folder: Path
    layout: str
    items: list[CollectionItem]
    class_values: tuple[int, ...]
    unlabelled: int
    class_names: tuple[str, ...] = ()
    kind: str = "auto"
    simulated: bool = False
    seed: int = 0
    test_stems: int = 0
    warnings: list[str] = field(default_factory=list)
    fold: int | None = None  # ACDC: only this fold's training patients (acdc_fold)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def has_truth(self) -> bool:
        return all(it.truth is not None for it in self.items)

    def restricted(self, keep, what: str) -> Collection:
        """The same collection with only the items ``keep(item)`` accepts (``what`` names the
        rule in the error when none is left)."""
        from dataclasses import replace

        items = [it for it in self.items if keep(it)]
        if not items:
            raise DatasetError(f"no file of {self.folder} is left for {what}")
        return replace(self, items=items)

    def acdc_fold(self, fold: int, test: bool = False) -> Collection:
        """The training patients of ACDC fold ``fold`` (1..5; its 20 test patients are never
        trained or validated on), or with ``test`` those 20 test patients (to score a base the
        way the paper's protocol does)."""
        from .datasets import acdc_fold_patients

        if self.layout != "acdc":
            raise DatasetError(f"--fold selects ACDC patients; {self.folder} is not ACDC volumes")
        try:
            train, held = acdc_fold_patients(fold)
        except ValueError as e:
            raise DatasetError(str(e)) from None
        numbers = {f"patient{p:03d}" for p in (held if test else train)}
        what = f"the {'test' if test else 'training'} patients of fold{fold}"
        kept = self.restricted(lambda it: it.group in numbers, what)
        kept.fold = None if test else int(fold)  # the card's acdc_fold: what was trained on
        return kept

    # ------------------------------------------------------------------ split
    def split(
        self, fraction: float, seed: int = 0
    ) -> tuple[list[CollectionItem], list[CollectionItem]]:
        """(training items, validation items): ``fraction`` of the groups (patients) held out.

        At least one group is held out when ``fraction`` > 0 and there are two or more groups;
        none when the files have no dense labels (nothing could score them). The same seed
        gives the same split (it is recorded in the model card).
        """
        if not 0 <= fraction < 1:
            raise DatasetError(f"the validation fraction must be in [0, 1), not {fraction}")
        groups = sorted({it.group for it in self.items})
        if fraction == 0 or len(groups) < 2 or not self.has_truth:
            return list(self.items), []
        n_val = min(len(groups) - 1, max(1, round(fraction * len(groups))))
        order = np.random.default_rng(seed).permutation(len(groups))
        held = {groups[i] for i in order[:n_val]}
        train = [it for it in self.items if it.group not in held]
        val = [it for it in self.items if it.group in held]
        return train, val

    # ------------------------------------------------------------------ reading
    def read(self, item: CollectionItem, scribbles: bool = True, truth: bool = True) -> Sample:
        """Reads one item (``scribbles``/``truth``: whether they are needed)."""
        try:
            if self.layout == "acdc":
                return self._read_acdc(item, scribbles, truth)
            image = load_image(item.image)
            dense = self._truth(item) if (truth or self.simulated) else None
            strokes = None
            if scribbles:
                strokes = (
                    self._simulate(item, dense) if self.simulated else read_labels(item.scribbles)
                )
            return Sample(item.name, image.array, strokes, dense if truth else None, image.spacing)
        except (OSError, ValueError) as e:
            if isinstance(e, MedsegError):
                raise
            raise DatasetError(f"{item.image}: {e}") from None

    def _truth(self, item: CollectionItem) -> np.ndarray | None:
        if item.truth is None:
            return None
        return read_mask(item.truth)

    def _simulate(self, item: CollectionItem, dense: np.ndarray | None) -> np.ndarray:
        from .scribbles import simulate_scribbles

        if dense is None:
            raise DatasetError(f"{item.name}: no dense label to simulate strokes from")
        # one generator per file, from the collection's seed and the stem: the same strokes
        # whichever files are read, in whichever order
        rng = np.random.default_rng([self.seed, zlib.crc32(item.name.encode())])
        values = [v for v in self.class_values if v in set(np.unique(dense).tolist())]
        return simulate_scribbles(
            dense,
            classes=values,
            background=self.class_values[0],
            unlabelled=self.unlabelled,
            rng=rng,
        )

    def _read_acdc(self, item: CollectionItem, scribbles: bool, truth: bool) -> Sample:
        vol = read_acdc_volume(item.image)
        strokes = None
        if scribbles:
            if vol.scribble is not None and not self.simulated:
                strokes = vol.scribble
            elif vol.label is not None and self.simulated:
                strokes = self._simulate(item, vol.label)
            else:
                raise DatasetError(f"{item.image}: no 'scribble' dataset to train on")
        return Sample(item.name, vol.image, strokes, vol.label if truth else None, None)


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def files_by_stem(
    folder: str | os.PathLike, suffixes: Sequence[str] = _IMAGE_SUFFIXES
) -> dict[str, Path]:
    """``{stem: file}`` of the image or label files in ``folder`` (sorted; hidden files and
    subfolders left out). Two files with one stem are an error: which one is meant?"""
    out: dict[str, Path] = {}
    for p in sorted(Path(folder).iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.name.lower().endswith(tuple(suffixes)):
            stem = _stem(p)
            if stem in out:
                raise DatasetError(
                    f"{folder} holds {out[stem].name} and {p.name}: two files with the stem "
                    f"{stem!r} — keep one (files are matched by stem)"
                )
            out[stem] = p
    return out


_files_by_stem = files_by_stem


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of a folder to predict, one per stem, sorted (HDF5 volumes too)."""
    return list(files_by_stem(folder, (*_IMAGE_SUFFIXES, ".h5", ".hdf5")).values())


def read_mask(path: Path) -> np.ndarray:
    """A dense label map as stored; lossy (JPEG) masks thresholded to 0/255."""
    if path.suffix.lower() in _LOSSY:
        from .datasets import binarize_mask

        return binarize_mask(load_image(path).array).astype(np.uint8) * 255
    return read_labels(path)


def _shape_and_values(path: Path) -> tuple[tuple[int, ...], set[int]]:
    arr = read_mask(path)
    return tuple(arr.shape), {int(v) for v in np.unique(arr)}


def _split_stems(folder: Path) -> tuple[set[str] | None, int]:
    """The ``train`` stems of ``split.json`` (None without one) and how many test stems."""
    path = folder / "split.json"
    if not path.is_file():
        return None, 0
    try:
        data = json.loads(path.read_text())
        train = {str(s) for s in data["train"]}
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(
            f"{path} is not a split file ({type(e).__name__}: {e}) — it must be JSON with a "
            "'train' list of file stems (and optionally 'test'), or remove it"
        ) from None
    test = data.get("test") if isinstance(data, dict) else None
    return train, len(test) if isinstance(test, list) else 0


def _leftovers(what: str, stems: Sequence[str]) -> str:
    shown = ", ".join(sorted(stems)[:5]) + (" …" if len(stems) > 5 else "")
    return f"{len(stems)} {what} left out: {shown}"


def open_collection(
    folder: str | os.PathLike,
    *,
    simulate_scribbles: bool = False,
    unlabelled: int | None = None,
    seed: int = 0,
) -> Collection:
    """Recognises the layout of ``folder``, lists its files and surveys their labels.

    ``simulate_scribbles``: draw strokes from the dense masks (required for ``images/`` +
    ``masks/``; for ACDC volumes it replaces the expert scribbles). ``unlabelled``: the
    scribble value meaning "not drawn" (default 0; ACDC 4). Raises :class:`DatasetError`
    naming the folder and what was expected.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder {folder} does not exist or is not a folder")
    images = folder / "images"
    if images.is_dir():
        return _open_image_folder(folder, simulate_scribbles, unlabelled, seed)
    volumes = folder / "volumes" if (folder / "volumes").is_dir() else folder
    h5 = sorted(p for p in volumes.iterdir() if p.suffix.lower() in (".h5", ".hdf5"))
    if h5:
        return _open_acdc(folder, h5, simulate_scribbles, unlabelled, seed)
    raise DatasetError(f"{folder} is not a dataset folder: {_EXPECTED}")


def _open_image_folder(
    folder: Path, simulate: bool, unlabelled: int | None, seed: int
) -> Collection:
    images = _files_by_stem(folder / "images")
    if not images:
        raise DatasetError(
            f"{folder / 'images'} holds no image files ({', '.join(_IMAGE_SUFFIXES)})"
        )
    scr_dir = folder / "scribbles"
    dense_dir = next((folder / d for d in ("masks", "labels") if (folder / d).is_dir()), None)
    if simulate or not scr_dir.is_dir():
        if dense_dir is None:
            raise DatasetError(
                f"{folder} has 'images/' but neither 'scribbles/' nor 'masks/' beside it: "
                f"{_EXPECTED}"
            )
        if not simulate:
            raise DatasetError(
                f"{folder} has 'images/' and '{dense_dir.name}/' but no 'scribbles/': pass "
                "--simulate-scribbles to draw strokes from the masks (seeded), or add a "
                "'scribbles/' folder with the same file stems"
            )
    layout = "masks" if simulate else "scribbles"
    strokes = {} if simulate else _files_by_stem(scr_dir)
    dense = _files_by_stem(dense_dir) if dense_dir is not None else {}
    train_stems, n_test = _split_stems(folder)
    warnings: list[str] = []
    partner = dense if simulate else strokes
    stems = [s for s in images if s in partner]
    if train_stems is not None:
        stems = [s for s in stems if s in train_stems]
    alone = [s for s in images if s not in partner]
    if alone:
        warnings.append(
            _leftovers(f"images without {'a mask' if simulate else 'scribbles'}", alone)
        )
    orphans = [s for s in partner if s not in images]
    if orphans:
        warnings.append(_leftovers("label files without an image", orphans))
    if not stems:
        where = (folder / "masks") if simulate else scr_dir
        raise DatasetError(
            f"{folder}: no file stem occurs in both 'images/' and '{where.name}/'"
            + (" among split.json's 'train' stems" if train_stems is not None else "")
            + " — name each label file like its image (a.png ↔ a.tif)"
        )
    if dense and not simulate:
        missing = [s for s in stems if s not in dense]
        if missing:  # validation needs every file's dense labels; partial sets score nothing
            warnings.append(_leftovers(f"images without a file in {dense_dir.name}/", missing))
            dense = {}
    values: set[int] = set()
    items = []
    unl = 0 if unlabelled is None else int(unlabelled)
    for s in stems:
        label_file = dense[s] if simulate else strokes[s]
        try:
            shape, found = _shape_and_values(label_file)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{label_file}: {e}") from None
        values |= found if simulate else found - {unl}
        items.append(CollectionItem(s, s, images[s], strokes.get(s), dense.get(s), shape))
    class_values = tuple(sorted(values))
    if simulate:
        unl = max(class_values) + 1 if unlabelled is None else unl
        if unl in class_values:
            raise DatasetError(
                f"--unlabelled {unl} is a class value of the masks in {dense_dir} — choose "
                "another value (default: one above the largest class value)"
            )
    if len(class_values) < 2:
        what = "masks" if simulate else "scribbles"
        raise DatasetError(
            f"the {what} in {folder} hold {len(class_values)} class(es) {list(class_values)} "
            f"(value {unl} = unlabelled): at least background and one structure are needed"
        )
    return Collection(
        folder,
        layout,
        items,
        class_values,
        unl,
        simulated=simulate,
        seed=seed,
        test_stems=n_test,
        warnings=warnings,
    )


def _open_acdc(
    folder: Path, files: list[Path], simulate: bool, unlabelled: int | None, seed: int
) -> Collection:
    import h5py

    train_stems, n_test = _split_stems(folder)
    items = []
    for p in files:
        stem = p.stem
        if train_stems is not None and stem not in train_stems:
            continue
        try:
            with h5py.File(p, "r") as f:
                names = set(f)
                if "image" not in names:
                    raise DatasetError(
                        f"{p}: no 'image' dataset (found {sorted(names)}) — {_EXPECTED}"
                    )
                shape = tuple(f["image"].shape)
        except OSError as e:
            raise DatasetError(f"{p} could not be read as HDF5 ({e})") from None
        need = "label" if simulate else "scribble"
        if need not in names:
            raise DatasetError(
                f"{p} has no '{need}' dataset (found {sorted(names)})"
                + ("" if simulate else " — pass --simulate-scribbles to draw strokes from 'label'")
            )
        m = _ACDC_PATIENT.match(stem)
        group = m.group(1).lower() if m else stem
        truth = p if "label" in names else None
        shape = shape if len(shape) == 3 else (1, *shape)
        items.append(CollectionItem(stem, group, p, None if simulate else p, truth, shape))
    if not items:
        raise DatasetError(f"{folder}: none of split.json's 'train' stems is an .h5 volume")
    if unlabelled is not None and unlabelled != ACDC_UNLABELLED and not simulate:
        raise InputError(
            f"ACDC scribbles mark unlabelled pixels with {ACDC_UNLABELLED}, not {unlabelled} — "
            "leave --unlabelled out"
        )
    return Collection(
        folder,
        "acdc",
        items,
        tuple(range(len(ACDC_CLASS_NAMES))),
        ACDC_UNLABELLED,
        class_names=ACDC_CLASS_NAMES,
        kind="stack",
        simulated=simulate,
        seed=seed,
        test_stems=n_test,
    )
