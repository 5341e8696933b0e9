"""Runs every benchmark one after the other (never two at once: they share the CPU).

Results go to bench_output/*.md; BENCHMARKS.md quotes them with the command of each.

    python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench_output"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "--quick", action="store_true", help="3 ACDC volumes instead of 40; base models --quick"
    )
    args = p.parse_args()
    OUT.mkdir(exist_ok=True)
    py = sys.executable
    acdc = ["--patients", "3,11,18"] if args.quick else []
    jobs = [
        [py, "benchmarks/bench_scan.py", "--out", str(OUT / "scan.md")],
        [py, "benchmarks/bench_step.py", "--out", str(OUT / "step.md")],
        [
            py,
            "-m",
            "napari_medseg.cli",
            "bench-models",
            "--size",
            "512",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--out",
            str(OUT / "models.md"),
        ],
        [
            py,
            "benchmarks/bench_acdc_interactive.py",
            "--seconds",
            "30",
            *acdc,
            "--out",
            str(OUT / "acdc_interactive.md"),
            "--csv",
            str(OUT / "acdc_interactive.csv"),
        ],
    ]
    # the anytime floor (BENCHMARKS §9): step tables (deterministic) and the 60 s column
    limit = "3" if args.quick else "40"
    for dataset in ("acdc", "kvasir_seg", "ph2", "samples"):
        n = [] if dataset == "samples" else ["--limit", limit if dataset == "acdc" else "20"]
        jobs.append(
            [py, "benchmarks/bench_anytime.py", "--dataset", dataset, *n, "--seconds", "60"]
            + ["--out", str(OUT / f"anytime_{dataset}.md")]
            + ["--csv", str(OUT / f"anytime_{dataset}.csv")]
        )
    # base models across images (issue 12, BENCHMARKS §11): hours in full (time budgets);
    # --quick: 2 training and 2 test files, 5 steps each, one thread (about a minute each)
    quick = ["--quick", "--threads", "1"] if args.quick else []
    for run in ("learning-curve", "acdc-base", "kvasir-base", "ph2-base"):
        jobs.append(
            [py, "benchmarks/bench_base_models.py", run, *quick]
            + ["--out", str(OUT / f"base_{run}.md")]
        )
    gui = [py, "benchmarks/bench_gui_responsiveness.py", "--out", str(OUT / "gui.md")]
    if os.environ.get("DISPLAY"):
        jobs.append(gui)
    elif shutil.which("xvfb-run"):
        jobs.append(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", *gui])
    for cmd in jobs:
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
