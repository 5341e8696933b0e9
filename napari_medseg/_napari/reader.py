"""npe2 reader: ACDC ``.h5`` volumes, NIfTI volumes, TIFF stacks and DICOM series as layers.

Why a reader of our own when napari opens TIFFs already: the pixel spacing (NIfTI header,
ImageJ TIFF metadata, DICOM PixelSpacing and slice positions) becomes the layer scale, so
distances (HD95) and the 3-D view are in millimetres; a DICOM folder opens as one volume; and
an ACDC file opens as image + scribbles + ground truth in the plugin's label convention
(0 = unlabelled, value v = class v-1), ready for the widget.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .layers import label_color_dict

LayerData = tuple[Any, dict, str]

_SUFFIXES = (".h5", ".hdf5", ".nii", ".nii.gz", ".tif", ".tiff", ".dcm")
# file names that hold label maps rather than intensities (ACDC: patient001_frame01_gt.nii.gz)
_LABEL_HINTS = ("_gt", "label", "mask", "seg", "scribble", "truth", "annotation")


def _suffix(path: str) -> str:
    name = path.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _stem(path: str) -> str:
    name = Path(path).name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Returns the reader for the file types we know, else None (napari tries other readers)."""
    paths = [path] if isinstance(path, str) else list(path)
    return read_layers if paths and all(_readable(str(p)) for p in paths) else None


def _readable(path: str) -> bool:
    if _suffix(path) in _SUFFIXES:
        return True
    # npe2 offers us every folder (accepts_directories): take only those holding DICOM slices
    from ..data.readers import is_dicom_path

    return Path(path).is_dir() and is_dicom_path(path)


def read_layers(path: str | list[str]) -> list[LayerData]:
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        p = str(p)
        if _suffix(p) in (".h5", ".hdf5"):
            layers.extend(_read_h5(p))
        else:
            layers.extend(_read_volume(p))
    return layers


def _read_h5(path: str) -> list[LayerData]:
    import h5py

    from ..data.classes import ClassMap
    from ..data.readers import ACDC_CLASS_NAMES, ACDC_UNLABELLED, read_acdc_volume

    with h5py.File(path, "r") as f:
        if "image" not in f:
            raise ValueError(
                f"{Path(path).name}: no 'image' dataset (found {list(f)}) — napari-medseg reads "
                "HDF5 files in the WSL4MIS ACDC layout (image, label, scribble)"
            )
    vol = read_acdc_volume(path)
    name = _stem(path)
    k = len(ACDC_CLASS_NAMES)
    meta = {"class_names": list(ACDC_CLASS_NAMES)}
    layers: list[LayerData] = [(vol.image, {"name": name, "metadata": meta}, "image")]
    if vol.scribble is not None:
        # ACDC: 0..3 classes and 4 unlabelled  →  plugin: 0 unlabelled, 1..4 classes
        values = ClassMap(tuple(range(k)), ACDC_UNLABELLED).to_indices(vol.scribble) + 1
        layers.append(
            (
                values.astype(np.uint8),
                {"name": f"{name} scribbles", "metadata": meta, "colormap": label_color_dict(k)},
                "labels",
            )
        )
    if vol.label is not None:
        layers.append(
            (
                (vol.label.astype(np.uint8) + 1),
                {
                    "name": f"{name} ground truth",
                    "metadata": meta,
                    "visible": False,
                    "colormap": label_color_dict(k, show_background=False),
                },
                "labels",
            )
        )
    return layers


def _read_volume(path: str) -> list[LayerData]:
    from ..data.readers import load_image

    img = load_image(path)
    arr = np.asarray(img.array)
    name = _stem(path)
    rgb = arr.ndim == 3 and arr.shape[-1] in (3, 4) and _suffix(path) in (".tif", ".tiff")
    meta: dict[str, Any] = {"name": name}
    if img.spacing is not None:
        spatial = arr.ndim - (1 if rgb else 0)
        if len(img.spacing) == spatial:
            meta["scale"] = tuple(float(s) for s in img.spacing)
    is_labels = (
        not rgb
        and np.issubdtype(arr.dtype, np.integer)
        and any(h in name.lower() for h in _LABEL_HINTS)
    )
    if is_labels:
        return [(arr, meta, "labels")]
    if rgb:
        meta["rgb"] = True
    return [(arr, meta, "image")]
