"""Readers, dataset layouts, normalisation and input validation (tiny synthetic files)."""

from __future__ import annotations

from pathlib import Path

import h5py
import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_medseg.data import datasets, readers
from napari_medseg.data.datasets import (
    ImageMaskDataset,
    acdc_fold_patients,
    acdc_split,
    binarize_mask,
    find_data_dir,
    list_acdc_slices,
    list_acdc_volumes,
    list_image_mask_pairs,
)
from napari_medseg.data.normalization import (
    infer_kind,
    normalize_image,
    percentile_normalize,
    restore_layout,
    scale_rgb,
    to_channels_first,
)
from napari_medseg.data.readers import (
    load_image,
    read_acdc_volume,
    read_image,
    read_labels,
    write_labels,
)
from napari_medseg.data.validation import InputError, validate_inputs

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- readers


def test_tiff_roundtrip_stack(tmp_path):
    vol = RNG.integers(0, 4000, size=(3, 16, 20), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "v.tif", vol, photometric="minisblack")
    out = load_image(tmp_path / "v.tif")
    np.testing.assert_array_equal(out.array, vol)
    assert out.spacing is None
    assert out.path == tmp_path / "v.tif"


def test_png_rgb_and_jpg(tmp_path):
    rgb = RNG.integers(0, 255, size=(12, 14, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    iio.imwrite(tmp_path / "a.jpg", rgb)
    jpg = read_image(tmp_path / "a.jpg")
    assert jpg.shape == (12, 14, 3) and jpg.dtype == np.uint8


def test_nifti_axes_and_spacing(tmp_path):
    # voxel (i, j, k) = (x, y, z); we expect (z, y, x) back with reversed zooms.
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    img = nib.Nifti1Image(data, np.diag([0.7, 0.8, 5.0, 1.0]))
    img.header.set_zooms((0.7, 0.8, 5.0))
    for name in ("v.nii", "v.nii.gz"):
        nib.save(img, tmp_path / name)
        out = load_image(tmp_path / name)
        assert out.array.shape == (3, 5, 4)
        assert out.array[2, 1, 3] == data[3, 1, 2]
        assert out.spacing == pytest.approx((5.0, 0.8, 0.7))
    lab = read_labels(tmp_path / "v.nii.gz")
    assert np.issubdtype(lab.dtype, np.integer) and lab.shape == (3, 5, 4)


def test_read_labels_gray_saved_as_rgb_and_rejects_colour(tmp_path):
    m = np.zeros((10, 10), np.uint8)
    m[2:5, 3:7] = 255
    iio.imwrite(tmp_path / "m.png", np.stack([m] * 3, -1))
    lab = read_labels(tmp_path / "m.png")
    assert lab.shape == (10, 10)
    np.testing.assert_array_equal(lab, m)
    col = np.zeros((10, 10, 3), np.uint8)
    col[0, 0] = (255, 0, 0)
    iio.imwrite(tmp_path / "c.png", col)
    with pytest.raises(ValueError, match="colour label image"):
        read_labels(tmp_path / "c.png")


def test_read_labels_rejects_fractional_floats(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.full((9, 9), 0.5, np.float32))
    with pytest.raises(ValueError, match="not whole numbers"):
        read_labels(tmp_path / "f.tif")
    tifffile.imwrite(tmp_path / "g.tif", np.full((9, 9), 3.0, np.float32))
    lab = read_labels(tmp_path / "g.tif")
    assert lab.dtype == np.uint8 and (lab == 3).all()


def test_reader_errors_are_actionable(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "x.xyz").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_image(tmp_path / "x.xyz")
    # a folder is read as a DICOM series; one without DICOM files says what to give instead
    with pytest.raises(ValueError, match="holds no DICOM file.*give the path of one image file"):
        read_image(tmp_path)


def _write_acdc(path: Path, z: int = 2, h: int = 16, w: int = 12) -> None:
    with h5py.File(path, "w") as f:
        f["image"] = RNG.random((z, h, w)).astype(np.float32)
        lab = np.zeros((z, h, w), np.uint8)
        lab[:, 4:10, 3:8] = 1
        f["label"] = lab
        scr = np.full((z, h, w), 4, np.uint16)
        scr[:, 6, 4:7] = 1
        scr[:, 0, :] = 0
        f["scribble"] = scr


def test_read_acdc_volume(tmp_path):
    p = tmp_path / "patient007_frame12.h5"
    _write_acdc(p)
    v = read_acdc_volume(p)
    assert v.image.dtype == np.float32 and v.image.shape == (2, 16, 12)
    assert v.label.dtype == np.uint8 and v.scribble.dtype == np.uint16
    assert (v.patient, v.frame) == (7, 12)
    assert set(np.unique(v.scribble)) == {0, 1, 4}
    np.testing.assert_array_equal(read_labels(p), v.label)


def test_write_labels_dtype_spacing_and_atomic(tmp_path, monkeypatch):
    lab = np.zeros((2, 10, 12), np.int64)
    lab[0, 2:4, 2:4] = 3
    p = write_labels(tmp_path / "out" / "lab.tif", lab, spacing=(2.5, 0.5, 0.25))
    back = load_image(p)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, lab)
    assert back.spacing == pytest.approx((2.5, 0.5, 0.25))

    three = np.zeros((3, 10, 12), np.uint8)  # must stay a 3-slice stack, not RGB
    three[1, 1, 1] = 2
    with tifffile.TiffFile(write_labels(tmp_path / "three.tif", three)) as tf:
        assert len(tf.pages) == 3 and tf.pages[0].photometric == 1  # MINISBLACK
        np.testing.assert_array_equal(tf.asarray(), three)

    big = np.zeros((10, 10), np.int32)
    big[0, 0] = 300
    assert read_image(write_labels(tmp_path / "big.tif", big)).dtype == np.uint16
    with pytest.raises(ValueError, match="0..65535"):
        write_labels(tmp_path / "neg.tif", -big)
    with pytest.raises(ValueError, match=".tif"):
        write_labels(tmp_path / "lab.png", big)

    # a failing write leaves the previous file intact and no temp file behind
    good = tmp_path / "keep.tif"
    write_labels(good, np.ones((9, 9), np.uint8))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", boom)
    with pytest.raises(OSError, match="disk full"):
        write_labels(good, np.zeros((9, 9), np.uint8))
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(good), np.ones((9, 9), np.uint8))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------- datasets


def test_image_mask_pairs(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("a", "b", "c"):
        iio.imwrite(
            tmp_path / "images" / f"{stem}.png", RNG.integers(0, 255, (10, 11, 3), dtype=np.uint8)
        )
    for stem in ("a", "b", "z"):
        m = np.zeros((10, 11), np.uint8)
        m[3:6, 3:6] = 255
        iio.imwrite(tmp_path / "masks" / f"{stem}.png", np.stack([m] * 3, -1))
    pairs = list_image_mask_pairs(tmp_path)
    assert [p.stem for p in pairs] == ["a", "b"]
    ds = ImageMaskDataset(tmp_path)
    assert len(ds) == 2
    image, mask = ds[0]
    assert image.shape == (10, 11, 3) and mask.shape == (10, 11)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert mask.sum() == 9
    with pytest.raises(FileNotFoundError, match="images"):
        list_image_mask_pairs(tmp_path / "images")


def test_binarize_mask_tolerates_jpeg_noise():
    m = np.array([[0, 3, 250, 255], [128, 126, 1, 0]], np.uint8)
    np.testing.assert_array_equal(binarize_mask(m), [[0, 0, 1, 1], [1, 0, 0, 0]])
    np.testing.assert_array_equal(binarize_mask(np.array([[0, 1]])), [[0, 1]])


def test_acdc_folds():
    seen = []
    for k in range(1, 6):
        train, test = acdc_fold_patients(k)
        assert test == list(range(20 * (k - 1) + 1, 20 * k + 1))
        assert len(train) == 80 and not set(train) & set(test)
        seen += test
    assert sorted(seen) == list(range(1, 101))
    with pytest.raises(ValueError, match="1..5"):
        acdc_fold_patients(0)


def test_acdc_split_files(tmp_path):
    vol = tmp_path / "volumes"
    vol.mkdir()
    for pid in (1, 20, 21, 45):
        for fr in (1, 12):
            _write_acdc(vol / f"patient{pid:03d}_frame{fr:02d}.h5", z=2)
    (vol / "notes.txt").write_text("x")
    assert len(list_acdc_volumes(tmp_path)) == 8  # finds volumes/ itself
    s1 = acdc_split(tmp_path, 1)
    assert [p.name for p in s1.test] == [
        "patient001_frame01.h5",
        "patient001_frame12.h5",
        "patient020_frame01.h5",
        "patient020_frame12.h5",
    ]
    assert {datasets.acdc_patient_number(p) for p in s1.train} == {21, 45}
    s2 = acdc_split(vol, 2)
    assert {datasets.acdc_patient_number(p) for p in s2.test} == {21}
    slices = list_acdc_slices(s2.test)
    assert [z for _, z in slices] == [0, 1, 0, 1]


def test_find_data_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path))
    assert find_data_dir() == tmp_path.resolve()
    # a missing env dir falls through to the default places (which may or may not exist)
    monkeypatch.setenv("MEDSEG_DATA_DIR", str(tmp_path / "nope"))
    found = find_data_dir()
    assert found is None or found.is_dir()


# ----------------------------------------------------------------------------- normalization


def test_percentile_normalize_clips_outliers_and_is_float32():
    x = np.linspace(0, 1000, 64 * 64, dtype=np.float64).reshape(64, 64)
    x[0, 0] = 1e9  # a hot pixel must not squash the contrast
    y = percentile_normalize(x)
    assert y.dtype == np.float32 and y.min() == 0.0 and y.max() == 1.0
    assert 0.45 < y[32, 32] < 0.55
    u16 = (np.arange(400, dtype=np.uint16) * 150).reshape(20, 20)
    z = percentile_normalize(u16, 0, 100)
    assert z[0, 0] == 0 and z[-1, -1] == 1
    assert np.all(percentile_normalize(np.full((9, 9), 7, np.int16)) == 0)


def test_nonfinite_values_are_replaced_with_a_warning():
    x = np.arange(100, dtype=np.float32).reshape(10, 10)
    x[0, 0], x[0, 1], x[0, 2] = np.nan, np.inf, -np.inf
    original = x.copy()
    res = normalize_image(x, lower=0, upper=100)
    assert np.isfinite(res.data).all()
    assert res.data[0, 0, 0, 0] == 0.0 and res.data[0, 0, 0, 1] == 1.0
    assert res.data[0, 0, 0, 2] == 0.0
    assert len(res.warnings) == 1 and "NaN" in res.warnings[0] and "+Inf" in res.warnings[0]
    np.testing.assert_array_equal(x, original)  # input untouched
    allnan = normalize_image(np.full((9, 9), np.nan))
    assert (allnan.data == 0).all() and "no finite" in allnan.warnings[0]


def test_rgb_scaling():
    u8 = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_allclose(scale_rgb(u8), [[[0, 128 / 255, 1]]])
    u16 = np.array([[[0, 1000, 4000]]], np.uint16)  # 12-bit data in uint16
    np.testing.assert_allclose(scale_rgb(u16), [[[0, 0.25, 1]]])
    f = np.array([[[0.2, 0.4, 0.6]]], np.float32)
    np.testing.assert_allclose(scale_rgb(f), f)


def test_layouts():
    assert infer_kind(np.zeros((9, 9))) == "gray"
    assert infer_kind(np.zeros((9, 9, 3))) == "rgb"
    assert infer_kind(np.zeros((9, 9, 4))) == "rgba"
    assert infer_kind(np.zeros((5, 9, 9))) == "stack"
    with pytest.raises(ValueError, match="4-D"):
        infer_kind(np.zeros((2, 3, 9, 9)))
    rgb = RNG.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    assert to_channels_first(rgb).shape == (3, 10, 12)
    np.testing.assert_array_equal(to_channels_first(rgb)[2], rgb[..., 2])
    rgba = np.concatenate([rgb, np.full((10, 12, 1), 7, np.uint8)], -1)
    np.testing.assert_array_equal(to_channels_first(rgba), to_channels_first(rgb))
    assert to_channels_first(np.zeros((10, 12))).shape == (1, 10, 12)
    assert to_channels_first(np.zeros((4, 10, 12))).shape == (4, 1, 10, 12)

    n = normalize_image(rgba)
    assert n.data.shape == (1, 3, 10, 12) and n.kind == "rgba" and n.spatial_shape == (10, 12)
    assert any("alpha" in w for w in n.warnings)
    s = normalize_image(RNG.random((4, 10, 12)))
    assert s.data.shape == (4, 1, 10, 12) and s.data.dtype == np.float32
    assert restore_layout(np.zeros((4, 10, 12)), "stack").shape == (4, 10, 12)
    assert restore_layout(np.zeros((1, 10, 12)), "rgb").shape == (10, 12)


# ----------------------------------------------------------------------------- validation


def _scribbled(shape=(16, 16), unlabelled=0):
    s = np.full(shape, unlabelled, np.uint8)
    s[..., 2, 2:6] = 1
    s[..., 10, 4:9] = 2
    return s


def test_validate_ok_and_inputs_untouched():
    img = RNG.random((3, 16, 16))
    scr = _scribbled((3, 16, 16))
    scr[1] = 0
    img0, scr0 = img.copy(), scr.copy()
    summ = validate_inputs(img, scr, unlabelled=0, num_classes=4)
    assert summ.kind == "stack" and summ.num_slices == 3
    assert summ.class_values == (1, 2) and summ.counts == {1: 8, 2: 10}
    assert summ.slices_with_scribbles == [0, 2]
    assert any("[3]" in w for w in summ.warnings)
    np.testing.assert_array_equal(img, img0)
    np.testing.assert_array_equal(scr, scr0)
    assert img.flags.writeable and scr.flags.writeable

    acdc_like = _scribbled(unlabelled=4)  # 4 unlabelled, 0 a class (a stroke of it)
    acdc_like[5, 3:8] = 0
    rgb = validate_inputs(np.zeros((16, 16, 3), np.uint8), acdc_like, unlabelled=4)
    assert rgb.kind == "rgb" and rgb.class_values == (0, 1, 2)
    # the same values with no unlabelled pixel left is a dense label map, not scribbles
    with pytest.raises(InputError, match="dense label map"):
        validate_inputs(np.zeros((16, 16, 3), np.uint8), acdc_like % 4, unlabelled=4)


@pytest.mark.parametrize(
    ("image", "scribbles", "message"),
    [
        (np.zeros((16, 16)), np.zeros((16, 16), np.uint8), "no labelled pixels — draw at least"),
        (np.zeros((16, 16)), np.where(_scribbled() > 0, 1, 0), "one class only \\(class 1\\)"),
        (np.zeros((16, 16)), np.zeros((16, 17), np.uint8), r"\(16, 17\) vs image \(16, 16\)"),
        (np.zeros((16, 16, 3)), np.zeros((16, 16, 3), np.uint8), "colour axis"),
        (np.zeros((2, 3, 16, 16)), np.zeros((2, 3, 16, 16), np.uint8), "4-D"),
        (np.zeros((5, 7)), np.zeros((5, 7), np.uint8), "too small: 5×7"),
        (np.zeros((16, 16)), _scribbled().astype(float) + 0.5, "not whole numbers"),
        (np.zeros((0, 16)), np.zeros((0, 16), np.uint8), "empty"),
        (np.full((16, 16), np.nan), _scribbled(), "no finite value"),
        (None, _scribbled(), "no image"),
        (np.zeros((16, 16)), None, "no scribbles"),
    ],
)
def test_validate_errors(image, scribbles, message):
    with pytest.raises(InputError, match=message):
        validate_inputs(image, scribbles)


def test_validate_class_range():
    with pytest.raises(InputError, match="outside the 2 classes"):
        validate_inputs(np.zeros((16, 16)), _scribbled(), num_classes=2)
    assert issubclass(InputError, ValueError)


# ----------------------------------------------------------------------------- real data


@pytest.mark.data
def test_real_data_acdc_and_kvasir():
    root = find_data_dir()
    if root is None or not (root / "acdc").is_dir() or not (root / "kvasir_seg").is_dir():
        pytest.skip(
            "real data not found: set MEDSEG_DATA_DIR or provide ../shared/data "
            "with acdc/ and kvasir_seg/"
        )
    split = acdc_split(root / "acdc", fold=1)
    assert len(split.test) == 40 and len(split.train) == 160
    v = read_acdc_volume(split.test[0])
    assert v.image.ndim == 3 and v.image.dtype == np.float32
    assert 0.0 <= v.image.min() and v.image.max() <= 1.0
    assert set(np.unique(v.label)) <= {0, 1, 2, 3}
    assert set(np.unique(v.scribble)) <= {0, 1, 2, 3, 4} and (v.scribble != 4).any()
    summ = validate_inputs(v.image, v.scribble, unlabelled=readers.ACDC_UNLABELLED, num_classes=4)
    assert summ.class_values == (0, 1, 2, 3)

    ds = ImageMaskDataset(root / "kvasir_seg")
    image, mask = ds[0]
    assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8
    assert mask.shape == image.shape[:2] and set(np.unique(mask)) == {0, 1}
    n = normalize_image(image)
    assert n.data.shape == (1, 3, *image.shape[:2]) and 0 <= n.data.min() <= n.data.max() <= 1
