"""Valid inputs and ways to spoil them, shared by the bad-input matrix and the reader fuzzing.

Every helper writes real files the way a user's tools would (tifffile, imageio, nibabel, h5py,
torch.save), so that the checks run on what the readers really meet.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

SIZE = 32


def image_2d() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.normal(0.2, 0.05, (SIZE, SIZE)).astype(np.float32)
    img[8:24, 8:24] += 0.6
    return img


def scribbles_2d(dtype=np.uint8, values=(1, 2)) -> np.ndarray:
    scr = np.zeros((SIZE, SIZE), dtype)
    scr[2, 2:30] = values[0]
    scr[15:17, 12:20] = values[1]
    return scr


def write_valid_files(folder: Path) -> dict[str, Path]:
    """One valid file per reader: the corruptions start from these bytes."""
    import h5py
    import imageio.v3 as iio
    import nibabel as nib
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    img = image_2d()
    u8 = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    files = {
        "tif": folder / "valid.tif",
        "png": folder / "valid.png",
        "jpg": folder / "valid.jpg",
        "nii": folder / "valid.nii",
        "nii.gz": folder / "valid.nii.gz",
        "h5": folder / "valid.h5",
    }
    tifffile.imwrite(files["tif"], img)
    iio.imwrite(files["png"], u8)
    iio.imwrite(files["jpg"], u8)
    vol = np.stack([img, img])  # (Z, H, W) → NIfTI (i, j, k)
    nii = nib.Nifti1Image(np.transpose(vol, (2, 1, 0)), np.eye(4))
    nib.save(nii, files["nii"])
    nib.save(nii, files["nii.gz"])
    with h5py.File(files["h5"], "w") as f:
        f["image"] = vol
        f["label"] = np.ones(vol.shape, np.uint8)
        scr = np.full(vol.shape, 4, np.uint16)
        scr[:, 2, 2:30] = 0
        scr[:, 15:17, 12:20] = 3
        f["scribble"] = scr
    return files


# ---------------------------------------------------------------- corruptions
def _empty(data: bytes) -> bytes:
    return b""


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _header_only(data: bytes) -> bytes:
    return data[:16]


def _random(data: bytes) -> bytes:
    return (
        np.random.default_rng(len(data))
        .integers(0, 256, max(64, len(data)))
        .astype(np.uint8)
        .tobytes()
    )


def _tail_lost(data: bytes) -> bytes:
    return data[: -max(1, len(data) // 10)]


CORRUPTIONS = {
    "empty": _empty,
    "half": _half,
    "header_only": _header_only,
    "random_bytes": _random,
    "tail_lost": _tail_lost,
}


def corrupt(valid: Path, how: str, dest: Path) -> Path:
    dest.write_bytes(CORRUPTIONS[how](valid.read_bytes()))
    return dest


def giant_tiff(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A ~200-byte uncompressed TIFF whose header declares ``width``×``height`` uint8 pixels."""
    import struct

    entries = [
        (256, 4, 1, width),  # ImageWidth LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample SHORT
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 8),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, min(width * height, 2**32 - 1)),  # StripByteCounts
    ]
    ifd_offset = 8 + 16
    out = b"II*\x00" + struct.pack("<I", ifd_offset) + b"\x00" * 16
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<I", value) if typ == 4 else struct.pack("<HH", value, 0)
        out += struct.pack("<HHI", tag, typ, count) + packed
    out += struct.pack("<I", 0)
    path.write_bytes(out)
    return path


def giant_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A ~60-byte PNG (valid chunks and CRCs) whose header declares ``width``×``height`` RGB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def giant_jpeg(path: Path, width: int = 65_000, height: int = 65_000) -> Path:
    """A ~40-byte JPEG: an APP0 segment, then a frame header declaring ``width``×``height``
    RGB pixels, then the end marker (no image data)."""
    import struct

    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    out = b"\xff\xd8"
    out += b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0
    out += b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof
    out += b"\xff\xd9"
    path.write_bytes(out)
    return path


def giant_dicom(path: Path, rows: int = 60_000, columns: int = 60_000, frames: int = 500) -> Path:
    """A DICOM file with 8×8 pixels of data whose header declares ``frames`` frames of
    ``rows``×``columns`` 16-bit pixels."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from dicom_files import MR_IMAGE_STORAGE, _base, _save

    ds = _base(MR_IMAGE_STORAGE, "1.2.826.0.1.3680043.8.498.77", np.zeros((8, 8), np.uint16))
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    return _save(ds, path)


# ---------------------------------------------------------------- inputs never altered
def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path → digest); new files show too."""
    out = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            p = Path(root) / name
            if p.is_symlink() and not p.exists():
                out[str(p.relative_to(folder))] = "dangling link"
                continue
            try:
                out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError as e:  # a symbolic link loop
                out[str(p.relative_to(folder))] = f"unreadable: {e.errno}"
    return out
