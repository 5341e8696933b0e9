"""What a run promises beyond refusing bad input (docs/reliability.md): outputs staged and moved
into place, the umask honoured, Ctrl-C keeping the work done, checkpoints hashed, memory
returned across many train/stop cycles, dense maps and odd budgets that used to crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_medseg.atomic import atomic_write, current_umask
from napari_medseg.checkpoints import load_checkpoint, save_checkpoint, weights_sha256
from napari_medseg.cli import main
from napari_medseg.errors import CheckpointError, OutputError
from napari_medseg.outputs import MANIFEST, StagedOutputs
from napari_medseg.training import TrainConfig
from napari_medseg.training.pseudo_labels import random_walker_probabilities
from napari_medseg.workflow import Task, Workflow

sys.path.insert(0, str(Path(__file__).parent))
from reliability_cases import digests, image_2d, scribbles_2d  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST_CFG = dict(models=("unet",), preset="lite", device="cpu", batch_size=2, patch_size=32)


@pytest.fixture
def pair(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", image_2d())
    tifffile.imwrite(tmp_path / "scr.tif", scribbles_2d())
    return tmp_path


def _train_args(d: Path, out: Path, *extra) -> list[str]:
    return ["train", "--image", str(d / "img.tif"), "--scribbles", str(d / "scr.tif"),
            "--out", str(out), "--device", "cpu", "--models", "unet", "--batch-size", "2",
            *extra]  # fmt: skip


# ---------------------------------------------------------------- outputs
def test_outputs_are_staged_and_moved_into_place(tmp_path):
    target = tmp_path / "run"
    with StagedOutputs(target) as outputs:
        outputs.path("a.tif").write_bytes(b"new")
        assert not target.exists()  # nothing under the real name before the end
        files = outputs.commit()
    assert [f.name for f in files] == ["a.tif"] and (target / "a.tif").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging left
    assert (target / MANIFEST).is_file()


def test_a_failed_run_leaves_the_folder_as_it_was(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "model.pt").write_bytes(b"old model")
    before = digests(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with StagedOutputs(target) as outputs:
            outputs.path("ensemble.tif").write_bytes(b"half")
            raise KeyboardInterrupt
    assert digests(tmp_path) == before  # no new TIFF beside the old model, no .tmp


def test_a_failed_run_removes_the_folders_it_created_above_its_output(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with StagedOutputs(tmp_path / "a" / "b" / "run") as outputs:
            outputs.path("ensemble.tif").write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # no a/b left behind
    # a folder that was there, or that someone else filled meanwhile, stays
    (tmp_path / "a").mkdir()
    with pytest.raises(KeyboardInterrupt):
        with StagedOutputs(tmp_path / "a" / "b" / "run") as outputs:
            (tmp_path / "a" / "b" / "theirs.txt").write_text("not ours")
            raise KeyboardInterrupt
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["theirs.txt"]


def test_a_reused_folder_holds_only_this_runs_predictions(tmp_path):
    target = tmp_path / "run"
    with StagedOutputs(target) as outputs:
        for name in ("ensemble.tif", "unet_2.tif", "model.pt"):
            outputs.path(name).write_bytes(b"first")
        outputs.commit()
    (target / "notes.txt").write_text("the user's")
    with StagedOutputs(target) as outputs:
        outputs.path("ensemble.tif").write_bytes(b"second")
        outputs.commit()
    names = sorted(p.name for p in target.iterdir())
    # the first run's stale prediction is gone; its model is kept and reported; the user's file
    # is untouched
    assert names == sorted([MANIFEST, "ensemble.tif", "model.pt", "notes.txt"])
    assert (target / "ensemble.tif").read_bytes() == b"second"
    assert [p.name for p in outputs.removed] == ["unet_2.tif"]
    assert [p.name for p in outputs.stale] == ["model.pt"]


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(tmp_path):
    target = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / ".run.medseg-staging-x"
    stale.mkdir()
    (stale / "pid").write_text(str(dead.pid))
    (stale / "ensemble.tif").write_bytes(b"half")
    with StagedOutputs(target) as outputs:
        assert not stale.exists()
        outputs.path("a.tif").write_bytes(b"x")
        outputs.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_output_over_an_input_is_refused_before_work(tmp_path):
    (tmp_path / "run").mkdir()
    scr = tmp_path / "run" / "ensemble.tif"
    scr.write_bytes(b"the user's scribbles")
    with StagedOutputs(tmp_path / "run", [scr]) as outputs:
        with pytest.raises(OutputError, match="would overwrite the input"):
            outputs.check_names(["ensemble.tif"])
    assert scr.read_bytes() == b"the user's scribbles"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        path = atomic_write(tmp_path / "f.txt", lambda tmp: Path(tmp).write_text("x"))
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask
        with StagedOutputs(tmp_path / "run") as outputs:
            outputs.path("a.tif").write_bytes(b"x")
            outputs.commit()
        assert (tmp_path / "run").stat().st_mode & 0o777 == 0o777 & ~umask
        assert (tmp_path / "run" / "a.tif").stat().st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(old)


def test_replacing_a_file_keeps_its_mode(tmp_path):
    path = tmp_path / "shared.csv"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write(path, lambda tmp: Path(tmp).write_text("new"))
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640


def test_cli_train_writes_only_through_the_staging_folder(pair, capsys):
    out = pair / "run"
    assert main(_train_args(pair, out, "--iterations", "1")) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([MANIFEST, "ensemble.tif", "unet.tif", "disagreement.tif", "model.pt"])
    assert sorted(p.name for p in pair.iterdir()) == ["img.tif", "run", "scr.tif"]
    model = (out / "model.pt").read_bytes()
    # predict with that model into its own folder: the predictions are replaced, the model
    # (an input now) is untouched
    rc = main(["predict", "--checkpoint", str(out / "model.pt"), "--image",
               str(pair / "img.tif"), "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert rc == 0 and (out / "model.pt").read_bytes() == model
    assert sorted(p.name for p in out.iterdir()) == names
    # another model's predictions into that folder: the earlier model.pt is kept, and named
    other = pair / "other"
    assert main(_train_args(pair, other, "--iterations", "1")) == 0
    capsys.readouterr()
    rc = main(["predict", "--checkpoint", str(other / "model.pt"), "--image",
               str(pair / "img.tif"), "--out", str(out), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0 and "is from an earlier run and was kept" in err, err
    assert (out / "model.pt").read_bytes() == model


# ---------------------------------------------------------------- interruption
def test_ctrl_c_saves_the_model_and_predictions_reached(pair):
    """A real SIGINT to a CLI run: it stops through the trainer and saves, saying where."""
    out = pair / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_medseg.cli", *_train_args(pair, out, "--seconds", "120")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=pair,
    )
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for training to start
        line = proc.stderr.readline()
        lines.append(line)
        if line.startswith("training ") or not line:
            break
    assert lines[-1].startswith("training "), "".join(lines)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    stderr = "".join(lines) + stderr
    assert proc.returncode == 130, stderr
    assert "interrupted after" in stderr and str(out) in stderr, stderr
    for name in ("ensemble.tif", "unet.tif", "disagreement.tif", "model.pt"):
        assert (out / name).is_file(), stdout + stderr
    assert load_checkpoint(out / "model.pt").num_classes == 2
    assert tifffile.imread(out / "ensemble.tif").shape == (32, 32)
    assert not [p for p in pair.iterdir() if "staging" in p.name]


def test_ctrl_c_stops_the_demo_and_keeps_what_it_reached(tmp_path):
    """A real SIGINT to `napari-medseg demo`: it stops through the trainer, saves, exits 130."""
    out = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_medseg.cli", "demo", "--out", str(out), "--seconds", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    lines = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # wait for training to start
        line = proc.stderr.readline()
        lines.append(line)
        if line.startswith("napari-medseg demo: training") or not line:
            break
    assert lines[-1].startswith("napari-medseg demo: training"), "".join(lines)
    time.sleep(2.0)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    stderr = "".join(lines) + stderr
    assert proc.returncode == 130, stdout + stderr
    assert time.monotonic() - started < 200  # not the 300 s budget
    assert "interrupted after" in stderr and str(out) in stderr, stderr
    for name in ("ensemble.tif", "model.pt", "overlay.png"):
        assert (out / name).is_file(), stdout + stderr
    assert load_checkpoint(out / "model.pt").num_classes == 4
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_stop_on_interrupt_asks_the_workflow_to_stop_once_then_aborts():
    from napari_medseg.cli.interrupt import StopOnInterrupt

    class Fake:
        stops = 0

        def request_stop(self):
            self.stops += 1

    fake = Fake()
    with StopOnInterrupt(fake) as guard:
        signal.raise_signal(signal.SIGINT)
        assert guard.requested and fake.stops == 1
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------- train --dataset acdc
def _acdc_volumes(folder: Path) -> Path:
    """Two tiny ACDC-style volumes: patient 1 (fold 1's test set) and 21 (its training set)."""
    import h5py

    folder.mkdir()
    for patient in (1, 21):
        label = np.zeros((2, 32, 32), np.uint8)
        label[:, 8:24, 6:14], label[:, 10:22, 16:26], label[:, 9:23, 15:16] = 1, 3, 2
        image = (0.1 + 0.25 * label).astype(np.float32)
        scr = np.full(label.shape, 4, np.uint16)
        scr[:, 2, 2:30], scr[:, 16, 8:12], scr[:, 12:20, 15], scr[:, 16, 18:24] = 0, 1, 2, 3
        with h5py.File(folder / f"patient{patient:03d}_frame01.h5", "w") as f:
            f["image"], f["label"], f["scribble"] = image, label, scr
    return folder


def _dataset_args(data: Path, out: Path) -> list[str]:
    return ["train", "--dataset", "acdc", "--data", str(data), "--out", str(out), "--fold",
            "fold1", "--iterations", "1", "--models", "unet", "--batch-size", "2", "--device",
            "cpu"]  # fmt: skip


def test_dataset_protocol_outputs_are_written_whole(tmp_path, monkeypatch, capsys):
    """A dataset run writes in place (``--resume`` needs model.pt while it runs), each file
    atomically: a failure leaves the earlier files whole and no temporary file behind."""
    data = _acdc_volumes(tmp_path / "acdc")
    out = tmp_path / "run"
    assert main(_dataset_args(data, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "model.pt"]
    assert load_checkpoint(out / "model.pt").num_classes == 4
    metrics = (out / "metrics.csv").read_bytes()
    from napari_medseg import metrics as metrics_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(metrics_module, "write_metrics_csv", broken)
    assert main(_dataset_args(data, out)) == 2
    assert "disk full" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "model.pt"]
    assert (out / "metrics.csv").read_bytes() == metrics  # the earlier scores, whole
    assert load_checkpoint(out / "model.pt").num_classes == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acdc", "run"]


# ---------------------------------------------------------------- checkpoints
def _saved(tmp_path) -> Path:
    wf = Workflow(Task())
    wf.set_inputs([(image_2d(), scribbles_2d())])
    wf.build(TrainConfig(iterations=1, **FAST_CFG))
    return wf.save(tmp_path / "m.pt")


def test_checkpoint_records_and_verifies_its_content_hash(tmp_path):
    path = _saved(tmp_path)
    state = torch.load(path, weights_only=True)
    loaded = load_checkpoint(path)
    assert state["content_sha256"] == weights_sha256(loaded.slots) == loaded.content_sha256
    # a byte of one weight changed: refused, clearly
    key = sorted(state["slots"][0]["state_dict"])[0]
    state["slots"][0]["state_dict"][key].view(-1)[0] += 1e-3
    torch.save(state, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="altered after it was saved"):
        load_checkpoint(tmp_path / "tampered.pt")
    # a file from before hashes were recorded still loads
    state = torch.load(path, weights_only=True)
    state.pop("content_sha256")
    torch.save(state, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").content_sha256 is None


def test_hash_is_canonical_not_dict_order(tmp_path):
    cp = load_checkpoint(_saved(tmp_path))
    digest = weights_sha256(cp.slots)
    slot = cp.slots[0]
    slot.state_dict = dict(reversed(list(slot.state_dict.items())))
    assert weights_sha256(cp.slots) == digest
    save_checkpoint(cp, tmp_path / "again.pt")
    assert load_checkpoint(tmp_path / "again.pt").content_sha256 == digest


# ---------------------------------------------------------------- crashes and endless runs
def test_walker_on_a_fully_drawn_slice_keeps_the_strokes():
    seeds = np.zeros((1, 16, 16), np.int64)
    seeds[0, 8:] = 1
    image = np.random.default_rng(0).random((1, 1, 16, 16)).astype(np.float32)
    prob = random_walker_probabilities(image, seeds, 2)
    np.testing.assert_array_equal(prob.argmax(1), seeds)


def test_one_nan_pixel_trains_to_finite_weights():
    img = image_2d()
    img[5, 5] = np.nan
    wf = Workflow(Task())
    warnings = wf.prepare([(img, scribbles_2d())], TrainConfig(iterations=2, **FAST_CFG))
    assert any("NaN" in w for w in warnings)
    final = list(wf.train())[-1]
    assert final.done
    for slot in wf.checkpoint().slots:
        for name, t in slot.state_dict.items():
            if t.is_floating_point():
                assert torch.isfinite(t).all(), name
    assert np.isfinite(final.segmentation.disagreement).all()


def test_one_nan_pixel_predicts_with_a_warning_and_valid_labels():
    """The API's predict meets the NaN pixel the way training does: replaced, said once."""
    wf = Workflow(Task())
    wf.prepare([(image_2d(), scribbles_2d())], TrainConfig(iterations=1, **FAST_CFG))
    list(wf.train())
    img = image_2d()
    img[5, 5] = np.nan
    for scribbles in (None, scribbles_2d()):
        seg = wf.predict(img, scribbles=scribbles)
        assert [w for w in seg.warnings if "NaN" in w], seg.warnings
        assert set(np.unique(seg.ensemble)) <= {1, 2}
        assert np.isfinite(seg.disagreement).all()
    assert np.isnan(img[5, 5])  # the caller's array is untouched


def test_pillows_decompression_bomb_refusal_is_said_in_words(tmp_path, monkeypatch):
    """An image within our memory guard that Pillow still refuses (its pixel limit) gets one
    clear message, not "truncated or corrupt"."""
    from PIL import Image

    from napari_medseg.data.readers import load_image
    from napari_medseg.errors import InputError

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1024 px > twice the limit
    with pytest.raises(InputError, match="decompression bombs") as info:
        load_image(path)
    assert "32×32" in str(info.value) and "big.png" in str(info.value)


def test_cli_prints_each_normalisation_warning_once(pair, capsys):
    img = image_2d()
    img[3, 3] = np.nan
    tifffile.imwrite(pair / "img.tif", img)
    assert main(_train_args(pair, pair / "run", "--iterations", "1")) == 0
    err = capsys.readouterr().err
    assert err.count("replaced 1 NaN") == 1, err


# ---------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_fifty_train_stop_cycles_do_not_grow_memory():
    """The widget's pattern — Train, Stop after a step, Train again — 50 times in one process:
    resident memory after the first cycles (allocator and import warm-up) grows < 5 %."""
    import gc

    img, scr = image_2d(), scribbles_2d()
    cfg = dict(iterations=50, preview_every_seconds=None, **FAST_CFG)
    wf = Workflow(Task())

    def cycle():
        steps = wf.train([(img, scr)], TrainConfig(**cfg))
        next(steps)  # one step, then Stop
        wf.request_stop()
        final = list(steps)[-1]
        assert final.stopped

    for _ in range(5):
        cycle()
    gc.collect()
    base = _rss_bytes()
    for _ in range(45):
        cycle()
    gc.collect()
    grown = _rss_bytes() - base
    assert grown < 0.05 * base, f"RSS grew {grown / 2**20:.1f} MiB over {base / 2**20:.0f} MiB"
