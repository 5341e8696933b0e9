"""The widget's worker side (:mod:`napari_medseg._napari.session`) without Qt: thread policy,
warm-up and what the live updates carry."""

from __future__ import annotations

import sys

import numpy as np

from napari_medseg._napari.session import (
    TrainingSession,
    TrainRequest,
    default_threads,
    start_warm_up,
    warm_imports,
)


def _stack(z=3, h=40, w=36):
    rng = np.random.default_rng(0)
    img = rng.normal(0.2, 0.05, (z, h, w)).astype(np.float32)
    img[:, 10:30, 10:26] += 0.6
    scr = np.zeros((z, h, w), np.uint8)
    scr[:, 2:4, 2:30] = 1
    scr[:, 18:20, 14:22] = 2
    return img, scr


def _request(img, scr, **kw):
    args = dict(
        image=img,
        scribbles=scr,
        class_names=["background", "square"],
        models=("unet", "unet"),
        preset="lite",
        device="cpu",
        iterations=2,
        batch_size=2,
        patch_size=32,
        preview_every_seconds=0.0,
        threads=1,
    )
    args.update(kw)
    return TrainRequest(**args)


def test_default_threads_leave_a_core_for_the_gui():
    assert [default_threads(n) for n in (1, 2, 3, 4, 16)] == [1, 1, 2, 3, 15]
    assert default_threads() >= 1


def test_warm_imports_load_what_the_first_step_needs():
    warm_imports()
    for name in (
        "monai.losses",
        "torch._dynamo",
        "napari_medseg.training.trainer",
        "scipy.ndimage",
        "skimage.morphology",
    ):
        assert name in sys.modules, name
    # once per process, in a daemon thread (not Qt's global pool, see start_warm_up)
    thread = start_warm_up()
    assert thread is start_warm_up() and thread.daemon
    thread.join(60)


def test_first_live_preview_is_the_slice_on_screen_then_the_whole_stack():
    img, scr = _stack()
    updates = list(TrainingSession().train(_request(img, scr, preview_slice=2)))
    assert [u.stage for u in updates[:2]] == ["preparing", "ready"]
    shown = [u for u in updates if u.labels is not None]
    walker, first, rest = shown[0], shown[1], shown[2:]
    # the walker's answer on the slice on screen before any step, then the networks'
    assert walker.slice_index == 2 and walker.run_step == 0 and walker.labels == {}
    assert walker.ensemble.shape == img.shape[1:]
    assert first.slice_index == 2 and first.run_step == 1
    assert first.ensemble.shape == img.shape[1:] and first.ensemble.dtype == np.uint8
    assert set(first.labels) == {"unet", "unet_2"}
    assert all(v.shape == img.shape[1:] for v in first.labels.values())
    assert first.disagreement.shape == img.shape[1:]
    assert set(np.unique(first.ensemble)) <= {1, 2}
    assert rest and all(u.slice_index is None and u.ensemble.shape == img.shape for u in rest)
    assert updates[-1].done and updates[-1].labels is not None


def test_a_2d_image_is_previewed_whole():
    img, scr = _stack(z=1)
    shown = [
        u
        for u in TrainingSession().train(_request(img[0], scr[0], preview_slice=5))
        if u.labels is not None
    ]
    assert shown and all(u.slice_index is None for u in shown)
    assert all(u.ensemble.shape == img.shape[1:] for u in shown)


def test_the_worker_waits_for_the_gui_layers_before_its_first_step():
    import threading

    img, scr = _stack(z=2)
    session = TrainingSession()
    gen = session.train(_request(img, scr, wait_for_layers=True))
    assert next(gen).stage == "preparing" and next(gen).stage == "ready"
    got = []
    worker = threading.Thread(target=lambda: got.append(next(gen)))
    worker.start()
    worker.join(0.5)
    assert worker.is_alive() and not got  # waiting for the GUI
    assert session.trainer.iteration == 0
    session.layers_ready()
    worker.join(120)
    assert got and got[0].stage == "training" and got[0].run_step == 0  # the walker's preview
    assert next(gen).run_step == 1
    gen.close()
    # a stop while waiting ends the run without a step
    gen = session.train(_request(img, scr, wait_for_layers=True))
    next(gen), next(gen)
    session.request_stop()
    rest = list(gen)
    assert rest[-1].done and rest[-1].stopped and rest[-1].run_step == 0


def test_the_classical_answer_is_the_users_choice():
    img, scr = _stack()
    session = TrainingSession()
    assert list(session.train(_request(img, scr)))[-1].done
    assert session.trainer.config.classifier is True  # the default
    session = TrainingSession()
    assert list(session.train(_request(img, scr, classifier=False)))[-1].done
    assert session.trainer.config.classifier is False


def test_cardiac_prior_follows_the_class_names():
    import pytest

    from napari_medseg._napari.session import GuiError
    from napari_medseg.shape_prior import ShapePrior

    img, scr = _stack()
    scr[:, 30:32, 5:30] = 3
    session = TrainingSession()
    names = ["background", "LV", "Myo"]
    updates = list(session.train(_request(img, scr, class_names=names, shape_prior="cardiac")))
    assert updates[-1].done
    prior = ShapePrior.from_dict(session.trainer.config.shape_prior)
    assert prior == ShapePrior(exhaustive_slices=True, convex=(1,), walls=((2, 1),))
    with pytest.raises(GuiError, match="named 'LV'"):
        list(TrainingSession().train(_request(img, scr[:, :, :] % 3, shape_prior="cardiac")))


def test_predict_on_the_training_image_gets_the_priors_stroke_rules():
    img, scr = _stack()
    scr[:, 30:32, 5:30] = 3
    scr[1][scr[1] == 3] = 0  # slice 1 has no stroke of class 3: complete slices drop it
    session = TrainingSession()
    req = _request(
        img, scr, class_names=["background", "LV", "Myo"], shape_prior="cardiac", iterations=30
    )
    final = list(session.train(req))[-1]
    assert not (final.ensemble[1] == 3).any()
    # without the strokes the networks do put class 3 (index 2) on slice 1
    data = session.workflow.inputs[0].images[0]
    assert (session.trainer.predict(data).ensemble[1] == 2).any()
    again = session.predict(img, "stack", threads=1)
    np.testing.assert_array_equal(again.ensemble, final.ensemble)
    one = session.predict(img, "stack", slice_index=1, threads=1)
    np.testing.assert_array_equal(one.ensemble, final.ensemble[1])
    # another image: no strokes to go by, so the stroke rules stay off
    assert session.trainer.scribbles_of(np.zeros_like(session.workflow.inputs[0].images[0])) is None


def test_a_new_train_keeps_the_walker_each_slice_showed():
    """Train again after drawing builds a new workflow and trainer: the session hands it the
    walker history of the last one (the plain walkers it need not recompute; with
    ``stroke_local`` on, what keeps the floor unchanged away from the new strokes)."""
    img, scr = _stack(z=1)
    session = TrainingSession()
    list(session.train(_request(img[0], scr[0])))
    history = session.workflow.walker_history
    assert len(history) == 1  # the slice's walker, shown in the previews
    more = scr[0].copy()
    more[34:36, 28:34] = 1
    first = session.workflow
    list(session.train(_request(img[0], more, start="current")))
    assert session.workflow is not first and session.workflow.walker_history is history
