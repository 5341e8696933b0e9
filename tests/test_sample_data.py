"""The bundled samples load, are consistent, and their scribbles look like a person's."""

from __future__ import annotations

import configparser
import fnmatch
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_medseg.sample_data import (
    SAMPLE_NAMES,
    as_layer_data,
    load_mri_sample,
    load_rgb_sample,
    load_sample,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "napari_medseg" / "_sample_files"


@pytest.fixture(scope="module", params=SAMPLE_NAMES)
def sample(request):
    return load_sample(request.param)


def _slices(a: np.ndarray, rgb: bool) -> list[np.ndarray]:
    """2-D planes of a label array: each slice of the MRI stack, the RGB image as one."""
    return [a] if rgb else list(a)


def test_named_loaders_match_generic():
    mri, rgb = load_mri_sample(), load_rgb_sample()
    assert mri["name"] == "mri" and rgb["name"] == "rgb"
    assert mri["class_names"] == ("background", "CSF", "grey matter", "white matter")
    assert rgb["class_names"] == ("background", "lesion")
    assert mri["image"].shape == (5, 192, 160) and not mri["rgb"]
    assert rgb["image"].shape == (256, 256, 3) and rgb["rgb"]
    with pytest.raises(ValueError, match="choose one of"):
        load_sample("ct")


def test_shapes_and_dtypes_consistent(sample):
    img, scr, tru = sample["image"], sample["scribbles"], sample["truth"]
    spatial = img.shape[:-1] if sample["rgb"] else img.shape
    assert scr.shape == spatial and tru.shape == spatial
    assert img.dtype == scr.dtype == tru.dtype == np.uint8
    assert len(sample["spacing"]) == len(spatial)
    assert sample["num_classes"] == len(sample["class_names"])
    if sample["rgb"]:
        assert img.shape[-1] == 3
        # really colour, not three copies of a grey image
        assert np.abs(img[..., 0].astype(int) - img[..., 2]).mean() > 10
    # a real image, not a constant or a blank
    assert img.std() > 20


def test_truth_is_dense_and_has_every_class(sample):
    k = sample["num_classes"]
    for plane in _slices(sample["truth"], sample["rgb"]):
        assert set(np.unique(plane)) == set(range(1, k + 1))


def test_scribbles_valid_sparse_and_cover_every_class(sample):
    k = sample["num_classes"]
    scr = sample["scribbles"]
    assert set(np.unique(scr)) <= set(range(0, k + 1))
    for plane in _slices(scr, sample["rgb"]):
        assert set(np.unique(plane)) == set(range(0, k + 1)), "every class on every slice"
        frac = (plane > 0).mean()
        assert 0.002 < frac < 0.05, f"scribbled fraction {frac:.4f} not sparse-but-present"


def test_scribbles_are_thin_strokes(sample):
    """Strokes at most ~2 px wide: a 3x3 erosion removes (almost) all of them."""
    for plane in _slices(sample["scribbles"], sample["rgb"]):
        for v in np.unique(plane[plane > 0]):
            m = plane == v
            assert ndi.binary_erosion(m, np.ones((3, 3))).sum() <= 0.05 * m.sum()
            # a handful of strokes, not a spray of dots
            _, n = ndi.label(m, np.ones((3, 3)))
            assert 1 <= n <= 12


def test_truth_agrees_with_scribbles(sample):
    scr, tru = sample["scribbles"], sample["truth"]
    drawn = scr > 0
    assert (scr[drawn] == tru[drawn]).mean() >= 0.95


def test_loaders_return_fresh_arrays():
    a = load_mri_sample()
    a["scribbles"][:] = 0
    assert load_mri_sample()["scribbles"].any()


def test_layer_data_tuples():
    for name in SAMPLE_NAMES:
        s = load_sample(name)
        layers = as_layer_data(s)
        assert [t[2] for t in layers] == ["image", "labels", "labels"]
        assert layers[0][1]["rgb"] == s["rgb"]
        assert layers[1][0] is s["scribbles"] and layers[2][1]["visible"] is False


def test_layer_data_builds_napari_layers():
    """The tuples are accepted by napari's own layer constructors (no viewer needed)."""
    layers_mod = pytest.importorskip("napari.layers")
    for name in SAMPLE_NAMES:
        s = load_sample(name)
        for data, kwargs, kind in as_layer_data(s):
            layer = layers_mod.Layer.create(data, kwargs, kind)
            assert layer.ndim == len(s["spacing"])


@pytest.mark.skipif(not (REPO / "setup.cfg").exists(), reason="needs a source checkout")
def test_package_data_ships_every_sample_file():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    patterns = cfg["options.package_data"]["napari_medseg"].replace(",", "\n").split()
    files = sorted(
        p.relative_to(REPO / "napari_medseg").as_posix()
        for p in SAMPLE_DIR.iterdir()
        if p.is_file()
    )
    assert any(f.endswith(".tif") for f in files) and "_sample_files/NOTICE.txt" in files
    for f in files:
        assert any(fnmatch.fnmatch(f, pat) for pat in patterns), f"{f} would not be installed"
    total = sum((SAMPLE_DIR / Path(f).name).stat().st_size for f in files)
    assert total < 2 * 1024 * 1024


@pytest.mark.skipif(
    not (REPO / "sample_data" / "make_samples.py").exists(), reason="needs a source checkout"
)
def test_rgb_generator_reproduces_bundled_files():
    """The committed synthetic sample is exactly what the generator makes (no network)."""
    spec = importlib.util.spec_from_file_location(
        "make_samples", REPO / "sample_data" / "make_samples.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    made = mod.make_rgb()
    bundled = load_rgb_sample()
    np.testing.assert_array_equal(made["truth"], bundled["truth"])
    # float filters may differ in the last bit across platforms: allow off-by-one pixels
    diff = np.abs(made["image"].astype(int) - bundled["image"])
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001
    assert (made["scribbles"] == bundled["scribbles"]).mean() > 0.999
