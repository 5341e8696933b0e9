"""The weight-average experiment (TrainConfig.ema_decay): averaged weights predict, the
networks' own weights keep training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_medseg.errors import ConfigError
from napari_medseg.training import TrainConfig
from napari_medseg.training.trainer import TriNetTrainer
from napari_medseg.training.weight_average import WeightAverage


def test_the_average_follows_the_warmed_up_decay_and_is_swapped_in_and_out():
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    avg = WeightAverage({"a": net}, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(1.0)
    avg.update()  # decay min(0.9, 1/10) = 0.1: 0.1·0 + 0.9·1
    assert avg.shadow["a"][0].item() == pytest.approx(0.9)
    for _ in range(200):
        avg.update()
    assert avg.current_decay() == pytest.approx(0.9)
    assert avg.shadow["a"][0].item() == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        net.weight.fill_(5.0)
    with avg.applied():
        assert net.weight.item() == pytest.approx(1.0, abs=1e-6)
    assert net.weight.item() == 5.0  # the network's own weight is back
    with pytest.raises(ValueError):
        WeightAverage({"a": net}, decay=1.0)


def _disc(n=32):
    yy, xx = np.mgrid[:n, :n]
    disc = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 4) ** 2
    image = (disc + np.random.default_rng(0).normal(0, 0.2, disc.shape)).astype(np.float32)
    seeds = np.full((1, n, n), -1, np.int64)
    seeds[0, n // 2, n // 2 - 3 : n // 2 + 3] = 1
    seeds[0, 2, 2:-2] = 0
    return image[None, None], seeds


def test_averaged_weights_predict_and_training_is_unchanged():
    image, seeds = _disc()

    def trained(decay):
        cfg = TrainConfig(
            models=("unet",), iterations=6, device="cpu", max_side=0, ema_decay=decay, floor=False
        )
        tr = TriNetTrainer([image], [seeds], 2, cfg, preview=None)
        for _ in tr.steps():
            pass
        return tr

    plain, averaged = trained(0.0), trained(0.9)
    # the optimiser's path is the same: the average only changes what predicts
    for a, b in zip(plain.models["unet"].parameters(), averaged.models["unet"].parameters()):
        torch.testing.assert_close(a, b)
    p = plain.predict(image, with_probabilities=True)
    q = averaged.predict(image, with_probabilities=True)
    assert not np.allclose(p.ensemble_probabilities, q.ensemble_probabilities, atol=1e-4)
    # and predicting leaves the trained weights in place
    for a, b in zip(plain.models["unet"].parameters(), averaged.models["unet"].parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("decay", [1.0, -0.1, float("nan")])
def test_an_impossible_decay_is_refused(decay):
    with pytest.raises(ConfigError):
        TrainConfig(ema_decay=decay)
