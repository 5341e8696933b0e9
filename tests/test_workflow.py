"""The facade every surface drives: one task, a trio, user values in and out, save and load."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_medseg.checkpoints import Checkpoint, load_checkpoint
from napari_medseg.data.classes import ClassMap, channel_kind
from napari_medseg.data.readers import load_image
from napari_medseg.errors import CheckpointError, ConfigError, InputError, MedsegError
from napari_medseg.presets import PRESETS, default_preset, recipe
from napari_medseg.training import TrainConfig
from napari_medseg.workflow import Task, Workflow, write_segmentation

FAST = dict(
    models=("unet", "unet"),
    preset="lite",
    iterations=2,
    device="cpu",
    batch_size=2,
    patch_size=32,
    preview_every_seconds=None,
    predict_batch_size=2,
)


def _pair(z=2, h=40, w=36, values=(1, 3)):
    rng = np.random.default_rng(0)
    img = rng.normal(0.2, 0.05, (z, h, w)).astype(np.float32)
    img[:, 10:30, 10:26] += 0.6
    scr = np.zeros((z, h, w), np.uint16)
    scr[:, 2:4, 2:30] = values[0]
    scr[:, 18:20, 14:22] = values[1]
    return img, scr


def test_train_predict_save_load_in_the_users_values(tmp_path):
    img, scr = _pair()
    wf = Workflow(Task(spacing=(5.0, 1.0, 1.0)))
    updates = list(wf.train([(img, scr)], TrainConfig(**FAST)))
    final = updates[-1]
    assert final.done and final.run_step == 2 and final.iteration == 2
    seg = final.segmentation
    assert wf.task.class_values == (1, 3) and wf.task.kind == "stack"
    assert set(seg.labels) == {"unet", "unet_2"}
    assert seg.ensemble.shape == img.shape and set(np.unique(seg.ensemble)) <= {1, 3}
    assert seg.disagreement.dtype == np.float32
    # any image, not the one trained on: a 2-D slice of another size
    other = wf.predict(img[0, :32, :30])
    assert other.ensemble.shape == (32, 30) and set(np.unique(other.ensemble)) <= {1, 3}
    one = wf.predict(img, slice_index=1)
    np.testing.assert_array_equal(one.ensemble, seg.ensemble[1])
    files = write_segmentation(seg, tmp_path / "out", wf.task.spacing)
    names = ["ensemble.tif", "unet.tif", "unet_2.tif", "disagreement.tif"]
    assert [f.name for f in files] == names
    # the disagreement map, as the widget's layer shows it: float, in [0, 1], the spacing kept
    written = load_image(files[-1])
    assert written.array.dtype == np.float32 and written.spacing == pytest.approx((5.0, 1.0, 1.0))
    np.testing.assert_array_equal(written.array, seg.disagreement)
    # save, load and predict again: the same labels, the same values (predicted before the
    # load: building networks draws from torch's global generator, which the trainer's
    # BatchNorm re-estimation forks for its dropout)
    # (an image without strokes: on the one trained on the trainer adds the walker's answer)
    probe = img[:, ::-1].copy()
    expected = wf.predict(probe).ensemble
    path = wf.save(tmp_path / "m.pt")
    loaded = Workflow.load(path)
    assert not loaded.trainer and loaded.has_model and loaded.models == ("unet", "unet")
    assert loaded.task.class_values == (1, 3)
    np.testing.assert_array_equal(loaded.predict(probe).ensemble, expected)
    # training a loaded workflow fine-tunes its trio (and continues its iteration count)
    tuned = list(loaded.train([(img, scr)], TrainConfig(**{**FAST, "iterations": 1})))
    assert tuned[-1].iteration == 3 and loaded.base is not None


def test_several_pairs_share_the_classes_and_resume_continues():
    a, sa = _pair()
    b, sb = _pair(z=1, h=36, w=44, values=(1, 5))
    wf = Workflow()
    warnings = wf.set_inputs([(a, sa), (b[0], sb[0])])
    assert wf.task.class_values == (1, 3, 5)  # every image's strokes count
    assert any("no scribbles for class value(s) [5]" in w for w in warnings)
    wf.build(TrainConfig(**FAST))
    assert list(wf.train())[-1].iteration == 2
    wf.configure(iterations=1)
    assert list(wf.train())[-1].iteration == 3  # Resume: the same trainer goes on
    with pytest.raises(MedsegError, match="unknown training setting"):
        wf.configure(nonsense=1)


def test_scribbles_drawn_while_training_are_checked_once():
    img, scr = _pair()
    wf = Workflow(Task.named(["background", "a", "b"]))
    wf.prepare([(img, scr)], TrainConfig(**FAST))
    bad = scr.copy()
    bad[0, 30, 30] = 9
    assert "are not among the classes" in wf.update_scribbles(bad)[0]
    with pytest.raises(InputError, match="fewer than two classes"):
        wf.update_scribbles(np.where(scr == 1, 1, 0))
    with pytest.raises(InputError, match="shape mismatch"):
        wf.update_scribbles(scr[:, :-1])


def test_mismatched_images_and_empty_workflows_say_what_to_do(tmp_path):
    wf = Workflow()
    with pytest.raises(MedsegError, match="no model yet"):
        wf.predict(np.zeros((16, 16), np.float32))
    with pytest.raises(MedsegError, match="nothing to train"):
        wf.train()
    img, scr = _pair(z=1)
    wf.prepare([(img[0], scr[0])], TrainConfig(**FAST))
    path = wf.save(tmp_path / "gray.pt")
    rgb = np.zeros((24, 24, 3), np.uint8)
    with pytest.raises(CheckpointError, match="grayscale images but x.png is RGB"):
        Workflow.load(path).predict(rgb, image_name="x.png")
    with pytest.raises(CheckpointError, match="3 class names are set"):
        load_checkpoint(path).check_compatible(num_classes=3)


def test_checkpoints_written_before_the_typed_record_still_load(tmp_path):
    """The on-disk layout is unchanged: a plain dict as the trainer used to write it."""
    img, scr = _pair(z=1)
    wf = Workflow()
    wf.prepare([(img[0], scr[0])], TrainConfig(**FAST))
    ckpt = wf.checkpoint()
    trainer = wf.trainer
    old = {
        "format": "napari-medseg-trio",
        "version": 1,
        "config": trainer.config.to_dict(),
        "in_channels": 1,
        "num_classes": 2,
        "iteration": 0,
        "working_scale": trainer.scale,
        "slots": [
            {"key": k, "name": "unet", "preset": "lite", "state_dict": s.state_dict}
            for k, s in zip(trainer.keys, ckpt.slots)
        ],
        "metadata": {"class_values": [1, 3], "unlabelled": 0, "kind": "gray"},
    }  # no member_scores, no optimizer: as the earliest files
    # the same weights, read from the typed record (without scores: equal ensemble weights)
    expected = Workflow(base=replace(ckpt, member_scores={})).predict(img[0]).ensemble
    torch.save(old, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.member_scores == {} and loaded.classes == ClassMap((1, 3))
    assert loaded.to_dict().keys() >= old.keys()
    np.testing.assert_array_equal(Workflow(base=loaded).predict(img[0]).ensemble, expected)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a napari-medseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_class_map_keeps_values_up_to_65535_and_refuses_larger_ones():
    m = ClassMap((0, 300, 65535), unlabelled=7)
    assert m.dtype == np.uint16
    idx = m.to_indices(np.array([[0, 300, 7, 65535, 12]]))
    np.testing.assert_array_equal(idx, [[0, 1, -1, 2, -1]])
    np.testing.assert_array_equal(m.to_values(np.array([2, 1, 0])), [65535, 300, 0])
    assert ClassMap((1, 2)).dtype == np.uint8
    with pytest.raises(InputError, match="outside 0..65535"):
        ClassMap((1, 70000))
    with pytest.raises(InputError, match="marks unlabelled pixels"):
        ClassMap((0, 1), unlabelled=0)
    assert [channel_kind(c) for c in (1, 3, 4)] == ["grayscale", "RGB", "4-channel"]


def test_presets_are_one_list_and_unknown_names_are_errors():
    assert PRESETS == ("lite", "paper")
    assert default_preset("cuda:0") == "paper" and default_preset("cpu") == "lite"
    assert recipe("lite")["patch_size"] == 0
    with pytest.raises(ConfigError, match="unknown preset 'huge'; choose one of: lite, paper"):
        recipe("huge")
    cfg = TrainConfig()
    with pytest.raises(ConfigError, match="lite, paper"):
        cfg.resolve("huge")  # no silent fallback to another preset
    assert issubclass(InputError, MedsegError) and issubclass(CheckpointError, ValueError)


def test_a_checkpoint_keeps_the_task():
    img, scr = _pair(z=1)
    wf = Workflow(Task.named(["bg", "x", "y"]))
    wf.prepare([(img[0], np.where(scr[0] == 3, 2, scr[0]))], TrainConfig(**FAST))
    ckpt = wf.checkpoint()
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.metadata == {
        "class_values": [1, 2, 3],
        "unlabelled": 0,
        "kind": "gray",
        "class_names": ["bg", "x", "y"],
    }
    assert Task.from_checkpoint(ckpt).class_names == ("bg", "x", "y")
