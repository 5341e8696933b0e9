"""The classical answer: a pixel classifier on the strokes beside the walker."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.training import TrainConfig
from napari_medseg.training.floor import floor_walker
from napari_medseg.training.holdout import split_strokes
from napari_medseg.training.stroke_classifier import (
    METHODS,
    OUTLINE_SUPPORT,
    SCALES,
    UNION,
    WALKER,
    area_ratio,
    choose_for_image,
    choose_method,
    classical_probabilities,
    classifier_probabilities,
    combine,
    grown_walker,
    outline_distance,
    pixel_features,
)
from napari_medseg.workflow import Task, Workflow


def stripes(size: int = 64, width: int = 4, seed: int = 0):
    """(1, 1, H, W) image of vertical stripes, dark (class 0) and bright (class 1), and
    strokes on two stripes of each class: a class defined by what a pixel looks like, not by
    where it lies — the walker's blind side."""
    rng = np.random.default_rng(seed)
    cols = (np.arange(size) // width) % 2
    truth = np.broadcast_to(cols, (size, size)).astype(np.int64)
    image = np.where(truth == 1, 0.8, 0.2) + rng.normal(0, 0.03, (size, size))
    seeds = np.full((size, size), -1, dtype=np.int64)
    for stripe in [p for p in (1, 5, 10, 14) if p < size // width]:  # dark even, bright odd
        x = stripe * width + width // 2
        seeds[8:48, x] = stripe % 2
    return image[None, None].astype(np.float32), seeds[None], truth[None]


def accuracy(prob: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(prob.argmax(axis=1) == truth))


def test_features_per_channel_and_scale():
    img = np.random.default_rng(0).random((3, 20, 24)).astype(np.float32)
    f = pixel_features(img)
    assert f.shape == (3 * (1 + 3 * len(SCALES)), 20, 24)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f[0], img[0])  # the raw intensity comes first


def test_classifier_needs_two_classes_and_gives_probabilities():
    image, seeds, truth = stripes()
    one = np.where(seeds == 1, -1, seeds)
    assert classifier_probabilities(image, one, 2) is None
    prob = classifier_probabilities(image, seeds, 3)  # class 2 has no stroke
    assert prob.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)
    assert prob[:, 2].max() == 0.0
    assert accuracy(prob[:, :2], truth) > 0.95


def test_stripes_defeat_the_walker_not_the_classical_answer():
    image, seeds, truth = stripes()
    walker = floor_walker(image, seeds, 2, 2000.0)
    clf = classifier_probabilities(image, seeds, 2)
    product = combine(METHODS[1], image, seeds, walker, clf, 2, 2000.0)
    assert accuracy(walker, truth) < 0.8  # unstroked stripes go to the nearest stroke
    assert accuracy(product, truth) > accuracy(walker, truth) + 0.1
    for method in METHODS:
        prob = combine(method, image, seeds, walker, clf, 2, 2000.0)
        np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-4)
        # strokes keep their class
        assert (prob.argmax(axis=1)[seeds >= 0] == seeds[seeds >= 0]).all()


def test_choice_picks_a_classifier_method_where_it_wins_on_held_out_strokes():
    image, seeds, truth = stripes()
    training, held = split_strokes(seeds, 0.2, seed=0)
    assert (held >= 0).any()
    choice = choose_method(image, training, held, 2, 2000.0)
    assert choice.method in METHODS
    assert choice.heldout[choice.method] >= choice.heldout[WALKER]
    assert choice.training.shape == (1, 2, 64, 64)
    # the same through the native-size entry point, here already small enough
    assert choose_for_image(image, training, held, 2, 2000.0).method == choice.method


def test_choice_stays_with_the_walker_without_held_out_strokes_or_a_second_class():
    image, seeds, _ = stripes()
    nothing = np.full(seeds.shape, -1, dtype=np.int64)
    assert choose_method(image, seeds, nothing, 2, 2000.0).method == WALKER
    training, held = split_strokes(seeds, 0.2, seed=0)
    one = np.where(training == 1, -1, training)
    assert choose_method(image, one, held, 2, 2000.0).method == WALKER


def test_a_grey_image_keeps_the_product_a_colour_one_takes_ties_in_order():
    image, seeds, _ = stripes()
    training, held = split_strokes(seeds, 0.2, seed=0)
    grey = choose_method(image, training, held, 2, 2000.0)
    assert grey.heldout["walker on classifier"] == grey.heldout["walker × classifier"]  # a tie
    assert grey.method == "walker × classifier"
    rgb = np.repeat(image, 3, axis=1)
    assert choose_method(rgb, training, held, 2, 2000.0).method == "walker on classifier"


def _spoiled(monkeypatch, method: str, held: np.ndarray, share: float, classes=(0, 1)):
    """``combine`` as it is, but ``method`` mislabels ``share`` of the held-out pixels of
    each of ``classes`` (at least one; the rest of its answer unchanged)."""
    from napari_medseg.training import stroke_classifier as sc

    real_combine = sc.combine

    def spoiled(m, *args, **kwargs):
        out = real_combine(m, *args, **kwargs)
        if m != method:
            return out
        out = out.copy()
        for c in classes:
            z, y, x = np.nonzero(held == c)
            n = max(1, int(share * len(z)))
            out[z[:n], :, y[:n], x[:n]] = 0.0
            out[z[:n], 1 - c, y[:n], x[:n]] = 1.0
        return out

    monkeypatch.setattr(sc, "combine", spoiled)


def test_held_out_noise_within_the_margin_keeps_a_grey_images_product(monkeypatch):
    from napari_medseg.training.stroke_classifier import GREY_PRODUCT_MARGIN as MARGIN

    image, seeds, _ = stripes()
    training, held = split_strokes(seeds, 0.2, seed=0)
    _spoiled(monkeypatch, "walker × classifier", held, 0.0, classes=(1,))  # one pixel
    choice = choose_method(image, training, held, 2, 2000.0)
    assert choice.heldout["walker × classifier"] < choice.heldout[WALKER]
    assert choice.heldout["walker × classifier"] >= choice.heldout[WALKER] - MARGIN
    assert choice.method == "walker × classifier"


def test_a_grey_images_product_that_misses_held_out_strokes_is_refused(monkeypatch):
    from napari_medseg.training.stroke_classifier import GREY_PRODUCT_MARGIN as MARGIN

    image, seeds, _ = stripes()
    training, held = split_strokes(seeds, 0.2, seed=0)
    _spoiled(monkeypatch, "walker × classifier", held, 0.5)
    choice = choose_method(image, training, held, 2, 2000.0)
    assert choice.heldout["walker × classifier"] < choice.heldout[WALKER] - MARGIN
    # vetoed: the other combination, where it does at least as well as the walker
    assert choice.method == "walker on classifier"
    assert choice.heldout["walker on classifier"] >= choice.heldout[WALKER]
    _spoiled(monkeypatch, "walker on classifier", held, 0.5)  # now both miss (stacked)
    assert choose_method(image, training, held, 2, 2000.0).method == WALKER


def test_a_flooding_classifier_is_refused_by_the_area_check(monkeypatch):
    """Kvasir's failure: a combination that floods a frame with the polyp class while every
    stroke, held out or not, stays right — the held-out strokes tie, the area must refuse."""
    from napari_medseg.training import stroke_classifier as sc

    rng = np.random.default_rng(1)
    image = np.full((1, 1, 64, 64), 0.2, np.float32)
    image[..., 26:38, 26:38] = 0.8
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    seeds = np.full((1, 64, 64), -1, dtype=np.int64)
    for x in (6, 20, 44, 58):
        seeds[0, 4:60, x] = 0
    seeds[0, 32, 27:37] = 1
    flood = np.zeros((1, 2, 64, 64), np.float32)
    flood[:, 1] = 1.0
    for c in (0, 1):  # right on every stroke pixel, held-out ones included
        flood[:, :, seeds[0] == c] = 0.0
        flood[:, c, seeds[0] == c] = 1.0
    real_combine = sc.combine

    def flooding(method, *args, **kwargs):
        out = real_combine(method, *args, **kwargs)
        return flood.copy() if method == "walker × classifier" else out

    monkeypatch.setattr(sc, "combine", flooding)
    training, held = split_strokes(seeds, 0.3, seed=0)
    choice = choose_method(image, training, held, 2, 2000.0)
    assert choice.heldout["walker × classifier"] == choice.heldout[WALKER] == 1.0
    assert choice.area["walker × classifier"] > 8
    assert choice.method != "walker × classifier"
    walker = floor_walker(image, training, 2, 2000.0)
    assert area_ratio(walker, walker, 0.8) < 1.5  # the yardstick itself passes


def test_combine_leaves_slices_without_a_boundary_to_the_walker():
    image, seeds, _ = stripes()
    vol = np.concatenate([image, image, image])  # (3, 1, H, W)
    sd = np.concatenate([seeds, np.where(seeds == 1, -1, seeds), np.full_like(seeds, -1)])
    walker = floor_walker(vol, sd, 2, 2000.0)
    clf = classifier_probabilities(vol, sd, 2)
    for method in METHODS:
        prob = combine(method, vol, sd, walker, clf, 2, 2000.0)
        np.testing.assert_array_equal(prob[1:], walker[1:])  # one class; no stroke
        assert not np.array_equal(prob[0], walker[0])


def test_classical_probabilities_come_back_at_native_size():
    image, seeds, _ = stripes(size=96, width=8)
    prob = classical_probabilities(METHODS[1], image, seeds, 2, 2000.0, max_side=48)
    assert prob.shape == (1, 2, 96, 96)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-4)
    plain = classical_probabilities(WALKER, image, seeds, 2, 2000.0, max_side=48)
    np.testing.assert_allclose(plain, floor_walker(image, seeds, 2, 2000.0, max_side=48))


def train_stripes(classifier: bool, steps: int = 1):
    image, seeds, truth = stripes()
    wf = Workflow(Task(unlabelled=0))
    scribbles = (seeds[0] + 1).astype(np.uint8)  # user values: 0 unlabelled, 1 and 2
    cfg = TrainConfig(iterations=steps, preset="lite", device="cpu", classifier=classifier, seed=0)
    wf.prepare([(image[0, 0], scribbles)], cfg)
    updates = list(wf.train())
    return wf, updates, truth[0] + 1


@pytest.mark.parametrize("steps", [1, 3])
def test_the_floor_is_the_classical_answer_at_1_and_3_steps(steps):
    """Networks that have made a step or three earn no share: the answer is the floor, and
    the floor is the classical answer chosen on the held-out strokes — or the walker, off."""
    wf, updates, truth = train_stripes(True, steps)
    trainer = wf.trainer
    choice = trainer.classical_choice()
    assert choice is not None and choice.method in (WALKER, *METHODS)
    final = updates[-1].segmentation
    assert final.report.network_share == 0.0
    assert final.report.classical == choice.method
    native, seeds = trainer._native_images[0], trainer._native_seeds[0]
    expected = classical_probabilities(choice.method, native, seeds, 2, 2000.0)
    np.testing.assert_array_equal(final.ensemble, expected.argmax(axis=1)[0] + 1)
    if choice.method != WALKER:
        assert "classical answer" in final.report.summary()

    off, off_updates, _ = train_stripes(False, steps)
    assert off.trainer.classical_choice() is None
    plain = off_updates[-1].segmentation
    assert plain.report.classical == WALKER
    assert plain.report.network_share == 0.0
    walker = floor_walker(native, seeds, 2, 2000.0)
    np.testing.assert_array_equal(plain.ensemble, walker.argmax(axis=1)[0] + 1)


def test_the_teacher_follows_the_chosen_method(monkeypatch):
    """The networks learn from the chosen classical answer on the training strokes."""
    from napari_medseg.training import trainer as trainer_module

    real = trainer_module.choose_for_image

    def marked(image, training, held, k, beta, seed=0):
        choice = real(image, training, held, k, beta, seed)
        choice.method = METHODS[1]
        # a recognisable answer: class 1 in the left half, class 0 in the right
        prob = np.zeros((image.shape[0], k) + image.shape[-2:], np.float32)
        half = image.shape[-1] // 2
        prob[:, 1, :, :half] = 0.99
        prob[:, 0, :, :half] = 0.01
        prob[:, 0, :, half:] = 0.99
        prob[:, 1, :, half:] = 0.01
        choice.training = prob
        return choice

    monkeypatch.setattr(trainer_module, "choose_for_image", marked)
    wf, _, _ = train_stripes(True, 1)
    trainer = wf.trainer
    teacher = trainer._random_walker()[0][0]
    strokes = trainer._seeds[0][0] >= 0
    expected = np.where(np.arange(64)[None, :] < 32, 1, 0) * np.ones((64, 1), int)
    free = ~strokes
    np.testing.assert_array_equal(teacher[free], expected[free])
    np.testing.assert_array_equal(teacher[strokes], trainer._seeds[0][0][strokes])
    held = trainer._heldout[0][0] >= 0
    assert held.any() and not (teacher[held] < 0).any()  # taught like any unstroked pixel


def test_the_first_preview_stays_the_plain_walker():
    wf, updates, _ = train_stripes(True, 1)
    first = next(u for u in updates if u.segmentation is not None)
    assert first.iteration == 0
    assert first.segmentation.report.network_share == 0.0
    walker = floor_walker(
        wf.trainer._native_images[0], wf.trainer._native_seeds[0], 2, 2000.0
    ).argmax(axis=1)
    np.testing.assert_array_equal(first.segmentation.ensemble, walker[0] + 1)


def test_grown_walker_never_shrinks_the_walkers_structures():
    rng = np.random.default_rng(3)
    walker = rng.dirichlet((1.0, 1.0, 1.0), size=(2, 16, 16)).transpose(0, 3, 1, 2)
    other = rng.dirichlet((1.0, 1.0, 1.0), size=(2, 16, 16)).transpose(0, 3, 1, 2)
    grown = grown_walker(walker.astype(np.float32), other.astype(np.float32))
    np.testing.assert_allclose(grown.sum(axis=1), 1.0, atol=1e-5)
    w2, o2 = (p[:, :2] / p[:, :2].sum(axis=1, keepdims=True) for p in (walker, other))
    two = grown_walker(w2, o2)
    wl, ol = w2.argmax(axis=1), o2.argmax(axis=1)
    # two classes: its structure is exactly the union of both answers' structures
    np.testing.assert_array_equal(two.argmax(axis=1) == 1, (wl == 1) | (ol == 1))


def _ring(size: int = 64):
    """(1, 3, H, W) colour image of a bright disc on a dark field, a stroke inside the disc
    and a background stroke around it at ``gap`` pixels from its edge."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    image = np.where(r < 12, 0.8, 0.2)[None, None].repeat(3, axis=1).astype(np.float32)
    image += np.random.default_rng(0).normal(0, 0.02, image.shape).astype(np.float32)

    def strokes(gap: float) -> np.ndarray:
        seeds = np.full((1, size, size), -1, dtype=np.int64)
        seeds[0][np.abs(r - (12 + gap)) < 1.0] = 0
        seeds[0][(np.abs(yy - size / 2) < 1) & (np.abs(xx - size / 2) < 6)] = 1
        return seeds

    return image, strokes


def test_outline_distance_measures_how_far_the_walker_outline_is_from_background_strokes():
    image, strokes = _ring()
    near, far = strokes(2.0), strokes(16.0)
    d_near = outline_distance(floor_walker(image, near, 2, 2000.0), near)
    d_far = outline_distance(floor_walker(image, far, 2, 2000.0), far)
    assert d_near < OUTLINE_SUPPORT <= d_far
    assert d_near * 64 == pytest.approx(2.0, abs=1.5)  # the stroke's gap, in pixels
    only_structure = np.where(near == 0, -1, near)
    assert outline_distance(floor_walker(image, near, 2, 2000.0), only_structure) == np.inf


def test_a_colour_outline_drawn_by_the_strokes_takes_the_union_only(monkeypatch):
    """Kvasir's failure: a classifier-guided walker that shrinks a polyp the strokes outlined.
    Near the background strokes the union is the only candidate, so the answer keeps every
    pixel of the walker's structure — a shrinking ``walker on classifier`` cannot win."""
    from napari_medseg.training import stroke_classifier as sc

    image, strokes = _ring()
    seeds = strokes(2.0)
    training, held = split_strokes(seeds, 0.3, seed=0)
    real_combine = sc.combine

    def shrinking(method, img, sd, walker, *args, **kwargs):
        out = real_combine(method, img, sd, walker, *args, **kwargs)
        if method != "walker on classifier":
            return out
        out = out.copy()  # half the structure handed to the background, strokes kept
        cut = (walker.argmax(axis=1) == 1) & (np.arange(64)[None, None, :] < 30)
        cut &= sd < 0
        out[:, 0][cut], out[:, 1][cut] = 1.0, 0.0
        return out

    monkeypatch.setattr(sc, "combine", shrinking)
    choice = choose_method(image, training, held, 2, 2000.0)
    assert choice.outline is not None and choice.outline < OUTLINE_SUPPORT
    assert choice.method in (UNION, WALKER)
    walker = floor_walker(image, training, 2, 2000.0)
    kept = choice.training.argmax(axis=1)[walker.argmax(axis=1) == 1]
    assert (kept == 1).all()  # nothing of the walker's structure lost
    # far from the background strokes the other combinations compete as before
    far = strokes(16.0)
    training, held = split_strokes(far, 0.3, seed=0)
    choice = choose_method(image, training, held, 2, 2000.0)
    assert choice.outline >= OUTLINE_SUPPORT
    assert choice.method != UNION
