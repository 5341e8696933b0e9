"""DICOM files the tests write themselves with pydicom (never downloaded ones).

Minimal MR image objects: the tags a reader needs for geometry and values (ImagePositionPatient,
ImageOrientationPatient, PixelSpacing, Rescale*), explicit-VR little-endian, uncompressed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def _base(sop_class: str, series_uid: str, pixels: np.ndarray):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.PatientName = "Test^Phantom"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _save(ds, path: Path) -> Path:
    try:
        ds.save_as(path, enforce_file_format=True)  # pydicom >= 3
    except TypeError:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def write_series(
    folder: Path,
    volume: np.ndarray,
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.6),
    slope: float = 1.0,
    intercept: float = 0.0,
    series_uid: str = "1.2.826.0.1.3680043.8.498.10",
    description: str = "T1 test",
    order=None,
    names=None,
    positions: bool = True,
    start: float = -40.0,
) -> list[Path]:
    """One file per slice of ``volume`` (Z, Y, X; stored values, before rescale).

    Slices lie along -z of the patient (axial, orientation (1,0,0,0,1,0)) starting at ``start``;
    ``order`` permutes which slice goes into which file (files ``0000.dcm``... unless ``names``),
    so that file order and InstanceNumber say nothing about the position.
    """
    folder.mkdir(parents=True, exist_ok=True)
    z = volume.shape[0]
    order = list(range(z)) if order is None else list(order)
    paths = []
    for k, i in enumerate(order):
        ds = _base(MR_IMAGE_STORAGE, series_uid, volume[i].astype(np.uint16))
        ds.SeriesDescription = description
        ds.InstanceNumber = k + 1  # acquisition order, deliberately not the spatial order
        if positions:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [-100.0, -90.0, start + i * spacing[0]]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        name = names[k] if names else f"{k:04d}.dcm"
        paths.append(_save(ds, folder / name))
    return paths


def write_multiframe(
    path: Path,
    volume: np.ndarray,
    spacing: tuple[float, float, float] = (3.0, 0.7, 0.9),
    slope: float = 2.0,
    intercept: float = -100.0,
    frame_order=None,
) -> Path:
    """An enhanced-MR-style multi-frame file: geometry in functional groups, frames permuted."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    z = volume.shape[0]
    frame_order = list(range(z)) if frame_order is None else list(frame_order)
    stored = np.stack([volume[i] for i in frame_order]).astype(np.uint16)
    ds = _base(ENHANCED_MR_IMAGE_STORAGE, "1.2.826.0.1.3680043.8.498.20", stored)
    ds.NumberOfFrames = z
    measures = Dataset()
    measures.PixelSpacing = [spacing[1], spacing[2]]
    measures.SliceThickness = spacing[0]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    transform = Dataset()
    transform.RescaleSlope = slope
    transform.RescaleIntercept = intercept
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for i in frame_order:
        pos = Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, 10.0 + i * spacing[0]]
        g = Dataset()
        g.PlanePositionSequence = Sequence([pos])
        frames.append(g)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    return _save(ds, path)
