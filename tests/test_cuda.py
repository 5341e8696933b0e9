"""What only a CUDA GPU can show; every test here skips cleanly without one.

Run them with ``pytest -m cuda`` (``benchmarks/gpu_check.py`` does, as its first stage). Tiny
sizes: these check correctness on the device, speed is gpu_check's business.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from test_selective_scan import NAMES, make_inputs, rel_err, run

from napari_medseg.ops import available_backends, selective_scan, selective_scan_ref
from napari_medseg.training import TrainConfig, TriNetTrainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
DEVICE = "cuda"


def on_device(backend: str):
    """The dispatcher with inputs moved to the GPU and the outputs back to the CPU: gradients
    then flow to the CPU leaves that :func:`run` compares with the float64 reference."""

    def scan(*xs, **kw):
        moved = [None if x is None else x.to(DEVICE) for x in xs]
        y, last = selective_scan(*moved, backend=backend, **kw)
        return y.cpu(), last.cpu()

    return scan


@pytest.mark.parametrize("groups", [None, 2])
def test_torch_scan_on_cuda_matches_float64_reference(groups):
    inputs = make_inputs(11, bsz=2, d=8, n=4, L=67, groups=groups, softplus=True)
    y, last, grads = run(on_device("torch"), inputs, torch.float32, True, 11)
    ry, rlast, rgrads = run(selective_scan_ref, inputs, torch.float64, True, 11)
    assert rel_err(y, ry) < 1e-4 and rel_err(last, rlast) < 1e-4
    for k in rgrads:
        assert rel_err(grads[k], rgrads[k]) < 1e-3, k


def test_mamba_ssm_kernel_matches_float64_reference():
    if "mamba_ssm" not in available_backends():
        pytest.skip("mamba-ssm is not installed (pip install 'napari-medseg[cuda]')")
    inputs = make_inputs(12, bsz=2, d=8, n=4, L=67, softplus=True)
    y, last, grads = run(on_device("mamba_ssm"), inputs, torch.float32, True, 12)
    ry, rlast, rgrads = run(selective_scan_ref, inputs, torch.float64, True, 12)
    assert rel_err(y, ry) < 1e-3 and rel_err(last, rlast) < 1e-3
    for k in rgrads:
        assert rel_err(grads[k], rgrads[k]) < 1e-2, k
    # "auto" picks the kernel for CUDA tensors
    cuda_inputs = {k: v.float().to(DEVICE) for k, v in inputs.items()}
    auto = selective_scan(*(cuda_inputs[k] for k in NAMES), delta_softplus=True)
    forced = selective_scan(
        *(cuda_inputs[k] for k in NAMES), delta_softplus=True, backend="mamba_ssm"
    )
    torch.testing.assert_close(auto, forced)


def _tiny_task(z=2, size=64):
    rng = np.random.default_rng(0)
    image = rng.normal(0.2, 0.05, (z, 1, size, size)).astype(np.float32)
    image[:, :, 16:48, 16:48] += 0.6
    seeds = np.full((z, size, size), -1, np.int64)
    seeds[:, 2:4, 2:60] = 0
    seeds[:, 30:33, 24:40] = 1
    return image, seeds


def _trainer(preset: str) -> TriNetTrainer:
    image, seeds = _tiny_task()
    cfg = TrainConfig(
        preset=preset,
        device=DEVICE,
        iterations=2,
        batch_size=2,
        patch_size=64,
        preview_every_seconds=None,
    )
    return TriNetTrainer([image], [seeds], 2, cfg, preview=None)


@pytest.mark.parametrize("preset", ["lite", "paper"])
def test_trio_trains_on_cuda(preset):
    trainer = _trainer(preset)
    assert all(p.device.type == DEVICE for m in trainer.models.values() for p in m.parameters())
    final = trainer.run()
    assert final.iteration == 2 and np.isfinite(final.losses["total"])
    image, _ = _tiny_task()
    pred = trainer.predict(image)
    assert pred.ensemble.shape == image[:, 0].shape
    assert set(pred.per_model) == set(trainer.keys)


def test_cuda_memory_is_released_after_the_trainer_is_dropped():
    def train_and_drop():
        trainer = _trainer("paper")
        trainer.run()
        used = torch.cuda.memory_allocated()
        del trainer
        gc.collect()
        torch.cuda.empty_cache()
        return used

    train_and_drop()  # first use: cuBLAS/cuDNN keep their workspaces for the process
    before = torch.cuda.memory_allocated()
    assert train_and_drop() > before + (1 << 20)
    # nothing of the trio stays referenced (no cycle keeps a model or optimizer state alive)
    assert torch.cuda.memory_allocated() - before < 1 << 20
    assert torch.cuda.memory_reserved() - torch.cuda.memory_allocated() < 64 << 20
