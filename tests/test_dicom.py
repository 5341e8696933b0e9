"""DICOM series: slice order from geometry, rescale, spacing, multi-frame, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pydicom")

from dicom_files import write_multiframe, write_series  # noqa: E402

from napari_medseg.data.dicom import read_dicom  # noqa: E402
from napari_medseg.data.readers import load_image  # noqa: E402


def _volume(z=5, h=12, w=10):
    # every slice distinguishable: slice i holds values 100 * i + pixel index
    return (np.arange(z)[:, None, None] * 100 + np.arange(h * w).reshape(h, w)).astype(np.uint16)


def test_series_in_shuffled_files_is_ordered_by_position(tmp_path):
    vol = _volume()
    # file 0000.dcm holds slice 3, and so on: names and InstanceNumber are not the spatial order
    write_series(tmp_path / "s", vol, spacing=(2.5, 0.8, 0.6), order=[3, 0, 4, 1, 2])
    img = load_image(tmp_path / "s")
    np.testing.assert_array_equal(img.array, vol)
    assert img.spacing == pytest.approx((2.5, 0.8, 0.6))


def test_slope_and_intercept_are_applied(tmp_path):
    vol = _volume(z=3)
    write_series(tmp_path / "ct", vol, slope=0.5, intercept=-1024.0)
    arr = load_image(tmp_path / "ct").array
    assert arr.dtype == np.float32
    np.testing.assert_allclose(arr, vol * 0.5 - 1024.0)


def test_files_without_extension_and_a_single_file(tmp_path):
    vol = _volume(z=3)
    names = ["IM0001", "IM0002", "IM0003"]
    paths = write_series(tmp_path / "pacs", vol, spacing=(4.0, 1.0, 1.5), names=names)
    img = load_image(tmp_path / "pacs")
    np.testing.assert_array_equal(img.array, vol)
    # one extension-less slice alone: a 2-D image with its in-plane spacing
    one = load_image(paths[1])
    np.testing.assert_array_equal(one.array, vol[1])
    assert one.spacing == pytest.approx((1.0, 1.5))


def test_single_slice_series_takes_z_spacing_from_the_headers(tmp_path):
    write_series(tmp_path / "one", _volume(z=1), spacing=(6.0, 0.5, 0.5))
    s = read_dicom(tmp_path / "one")
    assert s.array.shape == (12, 10) and s.spacing == pytest.approx((0.5, 0.5))
    write_series(tmp_path / "nopos", _volume(z=3), spacing=(6.0, 0.5, 0.5), positions=False)
    s = read_dicom(tmp_path / "nopos")
    assert s.spacing == pytest.approx((6.0, 0.5, 0.5))  # SliceThickness: no positions
    assert any("InstanceNumber" in w for w in s.warnings)


def test_multiframe_file(tmp_path):
    vol = _volume(z=4)
    path = write_multiframe(tmp_path / "enhanced.dcm", vol, frame_order=[2, 0, 3, 1])
    img = load_image(path)
    np.testing.assert_allclose(img.array, vol * 2.0 - 100.0)
    assert img.spacing == pytest.approx((3.0, 0.7, 0.9))


def test_mixed_series_error_names_the_series(tmp_path):
    write_series(tmp_path / "mix", _volume(z=2), series_uid="1.2.3.4", description="T1")
    write_series(tmp_path / "mix", _volume(z=3), series_uid="1.2.3.5", names=["a", "b", "c"])
    with pytest.raises(ValueError) as e:
        load_image(tmp_path / "mix")
    msg = str(e.value)
    assert "1.2.3.4 (2 files, 'T1')" in msg and "1.2.3.5 (3 files" in msg
    assert "folder of its own" in msg and "series_uid=" in msg
    picked = read_dicom(tmp_path / "mix", series_uid="1.2.3.5")
    assert picked.array.shape == (3, 12, 10)


def test_repeated_positions_are_refused(tmp_path):
    vol = _volume(z=2)
    write_series(tmp_path / "cine", vol, names=["t1", "t2"])
    write_series(tmp_path / "cine", vol, names=["t3", "t4"])  # same positions again
    with pytest.raises(ValueError, match="share a position"):
        load_image(tmp_path / "cine")


def test_empty_folder_and_folder_without_dicom(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        load_image(tmp_path / "empty")
    other = tmp_path / "tiffs"
    other.mkdir()
    (other / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="holds no DICOM file.*notes.txt"):
        load_image(other)


def test_non_dicom_file_with_dcm_suffix(tmp_path):
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"\x89PNG not dicom at all" * 20)
    with pytest.raises(ValueError, match="not a DICOM file"):
        load_image(bad)
    plain = tmp_path / "scan.xyz"  # neither a known suffix nor DICOM content
    plain.write_bytes(b"plain bytes")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_image(plain)
