"""Read images and label maps from disk, and write label maps back safely.

Every reader returns plain numpy arrays in the layout the rest of the engine expects:
2-D images as (H, W) or (H, W, 3) for RGB, volumes as (Z, H, W). Spacing, when the file
format records it, is returned in the same axis order as the array (``(z, y, x)`` for a
volume, ``(y, x)`` for a 2-D image) so that metrics such as HD95 can be given in physical
units without any axis bookkeeping by the caller.

Heavy or optional format libraries (h5py, nibabel, imageio, tifffile, pydicom) are imported
inside the functions that need them, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import InputError, MedsegError
from .limits import MAX_BYTES_ENV, guard_size, max_image_bytes  # noqa: F401 - re-exported

__all__ = [
    "ACDC_CLASS_NAMES",
    "ACDC_UNLABELLED",
    "AcdcVolume",
    "ImageData",
    "is_dicom_path",
    "load_image",
    "read_acdc_volume",
    "read_image",
    "read_labels",
    "read_scribbles",
    "write_labels",
    "write_map",
]

#: Value that marks "no scribble here" in the ACDC scribble maps of WSL4MIS / Valvano et al.
ACDC_UNLABELLED = 4
#: Class names of the ACDC label maps, indexed by label value.
ACDC_CLASS_NAMES = ("background", "RV", "Myo", "LV")

_TIFF_SUFFIXES = (".tif", ".tiff")
_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_H5_SUFFIXES = (".h5", ".hdf5")
_DICOM_SUFFIXES = (".dcm", ".dicom")


@dataclass
class ImageData:
    """An array plus what we know about where it came from.

    ``spacing`` is in array axis order (``(z, y, x)`` or ``(y, x)``), in the file's unit
    (millimetres for NIfTI), or ``None`` when the format does not record it.
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    path: Path | None = None


@dataclass
class AcdcVolume:
    """One preprocessed ACDC volume (WSL4MIS layout).

    ``image`` is float32 (Z, H, W) in [0, 1]; ``label`` is the dense uint8 label map
    (0 background, 1 RV, 2 Myo, 3 LV); ``scribble`` is the uint16 expert scribble map with
    :data:`ACDC_UNLABELLED` (4) marking unlabelled pixels. ``label``/``scribble`` are ``None``
    when the file lacks them.
    """

    image: np.ndarray
    label: np.ndarray | None
    scribble: np.ndarray | None
    path: Path
    patient: int | None = None
    frame: int | None = None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _check_exists(path: Path, folder_ok: bool = False) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist — check the path (relative paths are "
            f"resolved from {Path.cwd()})"
        )
    if path.is_dir() and not folder_ok:
        raise IsADirectoryError(f"{path} is a folder — give the path of one image file")


def _unsupported(path: Path) -> InputError:
    supported = ", ".join(
        _TIFF_SUFFIXES + _RASTER_SUFFIXES + _NIFTI_SUFFIXES + _H5_SUFFIXES + _DICOM_SUFFIXES
    )
    return InputError(
        f"cannot read {path.name!r}: unsupported file type {_suffix(path)!r}. "
        f"Supported: {supported} and folders of DICOM slices. Convert the file to TIFF or "
        "NIfTI first."
    )


def _unreadable(path: Path, error: BaseException) -> InputError:
    """The one message for a file a format library could not read."""
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    detail = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return InputError(
        f"cannot read {path} ({detail}) — the file may be truncated or corrupt, or not what its "
        "name says; export it again"
    )


def _tiff_spacing(tf) -> tuple[float, ...] | None:
    """Best-effort spacing from ImageJ metadata and resolution tags; None when absent."""
    ij = tf.imagej_metadata or {}
    page = tf.pages[0]
    xy = None
    try:
        xres = page.tags.get("XResolution")
        yres = page.tags.get("YResolution")
        if xres is not None and yres is not None and ij:
            xnum, xden = xres.value
            ynum, yden = yres.value
            if xnum > 0 and ynum > 0:
                xy = (yden / ynum, xden / xnum)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        xy = None
    if xy is None:
        return None
    z = ij.get("spacing")
    return (float(z), *xy) if z is not None else xy


def _read_tiff(path: Path) -> ImageData:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        if not tf.series:
            raise InputError(f"{path}: the TIFF file holds no image — export it again")
        series = tf.series[0]
        page = tf.pages[0]
        uncompressed = int(getattr(page, "compression", 1)) == 1
        guard_size(path, series.shape, series.dtype, path.stat().st_size if uncompressed else None)
        array = tf.asarray()
        spacing = _tiff_spacing(tf)
    if spacing is not None:
        # Spacing is only meaningful when it matches the spatial axes we return.
        spatial = array.ndim - (1 if array.ndim == 3 and array.shape[-1] in (3, 4) else 0)
        if len(spacing) != spatial:
            spacing = spacing[-spatial:] if len(spacing) > spatial else None
    return ImageData(array, spacing, path)


#: deflate never expands data more than ~1032:1, so a complete PNG of N bytes decodes to at most
#: this many times N bytes of pixels; a header declaring more is a truncated or forged file.
PNG_MAX_RATIO = 1032
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG frame headers (SOF0..SOF15 but DHT, JPG and DAC, which share the range)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _png_header(f) -> tuple[tuple[int, ...], type] | None:
    """(shape, dtype) declared by a PNG's IHDR chunk; None when the file does not start as one."""
    head = f.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    # grey, grey+alpha, RGB, RGBA; a palette decodes to RGB(A): counted as 4 (the larger)
    channels = {0: 1, 4: 2, 2: 3, 6: 4}.get(colour, 4)
    return (height, width, channels), np.uint16 if depth == 16 else np.uint8


def _jpeg_header(f) -> tuple[tuple[int, ...], type] | None:
    """(shape, dtype) from a JPEG's frame header (SOFn), found by walking the markers before
    it; None when there is none before the image data (the decoder then has its say)."""
    if f.read(2) != b"\xff\xd8":
        return None
    while True:
        if f.read(1) != b"\xff":
            return None
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker or marker[0] in (0xD9, 0xDA):  # end of file / of image, start of scan
            return None
        m = marker[0]
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a length
            continue
        raw = f.read(2)
        if len(raw) < 2 or struct.unpack(">H", raw)[0] < 2:
            return None
        if m in _JPEG_SOF:
            seg = f.read(6)
            if len(seg) < 6:
                return None
            precision, height, width, components = struct.unpack(">BHHB", seg)
            return (height, width, components), np.uint16 if precision > 8 else np.uint8
        f.seek(struct.unpack(">H", raw)[0] - 2, os.SEEK_CUR)


def _guard_raster(path: Path) -> tuple[int, ...] | None:
    """Refuses, from the PNG or JPEG header alone, a size that cannot be (a PNG holding more
    than deflate can encode in its bytes) or that would not fit in memory. Returns the
    declared (H, W, channels), or None for other files (the decoder checks those)."""
    with open(path, "rb") as f:
        header = _png_header(f)
        if header is None:
            f.seek(0)
            header = _jpeg_header(f)
    if header is None:
        return None
    shape, dtype = header
    stored = None
    if _suffix(path) == ".png":
        stored = path.stat().st_size * PNG_MAX_RATIO
    declared = int(np.prod(shape, dtype=np.float64) * np.dtype(dtype).itemsize)
    if stored is not None and declared > stored:
        raise InputError(
            f"{path} declares {shape[1]}×{shape[0]} pixels ({declared:,} bytes) but a PNG of "
            f"{path.stat().st_size:,} bytes can hold at most {stored:,} — the file is "
            "truncated or corrupt; export it again"
        )
    guard_size(path, shape, dtype)
    return shape


def _read_raster(path: Path) -> ImageData:
    import imageio.v3 as iio

    shape = _guard_raster(path)
    try:
        array = np.asarray(iio.imread(path))
    except Exception as e:
        from PIL import Image

        if not isinstance(e, Image.DecompressionBombError):
            raise
        size = f"{shape[1]}×{shape[0]} pixels" if shape else "more pixels"
        raise InputError(
            f"{path} declares {size}, more than the image library (Pillow) decodes as a guard "
            "against decompression bombs — crop or downsample it, or save it as TIFF"
        ) from None
    return ImageData(array, None, path)


def _read_nifti(path: Path) -> ImageData:
    """NIfTI stores voxels as (i, j, k[, t]); we return (k, j, i) = (Z, Y, X) order.

    No reorientation to a canonical frame is done: the voxel grid is kept as stored so
    that labels written back line up with the original file. Extra axes (time, channels)
    are moved to the front, e.g. a 4-D cine file becomes (T, Z, Y, X).
    """
    import nibabel as nib

    img = nib.load(str(path))
    header = img.header
    stored = None
    if _suffix(path) == ".nii":
        stored = path.stat().st_size - int(header.get_data_offset())
    guard_size(path, header.get_data_shape(), header.get_data_dtype(), stored)
    data = np.asanyarray(img.dataobj)
    nd = data.ndim
    spatial = min(nd, 3)
    order = list(range(spatial, nd)) + list(range(spatial - 1, -1, -1))
    array = np.ascontiguousarray(np.transpose(data, order))
    zooms = tuple(float(z) for z in img.header.get_zooms()[:spatial])
    spacing = tuple(reversed(zooms)) if all(z > 0 for z in zooms) else None
    return ImageData(array, spacing, path)


def _h5_dataset(path: Path, f, name: str, what: str, hint: str = "") -> np.ndarray:
    """Dataset ``name`` of an open HDF5 file, size-checked before it is read."""
    import h5py

    ds = f.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise InputError(
            f"{path}: HDF5 file has no '{name}' dataset (found {sorted(f)}) — give a file "
            f"with {what}{hint}"
        )
    if ds.dtype.kind not in "biuf":
        raise InputError(f"{path}: dataset '{name}' holds {ds.dtype}, not numbers")
    guard_size(path, ds.shape, ds.dtype)
    return np.asarray(ds[()])


def _read_h5_image(path: Path) -> ImageData:
    import h5py

    with h5py.File(path, "r") as f:
        array = _h5_dataset(path, f, "image", "an image")
    return ImageData(np.asarray(array), None, path)


def is_dicom_path(path: str | os.PathLike) -> bool:
    """A folder with DICOM files in it, a ``.dcm`` file, or any file that starts like DICOM.

    The last case covers the extension-less slices (``IM0001``) that scanners and PACS export.
    """
    from .dicom import dicom_files, is_dicom_file

    path = Path(path)
    if path.is_dir():
        return bool(dicom_files(path))
    return _suffix(path) in _DICOM_SUFFIXES or (path.is_file() and is_dicom_file(path))


def _read_dicom(path: Path) -> ImageData:
    import warnings

    from .dicom import read_dicom

    try:
        series = read_dicom(path)
    except MedsegError:
        raise
    except ValueError as e:  # read_dicom's own messages say what to do: keep them whole
        if path.name not in str(e):
            raise _unreadable(path, e) from None
        raise InputError(str(e)) from None
    for w in series.warnings:
        warnings.warn(w, stacklevel=3)
    return ImageData(series.array, series.spacing, path)


def load_image(path: str | os.PathLike) -> ImageData:
    """Read an image with its spacing (when known) and source path.

    TIFF (tifffile; ImageJ spacing if present), PNG/JPEG/BMP (imageio), NIfTI (.nii,
    .nii.gz; returned as (Z, Y, X) with spacing from the header), HDF5 (dataset
    ``image``, as in the WSL4MIS ACDC files) and DICOM: a folder of slices, one ``.dcm``
    file (a slice or a multi-frame volume), or an extension-less DICOM file (see
    :mod:`napari_medseg.data.dicom`; (Z, Y, X) in rescaled units, spacing in mm).
    """
    path = Path(path)
    _check_exists(path, folder_ok=True)
    return _naming_errors(path, _load_image, path)


def _naming_errors(path: Path, read, *args):
    """``read(*args)``, with any error but ours turned into one that names ``path``."""
    try:
        return read(*args)
    except MedsegError:
        raise
    except MemoryError:
        raise InputError(f"{path} is too large for memory — crop or downsample it") from None
    except Exception as e:  # noqa: BLE001 - a format library's own error: name the file
        raise _unreadable(path, e) from None


def _load_image(path: Path) -> ImageData:
    suffix = _suffix(path)
    if suffix in _TIFF_SUFFIXES:
        return _read_tiff(path)
    if suffix in _RASTER_SUFFIXES:
        return _read_raster(path)
    if suffix in _NIFTI_SUFFIXES:
        return _read_nifti(path)
    if suffix in _H5_SUFFIXES:
        return _read_h5_image(path)
    # a folder, a .dcm file, or an unknown name that may be an extension-less DICOM slice;
    # a folder without DICOM gets read_dicom's "no DICOM file in this folder" error
    if path.is_dir() or is_dicom_path(path):
        return _read_dicom(path)
    raise _unsupported(path)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as a numpy array (see :func:`load_image` for formats and layout)."""
    return load_image(path).array


def _as_integer_labels(array: np.ndarray, source: str) -> np.ndarray:
    """Make a label array integer-typed without silently changing any value."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all() or not np.array_equal(array, np.round(array)):
            raise InputError(
                f"{source}: label values are not whole numbers (dtype {array.dtype}); a label "
                "map must hold integer class values — save it as an integer image"
            )
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if lo >= 0 and hi <= np.iinfo(np.uint16).max:
            dtype = np.uint8 if hi <= 255 else np.uint16
        else:
            dtype = np.int64
        return array.astype(dtype)
    raise InputError(f"{source}: unsupported label dtype {array.dtype} — save integer labels")


def read_labels(path: str | os.PathLike, dataset: str = "label") -> np.ndarray:
    """Read a label map (integer array, same spatial layout as :func:`read_image`).

    RGB(A) label images whose colour channels are all equal (grey masks saved as RGB, as in
    Kvasir/PH2) are reduced to one channel. Genuinely coloured label images are rejected
    because mapping colours to class values is ambiguous. HDF5 files are read from the
    ``dataset`` dataset (``label``, the dense ground truth, unless told). Values are returned
    unchanged (a 0/255 mask stays 0/255; :mod:`napari_medseg.data.datasets` binarises dataset
    masks). Errors name the file.
    """
    path = Path(path)
    _check_exists(path)
    return _naming_errors(path, _read_labels, path, dataset)


def read_scribbles(path: str | os.PathLike) -> np.ndarray:
    """Read a scribble map: :func:`read_labels`, but an HDF5 file is read from its
    ``scribble`` dataset — never from ``label``, the dense ground truth of the WSL4MIS ACDC
    files, which would silently be trained on as if it were strokes."""
    return read_labels(path, dataset="scribble")


def is_acdc_scribble_file(path: str | os.PathLike) -> bool:
    """An HDF5 file: its scribble maps mark unlabelled pixels with :data:`ACDC_UNLABELLED`."""
    return _suffix(Path(path)) in _H5_SUFFIXES


def _read_labels(path: Path, dataset: str) -> np.ndarray:
    if _suffix(path) in _H5_SUFFIXES:
        import h5py

        hint = " (not the ground truth 'label')" if dataset == "scribble" else ""
        with h5py.File(path, "r") as f:
            array = _h5_dataset(path, f, dataset, f"a '{dataset}' map", hint)
    else:
        array = _load_image(path).array
    if _suffix(path) in _RASTER_SUFFIXES + _TIFF_SUFFIXES and array.ndim == 3:
        if array.shape[-1] in (3, 4):
            rgb = array[..., :3]
            if not (
                np.array_equal(rgb[..., 0], rgb[..., 1])
                and np.array_equal(rgb[..., 0], rgb[..., 2])
            ):
                raise InputError(
                    f"{path}: colour label image (channels differ); save the labels as a "
                    "single-channel integer image (one value per class)"
                )
            array = np.ascontiguousarray(rgb[..., 0])
    return _as_integer_labels(array, str(path))


def _checked_cast(array: np.ndarray, dtype, path: Path, name: str) -> np.ndarray:
    """``array`` as ``dtype`` when every value fits (a wrapped value is a silent wrong class)."""
    array = _as_integer_labels(np.asarray(array), f"{path}: {name}")
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise InputError(
            f"{path}: dataset '{name}' holds values {int(array.min())}..{int(array.max())}, "
            f"outside {info.min}..{info.max} — renumber the classes"
        )
    return array.astype(dtype)


_ACDC_NAME = re.compile(r"patient(\d+)_frame(\d+)", re.IGNORECASE)


def read_acdc_volume(path: str | os.PathLike) -> AcdcVolume:
    """Read one WSL4MIS-preprocessed ACDC volume (``patientNNN_frameMM.h5``).

    Datasets: ``image`` (float32, Z, H, W), ``label`` (uint8), ``scribble`` (uint16, 4 =
    unlabelled). Missing ``label``/``scribble`` datasets give ``None``.
    """
    path = Path(path)
    _check_exists(path)
    try:
        return _read_acdc_volume(path)
    except MedsegError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py's own error: name the file
        raise _unreadable(path, e) from None


def _read_acdc_volume(path: Path) -> AcdcVolume:
    import h5py

    with h5py.File(path, "r") as f:
        image = _h5_dataset(path, f, "image", "an 'image' (not an ACDC volume?)")
        image = image.astype(np.float32)
        label = (
            _checked_cast(_h5_dataset(path, f, "label", "labels"), np.uint8, path, "label")
            if "label" in f
            else None
        )
        scribble = (
            _checked_cast(_h5_dataset(path, f, "scribble", "strokes"), np.uint16, path, "scribble")
            if "scribble" in f
            else None
        )
    if image.ndim == 2:  # a single slice file: keep the volume contract (Z, H, W)
        image = image[None]
        label = None if label is None else label[None]
        scribble = None if scribble is None else scribble[None]
    for name, arr in (("label", label), ("scribble", scribble)):
        if arr is not None and arr.shape != image.shape:
            raise InputError(
                f"{path.name}: {name} shape {arr.shape} differs from image shape {image.shape}"
            )
    m = _ACDC_NAME.search(path.name)
    patient, frame = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    return AcdcVolume(image, label, scribble, path, patient, frame)


def _label_dtype(array: np.ndarray) -> np.dtype:
    if array.size == 0:
        return np.dtype(np.uint8)
    lo, hi = array.min(), array.max()
    if lo < 0 or hi > np.iinfo(np.uint16).max:
        raise ValueError(
            f"label values must be in 0..65535 to be saved as a TIFF label map "
            f"(found {lo}..{hi}); renumber the classes"
        )
    return np.dtype(np.uint8 if hi <= 255 else np.uint16)


def write_labels(
    path: str | os.PathLike,
    array: np.ndarray,
    spacing: tuple[float, ...] | None = None,
) -> Path:
    """Write a label map as an uint8 (max ≤ 255) or uint16 TIFF, atomically.

    The data go to a temporary file in the same folder which then replaces ``path`` with
    :func:`os.replace`, so a crash or a full disk never leaves a half-written label file
    where a good one used to be. ``spacing`` ((y, x) or (z, y, x)) is stored as ImageJ
    metadata and read back by :func:`load_image`.
    """
    arr = _as_integer_labels(np.asarray(array), "write_labels")
    return _write_tiff(path, arr.astype(_label_dtype(arr), copy=False), spacing, "write_labels")


def write_map(
    path: str | os.PathLike,
    array: np.ndarray,
    spacing: tuple[float, ...] | None = None,
) -> Path:
    """Write a float map (the disagreement, in [0, 1]) as a float32 TIFF, atomically.

    Beside the label files so that a command-line user gets what the widget shows as the
    ``disagreement`` layer: where the answer is most likely wrong, i.e. where to draw next.
    The same layout and ImageJ spacing as :func:`write_labels`; any viewer opens it as an
    intensity image (the reader of this plugin too: the name carries no label hint).
    """
    arr = np.asarray(array, dtype=np.float32)
    return _write_tiff(path, arr, spacing, "write_map")


def _write_tiff(path, arr: np.ndarray, spacing, caller: str) -> Path:
    import tifffile

    path = Path(path)
    if _suffix(path) not in _TIFF_SUFFIXES:
        raise ValueError(
            f"{caller} writes TIFF: give a path ending in .tif or .tiff (got {path.name!r})"
        )
    if arr.ndim not in (2, 3):
        raise ValueError(f"{caller}: the map must be 2-D (H, W) or 3-D (Z, H, W), got {arr.shape}")
    arr = np.ascontiguousarray(arr)
    # minisblack: tifffile would otherwise store a (3, H, W) stack as planar RGB
    kwargs: dict = {"photometric": "minisblack"}
    if spacing is not None:
        if len(spacing) != arr.ndim:
            raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {arr.ndim}-D map")
        sy, sx = float(spacing[-2]), float(spacing[-1])
        metadata: dict = {"axes": "ZYX" if arr.ndim == 3 else "YX"}
        if arr.ndim == 3:
            metadata["spacing"] = float(spacing[0])
        kwargs.update(imagej=True, resolution=(1.0 / sx, 1.0 / sy), metadata=metadata)
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, arr, **kwargs), suffix=".tif")
