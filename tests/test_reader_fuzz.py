"""Hypothesis fuzzing of every reader: random bytes and truncated valid files.

Whatever the bytes, a reader either returns an array or raises a
:class:`~napari_medseg.errors.MedsegError` whose message names the file — never an IndexError, a
struct.error, a MemoryError or a library's bare exception. ``max_examples`` stays small so that
the suite's time stays low; the seeds are derived (``derandomize``) so a failure reproduces.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_medseg.data import readers  # noqa: E402
from napari_medseg.errors import MedsegError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from reliability_cases import write_valid_files  # noqa: E402

FORMATS = ("tif", "png", "jpg", "nii", "nii.gz", "h5", "dcm", "bmp")
READERS = {
    "load_image": readers.load_image,
    "read_labels": readers.read_labels,
    "read_scribbles": readers.read_scribbles,
}
FUZZ = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return write_valid_files(tmp_path_factory.mktemp("valid"))


def _read_clearly(read, path: Path) -> None:
    try:
        out = read(path)
    except MedsegError as e:
        assert path.name in str(e), f"the message does not name the file: {e}"
    else:
        arr = out.array if hasattr(out, "array") else out
        assert isinstance(arr, np.ndarray)


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(data=st.binary(min_size=0, max_size=4096))
def test_random_bytes_give_a_clear_error(tmp_path, reader, fmt, data):
    path = tmp_path / f"fuzz.{fmt}"
    path.write_bytes(data)
    _read_clearly(READERS[reader], path)


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("fmt", ("tif", "png", "jpg", "nii", "nii.gz", "h5"))
@FUZZ
@given(cut=st.floats(min_value=0.0, max_value=0.999), flip=st.integers(0, 2**31))
def test_truncated_or_flipped_valid_files_give_a_clear_error(
    tmp_path, valid, reader, fmt, cut, flip
):
    data = bytearray(valid[fmt].read_bytes())
    data = data[: int(len(data) * cut)]
    if data and flip % 2:  # half the examples also flip one byte of what is left
        data[flip % len(data)] ^= 0xFF
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(bytes(data))
    _read_clearly(READERS[reader], path)
