"""Scribble simulator: every present class gets strokes, strokes stay inside their class."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk as draw_disk
from skimage.measure import label as cc_label

from napari_medseg.data.scribbles import simulate_scribbles


def _heart_like(h: int = 64, w: int = 64) -> np.ndarray:
    """Background 0, a ring (2) around a disk (3), and a crescent-ish blob (1)."""
    m = np.zeros((h, w), np.uint8)
    m[draw_disk((32, 36), 16, shape=m.shape)] = 2
    m[draw_disk((32, 36), 10, shape=m.shape)] = 3
    m[18:46, 6:16] = 1
    return m


def _check(mask: np.ndarray, scr: np.ndarray, unlabelled: int, offset: int = 0) -> None:
    for c in np.unique(mask):
        stroke = scr == c + offset
        assert stroke.any(), f"class {c} got no scribble"
        assert mask[stroke].min() == c and mask[stroke].max() == c, f"class {c} leaks"
    labelled = scr != unlabelled
    assert set(np.unique(scr[labelled])) == {int(c) + offset for c in np.unique(mask)}
    assert labelled.mean() < 0.25  # scribbles are sparse


def test_2d_every_class_inside_and_sparse():
    m = _heart_like()
    for seed in range(5):
        scr = simulate_scribbles(m, rng=seed)
        assert scr.dtype == np.uint16 and scr.shape == m.shape
        _check(m, scr, unlabelled=4)


def test_strokes_are_connected_pieces_per_component():
    m = _heart_like()
    scr = simulate_scribbles(m, rng=3, background=None)
    for c in (1, 2, 3):
        n = cc_label(scr == c, connectivity=2).max()
        assert n == 1, f"class {c} has {n} stroke pieces for one component"


def test_two_components_of_one_class_both_scribbled():
    m = np.zeros((40, 60), np.uint8)
    m[5:20, 5:20] = 1
    m[22:37, 35:55] = 1
    scr = simulate_scribbles(m, rng=0)
    comps = cc_label(m == 1)
    for k in (1, 2):
        assert ((scr == 1) & (comps == k)).any()


def test_background_is_a_ring_near_the_foreground():
    m = np.zeros((64, 64), np.uint8)
    m[24:40, 24:40] = 1
    scr = simulate_scribbles(m, rng=1, ring=(3, 10), fraction=1.0)
    bg = np.argwhere(scr == 0)
    assert len(bg) > 20
    # distance (chessboard) from the square: between 3 and 10 px
    dy = np.maximum(0, np.maximum(24 - bg[:, 0], bg[:, 0] - 39))
    dx = np.maximum(0, np.maximum(24 - bg[:, 1], bg[:, 1] - 39))
    d = np.maximum(dy, dx)
    assert d.min() >= 2 and d.max() <= 10


def test_seeded_reproducible_and_seed_dependent():
    m = _heart_like()
    a = simulate_scribbles(m, rng=7)
    b = simulate_scribbles(m, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    c = simulate_scribbles(m, rng=8)
    assert not np.array_equal(a, c)


def test_3d_per_slice_and_napari_convention():
    vol = np.stack([_heart_like(), np.zeros((64, 64), np.uint8), _heart_like()[::-1]])
    vol[1, 10:30, 10:30] = 1  # a slice with only classes 0 and 1
    scr = simulate_scribbles(vol, rng=0, offset=1, unlabelled=0, stroke_width=3)
    assert scr.shape == vol.shape
    for z in range(3):
        _check(vol[z], scr[z], unlabelled=0, offset=1)
    assert set(np.unique(scr[1])) == {0, 1, 2}


def test_thin_and_tiny_objects_still_get_strokes():
    m = np.zeros((32, 32), np.uint8)
    m[10, 3:30] = 1  # 1-px line: erosion would remove it entirely
    m[20, 20] = 2  # single pixel
    m[25:27, 5:7] = 3  # 2x2
    scr = simulate_scribbles(m, rng=0, erosion_radius=3, min_component_size=10)
    _check(m, scr, unlabelled=4)


def test_round_object_gets_a_stroke_not_a_dot():
    m = np.zeros((64, 64), np.uint8)
    m[draw_disk((32, 32), 14, shape=m.shape)] = 1
    scr = simulate_scribbles(m, rng=0, fraction=1.0, background=None)
    assert (scr == 1).sum() >= 10  # the medial axis of a disk alone is ~1 px


def test_wider_strokes_cover_more_and_stay_inside():
    m = _heart_like()
    thin = simulate_scribbles(m, rng=2, stroke_width=1)
    wide = simulate_scribbles(m, rng=2, stroke_width=5)
    assert (wide != 4).sum() > (thin != 4).sum()
    _check(m, wide, unlabelled=4)


def test_argument_errors():
    m = _heart_like()
    with pytest.raises(ValueError, match="collides"):
        simulate_scribbles(m, unlabelled=0)
    with pytest.raises(ValueError, match="2-D"):
        simulate_scribbles(np.zeros((2, 2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="fraction"):
        simulate_scribbles(m, fraction=0.0)
    only = simulate_scribbles(m, classes=[3], rng=0)
    assert set(np.unique(only)) == {3, 4}


def test_ring_dilation_by_distance_is_the_disk_dilation():
    """The background ring is grown by a distance transform inside the mask's box (linear in
    the image size); it must select exactly the pixels the disk dilation did, so strokes of
    a seeded simulation stay the same — at the image border and for scattered pixels too."""
    from scipy import ndimage as ndi
    from skimage.morphology import disk

    from napari_medseg.data.scribbles import _dilate_disk

    rng = np.random.default_rng(0)
    masks = [rng.random((40, 57)) > 0.97 for _ in range(20)]
    blob = np.zeros((60, 70), bool)
    blob[0:25, 40:70] = True  # touching two borders
    masks += [blob, np.zeros((9, 9), bool)]
    for m in masks:
        for r in (1, 2, 3, 7, 10):
            np.testing.assert_array_equal(
                _dilate_disk(m, r), ndi.binary_dilation(m, structure=disk(r))
            )
