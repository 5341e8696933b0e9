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
            _postfix(bar, upd, **({"held_out": f"{held:.3f}"} if held is not None else {}))
    return last


def drive_dataset(steps, config: TrainConfig, already=(0, 0.0), desc: str = "training"):
    """Dataset training's progress: a bar with ETA (tqdm), and one line per validation and per
    checkpoint (printed even when stderr is no terminal, for logs); returns the final update.

    ``already``: (steps, seconds) the run had done before (a resume), so the bar and the ETA
    count the whole budget.
    """
    from tqdm.auto import tqdm

    total = config.iterations if config.iterations else config.seconds
    unit = "it" if config.iterations else "s"
    last, dice = None, None
    with progress_bar(total, desc, unit) as bar:
        for upd in steps:
            last = upd
            done, secs = already[0] + upd.run_step, already[1] + upd.elapsed
            if config.iterations:
                bar.n = min(done, config.iterations)
                rate = upd.iterations_per_second
                eta = (config.iterations - done) / rate if rate > 0 else float("nan")
            else:
                bar.n = round(min(secs, config.seconds), 1)
                eta = config.seconds - secs
            if upd.validation is not None:
                v = upd.validation
                dice = v.dice
                members = ", ".join(f"{k} {d:.3f}" for k, d in v.members.items())
                if v.walker is not None:  # what a new image's strokes alone would give
                    members += f"; walker on their strokes {v.walker:.3f}"
                tqdm.write(
                    f"step {done}, {secs:.0f} s, ETA {_clock(max(eta, 0.0))}: validation Dice "
                    f"{v.dice:.4f} on {v.images} file(s) ({members}; {v.seconds:.1f} s)",
                    file=sys.stderr,
                )
            if upd.saved is not None:
                tqdm.write(f"step {done}: checkpoint {upd.saved}", file=sys.stderr)
            _postfix(bar, upd, **({"val_dice": f"{dice:.3f}"} if dice is not None else {}))
    return last


def _clock(seconds: float) -> str:
    if seconds != seconds:  # nan: no rate yet
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def print_floor(segmentation) -> None:
    """What the ensemble is made of, and the held-out stroke agreements (anytime floor)."""
    report = getattr(segmentation, "report", None)
    if report is not None:
        print(f"ensemble: {report.summary()}")


def _postfix(bar, upd, **extra) -> None:
    """The bar's loss and speed, plus ``extra`` (held-out or validation score), redrawn."""
    bar.set_postfix(
        loss=f"{upd.losses.get('total', float('nan')):.3f}",
        it_s=f"{upd.iterations_per_second:.2f}",
        **extra,
        refresh=False,
    )
    bar.refresh()
