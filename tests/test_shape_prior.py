"""Anatomical shape priors: each rule on a synthetic slice, parsing, and scribble safety."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.shape_prior import (
    ShapePrior,
    apply_shape_prior,
    cardiac_prior_from_names,
    parse_shape_prior,
)

BG, RV, MYO, LV = 0, 1, 2, 3


def _radius(n: int = 64):
    yy, xx = np.mgrid[:n, :n]
    return np.hypot(yy - n / 2, xx - n / 2)


def _no_seeds(shape):
    return np.full(shape, -1, dtype=np.int64)


def test_convex_fill_takes_in_a_notch_of_the_cavity():
    r = _radius()
    lab = np.zeros((1, 64, 64), np.uint8)
    lab[0][r < 20] = MYO
    lab[0][r < 12] = LV
    yy, xx = np.mgrid[:64, :64]
    notch = (r < 12) & (yy > 36) & (abs(xx - 32) < 4)  # a "papillary muscle" cut into the LV
    lab[0][notch] = MYO
    out = apply_shape_prior(lab, None, ShapePrior(convex=(LV,)))
    assert (out[0][notch] == LV).all()
    assert out.dtype == lab.dtype and (lab[0][notch] == MYO).all()  # input untouched
    # elsewhere at most the cavity's rim moves (a digital disc is not exactly convex)
    assert (r[(out[0] != lab[0]) & ~notch] < 13).all()


def test_wall_is_limited_to_twice_its_strokes_distance_from_the_cavity():
    r = _radius()
    lab = np.zeros((1, 64, 64), np.uint8)
    lab[0][r < 26] = MYO  # an over-thick wall: 16 px
    lab[0][r < 10] = LV
    seeds = _no_seeds(lab.shape)
    ring = (r > 12.5) & (r < 13.5)  # strokes ~3 px from the cavity: wall ~6 px thick
    seeds[0][ring] = MYO
    out = apply_shape_prior(lab, seeds, ShapePrior(walls=((MYO, LV),)))
    wall_r = r[out[0] == MYO]
    assert wall_r.max() < 17.5  # cavity edge ~10 + at most 2 × ~3.2 + a pixel of rounding
    assert wall_r.max() > 14  # and not erased
    assert (out[0][r >= 18] == BG).all()  # the removed wall went to the nearest other class
    assert (out[0][r < 10] == LV).all()


def test_wall_rule_needs_strokes_and_a_cavity():
    r = _radius()
    lab = np.zeros((1, 64, 64), np.uint8)
    lab[0][r < 26] = MYO
    lab[0][r < 10] = LV
    prior = ShapePrior(walls=((MYO, LV),))
    assert np.array_equal(apply_shape_prior(lab, _no_seeds(lab.shape), prior), lab)
    no_cavity = np.where(lab == LV, MYO, lab).astype(np.uint8)
    seeds = _no_seeds(lab.shape)
    seeds[0][(r > 12.5) & (r < 13.5)] = MYO
    assert np.array_equal(apply_shape_prior(no_cavity, seeds, prior), no_cavity)


def test_exhaustive_slices_drop_unscribbled_classes_on_scribbled_slices_only():
    lab = np.zeros((3, 32, 32), np.uint8)
    lab[:, 8:16, 8:16] = LV
    lab[:, 20:28, 20:28] = RV
    seeds = _no_seeds(lab.shape)
    seeds[0, 10, 10] = LV
    seeds[0, 0, 0] = BG
    seeds[0, 22, 22] = RV  # slice 0: all three drawn
    seeds[1, 10, 10] = LV
    seeds[1, 0, 0] = BG  # slice 1: no RV stroke, so no RV
    # slice 2: no strokes at all, left alone
    out = apply_shape_prior(lab, seeds, ShapePrior(exhaustive_slices=True))
    assert np.array_equal(out[0], lab[0])
    assert not (out[1] == RV).any() and (out[1][8:16, 8:16] == LV).all()
    assert np.array_equal(out[2], lab[2])


def test_rules_never_change_scribbled_pixels():
    r = _radius()
    lab = np.zeros((1, 64, 64), np.uint8)
    lab[0][r < 26] = MYO
    lab[0][r < 10] = LV
    seeds = _no_seeds(lab.shape)
    seeds[0][(r > 12.5) & (r < 13.5)] = MYO
    seeds[0, 32, 55:57] = MYO  # a short stroke out in the part the rule would remove
    seeds[0, 32, 32] = LV
    seeds[0, 0, 0] = BG
    prior = ShapePrior(exhaustive_slices=True, convex=(LV,), walls=((MYO, LV),))
    out = apply_shape_prior(lab, seeds, prior)
    drawn = seeds >= 0
    assert np.array_equal(out[drawn], lab[drawn])
    assert (out[0][(r > 20) & (r < 22)] == BG).any()  # the rule still acted elsewhere


def test_parse_named_and_spelled_out_priors_in_label_values():
    acdc = parse_shape_prior("cardiac", [0, 1, 2, 3])
    assert acdc == ShapePrior(exhaustive_slices=True, convex=(3,), walls=((2, 3),))
    shifted = parse_shape_prior("slices, convex=4, wall=3:4", [1, 2, 3, 4])
    assert shifted == ShapePrior(exhaustive_slices=True, convex=(3,), walls=((2, 3),))
    assert not parse_shape_prior("none", [0, 1]).active
    assert not parse_shape_prior(None, [0, 1]).active
    assert ShapePrior.from_dict(acdc.to_dict()) == acdc


@pytest.mark.parametrize(
    "spec, message",
    [("convex=9", "class value 9"), ("round", "cannot read"), ("wall=2", "cannot read")],
)
def test_parse_errors_say_what_to_write(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_shape_prior(spec, [0, 1, 2, 3])


def test_cardiac_prior_from_class_names():
    prior = cardiac_prior_from_names(["background", "RV", "Myo", "LV"])
    assert prior == ShapePrior(exhaustive_slices=True, convex=(3,), walls=((2, 3),))
    with pytest.raises(ValueError, match="named 'LV'"):
        cardiac_prior_from_names(["background", "tumour"])


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        apply_shape_prior(
            np.zeros((1, 8, 8), np.uint8), _no_seeds((1, 8, 9)), ShapePrior(convex=(1,))
        )


def test_convex_class_keeps_the_component_with_its_strokes_and_drops_islands():
    lab = np.zeros((1, 64, 64), np.uint8)
    lab[0, 10:20, 10:20] = LV  # where the strokes are
    lab[0, 40:60, 40:60] = LV  # a larger island elsewhere (a noisy early prediction)
    seeds = _no_seeds(lab.shape)
    seeds[0, 14:16, 12:18] = LV
    out = apply_shape_prior(lab, seeds, ShapePrior(convex=(LV,)))
    assert (out[0, 10:20, 10:20] == LV).all()
    assert not (out[0, 40:60, 40:60] == LV).any()  # not painted over by one giant hull
    assert (out[0] == LV).sum() == 100
    # without strokes the largest component is the cavity
    out = apply_shape_prior(lab, None, ShapePrior(convex=(LV,)))
    assert (out[0, 40:60, 40:60] == LV).all() and not (out[0, 10:20, 10:20] == LV).any()
