"""Training-step cost of the tri-network presets, relative to one paper UNet step.

One "step" is forward + cross-entropy + backward + SGD update on a random batch (default 8 x
128 x 128, 4 classes). Measured, in one run and interleaved round by round so that all three
see the same machine load:

* the paper UNet alone (the unit);
* the lite trio: lite UNet + lite SwinUNet + lite MambaUNet, one step each;
* the paper trio.

The design target is lite trio <= 3x paper UNet. CPU timings on a shared machine are noisy;
the ratios, taken side by side, are the meaningful output. Usage::

    python benchmarks/bench_step.py [--batch 8] [--size 128] [--rounds 5] [--out table.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from napari_medseg.models import count_parameters, create_model
from napari_medseg.ops import available_backends
from napari_medseg.presets import PRESETS

NAMES = ("unet", "swin_unet", "mamba_unet")


def make_stepper(name: str, preset: str, args: argparse.Namespace):
    model = create_model(name, args.in_channels, args.classes, preset).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(args.batch, args.in_channels, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch, args.size, args.size))

    def step() -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - w0, time.process_time() - c0

    return model, step


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument(
        "--allow-reference",
        action="store_true",
        help="measure even if only the sequential reference scan is available (meaningless "
        "for MambaUNet, whose step is then dominated by a Python loop over tokens)",
    )
    args = p.parse_args(argv)
    if available_backends() == ["reference"] and not args.allow_reference:
        raise SystemExit(
            "only the sequential reference selective scan is available, so MambaUNet timings "
            "would be meaningless; install the fast scan backend or pass --allow-reference"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    steppers = {}
    params = {}
    for preset in ("paper", "lite"):
        for name in NAMES:
            model, step = make_stepper(name, preset, args)
            steppers[(name, preset)] = step
            params[(name, preset)] = count_parameters(model)

    # times[key][clock] = one entry per measured round; clock 0 = wall, 1 = process CPU time.
    times: dict[tuple[str, str], tuple[list[float], list[float]]] = {k: ([], []) for k in steppers}
    for r in range(args.warmup + args.rounds):
        for key, step in steppers.items():
            wall, cpu = step()
            if r >= args.warmup:
                times[key][0].append(wall)
                times[key][1].append(cpu)

    def median(names: tuple[str, ...], preset: str, clock: int) -> float:
        # Per round, the sum over the listed models; then the median over rounds.
        return statistics.median(
            sum(times[(n, preset)][clock][i] for n in names) for i in range(args.rounds)
        )

    unit = [median(("unet",), "paper", c) for c in (0, 1)]
    rows = [("paper UNet (unit)", params[("unet", "paper")], unit)]
    for preset in PRESETS:
        for name in NAMES:
            rows.append(
                (
                    f"{preset} {name}",
                    params[(name, preset)],
                    [median((name,), preset, c) for c in (0, 1)],
                )
            )
        rows.append(
            (
                f"**{preset} trio**",
                sum(params[(n, preset)] for n in NAMES),
                [median(NAMES, preset, c) for c in (0, 1)],
            )
        )
    lines = [
        f"Step = fwd + CE + bwd + SGD, batch {args.batch}, {args.size}x{args.size}, "
        f"{args.classes} classes, in_channels {args.in_channels}; median of {args.rounds} "
        f"interleaved rounds after {args.warmup} warm-ups.",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, scan backends "
        f"{available_backends()}. Shared CPU: absolute times are noisy, compare ratios.",
        "CPU = process CPU time (all threads), less sensitive to other sessions than wall time.",
        "",
        "| configuration | params (M) | wall (s) | x paper UNet | CPU (s) | x paper UNet |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, n, (wall, cpu) in rows:
        lines.append(
            f"| {label} | {n / 1e6:.2f} | {wall:.3f} | {wall / unit[0]:.2f} | {cpu:.3f} | "
            f"{cpu / unit[1]:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
