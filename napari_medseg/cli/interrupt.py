"""Ctrl-C during training: stop through the trainer's stop request and keep what was reached.

A ``KeyboardInterrupt`` raised in the middle of a training step would unwind the trainer's
generator and lose minutes of work. While :class:`StopOnInterrupt` is active, the first Ctrl-C
(SIGINT) only asks the workflow to stop before its next step; training then ends as if its
budget were spent, and the command saves the model and the predictions reached so far. A second
Ctrl-C raises ``KeyboardInterrupt`` as usual (abort; the staged outputs are discarded).
"""

from __future__ import annotations

import signal
import sys


class StopOnInterrupt:
    """Context manager: SIGINT → ``workflow.request_stop()`` (once), then a normal interrupt.

    ``requested`` tells afterwards whether the user interrupted. Outside the main thread (where
    Python cannot install signal handlers) it does nothing and Ctrl-C behaves as usual.
    """

    def __init__(self, workflow) -> None:
        self.workflow = workflow
        self.requested = False
        self._installed = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nnapari-medseg: stopping after this step; the model and predictions reached so far "
            "will be saved (Ctrl-C again aborts without saving)",
            file=sys.stderr,
            flush=True,
        )
        self.workflow.request_stop()

    def __enter__(self) -> StopOnInterrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._installed = False
        return self

    def __exit__(self, *exc) -> bool:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
        return False
