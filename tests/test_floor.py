"""The anytime floor's parts: held-out strokes, walker probabilities, the networks' share."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.training.floor import (
    AGREEMENT_RAMP,
    AREA_RATIO,
    HELDOUT_CONTRARY,
    HELDOUT_MARGIN,
    MAX_BASE_SHARE,
    MAX_NETWORK_SHARE,
    FloorReport,
    area_ratio,
    area_trust,
    assess,
    base_share,
    confident_agreement,
    contrary_evidence,
    contrary_trust,
    floor_walker,
    heldout_share,
    network_share,
)
from napari_medseg.training.holdout import heldout_agreement, split_strokes
from napari_medseg.training.pseudo_labels import random_walker_labels, random_walker_probabilities


def _disc_image(n=48):
    yy, xx = np.mgrid[:n, :n]
    disc = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 4) ** 2
    image = np.where(disc, 0.8, 0.2).astype(np.float32)[None, None]  # (1, 1, H, W)
    seeds = np.full((1, n, n), -1, dtype=np.int64)
    seeds[0, 2:4, 4 : n - 4] = 0  # a background stroke along the top
    seeds[0, n - 4 : n - 2, 4 : n - 4] = 0
    seeds[0, n // 2, n // 2 - 6 : n // 2 + 6] = 1  # a stroke inside the disc
    return image, seeds, disc


def test_split_strokes_partitions_the_strokes_and_is_deterministic():
    _, seeds, _ = _disc_image(64)
    train, held = split_strokes(seeds, fraction=0.3, seed=1, tile=4)
    drawn = seeds >= 0
    assert not ((train >= 0) & (held >= 0)).any()  # disjoint
    assert np.array_equal((train >= 0) | (held >= 0), drawn)  # together: every stroke
    both = np.where(train >= 0, train, held)
    assert np.array_equal(both[drawn], seeds[drawn])  # classes kept
    assert (held >= 0).any()
    for c in (0, 1):  # every class keeps strokes to train on
        assert (train == c).any()
    again, held2 = split_strokes(seeds, fraction=0.3, seed=1, tile=4)
    assert np.array_equal(held, held2) and np.array_equal(train, again)
    assert not np.shares_memory(train, seeds)


def test_split_strokes_keeps_short_strokes_whole():
    seeds = np.full((1, 32, 32), -1, dtype=np.int64)
    seeds[0, 5, 5:7] = 0  # one tile only
    seeds[0, 20, 20:22] = 1
    train, held = split_strokes(seeds, fraction=0.5, tile=8)
    assert (held < 0).all() and np.array_equal(train, seeds)
    train0, held0 = split_strokes(seeds, fraction=0.0)
    assert (held0 < 0).all()


def test_heldout_agreement_is_a_per_class_mean():
    held = np.full((1, 4, 4), -1)
    held[0, 0, :] = 0  # 4 background pixels
    held[0, 3, 0] = 1  # 1 structure pixel
    pred = np.zeros((1, 4, 4), dtype=int)  # background everywhere: structure missed
    assert heldout_agreement(pred, held) == pytest.approx(0.5)
    assert heldout_agreement(pred, np.full((1, 4, 4), -1)) is None


def test_walker_probabilities_sum_to_one_and_say_when_they_know_nothing():
    image, seeds, disc = _disc_image()
    prob = random_walker_probabilities(image, seeds, 3, beta=2000)
    assert prob.shape == (1, 3, 48, 48)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)
    assert (prob[:, 2] == 0).all()  # class 2 has no stroke
    assert ((prob.argmax(1)[0] == 1) == disc).mean() > 0.97
    one_class = np.where(seeds == 1, -1, seeds)
    flat = random_walker_probabilities(image, one_class, 2, beta=2000)
    assert np.allclose(flat[0, :, 24, 24], 0.5)  # background strokes alone: no boundary
    assert flat[0, 0, 2, 10] == 1.0  # the strokes themselves stay certain
    labels = random_walker_labels(image, one_class, 2, beta=2000)
    assert labels[0, 24, 24] == -1 and labels[0, 2, 10] == 0


def test_floor_walker_works_above_its_size_limit():
    image, seeds, disc = _disc_image(64)
    prob = floor_walker(image, seeds, 2, beta=2000, max_side=32)
    assert prob.shape == (1, 2, 64, 64)
    assert ((prob.argmax(1)[0] == 1) == disc).mean() > 0.95


def test_network_share_ramps_from_nothing_to_half():
    lo, hi = AGREEMENT_RAMP
    assert network_share(None) == 0.0
    assert network_share(lo - 0.1) == 0.0
    assert network_share(hi + 0.01) == pytest.approx(MAX_NETWORK_SHARE)
    assert 0 < network_share((lo + hi) / 2) < MAX_NETWORK_SHARE


def test_assess_gives_no_share_to_networks_that_contradict_a_sure_walker():
    image, seeds, disc = _disc_image()
    walker = random_walker_probabilities(image, seeds, 2, beta=2000)
    truth = disc.astype(int)[None]
    good = np.stack([1 - truth, truth], axis=1).astype(np.float32)
    bad = np.stack([truth, 1 - truth], axis=1).astype(np.float32)  # everything inverted
    assert confident_agreement(truth, walker) > 0.97
    report = assess({"a": bad, "b": bad}, walker)
    assert report.network_share == 0.0
    report = assess({"a": good, "b": bad}, walker)
    assert report.weights["a"] > 0.99  # the member that agrees takes the weight
    # the full share: they agree where the walker is sure, their disc is the walker's size
    sure = float(np.mean(walker.max(axis=1) >= 0.9))
    assert 0.5 < report.sure_fraction == pytest.approx(sure)
    assert report.network_share == pytest.approx(MAX_NETWORK_SHARE)
    alone = assess({"a": good}, None)  # no strokes on this image: no floor
    assert alone.network_share == 1.0
    held = np.full(truth.shape, -1)
    held[0, 24, 20:28] = 1
    report = assess({"a": good, "b": bad}, walker, held, walker_heldout=0.75)
    assert report.heldout == {"a": 1.0, "b": 0.0, "networks": 1.0, "walker": 0.75}
    assert "networks' share" in report.summary()
    # a clear win on the held-out strokes (1.0 against 0.75) earns the full share that way
    assert report.network_share == pytest.approx(MAX_NETWORK_SHARE)


def test_a_base_that_beat_the_walker_on_its_dataset_keeps_a_share_when_fine_tuned():
    """PH2: a base with zero-shot 0.79 fine-tuned on strokes gave 0.53 — the floor held the
    answer to a walker (0.46) that nothing on the new image showed to be worse."""
    from napari_medseg.training import TrainConfig
    from napari_medseg.workflow import Task, Workflow

    assert base_share(None) == base_share({}) == 0.0
    assert base_share({"dice": 0.8, "walker": None}) == 0.0
    assert base_share({"dice": 0.79, "walker": 0.46}) == pytest.approx(MAX_BASE_SHARE)
    assert base_share({"dice": 0.80, "walker": 0.80}) == 0.0
    image, scr, _ = _synthetic("gray")
    cfg = dict(models=("unet", "unet"), iterations=1, device="cpu", preview_every_seconds=None)
    wf = Workflow(Task())
    list(wf.train([(image, scr)], TrainConfig(**cfg)))
    base = wf.checkpoint()
    assert (
        list(Workflow(base=base).train([(image, scr)], TrainConfig(**cfg)))[
            -1
        ].segmentation.report.base_share
        == 0.0
    )  # no validation record: nothing brought
    base.card = {**base.card, "validation": {"dice": 0.9, "walker": 0.5}}
    tuned = Workflow(base=base)
    tuned.prepare([(image, scr)], TrainConfig(**cfg, rw_confidence=0.5))  # a 1-step base
    # the validated base teaches: its confident labels are the dense target, strokes win
    taught = tuned.trainer._base_labels[0]
    target = tuned.trainer._random_walker()[0]
    seeds = tuned.trainer._seeds[0]
    free = (seeds < 0) & (taught >= 0)
    assert free.any() and np.array_equal(target[free], taught[free])
    assert np.array_equal(target[seeds >= 0], seeds[seeds >= 0])
    report = list(tuned.train())[-1].segmentation.report
    assert report.base_share == pytest.approx(MAX_BASE_SHARE)
    assert report.network_share >= MAX_BASE_SHARE - 1e-9  # the area check does not undo it
    # a loaded base predicting an image with strokes leans on its record the same way
    seg = Workflow(base=base).predict(image, scribbles=scr)
    assert seg.report.base_share == pytest.approx(MAX_BASE_SHARE)


def test_heldout_share_needs_a_clear_win_over_the_walker():
    lo, width = HELDOUT_MARGIN
    assert heldout_share({}) == 0.0
    assert heldout_share({"networks": 0.9, "walker": None}) == 0.0
    assert heldout_share({"networks": 0.9, "walker": 0.9}) == 0.0
    assert heldout_share({"networks": 0.9 + lo, "walker": 0.9}) == pytest.approx(0.0)
    half = heldout_share({"networks": 0.8 + lo + width / 2, "walker": 0.8})
    assert half == pytest.approx(MAX_NETWORK_SHARE / 2)
    assert heldout_share({"networks": 1.0, "walker": 0.5}) == pytest.approx(MAX_NETWORK_SHARE)


def test_a_heldout_win_does_not_outweigh_a_loud_contrary_sure_verdict():
    """Kvasir `cju1dg44` after 5 steps: the networks scored 1.0 on the held-out strokes (the
    walker seeded without them 0.6) while missing most of a small object the walker was sure
    of, on a frame it was sure of almost everywhere — the held-out route gave them half the
    output (Dice −0.167)."""
    lo, hi = HELDOUT_CONTRARY
    assert contrary_evidence(None, 0.5) is None and contrary_trust(None) == 1.0
    assert contrary_evidence(0.5, 0.6) == pytest.approx(0.2)
    assert contrary_trust(lo) == pytest.approx(1.0) and contrary_trust(hi) == 0.0
    assert 0.0 < contrary_trust((lo + hi) / 2) < 1.0

    n = 20
    walker = np.zeros((1, 2, n, n), np.float32)
    walker[0, 0], walker[0, 1] = 0.95, 0.05  # sure of background everywhere...
    walker[0, 0, 8:12, 8:12], walker[0, 1, 8:12, 8:12] = 0.05, 0.95  # ...and of a small object
    heldout = np.full((1, n, n), -1)
    heldout[0, 0, :5] = 0  # held-out strokes: background, in one corner
    labels = np.zeros((1, n, n), int)
    labels[0, 8:10, 8:10] = 1  # a quarter of the object: per-class agreement ~0.70
    probs = np.stack([1 - labels, labels], axis=1).astype(np.float32)
    win = assess({"a": probs}, walker, heldout=heldout, walker_heldout=0.6)
    assert win.heldout["networks"] == pytest.approx(1.0)
    assert heldout_share(win.heldout) == pytest.approx(MAX_NETWORK_SHARE)  # the route alone
    assert win.contrary > hi and win.network_share < MAX_NETWORK_SHARE * win.sure_fraction / 10
    # networks that find the whole object keep what the held-out strokes earned them
    labels[0, 8:12, 8:12] = 1
    close = np.stack([1 - labels, labels], axis=1).astype(np.float32)
    kept = assess({"a": close}, walker, heldout=heldout, walker_heldout=0.6)
    assert kept.contrary == pytest.approx(0.0) and kept.network_share == pytest.approx(0.5)


def _synthetic(kind: str, seed: int = 0):
    """A bright disc on noise with a stroke inside and a background stroke around it."""
    rng = np.random.default_rng(seed)
    n = 40
    yy, xx = np.mgrid[:n, :n]
    disc = (yy - 20) ** 2 + (xx - 18) ** 2 < 9**2
    grey = (np.where(disc, 0.7, 0.3) + rng.normal(0, 0.08, (n, n))).astype(np.float32)
    scr = np.zeros((n, n), np.uint8)
    scr[2:4, 3:37] = 1
    scr[36:38, 3:37] = 1
    scr[20, 13:24] = 2
    truth = disc.astype(np.uint8) + 1
    if kind == "rgb":
        return np.stack([grey, grey * 0.8, 1 - grey], axis=-1), scr, truth
    if kind == "stack":
        return (
            np.stack([grey, grey[::-1]]),
            np.stack([scr, scr[::-1]]),
            np.stack([truth, truth[::-1]]),
        )
    return grey, scr, truth


@pytest.mark.parametrize("kind", ["gray", "rgb", "stack"])
@pytest.mark.parametrize("steps", [1, 3])
def test_the_answer_after_a_few_steps_is_the_walkers(kind, steps):
    """The floor pinned: after 1 or 3 steps the networks have earned at most a small share,
    and the ensemble is the walker's answer wherever that share cannot move it — never worse
    than the walker on the truth."""
    from napari_medseg.training import TrainConfig
    from napari_medseg.workflow import Task, Workflow

    image, scr, truth = _synthetic(kind)
    wf = Workflow(Task())
    cfg = TrainConfig(
        models=("unet", "unet"), iterations=steps, device="cpu", preview_every_seconds=None
    )
    final = list(wf.train([(image, scr)], cfg))[-1]
    seg = final.segmentation
    assert final.iteration == steps
    share = seg.report.network_share
    assert share < 0.2  # a 3-step pair on an easy stack agrees ~0.85: a tenth at most
    # the floor: the walker, or the classical answer chosen on the held-out strokes
    prob = wf.trainer.shown_walker(0)
    walker = prob.argmax(1) + 1
    walker = walker if kind == "stack" else walker[0]
    # a share s moves only pixels whose walker margin |p1 − p0| is below s / (1 − s)
    margin = np.abs(prob[:, 1] - prob[:, 0])
    firm = margin >= share / (1.0 - share) + 1e-6
    firm = firm if kind == "stack" else firm[0]
    np.testing.assert_array_equal(seg.ensemble[firm], walker[firm])
    if share == 0.0:
        np.testing.assert_array_equal(seg.ensemble, walker)
    # the report says how much of the walker's answer the networks changed, from the answer
    told = prob.max(axis=1) > 0.5 + 1e-6
    told = told if kind == "stack" else told[0]
    assert seg.report.changed == pytest.approx(np.mean(seg.ensemble[told] != walker[told]))
    right = (seg.ensemble == 2) == (truth == 2)
    assert right.mean() >= ((walker == 2) == (truth == 2)).mean()
    assert right.mean() > 0.95  # and the walker is good here


def test_networks_that_paint_a_structure_many_times_the_walkers_get_no_share():
    """A polyp frame's counterexample: the walker is sure only near its strokes (a frame's
    border of background, a small polyp), the networks agree with every sure pixel but paint
    the polyp over most of the unsure rest."""
    n = 40
    walker = np.zeros((1, 2, n, n), np.float32)
    walker[0, 0], walker[0, 1] = 0.6, 0.4  # unsure, leaning to background
    border = np.ones((n, n), bool)
    border[6:-6, 6:-6] = False
    polyp = np.zeros((n, n), bool)
    polyp[18:22, 18:22] = True
    walker[0, 0][border], walker[0, 1][border] = 1.0, 0.0
    walker[0, 0][polyp], walker[0, 1][polyp] = 0.0, 1.0
    blown = (~border).astype(int)[None]  # the polyp class everywhere but the sure border
    big = np.stack([1 - blown, blown], axis=1).astype(np.float32)
    assert confident_agreement(blown, walker) == pytest.approx(1.0)
    assert area_ratio(blown, walker) == pytest.approx(28 * 28 / 16)
    report = assess({"a": big}, walker)
    assert report.area_ratio >= AREA_RATIO[1] and report.network_share == 0.0
    # a polyp twice the walker's: the boundary moved, the share stays
    grown = np.zeros((1, n, n), int)
    grown[0, 17:23, 17:23] = 1
    fair = np.stack([1 - grown, grown], axis=1).astype(np.float32)
    report = assess({"a": fair}, walker)
    assert report.area_ratio == pytest.approx(36 / 16)
    assert report.network_share > 0.0


def test_area_trust_is_full_within_the_ratio_and_gone_beyond():
    ok, worst = AREA_RATIO
    assert area_trust(None) == 1.0
    assert area_trust(1.0) == area_trust(ok) == 1.0
    assert area_trust(worst) == area_trust(10 * worst) == 0.0
    assert 0.0 < area_trust((ok + worst) / 2) < 1.0
    labels = np.zeros((1, 4, 4), int)
    labels[0, :2] = 1
    walker = np.zeros((1, 2, 4, 4), np.float32)
    walker[0, 0] = 1.0
    walker[0, 0, 0, 0], walker[0, 1, 0, 0] = 0.0, 1.0  # the walker finds one pixel of class 1
    assert area_ratio(labels, walker) == pytest.approx(8.0)
    only = walker.copy()
    only[0, 0], only[0, 1] = 1.0, 0.0  # the walker finds no pixel of class 1: class 0 only
    assert area_ratio(labels, only) == pytest.approx(16 / 8)


def test_the_walkers_area_is_what_it_is_sure_of_not_its_ties():
    """PH2 IMD040: background strokes on one side of a lesion leave the walker at ~0.5 far
    from them; one correct stroke in the lesion tipped those ties to "lesion" and the
    networks, right about the lesion, lost their share to an area ratio of 5."""
    n = 40
    walker = np.zeros((1, 2, n, n), np.float32)
    walker[0, 0], walker[0, 1] = 1.0, 0.0  # sure background...
    walker[0, 0, :, 30:], walker[0, 1, :, 30:] = 0.49, 0.51  # ...but a tie, tipped to "lesion"
    lesion = np.zeros((n, n), bool)
    lesion[14:26, 20:28] = True
    walker[0, 0][lesion], walker[0, 1][lesion] = 0.05, 0.95
    right = lesion.astype(int)[None]
    argmax_area = np.count_nonzero(walker.argmax(axis=1) == 1)
    assert argmax_area / lesion.sum() > AREA_RATIO[0]  # 496 / 96: the old check fired
    assert area_ratio(right, walker) == pytest.approx(1504 / 1104)  # background, ties aside
    probs = np.stack([1 - right, right], axis=1).astype(np.float32)
    assert assess({"a": probs}, walker).network_share == pytest.approx(MAX_NETWORK_SHARE)


def test_a_slice_without_strokes_is_not_compared_by_area():
    """Strokes on one slice of a stack: the networks answer the others alone, and their
    structures there are not set against a walker that knows nothing of them."""
    n = 20
    walker = np.full((3, 2, n, n), 0.5, np.float32)  # slices 1 and 2: no strokes
    walker[0, 0], walker[0, 1] = 1.0, 0.0
    walker[0, 0, 5:10, 5:10], walker[0, 1, 5:10, 5:10] = 0.0, 1.0
    labels = np.zeros((3, n, n), int)
    labels[:, 5:10, 5:10] = 1
    labels[1:, :, :] = 1  # whatever they paint where no stroke is
    assert area_ratio(labels, walker) == pytest.approx(1.0)
    assert area_ratio(labels, np.full((1, 2, n, n), 0.5, np.float32)) is None


def test_networks_that_agree_with_the_sure_walker_get_their_share():
    from napari_medseg.inference import combine_predictions

    image, seeds, disc = _disc_image()
    walker = random_walker_probabilities(image, seeds, 2, beta=2000)
    truth = disc.astype(int)[None]
    good = np.stack([1 - truth, truth], axis=1).astype(np.float32) * 0.9 + 0.05
    report = assess({"a": good}, walker)
    pred = combine_predictions(
        {"a": good}, weights=report.weights, walker=walker, network_share=report.network_share
    )
    assert report.network_share == pytest.approx(MAX_NETWORK_SHARE)
    assert ((pred.ensemble[0] == 1) == disc).mean() > 0.97


def test_a_slice_with_strokes_of_one_class_is_not_handed_to_the_networks():
    """ACDC marks slices without a structure by background strokes only: the walker cannot
    draw a boundary there, and networks granted a share must not paint the structure over
    it; a slice without any stroke is still theirs."""
    from napari_medseg.inference import combine_predictions

    image, seeds, disc = _disc_image()
    stack = np.concatenate([image, image, image])  # (3, 1, H, W)
    strokes = np.concatenate([seeds, np.full_like(seeds, -1), np.full_like(seeds, -1)])
    strokes[1][seeds[0] == 0] = 0  # slice 1: background strokes only; slice 2: none
    walker = floor_walker(stack, strokes, 2, beta=2000)
    assert (walker[1, 0][strokes[1] < 0] > 0.5).all()  # leans to the one class drawn
    np.testing.assert_allclose(walker[2], 0.5)  # no stroke: the walker knows nothing
    truth = np.repeat(disc.astype(int)[None], 3, axis=0)
    # networks 0.7 sure of the disc everywhere: at their full share they still cannot
    # overrule the lean (0.75 against 0.25 for K = 2), and they answer where it is uniform
    paint = np.stack([1 - truth, truth], axis=1).astype(np.float32) * 0.4 + 0.3
    report = assess({"a": paint}, walker)
    assert report.network_share == pytest.approx(MAX_NETWORK_SHARE)  # slice 0 agrees
    ens = combine_predictions(
        {"a": paint}, weights=report.weights, walker=walker, network_share=report.network_share
    ).ensemble
    assert not ens[1].any()  # slice 1 stays background
    assert ((ens[2] == 1) == disc).mean() > 0.97  # slice 2: the networks' disc
    assert ((ens[0] == 1) == disc).mean() > 0.97
    # certain networks overrule the lean only near the full share (above 3/7), not at the
    # 0.38 that painted patient001 ED's basal slice when the lean was halfway
    sure = np.stack([1 - truth, truth], axis=1).astype(np.float32)
    held = combine_predictions({"a": sure}, walker=walker, network_share=0.42)
    assert not held.ensemble[1].any()
    overruled = combine_predictions({"a": sure}, walker=walker, network_share=MAX_NETWORK_SHARE)
    assert overruled.ensemble[1].any()


def test_sure_ring_is_the_sure_edge_next_to_the_unsure_band():
    from napari_medseg.training.trainer import sure_ring

    labels = np.zeros((12, 12), dtype=np.int64)
    labels[:, 6:] = 1
    labels[:, 5:7] = -1  # the walker hesitates on two columns
    seeds = np.full((12, 12), -1, dtype=np.int64)
    seeds[0, 4] = 0  # a stroke next to the band stays a stroke
    ring = sure_ring(labels, seeds, 2)
    expect = np.zeros((12, 12), dtype=bool)
    expect[:, 3:5] = expect[:, 7:9] = True
    expect[0, 4] = False
    np.testing.assert_array_equal(ring, expect)
    assert not sure_ring(np.zeros((4, 4), np.int64), seeds[:4, :4], 2).any()  # all sure
    assert not sure_ring(np.full((4, 4), -1), seeds[:4, :4], 2).any()  # nothing sure


def test_a_held_out_ring_is_kept_from_the_teacher_and_remembered():
    """The ring experiment (TrainConfig.ring_holdout): the sure teacher pixels next to the
    band are not taught, and the trainer keeps them (with the teacher's labels) to score."""
    from scipy.ndimage import gaussian_filter

    from napari_medseg.training import TrainConfig
    from napari_medseg.training.trainer import TriNetTrainer

    image, seeds, disc = _disc_image(48)
    rng = np.random.default_rng(0)  # a soft, noisy edge: the walker hesitates along it
    soft = gaussian_filter(disc.astype(np.float32), 3) + rng.normal(0, 0.05, disc.shape)
    image = soft.astype(np.float32)[None, None]

    def teacher(width):
        cfg = TrainConfig(
            models=("unet",), iterations=1, device="cpu", max_side=0, ring_holdout=width
        )
        tr = TriNetTrainer([image], [seeds], 2, cfg)
        return tr._random_walker()[0], tr.ring

    plain, no_ring = teacher(0)
    held, ring = teacher(2)
    assert no_ring is None and ring is not None and (ring >= 0).any()
    taken = ring >= 0
    assert (held[taken] == -1).all() and (plain[taken] >= 0).all()  # taught before, not now
    np.testing.assert_array_equal(ring[taken], plain[taken])  # the teacher's own labels
    np.testing.assert_array_equal(held[~taken], plain[~taken])  # nothing else changes
    assert set(np.unique(ring[taken])) == {0, 1}  # both sides of the band


def test_networks_right_where_the_walker_is_sure_and_wrong_still_earn_a_share():
    """Dermoscopy (PH2 `IMD057`): the walker is sure of a lesion too small — its pale rim is
    "skin, sure" — and networks that paint the whole lesion agree ~0.90 with the sure pixels.
    Below the old ramp's start (0.91) they earned nothing and the answer was the walker's."""
    from napari_medseg.inference import combine_predictions

    n = 64
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - n / 2, xx - n / 2)
    walker = np.zeros((1, 2, n, n), np.float32)
    for region, p_lesion in ((r < 12, 0.95), ((r >= 12) & (r < 14), 0.45), (r >= 14, 0.05)):
        walker[0, 1][region], walker[0, 0][region] = p_lesion, 1.0 - p_lesion
    truth = (r < 16).astype(int)[None]  # the rim 14 ≤ r < 16: lesion, the walker sure of skin
    nets = np.stack([1 - truth, truth], axis=1).astype(np.float32) * 0.96 + 0.02

    def dice(labels):
        p, t = labels == 1, truth == 1
        return 2.0 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t))

    report = assess({"a": nets}, walker)
    agreement = report.agreement["networks"]
    assert AGREEMENT_RAMP[0] < agreement < 0.91  # the old ramp's start: a share of 0
    assert report.area_ratio < AREA_RATIO[0]  # the size is not what holds them
    assert 0.0 < report.network_share < MAX_NETWORK_SHARE
    answer = combine_predictions(
        {"a": nets}, weights=report.weights, walker=walker, network_share=report.network_share
    ).ensemble
    alone = walker.argmax(axis=1)
    assert dice(answer) > dice(alone) + 0.1  # the unsure band goes to the networks
    rim = (r >= 14) & (r < 16)
    # below a share of one half the walker's sure pixels stay its own, right or wrong
    assert (answer[0][rim] == alone[0][rim]).all()


def _rim_case(n=64):
    """A lesion whose pale rim (14 ≤ r < 16) the walker calls skin, sure (0.95)."""
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - n / 2, xx - n / 2)
    walker = np.zeros((1, 2, n, n), np.float32)
    for region, p_lesion in ((r < 14, 0.95), (r >= 14, 0.05)):
        walker[0, 1][region], walker[0, 0][region] = p_lesion, 1.0 - p_lesion
    truth = (r < 16)[None]
    rim = ((r >= 14) & (r < 16))[None]
    return walker, truth, rim


def _member(truth, sure):
    """(1, 2, H, W) probabilities giving the truth's label with probability ``sure``."""
    t = truth.astype(np.float32)
    return np.stack([1 - t, t], axis=1) * (2 * sure - 1) + (1 - sure)


def test_sure_unanimous_networks_overrule_a_sure_wrong_walker_at_a_share_below_half():
    """PH2: the walker is sure and wrong on a lesion's rim; three networks, built differently,
    all say lesion at 0.98. At the image's share of 0.4 the mix alone keeps the walker's
    "skin" (it needs a share of 0.48 there); doubled where they are sure and unanimous, the
    networks decide the rim — and nothing else changes."""
    from napari_medseg.inference import OVERRULE_SURE, combine_predictions, floor_mix

    walker, truth, rim = _rim_case()
    nets = _member(truth, 0.98)
    probs = {k: nets for k in ("unet", "swin", "mamba")}
    answer = combine_predictions(probs, walker=walker, network_share=0.4).ensemble
    assert (answer[rim] == 1).all()  # overruled: the networks' lesion
    np.testing.assert_array_equal(answer[~rim], walker.argmax(axis=1)[~rim])
    # one network alone has no one to agree with: the plain mix, the walker's skin
    alone = combine_predictions({"unet": nets}, walker=walker, network_share=0.4).ensemble
    assert (alone[rim] == 0).all()
    # unanimous but not sure enough: the plain mix again
    unsure = _member(truth, OVERRULE_SURE - 0.05)
    labels = [unsure.argmax(axis=1)] * 3
    mixed = floor_mix(walker, unsure, 0.4, labels).argmax(axis=1)
    assert (mixed[rim] == 0).all()
    # a share of 0 stays the walker's everywhere, sure networks or not
    np.testing.assert_array_equal(floor_mix(walker, nets, 0.0, [nets.argmax(axis=1)] * 3), walker)


def test_one_dissenting_network_keeps_the_walker_where_it_dissents():
    from napari_medseg.inference import combine_predictions

    walker, truth, rim = _rim_case()
    nets = _member(truth, 0.98)
    dissent = _member(truth & ~rim, 0.98)  # the third network calls the rim skin
    probs = {"unet": nets, "swin": nets, "mamba": dissent}
    # the weighted networks still say lesion on the rim (2 of 3, at 0.66), sure enough only
    # if the dissent is ignored: the rim keeps the walker's label
    answer = combine_predictions(probs, walker=walker, network_share=0.4).ensemble
    assert (answer[rim] == 0).all()


def test_the_answer_says_how_much_of_the_walkers_it_changed():
    """The share is the trust; what the networks did with it is read from the answer: on the
    rim case they overrule the walker's sure "skin" on the rim and nothing else, and at a
    share of 0 they change nothing."""
    from dataclasses import replace

    from napari_medseg.inference import combine_predictions

    walker, truth, rim = _rim_case()
    nets = _member(truth, 0.98)
    probs = {k: nets for k in ("unet", "swin", "mamba")}
    pred = combine_predictions(probs, walker=walker, network_share=0.4)
    expected = rim.sum() / rim.size  # the walker is sure (0.95) everywhere here
    assert pred.walker_changed == pytest.approx(expected)
    assert pred.walker_overruled == pytest.approx(expected)
    kept = combine_predictions(probs, walker=walker, network_share=0.0)
    assert kept.walker_changed == 0.0 and kept.walker_overruled == 0.0
    # no walker in the mix (an image without strokes): nothing to compare with
    assert combine_predictions(probs).walker_changed is None
    report = replace(FloorReport(network_share=0.4), changed=0.12, overruled=0.03)
    assert "12.0% of the walker's answer changed (3.0% of its sure pixels overruled)" in (
        report.summary()
    )
    assert "changed" not in FloorReport(network_share=0.0).summary()
