"""The session autosave's files (napari_medseg.autosave, no Qt): snapshots written whole and
read back intact, the model carried over, crashed sessions told apart from live and clean ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_medseg import autosave
from napari_medseg.checkpoints import load_checkpoint
from napari_medseg.training import TrainConfig
from napari_medseg.workflow import Task, Workflow

sys.path.insert(0, str(Path(__file__).parent))
from reliability_cases import image_2d, scribbles_2d  # noqa: E402


def _checkpoint():
    wf = Workflow(Task())
    wf.set_inputs([(image_2d(), scribbles_2d())])
    wf.build(TrainConfig(models=("unet",), preset="lite", device="cpu", iterations=1))
    return wf.checkpoint()


def _snapshot(**kw) -> autosave.Snapshot:
    img = image_2d()
    return autosave.Snapshot(
        scribbles=scribbles_2d(),
        scribbles_name="scr",
        image_name="img",
        image_shape=img.shape,
        image_sha256=autosave.array_sha256(img),
        scale=(1.0, 0.5),
        translate=(0.0, 0.0),
        settings={"class_names": ["background", "lesion"], "preset": "lite"},
        **kw,
    )


def dead_pid() -> int:
    """The id of a process that has just ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def crash(folder: Path) -> None:
    """Makes ``folder`` look like the session of a process that died without a clean exit."""
    owner = json.loads((folder / autosave.OWNER_FILE).read_text())
    owner["pid"] = dead_pid()
    (folder / autosave.OWNER_FILE).write_text(json.dumps(owner))
    (folder / autosave.CLEAN_MARKER).unlink(missing_ok=True)


def test_root_and_interval_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(autosave.DIR_ENV, str(tmp_path / "here"))
    assert autosave.autosave_root() == tmp_path / "here"
    monkeypatch.delenv(autosave.DIR_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert autosave.autosave_root() == tmp_path / "xdg" / "napari-medseg" / "autosave"
    for text, value in (("0.5", 0.5), ("0", 0.0), ("-3", 180.0), ("nan", 180.0), ("x", 180.0)):
        monkeypatch.setenv(autosave.INTERVAL_ENV, text)
        assert autosave.autosave_interval() == value, text


def test_a_snapshot_round_trips_and_carries_the_model_over(tmp_path):
    folder = autosave.new_session(tmp_path)
    first = autosave.write_snapshot(folder, _snapshot(), _checkpoint())
    back = autosave.read_snapshot(first)
    np.testing.assert_array_equal(back.scribbles, scribbles_2d())
    assert back.scribbles.dtype == np.uint8 and back.strokes == int((scribbles_2d() > 0).sum())
    assert (back.image_name, back.image_shape) == ("img", image_2d().shape)
    assert back.image_sha256 == autosave.array_sha256(image_2d())
    assert back.scale == (1.0, 0.5) and back.settings["class_names"] == ["background", "lesion"]
    weights = load_checkpoint(back.model).content_sha256
    assert weights is not None
    # the next snapshot without a new model keeps the last one; the older snapshot goes
    second = autosave.write_snapshot(folder, _snapshot())
    assert not first.exists() and second.name > first.name
    assert load_checkpoint(autosave.read_snapshot(second).model).content_sha256 == weights
    # ... unless there is no model any more
    third = autosave.write_snapshot(folder, _snapshot(), keep_model=False)
    assert autosave.read_snapshot(third).model is None
    # nothing half-written is left beside the snapshot
    assert sorted(p.name for p in folder.iterdir()) == [autosave.OWNER_FILE, third.name]


def test_a_damaged_snapshot_is_refused(tmp_path):
    snap = autosave.write_snapshot(autosave.new_session(tmp_path), _snapshot())
    scr = np.load(snap / autosave.SCRIBBLES_FILE)
    scr[0, 0] = 7
    np.save(snap / autosave.SCRIBBLES_FILE, scr)
    with pytest.raises(ValueError, match="changed after it was saved"):
        autosave.read_snapshot(snap)


def test_only_sessions_that_crashed_are_offered(tmp_path):
    live = autosave.new_session(tmp_path)  # this process: running
    autosave.write_snapshot(live, _snapshot())
    clean = autosave.new_session(tmp_path)
    autosave.write_snapshot(clean, _snapshot())
    crash(clean)
    autosave.mark_clean(clean)
    empty = autosave.new_session(tmp_path)  # crashed before its first autosave
    crash(empty)
    crashed = autosave.new_session(tmp_path)
    autosave.write_snapshot(crashed, _snapshot(), _checkpoint())
    crash(crashed)
    incomplete = autosave.new_session(tmp_path)  # died while writing its first snapshot
    (incomplete / "snapshot-000001").mkdir()
    np.save(incomplete / "snapshot-000001" / autosave.SCRIBBLES_FILE, scribbles_2d())
    crash(incomplete)

    found = autosave.crashed_sessions(tmp_path)
    assert [s.folder for s in found] == [crashed]
    assert found[0].snapshot.scribbles is None  # the offer reads the record only
    assert found[0].snapshot.model is not None and "scr" in found[0].describe()
    # clean and empty ended sessions are cleared away; the live one stays
    assert live.exists() and not clean.exists() and not empty.exists() and not incomplete.exists()
    assert crashed.exists()


def test_a_session_on_another_host_is_offered_but_not_removed(tmp_path):
    other = autosave.new_session(tmp_path)
    owner = {"pid": os.getpid(), "host": "another-machine"}
    (other / autosave.OWNER_FILE).write_text(json.dumps(owner))
    assert autosave.crashed_sessions(tmp_path) == [] and other.exists()  # nothing saved yet
    autosave.write_snapshot(other, _snapshot())
    assert [s.folder for s in autosave.crashed_sessions(tmp_path)] == [other]
