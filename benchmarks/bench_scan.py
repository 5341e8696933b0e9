"""CPU benchmark of the selective scan: chunked torch backend vs the sequential reference.

For each sequence length it times, in one process and with the same thread count:

* the sequential reference forward under ``torch.no_grad()`` (the yardstick),
* the chunked torch backend forward under ``no_grad``,
* the chunked torch backend forward + backward (gradients for every input),
* mambapy's ``pscan`` forward + backward, if mambapy happens to be installed.

Each number is the median of ``--repeats`` runs after one warm-up. The target is
``fwd+bwd <= 3x`` the no-grad sequential forward. Shapes default to a Mamba block of a VM-UNet
stage (B=1, D=768, N=16) at L = 28^2 and 56^2 tokens.

    python benchmarks/bench_scan.py --out bench_output/scan.md
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_medseg.ops import selective_scan_ref, selective_scan_torch  # noqa: E402


def make_inputs(bsz: int, d: int, n: int, L: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Mamba-like values: S4D-real A = -(1..N), dt in [1e-3, 1e-1] through softplus."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = math.log(1e-3), math.log(1e-1)
    dt = torch.exp(lo + (hi - lo) * torch.rand(d, generator=g))
    return {
        "u": torch.randn(bsz, d, L, generator=g),
        "delta": 0.1 * torch.randn(bsz, d, L, generator=g),
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        "B": torch.randn(bsz, n, L, generator=g),
        "C": torch.randn(bsz, n, L, generator=g),
        "D": torch.ones(d),
        "z": torch.randn(bsz, d, L, generator=g),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus of dt
    }


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fwd_bwd(fn, inputs: dict[str, torch.Tensor]):
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    gy = torch.ones(inputs["u"].shape)

    def run():
        for v in leaves.values():
            v.grad = None
        y = fn(**leaves)
        y.backward(gy)

    return run


def _mambapy_scan():
    """mambapy's parallel scan wrapped into a full selective scan, or None if not installed."""
    try:
        from mambapy.pscan import pscan
    except Exception:  # optional comparison only
        return None

    def scan(u, delta, A, B, C, D, z, delta_bias):
        dlt = F.softplus(delta + delta_bias[:, None])  # (B, D, L)
        dA = torch.exp(dlt.transpose(1, 2).unsqueeze(-1) * A)  # (B, L, D, N)
        bx = (dlt * u).transpose(1, 2).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2)
        hs = pscan(dA, bx)  # (B, L, D, N)
        y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)
        return (y + u * D[:, None]) * F.silu(z)

    return scan


def bench_length(L: int, args) -> dict[str, object]:
    inputs = make_inputs(args.batch, args.dim, args.state, L)
    kw = {"delta_softplus": True}

    def ref(**x):
        return selective_scan_ref(**x, **kw)

    def fast(**x):
        return selective_scan_torch(**x, **kw, chunk_size=args.chunk)

    row: dict[str, object] = {"L": L}
    with torch.no_grad():
        row["ref_fwd"] = median_time(lambda: ref(**inputs), args.repeats)
        row["torch_fwd"] = median_time(lambda: fast(**inputs), args.repeats)
        y_ref, y_fast = ref(**inputs), fast(**inputs)
        row["max_rel_err"] = ((y_fast - y_ref).abs().max() / y_ref.abs().max()).item()
    row["torch_fwd_bwd"] = median_time(fwd_bwd(fast, inputs), args.repeats)
    row["ratio"] = row["torch_fwd_bwd"] / row["ref_fwd"]
    mp = _mambapy_scan()
    if mp is None:
        row["mambapy"] = "not installed"
    else:
        try:
            row["mambapy"] = f"{median_time(fwd_bwd(mp, inputs), args.repeats) * 1e3:.0f} ms"
        except Exception as exc:  # report, don't crash the benchmark
            row["mambapy"] = f"failed: {type(exc).__name__}"
    return row


def markdown(rows, args, load_before, load_after) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    lines = [
        f"### Selective scan, CPU ({datetime.datetime.now():%Y-%m-%d %H:%M})",
        "",
        f"B={args.batch}, D={args.dim}, N={args.state}, fp32, softplus+bias+D+z; torch "
        f"{torch.__version__}, {args.threads} thread(s), {cpu}, {os.cpu_count()} cores; median "
        f"of {args.repeats} after a warm-up; load average {load_before:.2f} before, "
        f"{load_after:.2f} after.",
        "",
        "| L | reference fwd, no grad | torch fwd, no grad | torch fwd+bwd "
        "| fwd+bwd / ref fwd | max rel err | mambapy pscan fwd+bwd |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['L']} | {r['ref_fwd'] * 1e3:.0f} ms | {r['torch_fwd'] * 1e3:.0f} ms | "
            f"{r['torch_fwd_bwd'] * 1e3:.0f} ms | {r['ratio']:.2f}x | {r['max_rel_err']:.1e} | "
            f"{r['mambapy']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="784,3136", help="comma-separated sequence lengths")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chunk", type=int, default=None, help="chunk length (default ~sqrt(L))")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: reproducible on shared cores)",
    )
    p.add_argument("--out", type=Path, default=None, help="append the markdown table here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    rows = [bench_length(int(L), args) for L in args.lengths.split(",")]
    table = markdown(rows, args, load_before, os.getloadavg()[0])
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
