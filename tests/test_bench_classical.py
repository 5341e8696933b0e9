"""benchmarks/bench_classical.py on the bundled brain sample (no dataset needed)."""

from __future__ import annotations

import sys
from csv import DictReader
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_classical  # noqa: E402


def test_bench_classical_scores_every_method_on_the_brain_sample(tmp_path):
    csv = tmp_path / "rows.csv"
    text = bench_classical.main(
        [
            "--dataset",
            "samples",
            "--limit",
            "1",
            "--prefilters",
            "g1",
            "--out",
            str(tmp_path / "t.md"),
            "--csv",
            str(csv),
        ]
    )
    assert "| walker |" in text and "| chosen |" in text
    assert (tmp_path / "t.md").read_text().startswith("Classical answers, samples, 2 cases")
    with open(csv, newline="") as f:
        cols = next(iter(DictReader(f)))  # the brain sample
    # intensity-defined tissue classes: the walker's blind side, not the classifier's
    assert float(cols["walker × classifier"]) > float(cols["walker"]) + 0.2
    assert cols["method"] in ("walker × classifier", "walker on classifier")
    assert float(cols["chosen"]) == float(cols[cols["method"]])
    assert 0.0 <= float(cols["walker, g1"]) <= 1.0 and "| walker, g1 |" in text
