"""benchmarks/gpu_check.py works before a GPU is there: its dry run (CPU, tiny sizes) produces
every stage's row, and one failing or overrunning stage is reported without sinking the rest."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

STAGES = (
    "CUDA tests (`pytest -m cuda`)",
    "scan accuracy, torch on cpu",
    "scan speed, torch on cpu",
    "paper trio step",
    "paper trio CUDA memory",
    "lite trio step",
    "lite trio CUDA memory",
    "ACDC fold1, paper trio",
)


def test_dry_run_reports_every_stage(tmp_path):
    out = tmp_path / "gpu_check.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = out.read_text()
    assert table in proc.stdout + "\n"
    assert "| stage | result | target / reference | time (s) |" in table
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln]
    for stage in STAGES:
        assert any(r.startswith(f"| {stage}") for r in rows), (stage, table)
    assert "FAILED" not in table, table
    assert "skipped" in table  # the CUDA tests skip cleanly on this machine


def test_a_failing_stage_becomes_a_row():
    def broken(rows):
        rows.append(gpu_check.Row("first part", "done"))
        raise RuntimeError("CUDA error: out of memory\nmore detail")

    rows = gpu_check.run_stage("broken", broken, limit=30)
    assert [r.result for r in rows] == ["done", "FAILED: RuntimeError: CUDA error: out of memory"]


def test_a_stage_over_its_time_limit_is_stopped():
    t0 = time.perf_counter()
    (row,) = gpu_check.run_stage("slow", lambda rows: time.sleep(30), limit=0.5)
    assert time.perf_counter() - t0 < 10
    assert row.result.startswith("FAILED: StageTimeout: stopped after its")


@pytest.mark.parametrize("size", [64, 96])
def test_synthetic_task_has_a_stroke_of_every_class(size):
    image, seeds, label = gpu_check.synthetic_task(2, size)
    assert image.shape == (2, 1, size, size) and label.shape == seeds.shape == (2, size, size)
    for c in range(4):
        assert (seeds == c).any() and (label[seeds == c] == c).all()
