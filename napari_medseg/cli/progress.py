"""A progress bar on stderr for training runs (tqdm; silent when stderr is not a terminal)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # the bar itself needs neither torch nor the trainer
    from ..training import TrainConfig, TrainerUpdate

U = TypeVar("U", bound="TrainerUpdate")


def progress_bar(total: float | None, desc: str, unit: str = "it"):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None,
        leave=True,
    )


def drive(steps: Iterable[U], config: TrainConfig, desc: str = "training") -> U | None:
    """Iterates training updates with a progress bar; returns the final one.

    The bar counts iterations, or seconds when the budget is a time (``config``).
    """
    total = config.iterations if config.iterations else config.seconds
    unit = "it" if config.iterations else "s"
    last = None
    with progress_bar(total, desc, unit) as bar:
        for upd in steps:
            last = upd
            if config.iterations:
                bar.n = min(
                    upd.iteration - (upd.total_iterations or 0) + config.iterations,
                    config.iterations,
                )
            else:
                bar.n = round(min(upd.elapsed, config.seconds), 1)
            held = (upd.heldout or {}).get("networks")
            bar.set_postfix(
                loss=f"{upd.losses.get('total', float('nan')):.3f}",
                it_s=f"{upd.iterations_per_second:.2f}",
                **({"held_out": f"{held:.3f}"} if held is not None else {}),
                refresh=False,
            )
            bar.refresh()
    return last


def print_floor(segmentation) -> None:
    """What the ensemble is made of, and the held-out stroke agreements (anytime floor)."""
    report = getattr(segmentation, "report", None)
    if report is not None:
        print(f"ensemble: {report.summary()}")
