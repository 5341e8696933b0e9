"""A new stroke changes the walker (the floor and the teacher) near it, not across the image."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.training.stroke_history import (
    REACH_FRACTION,
    WalkerHistory,
    added_strokes,
    stroke_reach,
)

#: One UNet, one step, on the CPU at native size: what these tests train.
ONE_STEP = dict(models=("unet",), iterations=1, device="cpu", max_side=0)


def test_added_strokes_are_the_new_pixels_and_an_erased_or_relabelled_stroke_resets():
    before = np.full((8, 8), -1)
    before[1, 1:4] = 0
    after = before.copy()
    after[5, 2:6] = 1
    added = added_strokes(before, after)
    assert added is not None and added.sum() == 4 and added[5, 2:6].all()
    assert not added_strokes(before, before).any()  # nothing new: an empty mask
    erased = after.copy()
    erased[1, 1] = -1
    assert added_strokes(after, erased) is None
    relabelled = after.copy()
    relabelled[1, 1] = 1
    assert added_strokes(after, relabelled) is None
    assert added_strokes(before, after[:4]) is None  # another slice size


def test_a_stroke_reaches_its_own_extent_and_a_short_one_a_twentieth_of_the_side():
    n = 200
    dot = np.zeros((n, n), bool)
    dot[100, 100] = True
    near = stroke_reach(dot)
    radius = REACH_FRACTION * n  # 10 px
    yy, xx = np.mgrid[:n, :n]
    dist = np.hypot(yy - 100, xx - 100)
    np.testing.assert_array_equal(near, dist <= radius)
    line = np.zeros((n, n), bool)
    line[100, 40:101] = True  # 60 px long: reaches 60 px from any of its pixels
    near = stroke_reach(line)
    assert near[100, 160] and not near[100, 162] and near[40, 100] and not near[38, 100]
    assert not stroke_reach(np.zeros((n, n), bool)).any()


def test_each_stroke_reaches_by_its_own_extent_not_by_the_span_of_all_strokes():
    n = 200
    two = np.zeros((n, n), bool)
    two[10, 10] = True
    two[190, 190] = True  # together they span the image; each is a dot
    near = stroke_reach(two)
    assert near[10, 18] and near[190, 182]
    assert not near[100, 100] and near.mean() < 0.02  # two 10-px discs, not the image


def _walker(k, h, w, value):
    out = np.zeros((k, h, w), np.float32)
    out[value] = 1.0
    return out


def test_a_slice_shows_the_new_walker_near_new_strokes_and_its_previous_one_elsewhere():
    h = w = 100
    history = WalkerHistory(capacity=2)
    s1 = np.full((h, w), -1)
    s1[10, 10:20] = 0
    s1[90, 10:20] = 1
    first = history.show(b"a", s1, _walker(2, h, w, 0))
    np.testing.assert_array_equal(first, _walker(2, h, w, 0))  # nothing before: the walker
    assert history.shown(b"a", s1) is first
    assert history.shown(b"a", s1.copy()[::-1]) is None  # other strokes: not what was shown
    s2 = s1.copy()
    s2[80, 80:85] = 1  # a short stroke: reaches 5 px
    shown = history.show(b"a", s2, _walker(2, h, w, 1), far="keep")
    near = stroke_reach(s2 != s1)
    assert near.any() and (~near).any()
    np.testing.assert_array_equal(shown[:, near], _walker(2, h, w, 1)[:, near])
    np.testing.assert_array_equal(shown[:, ~near], first[:, ~near])
    # a further stroke builds on what was shown, not on the plain walker
    s3 = s2.copy()
    s3[20, 80:85] = 1
    third = history.show(b"a", s3, _walker(2, h, w, 1), far="keep")
    assert (third[1, near] == 1).all() and (third[1, stroke_reach(s3 != s2)] == 1).all()
    assert (third[0, ~(near | stroke_reach(s3 != s2))] == 1).all()
    # blended beyond the reach: where the walkers disagree the slice is unsure
    s3b = s3.copy()
    s3b[50, 10:12] = 0
    blended = history.show(b"a", s3b, _walker(2, h, w, 1), far="blend")
    far = ~(stroke_reach(s3b != s3) | stroke_reach(s3 != s2) | near)
    np.testing.assert_allclose(blended[:, far], 0.5)
    new_near = stroke_reach(s3b != s3)
    np.testing.assert_array_equal(blended[:, new_near], _walker(2, h, w, 1)[:, new_near])
    s4 = s3b.copy()
    # erasing a stroke starts the slice afresh
    s4[10, 10] = -1
    np.testing.assert_array_equal(history.show(b"a", s4, _walker(2, h, w, 1)), _walker(2, h, w, 1))
    # at most `capacity` slices remembered, the least recently used forgotten
    history.show(b"b", s1, first)
    history.show(b"c", s1, first)
    assert len(history) == 2 and history.shown(b"a", s4) is None


def _image_and_strokes(n=64, seed=0):
    """Two bright discs on noise; strokes mark the first disc and the background only."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    one = (yy - 18) ** 2 + (xx - 18) ** 2 < 8**2
    two = (yy - 46) ** 2 + (xx - 46) ** 2 < 8**2
    image = (np.where(one | two, 0.7, 0.3) + rng.normal(0, 0.05, (n, n))).astype(np.float32)
    seeds = np.full((n, n), -1, np.int64)
    seeds[2, 2:62] = 0
    seeds[18, 14:23] = 1
    return image[None, None], seeds[None], two


@pytest.mark.parametrize("far", ["keep", "blend"])
def test_the_trainers_floor_and_teacher_change_only_near_a_new_stroke(far):
    from napari_medseg.training import TrainConfig
    from napari_medseg.training.floor import floor_walker
    from napari_medseg.training.trainer import TriNetTrainer

    image, seeds, two = _image_and_strokes()
    cfg = TrainConfig(**ONE_STEP, holdout_fraction=0.0, stroke_local=True, stroke_far=far)
    tr = TriNetTrainer([image], [seeds], 2, cfg)
    before = tr._floor_walker(image, seeds)
    labels_before, top_before = (a.copy() for a in tr._teacher(0, 0))
    more = seeds.copy()
    more[0, 46, 43:50] = 1  # the missed second disc, one short stroke
    tr.update_scribbles([more])
    list(tr.steps())  # the next step takes the strokes up
    after = tr._floor_walker(image, more)
    plain = floor_walker(image, more, 2, beta=cfg.rw_beta)
    near = stroke_reach(more[0] != seeds[0])
    np.testing.assert_allclose(after[0][:, near], plain[0][:, near])
    labels, top = tr._teacher(0, 0)
    assert (labels[near & two] == 1).all()  # the stroke taught its neighbourhood
    if far == "keep":
        np.testing.assert_allclose(after[0][:, ~near], before[0][:, ~near])
        np.testing.assert_array_equal(labels[~near], labels_before[~near])
        np.testing.assert_allclose(top[~near], top_before[~near])
        return
    blend = (before[0] + plain[0]) / 2
    np.testing.assert_allclose(after[0][:, ~near], blend[:, ~near], rtol=1e-6)
    fresh = TriNetTrainer([image], [more], 2, cfg)  # the plain teacher on all strokes
    plain_labels, plain_top = fresh._teacher(0, 0)
    same = ~near & (plain_labels == labels_before)
    np.testing.assert_allclose(top[same], (plain_top[same] + top_before[same]) / 2, rtol=1e-6)
    contested = ~near & (plain_labels != labels_before)
    assert (top[contested] == 0).all()  # not taught
    # the same strokes again: what the slice showed, not a new plain walker
    np.testing.assert_array_equal(tr._floor_walker(image, more), after)


def test_erasing_a_stroke_gives_the_plain_walker_again():
    from napari_medseg.training import TrainConfig
    from napari_medseg.training.floor import floor_walker
    from napari_medseg.training.trainer import TriNetTrainer

    image, seeds, _ = _image_and_strokes()
    cfg = TrainConfig(**ONE_STEP, stroke_local=True)
    tr = TriNetTrainer([image], [seeds], 2, cfg)
    more = seeds.copy()
    more[0, 46, 43:50] = 1
    tr._floor_walker(image, seeds)
    tr._floor_walker(image, more)
    fewer = more.copy()
    fewer[0, 2, 2:10] = -1  # part of the background stroke erased
    np.testing.assert_allclose(
        tr._floor_walker(image, fewer), floor_walker(image, fewer, 2, beta=cfg.rw_beta)
    )


@pytest.mark.parametrize("resume", [True, False])
def test_a_train_after_new_strokes_keeps_the_floor_away_from_them(resume):
    """Resume (same trainer) and Train again (a new workflow and trainer, as the widget's
    Train on the current model builds) both carry the walker the image showed."""
    from napari_medseg.training import TrainConfig
    from napari_medseg.training.floor import floor_walker
    from napari_medseg.workflow import Task, Workflow

    image, seeds, _ = _image_and_strokes()
    picture = image[0, 0]
    user = np.where(seeds[0] >= 0, seeds[0] + 1, 0).astype(np.uint8)  # 0 unlabelled
    # the walker alone as the classical answer: a combined one is the whole image's, not
    # stroke-local (design.md "The classical answer")
    cfg = dict(ONE_STEP, stroke_local=True, classifier=False)
    wf = Workflow(Task())
    list(wf.train([(picture, user)], TrainConfig(**cfg, preview_every_seconds=None)))
    inp = wf.inputs[0]
    normed, strokes = inp.images[0], inp.seeds[0]  # what the trainer sees
    np.testing.assert_array_equal(strokes, seeds)
    shown = wf.trainer._floor_walker(normed, strokes).copy()
    more_user = user.copy()
    more_user[46, 43:50] = 2
    if resume:
        wf.update_scribbles(more_user)
        list(wf.train())
        trainer = wf.trainer
    else:
        # what the widget's session does
        again = Workflow(Task(), base=wf.checkpoint(), walker_history=wf.walker_history)
        list(again.train([(picture, more_user)], TrainConfig(**cfg)))
        trainer = again.trainer
    more = seeds.copy()
    more[0, 46, 43:50] = 1
    now = trainer._floor_walker(normed, more)
    near = stroke_reach(more[0] != seeds[0])
    plain = floor_walker(normed, more, 2, beta=TrainConfig().rw_beta)
    np.testing.assert_allclose(now[0][:, near], plain[0][:, near])
    np.testing.assert_allclose(now[0][:, ~near], shown[0][:, ~near])  # kept beyond the reach


def test_the_first_boundary_on_a_slice_gives_the_plain_walker():
    """A slice with strokes of one class (or none) has shown no boundary: the walker there is
    uniform or leaning, and a second class's first strokes must not be confined to their
    neighbourhood (a stack's slice drawn on for the first time is walked whole)."""
    h = w = 100
    history = WalkerHistory()
    one = np.full((h, w), -1)
    one[10, 10:90] = 0
    assert history.show(b"a", one, _walker(2, h, w, 0)) is not None
    assert len(history) == 0 and history.shown(b"a", one) is None  # nothing kept
    two = one.copy()
    two[80, 50:53] = 1
    np.testing.assert_array_equal(history.show(b"a", two, _walker(2, h, w, 1)), _walker(2, h, w, 1))
    assert len(history) == 1


def test_stroke_local_off_gives_the_plain_walker_after_new_strokes():
    """Off (the default) the floor and the teacher are the plain walker on all strokes."""
    from napari_medseg.training import TrainConfig
    from napari_medseg.training.floor import floor_walker
    from napari_medseg.training.trainer import TriNetTrainer

    image, seeds, _ = _image_and_strokes()
    more = seeds.copy()
    more[0, 46, 43:50] = 1

    def teachers(local: bool):
        cfg = TrainConfig(**ONE_STEP, stroke_local=local, stroke_far="keep")
        tr = TriNetTrainer([image], [seeds], 2, cfg)
        tr._floor_walker(image, seeds)
        before = tr._teacher(0, 0)[0].copy()
        floor = tr._floor_walker(image, more)
        tr._set_seeds([more])
        return before, tr._teacher(0, 0)[0], floor

    before, plain_labels, plain_floor = teachers(False)
    fresh = TriNetTrainer([image], [more], 2, TrainConfig(models=("unet",), max_side=0))
    np.testing.assert_array_equal(plain_labels, fresh._teacher(0, 0)[0])
    np.testing.assert_allclose(plain_floor, floor_walker(image, more, 2, beta=2000.0))
    assert TrainConfig().stroke_local is False  # opt-in (BENCHMARKS §9, fifteenth round)
    _, local_labels, _ = teachers(True)
    far = ~stroke_reach(more[0] != seeds[0])
    np.testing.assert_array_equal(local_labels[far], before[far])


def test_blend_weighs_the_previous_walker_as_asked():
    h = w = 60
    history = WalkerHistory()
    s1 = np.full((h, w), -1)
    s1[5, 5:10] = 0
    s1[55, 5:10] = 1
    history.show(b"a", s1, _walker(2, h, w, 0))
    s2 = s1.copy()
    s2[30, 50:52] = 1
    shown = history.show(b"a", s2, _walker(2, h, w, 1), far="blend", old_weight=0.6)
    far = ~stroke_reach(s2 != s1)
    np.testing.assert_allclose(shown[0][far], 0.6)  # near ties stay with what was shown
    np.testing.assert_allclose(shown[1][far], 0.4)
    with pytest.raises(Exception, match="stroke_blend_old"):
        from napari_medseg.training import TrainConfig

        TrainConfig(stroke_blend_old=1.5).check()


def test_reach_since_is_none_when_the_slice_starts_afresh():
    from napari_medseg.training.stroke_history import reach_since

    one = np.full((20, 20), -1)
    one[2, 2:8] = 0
    two = one.copy()
    two[15, 2:8] = 1
    assert reach_since(one, two) is None  # no boundary before: the plain walker
    more = two.copy()
    more[10, 10] = 1
    near = reach_since(two, more)
    assert near is not None and near[10, 10] and not near[2, 2]
    erased = two.copy()
    erased[2, 2] = -1
    assert reach_since(two, erased) is None
