"""Torch's CPU thread count, chosen from measured step times while a time budget runs.

Why: torch's CPU kernels split each operation over all their threads and wait for the slowest.
When another process keeps one core busy (a browser, a second job: a clinician's laptop),
the thread that shares that core stalls every operation. Measured on the 2-core benchmark
machine with one core busy (BENCHMARKS §9, ninth round): a default-trio step on an ACDC
volume took ~7 s with 2 threads and 0.63 s with 1 (0.45 s and 0.60 s on the quiet machine);
a 60 s budget made 1–14 steps instead of ~90, and the final prediction overran the budget.
No core count or load average tells which is faster at a given moment, so the trainer tries:
one step with each candidate count after the first step, keeps the fastest, and tries again
from time to time, since the load changes while training runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

#: seconds between two rounds of trial steps (at least; see ThreadTuner.retry_after)
RETRY_SECONDS = 20.0


class ThreadTuner:
    """Sets ``torch.set_num_threads`` before each step; learns from each step's duration.

    Candidates: the count in force when training starts (``threads``), half of it and 1.
    The first step (one-off costs) runs with 1 thread and is not timed. Then one step with
    each candidate, the fewest threads first (cheap on a quiet machine, the rescue on a busy
    one); the fastest is kept, the current one unless another is faster by ``margin``. A new
    round of trials starts ``RETRY_SECONDS`` later, or 10× the slowest trial if that is
    longer, so that a candidate that stalls costs at most about a tenth of the time.
    :meth:`restore` puts the starting count back.
    """

    def __init__(
        self,
        threads: int,
        clock: Callable[[], float] = time.perf_counter,
        margin: float = 0.9,
        set_threads: Callable[[int], None] | None = None,
    ):
        self.start = int(threads)
        self.candidates = sorted({1, max(1, self.start // 2), self.start})
        self.clock = clock
        self.margin = margin
        self._set = set_threads or (lambda n: torch.set_num_threads(n))
        self.current = self.start  # in force now (a trial's count during a trial step)
        self.choice = self.start  # kept between trials
        self.steps = 0
        self.trials: list[int] = []  # candidates still to try in this round
        self.times: dict[int, float] = {}  # the last step's seconds per candidate
        self.next_round: float | None = None

    @property
    def active(self) -> bool:
        return len(self.candidates) > 1

    def before_step(self) -> None:
        """Chooses the count for the step about to run."""
        if not self.active:
            return
        if self.steps == 0:  # untimed, with its one-off costs: the fewest threads stall least
            self._use(self.candidates[0])
            return
        if not self.trials and self._round_due():
            self.trials = list(self.candidates)
            self.times = {}
        self._use(self.trials[0] if self.trials else self.choice)

    def after_step(self, seconds: float) -> None:
        """Records the step that just ran (its duration in seconds)."""
        if not self.active:
            return
        self.steps += 1
        if self.steps == 1 or not self.trials:
            return
        self.times[self.trials.pop(0)] = seconds
        if self.trials:
            return
        best = min(self.times, key=self.times.get)
        if self.times[best] < self.margin * self.times[self.choice]:
            self.choice = best
        self._use(self.choice)
        self.next_round = self.clock() + max(RETRY_SECONDS, 10.0 * max(self.times.values()))

    def restore(self) -> None:
        """Back to the count in force when training started."""
        if self.active:
            self._use(self.start)

    def _round_due(self) -> bool:
        return self.next_round is None or self.clock() >= self.next_round

    def _use(self, n: int) -> None:
        if n != self.current:
            self._set(n)
            self.current = n
