"""Prediction from an exponential moving average of each network's weights (an experiment).

On a single Kvasir frame the lite recipe trains on one fixed batch (whole slices, no
augmentation), and the networks' Dice swings from step to step — +0.20 over the walker at 50
steps, −0.29 at 200 on one frame (BENCHMARKS §9, fourth round) — while every label-free score
stays flat, so the floor cannot see which step it is shown. Averaged weights (Polyak, the "EMA
model" of semi-supervised segmentation) smooth the path the optimiser takes; whether that
steadies the hesitating band is what ``TrainConfig.ema_decay`` lets a benchmark measure.

Only parameters are averaged: BatchNorm statistics are re-estimated for the weights that
predict (``TriNetTrainer._recalibrate_batchnorm``) or follow them through training.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """A shadow copy of every network's parameters, ``shadow ← d·shadow + (1 − d)·weights``.

    The decay is warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that
    a five-step preview is not the average of five steps and the random initialisation.
    """

    def __init__(self, models: Mapping[str, nn.Module], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie strictly between 0 and 1, not {decay}")
        self.models = models
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: [p.detach().clone() for p in m.parameters()] for k, m in models.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Folds the networks' current weights into the average (after an optimiser step)."""
        d = self.current_decay()
        for k, m in self.models.items():
            for s, p in zip(self.shadow[k], m.parameters()):
                s.lerp_(p.detach(), 1.0 - d)
        self.updates += 1

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """The networks carry the averaged weights inside the block, their own after it."""
        saved = {k: [p.detach().clone() for p in m.parameters()] for k, m in self.models.items()}
        try:
            for k, m in self.models.items():
                for s, p in zip(self.shadow[k], m.parameters()):
                    p.copy_(s)
            yield
        finally:
            for k, m in self.models.items():
                for s, p in zip(saved[k], m.parameters()):
                    p.copy_(s)
