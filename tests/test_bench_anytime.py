"""The floor benchmark's table: what it says per budget is computed from the rows it got."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_anytime  # noqa: E402


def _case(name, walker, ensemble, changed=None, overruled=None, budget="60 s"):
    rows = [
        {"case": name, "method": m, "budget": "-", "dice": walker}
        for m in ("walker (floor, beta 2000)", "walker (scikit-image, beta 130)")
    ]
    rows.append(
        dict(
            case=name,
            method="ensemble",
            budget=budget,
            dice=ensemble,
            share=0.4,
            changed=changed,
            overruled=overruled,
            steps=100,
            wall_s=59.0,
        )
    )
    return rows


def test_the_table_reports_the_gain_the_cases_below_and_what_the_networks_changed():
    rows = _case("a", 0.80, 0.85, 0.10, 0.02) + _case("b", 0.70, 0.69, 0.20, 0.04)
    line = next(x for x in bench_anytime.table(rows, "t").splitlines() if x.startswith("| 60 s"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "0.770"  # the ensemble's mean
    assert cells[2] == "+0.020 / -0.010"  # − floor walker: mean / worst
    assert cells[3] == "1 of 2"
    assert cells[6] == "15.0% / 3.0%"  # the walker's answer changed / sure pixels overruled
    # a recording without those figures (an older CSV) says so instead of inventing them
    old = _case("a", 0.80, 0.85) + _case("b", 0.70, 0.69)
    line = next(x for x in bench_anytime.table(old, "t").splitlines() if x.startswith("| 60 s"))
    assert [c.strip() for c in line.strip("|").split("|")][6] == "–"
