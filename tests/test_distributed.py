"""Dataset training under torchrun: two CPU processes (gloo) train like one (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

ROOT = Path(__file__).resolve().parents[1]

# one process of the run: trains a tiny trio on each DATA folder in turn and writes its
# losses and weights (one launch for both folders: starting processes is the slow part)
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from napari_medseg.data.collection import open_collection
    from napari_medseg.training import TrainConfig
    from napari_medseg.training.distributed import shutdown
    from napari_medseg.workflow import Workflow

    rank = int(os.environ.get("RANK", "0"))
    for data, out in zip(sys.argv[1::2], sys.argv[2::2]):
        wf = Workflow()
        cfg = TrainConfig(models=("unet", "unet"), iterations=4, device="cpu", batch_size=2)
        wf.prepare_dataset(open_collection(data), cfg, val_fraction=0.0)
        steps = wf.train_dataset(save_to=out + "/model.pt", validate_every=0)
        losses = [u.losses["total"] for u in steps if not u.done]
        torch.save({k: m.state_dict() for k, m in wf.trainer.models.items()},
                   f"{out}/weights{rank}.pt")
        with open(f"{out}/losses{rank}.json", "w") as f:
            json.dump({"losses": losses, "files": len(wf.dataset.train)}, f)
    shutdown()
    """
)


def _folder(root: Path, identical: bool) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "scribbles").mkdir()
    for i in range(4):
        yy, xx = np.mgrid[:32, :32]
        r = 8 if identical else 6 + i
        disc = (yy - 16) ** 2 + (xx - 16) ** 2 <= r * r
        noise = np.random.default_rng(0 if identical else i).normal(0.2, 0.05, (32, 32))
        img = (noise + 0.6 * disc).astype(np.float32)
        scr = np.zeros((32, 32), np.uint8)
        scr[2:4, 2:30] = 1
        scr[16, 12:20] = 2
        tifffile.imwrite(root / "images" / f"c{i}.tif", img)
        tifffile.imwrite(root / "scribbles" / f"c{i}.tif", scr)
    return root


def _run(script: Path, processes: int, *runs: tuple[Path, Path]) -> None:
    args = []
    for data, out in runs:
        out.mkdir(parents=True)
        args += [str(data), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if processes == 1:
        env = {k: v for k, v in env.items() if k not in ("WORLD_SIZE", "RANK")}
        cmd = [sys.executable, str(script), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
        cmd += [f"--nproc_per_node={processes}", str(script), *args]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_processes_give_one_process_loss_curve_and_stay_in_sync(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)

    # identical images: each process's batches are the single process's, so with averaged
    # gradients the loss curves must agree step for step
    same = _folder(tmp_path / "same", identical=True)
    other = _folder(tmp_path / "other", identical=False)
    _run(script, 1, (same, tmp_path / "one"))
    _run(script, 2, (same, tmp_path / "two"), (other, tmp_path / "sync"))
    one = json.loads((tmp_path / "one" / "losses0.json").read_text())
    two = [json.loads((tmp_path / "two" / f"losses{r}.json").read_text()) for r in (0, 1)]
    assert one["files"] == 4 and [t["files"] for t in two] == [2, 2]  # shards
    assert len(one["losses"]) == 4
    for t in two:
        np.testing.assert_allclose(t["losses"], one["losses"], rtol=1e-4)
    assert one["losses"][-1] != one["losses"][0]  # it did train

    # different images: the shards differ, the weights must still be the same everywhere
    w0, w1 = (torch.load(tmp_path / "sync" / f"weights{r}.pt") for r in (0, 1))
    for key in w0:
        for name, t in w0[key].items():
            if t.is_floating_point() and "running" not in name:
                torch.testing.assert_close(t, w1[key][name], rtol=1e-5, atol=1e-6)
    r0, r1 = (json.loads((tmp_path / "sync" / f"losses{r}.json").read_text()) for r in (0, 1))
    assert r0["losses"] != r1["losses"]  # they did see different images

    # rank 0 alone wrote the checkpoint, and its card counts both processes' files
    from napari_medseg.checkpoints import load_checkpoint

    card = load_checkpoint(tmp_path / "sync" / "model.pt").card
    assert card["trained_on"]["images"] == 4 and card["trained_on"]["processes"] == 2
