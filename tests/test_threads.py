"""The thread tuner: a time budget on a busy CPU steps with the thread count that is fastest."""

from __future__ import annotations

import pytest

from napari_medseg.training.threads import RETRY_SECONDS, ThreadTuner


class Machine:
    """A fake clock and step costs per thread count; records what the tuner set."""

    def __init__(self, cost: dict[int, float]):
        self.cost, self.now, self.threads, self.set_calls = cost, 0.0, None, []

    def set(self, n: int) -> None:
        self.threads = n
        self.set_calls.append(n)

    def run(self, tuner: ThreadTuner, steps: int) -> list[int]:
        used = []
        for _ in range(steps):
            tuner.before_step()
            n = self.threads if self.threads is not None else tuner.start
            used.append(n)
            took = self.cost[n]
            self.now += took
            tuner.after_step(took)
        return used


def tuner_for(machine: Machine, threads: int) -> ThreadTuner:
    return ThreadTuner(threads, clock=lambda: machine.now, set_threads=machine.set)


def test_a_busy_core_moves_the_steps_to_one_thread_and_restore_puts_the_count_back():
    busy = Machine({2: 7.0, 1: 0.63})  # one core busy: measured on the benchmark machine
    tuner = tuner_for(busy, 2)
    used = busy.run(tuner, 8)
    # step 1 (untimed) with 1 thread, trials 1 then 2, then 1 for the rest
    assert used == [1, 1, 2, 1, 1, 1, 1, 1]
    assert tuner.choice == 1
    tuner.restore()
    assert busy.threads == 2


def test_a_quiet_machine_keeps_all_its_threads():
    quiet = Machine({2: 0.45, 1: 0.60})
    tuner = tuner_for(quiet, 2)
    assert quiet.run(tuner, 6) == [1, 1, 2, 2, 2, 2]
    assert tuner.choice == 2


def test_trials_come_back_as_the_load_changes():
    m = Machine({2: 0.45, 1: 0.60})
    tuner = tuner_for(m, 2)
    m.run(tuner, 4)
    assert tuner.choice == 2
    m.cost = {2: 7.0, 1: 0.63}  # another program starts: steps stall until the next trials
    used = m.run(tuner, 40)
    first_trial = used.index(1)
    assert m.now - 0.45 * 3 >= RETRY_SECONDS - 7.0  # not before the retry time
    assert used[first_trial : first_trial + 2] == [1, 2] and tuner.choice == 1
    assert used[-1] == 1


def test_a_small_difference_does_not_switch():
    m = Machine({2: 0.50, 1: 0.48})  # within the 10 % margin
    tuner = tuner_for(m, 2)
    m.run(tuner, 5)
    assert tuner.choice == 2


@pytest.mark.parametrize("threads, candidates", [(1, [1]), (2, [1, 2]), (8, [1, 4, 8])])
def test_candidates(threads, candidates):
    t = ThreadTuner(threads, set_threads=lambda n: None)
    assert t.candidates == candidates and t.active == (threads > 1)


def test_a_time_budget_run_restores_torch_threads(monkeypatch):
    """Through the trainer: a timed run on a CPU tunes, and torch's count is back after it;
    a step budget touches it only when asked (the widget asks)."""
    import numpy as np
    import torch

    from napari_medseg.training import TrainConfig
    from napari_medseg.workflow import Task, Workflow

    image = np.zeros((24, 24), np.float32)
    image[6:18, 6:18] = 1.0
    scribbles = np.zeros((24, 24), np.uint8)
    scribbles[1, 1:23] = 1
    scribbles[12, 9:15] = 2
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    before = torch.get_num_threads()
    real(2)
    try:
        for budget in (
            {"iterations": 3},
            {"seconds": 4.0},
            {"iterations": 3, "adapt_threads": True},  # the widget's
        ):
            seen.clear()
            wf = Workflow(Task(unlabelled=0))
            cfg = TrainConfig(
                models=("unet",), device="cpu", preview_every_seconds=None, max_side=24, **budget
            )
            wf.prepare([(image, scribbles)], cfg)
            *_, final = wf.train()
            assert final.done and torch.get_num_threads() == 2
            if "iterations" in budget and "adapt_threads" not in budget:
                assert seen == []
            else:
                assert seen[0] == 1 and seen[-1] == 2 and final.iteration >= 2
    finally:
        real(before)
