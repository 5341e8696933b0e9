"""Data-parallel dataset training over several processes (``torchrun``).

Under ``torchrun --nproc_per_node N napari-medseg train --data DIR ...`` every process (rank)
builds the same trio (same seed, then rank 0's weights broadcast), trains on its own shard of
the dataset's training files, and before each optimiser step the gradients of every network
are averaged over the ranks (one ``all_reduce`` of all gradients flattened together), so the
weights stay identical everywhere — what ``DistributedDataParallel`` does, written out
because the trio's three networks share one backward pass and one loss. The budget's progress
(which drives the learning-rate schedule and the stop) is rank 0's, shared every step, so that
all ranks take the same number of steps with the same learning rate. Only rank 0 validates,
prints and writes checkpoints.

Backend: NCCL for CUDA devices, gloo otherwise (CPU processes, tested with two). A single
process (no ``WORLD_SIZE`` above 1) never touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training processes."""

    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence) -> list:
        """Every ``world``-th item from ``rank`` on: shards differ by at most one item."""
        return list(items[self.rank :: self.world])

    def average_gradients(self, models: Iterable[nn.Module]) -> None:
        """Replaces every gradient by its mean over the ranks (one collective call)."""
        import torch.distributed as dist

        grads = [p.grad for m in models for p in m.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def broadcast_weights(self, models: Iterable[nn.Module]) -> None:
        """Rank 0's parameters and buffers everywhere (a loaded base or a fresh start alike)."""
        import torch.distributed as dist

        with torch.no_grad():
            for m in models:
                for t in [*m.parameters(), *m.buffers()]:
                    dist.broadcast(t.data, 0)

    def agree(self, progress: float | None, stop: bool) -> tuple[float | None, bool]:
        """Rank 0's budget progress, and whether any rank wants to stop."""
        import torch.distributed as dist

        mine = -1.0 if progress is None else float(progress)
        t = torch.tensor([mine if self.is_main else 0.0, 1.0 if stop else 0.0], dtype=torch.float64)
        dist.all_reduce(t)
        shared = float(t[0])
        return (None if shared < 0 else shared), bool(t[1] > 0)

    def total(self, *values: int) -> list[int]:
        """The sums of integers over the ranks (files, slices, pixels trained on)."""
        import torch.distributed as dist

        t = torch.tensor([int(v) for v in values], dtype=torch.int64)
        dist.all_reduce(t)
        return [int(v) for v in t]


def from_environment(device: torch.device) -> Distributed | None:
    """The process group ``torchrun`` describes (``WORLD_SIZE`` > 1), joined once; else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size())


def shutdown() -> None:
    """Leaves the process group (after the last collective call), if one was joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
