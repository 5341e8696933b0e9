"""Dataset layouts used for evaluation: image/mask folders and the ACDC volume folder.

The real data are never part of the repository (their licences forbid redistribution);
:func:`find_data_dir` locates them at ``$MEDSEG_DATA_DIR`` or ``../shared/data`` next to
the repository and returns ``None`` when they are absent so that callers and tests can
skip cleanly instead of failing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .readers import read_image, read_labels

__all__ = [
    "ACDC_NUM_FOLDS",
    "AcdcSplit",
    "ImageMaskDataset",
    "ImageMaskPair",
    "acdc_fold_patients",
    "acdc_patient_number",
    "acdc_split",
    "binarize_mask",
    "find_data_dir",
    "list_acdc_slices",
    "list_acdc_volumes",
    "list_image_mask_pairs",
    "load_pair",
]

DATA_DIR_ENV = "MEDSEG_DATA_DIR"
ACDC_NUM_FOLDS = 5
ACDC_NUM_PATIENTS = 100
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_ACDC_FILE = re.compile(r"^patient(\d{3})_frame(\d{2})\.h5$")


def find_data_dir(env_var: str = DATA_DIR_ENV) -> Path | None:
    """Folder holding the shared evaluation data, or ``None`` when it is not there.

    Looks at ``$MEDSEG_DATA_DIR`` first, then ``../shared/data`` relative to the repository
    root (the folder that contains the ``napari_medseg`` package), then relative to the
    current directory. A set but missing ``$MEDSEG_DATA_DIR`` is not an error: the other
    places are still tried.
    """
    candidates: list[Path] = []
    env = os.environ.get(env_var)
    if env:
        candidates.append(Path(env).expanduser())
    repo_root = Path(__file__).resolve().parents[2]
    candidates.append(repo_root.parent / "shared" / "data")
    candidates.append(Path.cwd().parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


# --------------------------------------------------------------------- image/mask folders


@dataclass(frozen=True)
class ImageMaskPair:
    """An image file and its mask file, matched by file stem."""

    stem: str
    image_path: Path
    mask_path: Path


def _index_by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith("."):
            out.setdefault(p.stem, p)
    return out


def list_image_mask_pairs(
    folder: str | os.PathLike, image_dir: str = "images", mask_dir: str = "masks"
) -> list[ImageMaskPair]:
    """Pairs of ``folder/images/<stem>.*`` and ``folder/masks/<stem>.*`` (Kvasir/PH2 layout).

    Images without a mask (and masks without an image) are left out; a folder with no
    pair at all is an error because it almost always means a wrong path.
    """
    folder = Path(folder)
    img_dir, msk_dir = folder / image_dir, folder / mask_dir
    for d in (img_dir, msk_dir):
        if not d.is_dir():
            raise FileNotFoundError(
                f"{d} not found — a dataset folder must contain '{image_dir}/' and "
                f"'{mask_dir}/' subfolders with files of the same name stem"
            )
    images, masks = _index_by_stem(img_dir), _index_by_stem(msk_dir)
    pairs = [ImageMaskPair(s, images[s], masks[s]) for s in sorted(images) if s in masks]
    if not pairs:
        raise FileNotFoundError(
            f"no image/mask pairs in {folder}: no file stem occurs in both '{image_dir}/' "
            f"and '{mask_dir}/'"
        )
    return pairs


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """0/255 (or 0/1) mask → uint8 0/1.

    Thresholds at half the maximum of the dtype's usual foreground value (127 for masks
    with values above 1) so that slight compression noise around 0 and 255 does not
    create spurious classes.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        mask = mask[..., 0]
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    threshold = 127 if mask.size and mask.max() > 1 else 0
    return (mask > threshold).astype(np.uint8)


def load_pair(pair: ImageMaskPair) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair: the image as stored (e.g. uint8 RGB) and the mask as uint8 0/1."""
    image = read_image(pair.image_path)
    try:
        mask = read_labels(pair.mask_path)
    except ValueError:  # e.g. a JPEG mask whose channels differ slightly: binarize anyway
        mask = read_image(pair.mask_path)
    mask = binarize_mask(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"{pair.stem}: mask shape {mask.shape} does not match image shape "
            f"{image.shape[:2]} — the dataset files are inconsistent"
        )
    return image, mask


class ImageMaskDataset(Sequence):
    """Read-on-access sequence of (image, mask) from an image/mask folder."""

    def __init__(
        self, folder: str | os.PathLike, image_dir: str = "images", mask_dir: str = "masks"
    ) -> None:
        self.folder = Path(folder)
        self.pairs = list_image_mask_pairs(self.folder, image_dir, mask_dir)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return load_pair(self.pairs[index])

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for pair in self.pairs:
            yield load_pair(pair)


# --------------------------------------------------------------------- ACDC volumes


@dataclass(frozen=True)
class AcdcSplit:
    """Training and test volume files of one cross-validation fold."""

    fold: int
    train: tuple[Path, ...]
    test: tuple[Path, ...]


def _acdc_volume_folder(folder: Path) -> Path:
    folder = Path(folder)
    if (folder / "volumes").is_dir() and not any(folder.glob("patient*_frame*.h5")):
        return folder / "volumes"
    return folder


def list_acdc_volumes(folder: str | os.PathLike) -> list[Path]:
    """All ``patientNNN_frameMM.h5`` files in ``folder`` (or ``folder/volumes``), sorted."""
    folder = _acdc_volume_folder(Path(folder))
    if not folder.is_dir():
        raise FileNotFoundError(f"ACDC folder {folder} not found")
    files = sorted(p for p in folder.iterdir() if _ACDC_FILE.match(p.name))
    if not files:
        raise FileNotFoundError(
            f"no ACDC volumes (patientNNN_frameMM.h5) in {folder} — point to the folder of "
            "the WSL4MIS preprocessed ACDC volumes"
        )
    return files


def acdc_patient_number(path: str | os.PathLike) -> int:
    """Patient number from a ``patientNNN_frameMM.h5`` file name."""
    m = _ACDC_FILE.match(Path(path).name)
    if not m:
        raise ValueError(f"{Path(path).name!r} is not named patientNNN_frameMM.h5")
    return int(m.group(1))


def acdc_fold_patients(fold: int) -> tuple[list[int], list[int]]:
    """(train, test) patient numbers of the standard 5-fold ACDC split.

    Fold k (1-based) tests patients 20(k-1)+1 .. 20k and trains on the other 80, as in
    WSL4MIS / Weak-Mamba-UNet.
    """
    if not isinstance(fold, (int, np.integer)) or not 1 <= fold <= ACDC_NUM_FOLDS:
        raise ValueError(f"fold must be an integer in 1..{ACDC_NUM_FOLDS}, got {fold!r}")
    per_fold = ACDC_NUM_PATIENTS // ACDC_NUM_FOLDS
    test = list(range(per_fold * (fold - 1) + 1, per_fold * fold + 1))
    train = [p for p in range(1, ACDC_NUM_PATIENTS + 1) if p not in set(test)]
    return train, test


def acdc_split(folder: str | os.PathLike, fold: int = 1) -> AcdcSplit:
    """Volume files of fold ``fold``: test = its 20 patients, train = the others."""
    train_ids, test_ids = acdc_fold_patients(fold)
    files = list_acdc_volumes(folder)
    test_set, train_set = set(test_ids), set(train_ids)
    test = tuple(p for p in files if acdc_patient_number(p) in test_set)
    train = tuple(p for p in files if acdc_patient_number(p) in train_set)
    return AcdcSplit(fold, train, test)


def list_acdc_slices(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, int]]:
    """(file, slice index) for every slice of the given volumes — the 2-D training units."""
    import h5py

    out: list[tuple[Path, int]] = []
    for p in paths:
        p = Path(p)
        with h5py.File(p, "r") as f:
            shape = f["image"].shape
        n = shape[0] if len(shape) == 3 else 1
        out.extend((p, z) for z in range(n))
    return out
