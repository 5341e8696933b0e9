"""DICOM series as (Z, Y, X) volumes with their spacing: a folder of slices or one multi-frame file.

Why our own assembly rather than trusting file names or InstanceNumber: scanners and PACS exports
name files arbitrarily, and InstanceNumber counts acquisition order, which is often not spatial
order. The patient-space geometry is what defines the volume: each slice's ImagePositionPatient
projected on the slice normal (the cross product of the two ImageOrientationPatient direction
cosines) gives its place along the stack, and the distance between neighbouring places is the
z spacing (SliceThickness is the thickness of the excited slab and may differ from the spacing,
e.g. with gaps or overlap, so it is only a fallback for a single slice). InstanceNumber orders
slices only when positions are missing.

Pixel values are mapped through RescaleSlope/RescaleIntercept (per slice: they may differ between
slices), so CT arrives in Hounsfield units. No reorientation is done: rows and columns stay as
stored, like the NIfTI reader, so label maps written back line up with the source slices.

pydicom is imported inside the functions so that importing the readers stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .limits import guard_size

__all__ = ["DicomSeries", "dicom_files", "is_dicom_file", "read_dicom"]

_PREAMBLE = 128
_MAGIC = b"DICM"
# Relative spread of the gaps between sorted slice positions above which we say so: the median
# gap is still used, but a user should know the stack is not evenly spaced.
_GAP_TOLERANCE = 0.01


@dataclass
class DicomSeries:
    """One series as a volume. ``spacing`` is (z, y, x) (or (y, x) for one 2-D slice), in mm."""

    array: np.ndarray
    spacing: tuple[float, ...] | None
    series_uid: str
    description: str = ""
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a DICOM Part-10 file (``DICM`` after the 128-byte preamble), whatever its name.

    Reads 132 bytes only: a folder of 500 slices is sniffed in milliseconds, which matters
    because napari asks our reader about every folder a user drops on the canvas.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_PREAMBLE + len(_MAGIC))
    except OSError:
        return False
    return head[_PREAMBLE:] == _MAGIC


def dicom_files(folder: str | os.PathLike) -> list[Path]:
    """The DICOM files directly inside ``folder`` (not its subfolders), sorted by name."""
    folder = Path(folder)
    return [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and is_dicom_file(p)
    ]


def read_dicom(path: str | os.PathLike, series_uid: str | None = None) -> DicomSeries:
    """Reads a DICOM series folder, or one DICOM file (a slice or a multi-frame volume).

    A folder holding several series is an error naming them, unless ``series_uid`` picks one.
    """
    path = Path(path)
    if path.is_dir():
        files = dicom_files(path)
        if not files:
            raise ValueError(_no_dicom_message(path))
    else:
        if not is_dicom_file(path):
            raise ValueError(
                f"{path.name} is not a DICOM file (no 'DICM' marker after the 128-byte "
                "preamble) — export the series as standard DICOM files, or convert it to "
                "NIfTI/TIFF"
            )
        files = [path]
    datasets = [_read_dataset(f) for f in files]
    images = [(f, ds) for f, ds in zip(files, datasets) if "PixelData" in ds]
    if not images:
        raise ValueError(
            f"{path}: the DICOM files hold no image (no PixelData) — e.g. a DICOMDIR or a "
            "report; open the folder that contains the image slices"
        )
    images = _one_series(path, images, series_uid)
    if len(images) == 1 and int(getattr(images[0][1], "NumberOfFrames", 1) or 1) > 1:
        return _multi_frame(*images[0])
    return _slices(images)


# ----------------------------------------------------------------------------- helpers


def _no_dicom_message(folder: Path) -> str:
    others = [p.name for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    if not others:
        return f"{folder} is empty — give a folder of DICOM slices or an image file"
    shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
    return (
        f"{folder} holds no DICOM file ({len(others)} other entries: {shown}). A folder is read "
        "as one DICOM series; for other formats give the path of one image file "
        "(TIFF, NIfTI, PNG, h5)"
    )


def _read_dataset(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path.name}: unreadable DICOM file ({e})") from None


def _one_series(where: Path, images: list, series_uid: str | None) -> list:
    by_uid: dict[str, list] = {}
    for f, ds in images:
        by_uid.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((f, ds))
    if series_uid is not None:
        if series_uid not in by_uid:
            raise ValueError(
                f"{where}: no series with SeriesInstanceUID {series_uid}; found "
                f"{', '.join(sorted(by_uid))}"
            )
        return by_uid[series_uid]
    if len(by_uid) == 1:
        return next(iter(by_uid.values()))
    found = "; ".join(
        f"{uid or '(none)'} ({len(items)} files"
        + (f", '{d}'" if (d := str(getattr(items[0][1], "SeriesDescription", ""))) else "")
        + ")"
        for uid, items in sorted(by_uid.items())
    )
    raise ValueError(
        f"{where} mixes {len(by_uid)} DICOM series (SeriesInstanceUID: {found}). Put each "
        "series in a folder of its own and open that folder, or in Python pick one with "
        "napari_medseg.data.dicom.read_dicom(folder, series_uid=...)"
    )


def _guard_pixels(path: Path, ds) -> None:
    """Refuses, from the header alone, pixel data larger than the file holds (uncompressed)
    or than memory can spare, before pydicom allocates and decodes it."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        bits = int(getattr(ds, "BitsAllocated", 16) or 16)
    except (AttributeError, TypeError, ValueError):
        return  # no usable size in the header: pydicom's own checks decide
    dtype = np.uint8 if bits <= 8 else (np.uint16 if bits <= 16 else np.uint32)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    stored = None
    if syntax is not None and not getattr(syntax, "is_compressed", True) and bits % 8 == 0:
        data = ds.get("PixelData")
        stored = len(data) if isinstance(data, bytes | bytearray) else None
    guard_size(path, (frames, rows, cols, samples), dtype, stored)


def _pixels(path: Path, ds) -> np.ndarray:
    _guard_pixels(path, ds)
    try:
        return np.asarray(ds.pixel_array)
    except Exception as e:  # pydicom raises several types for missing codecs / bad data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise ValueError(
            f"{path.name}: cannot decode the pixel data (transfer syntax {name}): {e}. "
            "Compressed DICOM needs a decoder plugin (pip install pylibjpeg pylibjpeg-libjpeg "
            "pylibjpeg-openjpeg), or export the series uncompressed"
        ) from None


def _rescale(pixels: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    if slope == 1.0 and intercept == 0.0:
        return pixels
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _float(value, default: float) -> float:
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


def _in_plane(ds, frame_group=None) -> tuple[float, float] | None:
    """(row spacing = y, column spacing = x) from PixelSpacing, wherever the file keeps it."""
    sp = _frame_attr(ds, "PixelMeasuresSequence", "PixelSpacing", frame_group)
    if sp is None or len(sp) != 2:
        return None
    y, x = float(sp[0]), float(sp[1])
    return (y, x) if y > 0 and x > 0 else None


def _frame_attr(ds, sequence: str, keyword: str, frame_group=None):
    """A tag from the frame's functional group, the shared one, or the top level (in that order).

    Enhanced (multi-frame) objects keep geometry in functional groups; classic slices and
    legacy multi-frame files keep it at the top level.
    """
    groups = [frame_group] if frame_group is not None else []
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    if shared:
        groups.append(shared[0])
    for g in groups:
        seq = getattr(g, sequence, None)
        if seq and keyword in seq[0]:
            return seq[0][keyword].value
    return getattr(ds, keyword, None)


def _normal(orientation: Sequence[float] | None) -> np.ndarray | None:
    if orientation is None or len(orientation) != 6:
        return None
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else None


def _through_plane(ds, frame_group=None) -> float | None:
    """SpacingBetweenSlices, else SliceThickness: the z spacing of a stack without positions."""
    for kw in ("SpacingBetweenSlices", "SliceThickness"):
        v = _float(_frame_attr(ds, "PixelMeasuresSequence", kw, frame_group), 0.0)
        if v > 0:
            return abs(v)
    return None


def _order_and_gap(
    positions: list[np.ndarray | None],
    normal: np.ndarray | None,
    fallback_keys: list[float],
    what: str,
    warnings: list[str],
) -> tuple[list[int], float | None]:
    """Order of the slices along the normal and the gap between them (None: unknown)."""
    if normal is not None and all(p is not None for p in positions) and len(positions) > 1:
        depth = np.array([float(np.dot(p, normal)) for p in positions])
        order = [int(i) for i in np.argsort(depth, kind="stable")]
        gaps = np.diff(depth[order])
        if np.any(np.isclose(gaps, 0.0, atol=1e-4)):
            n = int(np.sum(np.isclose(gaps, 0.0, atol=1e-4)))
            raise ValueError(
                f"{what}: {n + 1} slices share a position — the series holds several volumes "
                "(time points, echoes or repeated acquisitions); split them into folders of "
                "one volume each"
            )
        gap = float(np.median(gaps))
        if np.ptp(gaps) > _GAP_TOLERANCE * gap:
            warnings.append(
                f"{what}: slices are unevenly spaced ({gaps.min():.3g}–{gaps.max():.3g} mm); "
                f"using the median gap {gap:.3g} mm"
            )
        return order, gap
    order = [int(i) for i in np.argsort(fallback_keys, kind="stable")]
    if len(positions) > 1:
        warnings.append(f"{what}: no slice positions; slices ordered by InstanceNumber")
    return order, None


def _spacing(in_plane, gap, ds, frame_group, nslices: int) -> tuple[float, ...] | None:
    if in_plane is None:
        return None
    z = gap if gap is not None else _through_plane(ds, frame_group)
    if nslices == 1:
        return (z, *in_plane) if z is not None else in_plane
    return (z, *in_plane) if z is not None else None


def _position(value) -> np.ndarray | None:
    return None if value is None or len(value) != 3 else np.asarray(value, float)


def _slices(images: list) -> DicomSeries:
    """A folder of single-frame slices (classic CT/MR) → (Z, Y, X)."""
    first_path, first = images[0]
    warnings: list[str] = []
    where = first_path.parent.name or str(first_path.parent)
    order, gap = _order_and_gap(
        [_position(getattr(ds, "ImagePositionPatient", None)) for _, ds in images],
        _normal(getattr(first, "ImageOrientationPatient", None)),
        [_float(getattr(ds, "InstanceNumber", None), float(i)) for i, (_, ds) in enumerate(images)],
        where,
        warnings,
    )
    planes = []
    for i in order:
        f, ds = images[i]
        px = _pixels(f, ds)
        if planes and px.shape != planes[0].shape:
            raise ValueError(
                f"{f.name}: slice of shape {px.shape} in a series of {planes[0].shape} slices — "
                "the folder mixes image sizes; keep one series per folder"
            )
        slope = _float(getattr(ds, "RescaleSlope", None), 1.0)
        planes.append(_rescale(px, slope, _float(getattr(ds, "RescaleIntercept", None), 0.0)))
    dtype = np.result_type(*planes)
    array = np.stack([p.astype(dtype, copy=False) for p in planes])
    spacing = _spacing(_in_plane(first), gap, first, None, len(planes))
    if len(planes) == 1:
        array = array[0]
        if spacing is not None and len(spacing) == 3:
            spacing = spacing[1:]  # a lone 2-D slice: (y, x)
    return DicomSeries(
        array,
        spacing,
        str(getattr(first, "SeriesInstanceUID", "")),
        str(getattr(first, "SeriesDescription", "")),
        [images[i][0] for i in order],
        warnings,
    )


def _multi_frame(path: Path, ds) -> DicomSeries:
    """One multi-frame file (enhanced CT/MR, or legacy) → (Z, Y, X), frames ordered in space."""
    frames = _pixels(path, ds)
    n = int(ds.NumberOfFrames)
    per_frame = list(getattr(ds, "PerFrameFunctionalGroupsSequence", None) or [None] * n)
    if len(per_frame) != n:
        per_frame = [None] * n
    warnings: list[str] = []

    def plane(g, seq, kw):
        return _frame_attr(ds, seq, kw, g)

    positions = [
        _position(plane(g, "PlanePositionSequence", "ImagePositionPatient")) for g in per_frame
    ]
    if all(p is None for p in positions):
        # legacy multi-frame: frames are in stack order, spacing from the top-level tags
        order, gap = list(range(n)), None
    else:
        order, gap = _order_and_gap(
            positions,
            _normal(plane(per_frame[0], "PlaneOrientationSequence", "ImageOrientationPatient")),
            list(range(n)),
            path.name,
            warnings,
        )
    planes = []
    for i in order:
        g = per_frame[i]
        slope = _float(plane(g, "PixelValueTransformationSequence", "RescaleSlope"), 1.0)
        icpt = _float(plane(g, "PixelValueTransformationSequence", "RescaleIntercept"), 0.0)
        planes.append(_rescale(frames[i], slope, icpt))
    dtype = np.result_type(*planes)
    array = np.stack([p.astype(dtype, copy=False) for p in planes])
    spacing = _spacing(_in_plane(ds, per_frame[0]), gap, ds, per_frame[0], n)
    return DicomSeries(
        array,
        spacing,
        str(getattr(ds, "SeriesInstanceUID", "")),
        str(getattr(ds, "SeriesDescription", "")),
        [path],
        warnings,
    )
