"""Losses, pseudo labels, augmentation and the trainer iterator."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_medseg.checkpoints import (
    Checkpoint,
    CheckpointError,
    SlotState,
    load_checkpoint,
    models_from_checkpoint,
    save_checkpoint,
)
from napari_medseg.training import InputError, TrainConfig, TriNetTrainer, prepare_interactive
from napari_medseg.training.augmentation import augment_batch
from napari_medseg.training.losses import (
    IGNORE_INDEX,
    PseudoLabelDice,
    balanced_class_weights,
    partial_cross_entropy,
)
from napari_medseg.training.pseudo_labels import (
    ensemble_pseudo_label,
    random_simplex_weights,
    random_walker_labels,
)
from napari_medseg.training.schedule import poly_lr

TINY = dict(batch_size=2, patch_size=32, preview_every_seconds=None, predict_batch_size=2)


def two_class_stack(z=2, h=40, w=36):
    rng = np.random.default_rng(0)
    img = rng.normal(0.2, 0.05, (z, h, w)).astype(np.float32)
    img[:, 10:30, 10:26] += 0.6  # a bright square: class 2
    scr = np.zeros((z, h, w), np.uint8)
    scr[:, 2:4, 2:30] = 1
    scr[:, 18:20, 14:22] = 2
    truth = np.ones((z, h, w), np.uint8)
    truth[:, 10:30, 10:26] = 2
    return img, scr, truth


def test_partial_ce_uses_scribbled_pixels_only():
    logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), IGNORE_INDEX)
    target[0, 0, 0] = 2
    loss = partial_cross_entropy(logits, target)
    assert loss.item() == pytest.approx(np.log(3), rel=1e-5)
    loss.backward()
    g = logits.grad[0].abs().sum(0)
    assert g[0, 0] > 0 and float(g.sum() - g[0, 0]) == 0.0


def test_partial_ce_without_scribbles_is_zero_not_nan():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = partial_cross_entropy(logits, torch.full((2, 4, 4), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_dice_against_pseudo_label_is_low_for_matching_prediction():
    pseudo = torch.zeros(1, 8, 8, dtype=torch.long)
    pseudo[0, 2:6, 2:6] = 1
    good = torch.nn.functional.one_hot(pseudo, 2).permute(0, 3, 1, 2).float() * 20
    bad = good.flip(1)
    dice = PseudoLabelDice(2)
    assert dice(good, pseudo).item() < 0.01 < 0.9 < dice(bad, pseudo).item()


def test_simplex_weights_are_a_distribution_and_vary():
    g = torch.Generator().manual_seed(0)
    ws = torch.stack([random_simplex_weights(3, g) for _ in range(2000)])
    assert torch.allclose(ws.sum(1), torch.ones(2000), atol=1e-6)
    assert (ws >= 0).all()
    # uniform on the simplex: each coordinate has mean 1/3 and P(w < 1/2) = 3/4
    assert torch.allclose(ws.mean(0), torch.full((3,), 1 / 3), atol=0.03)
    assert abs(float((ws[:, 0] < 0.5).float().mean()) - 0.75) < 0.04


def test_ensemble_pseudo_label_follows_weights():
    a = torch.tensor([[[[0.9]], [[0.1]]]])
    b = torch.tensor([[[[0.2]], [[0.8]]]])
    assert ensemble_pseudo_label([a, b], torch.tensor([0.9, 0.1])).item() == 0
    assert ensemble_pseudo_label([a, b], torch.tensor([0.1, 0.9])).item() == 1


def test_poly_lr():
    assert poly_lr(0.01, 0) == 0.01
    assert poly_lr(0.01, 1.0) == 0.0
    assert poly_lr(0.01, 0.5) == pytest.approx(0.01 * 0.5**0.9)


def test_augmentation_keeps_labels_valid_and_fills_border_with_ignore():
    g = torch.Generator().manual_seed(3)
    img = torch.rand(6, 1, 32, 32)
    lab = torch.randint(0, 3, (6, 32, 32))
    lab[:, :4] = IGNORE_INDEX
    out_img, (out_lab,) = augment_batch(img, [lab], g, max_rotation_deg=30, p_rotate=1.0)
    assert out_img.shape == img.shape and out_lab.shape == lab.shape
    assert set(out_lab.unique().tolist()) <= {IGNORE_INDEX, 0, 1, 2}
    # a 30-degree rotation leaves corners without source pixels: they must be ignored
    corners = out_lab[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == IGNORE_INDEX).float().mean() > 0.5


def test_random_walker_respects_seeds():
    img, scr, truth = two_class_stack(1)
    task = prepare_interactive(img, scr, 0)
    rw = random_walker_labels(task.images[0], task.seeds[0], 2)
    seeded = task.seeds[0] >= 0
    assert (rw[seeded] == task.seeds[0][seeded]).all()
    assert (rw == truth[None] - 1).mean() > 0.9


def test_random_walker_confidence_leaves_uncertain_pixels_to_the_networks():
    img, scr, truth = two_class_stack(1)
    task = prepare_interactive(img, scr, 0)
    full = random_walker_labels(task.images[0], task.seeds[0], 2, beta=2000)
    sure = random_walker_labels(task.images[0], task.seeds[0], 2, beta=2000, min_confidence=0.99)
    seeded = task.seeds[0] >= 0
    assert (sure[seeded] == task.seeds[0][seeded]).all()  # strokes are never dropped
    kept = sure >= 0
    assert 0 < (~kept).sum() and kept.mean() > 0.5
    assert (sure[kept] == full[kept]).all()  # the confident pixels keep the walker's answer


def test_class_weights_power_tempers_inverse_frequency():
    labels = [np.array([0] * 90 + [1] * 10)]
    full = balanced_class_weights(labels, 2, power=1.0)
    sqrt = balanced_class_weights(labels, 2, power=0.5)
    none = balanced_class_weights(labels, 2, power=0.0)
    assert torch.allclose(none, torch.ones(2))
    assert float(full[1] / full[0]) == pytest.approx(9.0)
    assert float(sqrt[1] / sqrt[0]) == pytest.approx(3.0)


def test_whole_slice_batches_are_the_slices_prediction_sees():
    tr, task = _trainer(iterations=1, patch_size=0, augment=False)
    x, labels = tr._sample_batch(use_rw=True)
    slices = torch.from_numpy(tr._images[0])
    assert x.shape[-2:] == slices.shape[-2:]  # no padding, no crop
    for b in range(x.shape[0]):
        assert any(torch.equal(x[b], slices[z]) for z in range(slices.shape[0]))
    assert labels[1].shape == x.shape[:1] + x.shape[-2:]


def test_prepare_interactive_maps_values_and_back():
    img, scr, _ = two_class_stack()
    scr = scr.copy()
    scr[scr == 2] = 7
    task = prepare_interactive(img, scr, 0)
    assert task.class_values == (1, 7) and task.num_classes == 2
    assert set(np.unique(task.seeds[0])) == {-1, 0, 1}
    back = task.to_values(np.ones((2, 40, 36), np.uint8))
    assert back.shape == (2, 40, 36) and set(np.unique(back)) == {7}


def test_prepare_interactive_errors_say_what_to_do():
    img, scr, _ = two_class_stack()
    with pytest.raises(InputError, match="one class only"):
        prepare_interactive(img, np.where(scr == 2, 0, scr), 0)
    with pytest.raises(InputError, match="no labelled pixels"):
        prepare_interactive(img, np.zeros_like(scr), 0)
    with pytest.raises(InputError, match="shape mismatch"):
        prepare_interactive(img, scr[:, :-1], 0)
    with pytest.raises(InputError, match="not among the classes"):
        prepare_interactive(img, scr, 0, class_values=[1, 3])


def _trainer(iterations=2, seed=0, models=("unet", "swin_unet", "mamba_unet"), **kw):
    img, scr, _ = two_class_stack()
    task = prepare_interactive(img, scr, 0)
    cfg = TrainConfig(
        models=models,
        preset="lite",
        iterations=iterations,
        seed=seed,
        device="cpu",
        **{**TINY, **kw},
    )
    return TriNetTrainer(task.images, task.seeds, task.num_classes, cfg), task


def test_trainer_yields_losses_and_final_predictions():
    tr, task = _trainer(iterations=2, preview_every_seconds=0.0)
    walker, *updates = list(tr.steps())
    # the walker's answer comes before any step (the anytime floor), the networks' after one
    assert walker.iteration == 0 and walker.prediction.per_model == {}
    assert walker.prediction.report.network_share == 0.0
    assert [u.iteration for u in updates] == [1, 2, 2]
    assert updates[-1].done and not updates[-1].stopped
    assert set(updates[0].losses) == {"unet", "swin_unet", "mamba_unet", "total"}
    assert all(np.isfinite(v) for v in updates[0].losses.values())
    pred = updates[-1].prediction
    assert updates[0].prediction is not None  # first preview after the first step
    assert pred.ensemble.shape == (2, 40, 36) and pred.ensemble.dtype == np.uint8
    assert set(pred.per_model) == {"unet", "swin_unet", "mamba_unet"}
    assert pred.ensemble.max() < task.num_classes
    assert pred.disagreement.min() >= 0 and pred.disagreement.max() <= 1


def test_first_preview_can_cover_one_slice_and_later_ones_everything():
    tr, task = _trainer(iterations=2, models=("unet", "unet"), preview_every_seconds=0.0)
    batches = []
    recalibrate = tr._recalibrate_batchnorm
    tr._recalibrate_batchnorm = lambda n: (batches.append(n), recalibrate(n))
    walker, first, second, final = list(tr.steps(first_preview_slices=[1]))
    assert walker.prediction_slices == (1,) and walker.prediction.ensemble.shape == (1, 40, 36)
    # live previews re-estimate BatchNorm quickly, the final prediction thoroughly
    assert batches == [2, 2, 8]
    assert first.prediction_slices == (1,)
    assert first.prediction.ensemble.shape == (1, 40, 36)
    assert first.prediction.per_model["unet"].shape == (1, 40, 36)
    assert first.prediction.disagreement.shape == (1, 40, 36)
    # later previews and the final prediction are of the whole stack again
    assert second.prediction_slices is None and second.prediction.ensemble.shape == (2, 40, 36)
    assert final.prediction_slices is None and final.prediction.ensemble.shape == (2, 40, 36)
    assert first.prediction.ensemble.max() < task.num_classes
    # slices outside the image are ignored; all slices count as the whole image
    tr2, _ = _trainer(iterations=1, models=("unet", "unet"), preview_every_seconds=0.0)
    assert next(tr2.steps(first_preview_slices=[7])).prediction_slices is None
    tr3, _ = _trainer(iterations=1, models=("unet", "unet"), preview_every_seconds=0.0)
    assert next(tr3.steps(first_preview_slices=[0, 1])).prediction_slices is None


def test_trainer_is_reproducible_with_a_seed():
    a = [u.losses["total"] for u in _trainer(3, seed=5, models=("unet", "unet"))[0].steps()]
    b = [u.losses["total"] for u in _trainer(3, seed=5, models=("unet", "unet"))[0].steps()]
    c = [u.losses["total"] for u in _trainer(3, seed=6, models=("unet", "unet"))[0].steps()]
    assert a == b and a != c


def test_predicting_twice_gives_the_same_answer():
    tr, task = _trainer(2, models=("unet", "unet"))
    tr.run()
    a = tr.predict(task.images[0], with_probabilities=True).ensemble_probabilities
    b = tr.predict(task.images[0], with_probabilities=True).ensemble_probabilities
    np.testing.assert_array_equal(a, b)


def test_trainer_stops_within_one_step_from_another_thread():
    tr, _ = _trainer(iterations=10_000, models=("unet", "unet"))
    seen = []
    for u in tr.steps():
        seen.append(u)
        if u.iteration == 2:
            threading.Thread(target=tr.request_stop).start()
            threading.Event().wait(0.2)
    assert seen[-1].done and seen[-1].stopped
    assert seen[-1].iteration <= 3


def test_trainer_takes_up_new_scribbles_without_touching_the_callers_array():
    tr, task = _trainer(iterations=3, models=("unet", "unet"))
    new = task.seeds[0].copy()
    new[:, 30:32, 2:30] = 0
    before = new.copy()
    it = tr.steps()
    next(it)
    tr.update_scribbles([new])
    next(it)
    assert (tr._native_seeds[0] == before).all()
    new[:] = -1  # the caller's array changing later must not reach the trainer
    assert (tr._native_seeds[0] >= 0).any() and (tr._seeds[0] >= 0).any()


def test_trainer_learns_a_simple_image():
    tr, task = _trainer(
        iterations=40, models=("unet", "unet"), optimizer="sgd", lr=0.05, rw_weight=0.0
    )
    final = tr.run()
    img, _, truth = two_class_stack()
    acc = (task.to_values(final.prediction.ensemble) == truth).mean()
    assert acc > 0.9


def test_checkpoint_round_trip_and_resume(tmp_path):
    tr, task = _trainer(iterations=2, models=("unet", "mamba_unet"))
    tr.run()
    path = save_checkpoint(tr.state_dict(), tmp_path / "model.pt")
    state = load_checkpoint(path)
    assert state.iteration == 2
    models = models_from_checkpoint(state)
    x = torch.from_numpy(task.images[0][:1])
    for key, m in models.items():
        tr.models[key].eval()
        assert torch.allclose(m(x), tr.models[key](x), atol=1e-5)
    tr2, _ = _trainer(iterations=1, models=("unet", "mamba_unet"))
    tr2.load_state(state)
    assert tr2.run().iteration == 3
    with pytest.raises(CheckpointError, match="same models"):
        _trainer(iterations=1, models=("unet", "unet"))[0].load_state(state)


def test_member_weights_favour_the_member_that_fits_its_target():
    from napari_medseg.inference import member_weights

    w = member_weights({"a": 0.90, "b": 0.80, "c": 0.88}, ["a", "b", "c"])
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["a"] > w["c"] > w["b"] and w["b"] < 0.1
    assert member_weights(None, ["a"]) is None  # no scores yet: equal weights
    assert member_weights({"a": 0.9}, ["a", "b"]) is None  # a member without a score
    assert member_weights({"a": 0.9, "b": float("nan")}, ["a", "b"]) is None


def test_weighted_ensemble_follows_the_heavier_member():
    from napari_medseg.inference import combine_predictions

    a = np.zeros((1, 2, 2, 2), np.float32)
    a[:, 1] = 1.0  # a says class 1 everywhere, confidently
    b = np.zeros((1, 2, 2, 2), np.float32)
    b[:, 0] = 0.6
    b[:, 1] = 0.4  # b leans to class 0
    c = b.copy()
    equal = combine_predictions({"a": a, "b": b, "c": c})
    assert (equal.ensemble == 1).all()  # mean: 0.6 for class 1
    weighted = combine_predictions(
        {"a": a, "b": b, "c": c}, weights={"a": 0.1, "b": 0.45, "c": 0.45}
    )
    assert (weighted.ensemble == 0).all()
    assert weighted.disagreement.max() == pytest.approx(1 / 3)


def test_the_walker_votes_in_the_disagreement_map_where_it_has_a_say():
    from napari_medseg.inference import combine_predictions

    nets = np.zeros((2, 2, 4, 4), np.float32)
    nets[:, 1] = 0.95  # three networks, unanimous and sure: class 1 everywhere
    nets[:, 0] = 0.05
    walker = np.full((2, 2, 4, 4), 0.5, np.float32)  # slice 1: no strokes, nothing to say
    walker[0, 0], walker[0, 1] = 0.6, 0.4  # slice 0: leans to class 0, hesitating
    members = {k: nets for k in ("a", "b", "c")}
    alone = combine_predictions(members)
    assert alone.disagreement.max() == 0.0
    floor = combine_predictions(members, walker=walker, network_share=0.5)
    assert (floor.ensemble == 1).all()  # the networks' share overrules the hesitating walker
    # ... and the map says so on slice 0: one voter of four dissents
    np.testing.assert_allclose(floor.disagreement[0], 0.25)
    assert floor.disagreement[1].max() == 0.0  # an uninformed walker casts no vote
    # a small share (doubled where the three are sure and unanimous: 0.1) leaves the walker
    # the answer, and the three networks dissent
    held = combine_predictions(members, walker=walker, network_share=0.05)
    assert (held.ensemble[0] == 0).all()
    np.testing.assert_allclose(held.disagreement[0], 0.75)


def test_trainer_scores_members_and_checkpoints_keep_the_scores(tmp_path):
    tr, task = _trainer(iterations=3, models=("unet", "mamba_unet"))
    tr.run()
    assert set(tr.member_scores) == {"unet", "mamba_unet"}
    assert all(0.0 <= v <= 1.0 for v in tr.member_scores.values())
    assert set(tr.heldout_scores) == {"unet", "mamba_unet", "networks"}
    tr.heldout_scores = {}
    # a member made to look far better decides the ensemble of an image without strokes alone
    tr.member_scores = {"unet": 1.0, "mamba_unet": 0.0}
    pred = tr.predict(task.images[0])
    np.testing.assert_array_equal(pred.ensemble, pred.per_model["unet"])
    tr.member_scores = {"unet": 0.0, "mamba_unet": 1.0}
    pred = tr.predict(task.images[0])
    np.testing.assert_array_equal(pred.ensemble, pred.per_model["mamba_unet"])
    state = load_checkpoint(save_checkpoint(tr.state_dict(), tmp_path / "m.pt"))
    assert state.member_scores == {"unet": 0.0, "mamba_unet": 1.0}
    tr2, _ = _trainer(iterations=1, models=("unet", "mamba_unet"))
    tr2.load_state(state)
    assert tr2.member_scores == {"unet": 0.0, "mamba_unet": 1.0}


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "napari-medseg-trio", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)


def test_checkpoint_is_written_atomically(tmp_path):
    slot = SlotState("unet", "unet", "lite", {"x": torch.ones(2)})
    save_checkpoint(Checkpoint({}, 1, 2, [slot]), tmp_path / "m.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt|could not be read"):
        load_checkpoint(tmp_path / "bad.pt")


def test_fine_tuning_keeps_the_base_working_scale():
    """A base learnt structures at its scale; fine-tuning on a larger image keeps that scale
    (as the base's zero-shot prediction of that image does) instead of shrinking it more."""
    tr, task = _trainer(iterations=1, models=("unet", "unet"), max_side=20)
    tr.run()
    base = tr.state_dict()
    big = [np.repeat(np.repeat(im, 2, axis=-1), 2, axis=-2) for im in task.images]
    seeds = [np.repeat(np.repeat(s, 2, axis=-1), 2, axis=-2) for s in task.seeds]
    tuned = TriNetTrainer(big, seeds, task.num_classes, tr.config, checkpoint=base)
    assert tuned.scale == pytest.approx(base.working_scale) == pytest.approx(0.5)
    fresh = TriNetTrainer(big, seeds, task.num_classes, tr.config)
    assert fresh.scale == pytest.approx(0.25)


def test_working_resolution_keeps_thin_strokes_and_predicts_native_size():
    from napari_medseg.resolution import resize_seeds

    seeds = np.full((1, 64, 64), -1)
    seeds[0, 10, 5:60] = 0  # a 1-px line: nearest-neighbour shrinking would lose most of it
    seeds[0, 40:42, 20:22] = 1
    small = resize_seeds(seeds, (16, 16), 2)
    assert (small[0, 2, 2:15] == 0).all()
    assert (small == 1).sum() >= 1 and set(np.unique(small)) == {-1, 0, 1}
    tr, task = _trainer(iterations=1, models=("unet", "unet"), max_side=20)
    assert tr.scale == pytest.approx(0.5)
    assert tr._images[0].shape[-2:] == (20, 18)
    pred = tr.run().prediction
    assert pred.ensemble.shape == (2, 40, 36)


def test_invalid_new_scribbles_are_ignored_with_a_message():
    tr, task = _trainer(iterations=2, models=("unet", "unet"))
    it = tr.steps()
    next(it)
    tr.update_scribbles([np.full_like(task.seeds[0], -1)])
    upd = next(it)
    assert "ignored" in upd.message and upd.iteration == 2
    assert (tr._seeds[0] >= 0).any()


def test_stop_requested_before_steps_is_honoured_and_resume_works():
    tr, _ = _trainer(iterations=3, models=("unet", "unet"))
    tr.request_stop()
    ups = list(tr.steps())
    assert len(ups) == 1 and ups[0].stopped and ups[0].iteration == 0
    assert list(tr.steps())[-1].iteration == 3


@pytest.mark.parametrize(
    "name", ["wnet2d", "cmunext_s", "cmunext", "cmunext_l", "msnet", "m2snet", "wave_gms"]
)
def test_one_trio_step_with_each_seed_architecture(name):
    tr, task = _trainer(iterations=1, models=("unet", name, "mamba_unet"), patch_size=32)
    final = tr.run()
    assert final.iteration == 1 and np.isfinite(final.losses[name])
    assert final.prediction.per_model[name].shape == (2, 40, 36)


def test_shape_prior_shapes_predictions_and_the_walker_target():
    from napari_medseg.shape_prior import ShapePrior, apply_shape_prior

    img, scr, _ = two_class_stack()
    img[:, 24:30, 16:20] = 0.2  # a dark notch cut into the bright square from below
    scr[1][scr[1] == 2] = 0  # slice 1: background strokes only, so (exhaustive) no square
    task = prepare_interactive(img, scr, 0)
    prior = ShapePrior(exhaustive_slices=True, convex=(1,))
    cfg = TrainConfig(
        models=("unet", "unet"),
        preset="lite",
        iterations=30,
        device="cpu",
        **{**TINY, "shape_prior": prior.to_dict()},
    )
    tr = TriNetTrainer(task.images, task.seeds, task.num_classes, cfg)
    final = tr.run().prediction
    seeds = task.seeds[0]
    assert not (final.ensemble[1] == 1).any()
    assert all(not (lab[1] == 1).any() for lab in final.per_model.values())
    # the same networks without the rules: the square shows on slice 1 in their own labels
    # (the floor keeps the ensemble there at its one drawn class), and the rules are exactly
    # what turned the labels into the final ones
    tr.shape_prior = ShapePrior()
    raw = tr.predict(task.images[0], seeds=seeds)
    assert all((lab[1] == 1).sum() > 50 for lab in raw.per_model.values())
    np.testing.assert_array_equal(final.ensemble, apply_shape_prior(raw.ensemble, seeds, prior))
    # the walker's target gets the rules too: its notch is filled
    tr.shape_prior = prior
    tr.config.prior_on_teacher = False
    rw_raw = tr._random_walker()[0]
    tr.config.prior_on_teacher = True
    rw_shaped = tr._random_walker()[0]
    assert (rw_raw[0, 26:30, 17:19] != 1).any() and (rw_shaped[0, 26:30, 17:19] == 1).all()
    np.testing.assert_array_equal(rw_shaped, apply_shape_prior(rw_raw, tr._seeds[0], prior))


def test_a_single_2d_image_is_augmented_by_default_and_a_stack_is_not():
    """lite's SINGLE_SLICE_RECIPES: a one-slice image's batches are copies of one picture."""
    image = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    seeds = np.full((1, 32, 32), -1, np.int64)
    seeds[0, 2, 2:30], seeds[0, 16, 10:20] = 0, 1

    def resolved(images, seeds_list, **kw):
        cfg = TrainConfig(models=("unet",), iterations=1, device="cpu", max_side=0, **kw)
        return TriNetTrainer(images, seeds_list, 2, cfg, preview=None).config.augment

    assert resolved([image], [seeds]) is True
    stack, stack_seeds = np.concatenate([image, image]), np.concatenate([seeds, seeds])
    assert resolved([stack], [stack_seeds]) is False
    assert resolved([image, image], [seeds, seeds]) is False  # two images: variety enough
    assert resolved([image], [seeds], augment=False) is False  # the user's choice stands


def test_the_callers_config_is_not_filled_in_and_serves_the_next_image_afresh():
    """The recipe is resolved in the trainer's copy: one config used for a 2-D image and then
    a stack must give the stack the stack's recipe, not the photo's augmentation."""
    image = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    seeds = np.full((1, 32, 32), -1, np.int64)
    seeds[0, 2, 2:30], seeds[0, 16, 10:20] = 0, 1
    cfg = TrainConfig(models=("unet",), iterations=1, device="cpu", max_side=0)
    photo = TriNetTrainer([image], [seeds], 2, cfg, preview=None)
    assert photo.config.augment is True and photo.config.preset == "lite"
    assert cfg.augment is None and cfg.preset is None and cfg.lr is None  # as the caller left it
    stack = TriNetTrainer(
        [np.concatenate([image, image])], [np.concatenate([seeds, seeds])], 2, cfg, preview=None
    )
    assert stack.config.augment is False
