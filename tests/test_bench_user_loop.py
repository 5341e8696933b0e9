"""benchmarks/bench_user_loop.py: the simulated user draws one stroke of the true class where
the disagreement map lights a wrong answer, never over an existing stroke, and the loop
resumes the same training with it beside a control that does not (issue 11)."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_anytime  # noqa: E402
import bench_user_loop  # noqa: E402


def _square_case():
    truth = np.ones((40, 40), np.uint8)
    truth[8:32, 8:32] = 2
    return truth


def test_the_stroke_goes_into_the_largest_lit_wrong_region_with_its_true_class():
    truth = _square_case()
    ensemble = truth.copy()
    ensemble[8:32, 8:20] = 1  # the answer misses the left half of the square (288 px)
    ensemble[2:5, 2:5] = 2  # and paints a small blob on the background (9 px)
    lit = np.zeros(truth.shape, np.float32)
    lit[:, :22] = 0.5  # the map lights both errors
    scribbles = np.zeros(truth.shape, np.uint8)
    scribbles[20, 10:14] = 2  # a stroke the user drew already, inside the missed half
    stroke, value, region = bench_user_loop.correction_stroke(
        ensemble, lit, truth, scribbles, unlabelled=0
    )
    assert value == 2 and region == 22 * 11  # the missed half, less its 1-px rim on the edge
    assert stroke.any() and np.all(truth[stroke] == 2) and np.all(ensemble[stroke] == 1)
    assert not stroke[scribbles > 0].any()  # the user's strokes are never drawn over
    # a stroke along the middle of the region, not its rim
    ys, xs = np.nonzero(stroke)
    assert xs.min() >= 10 and xs.max() <= 17


def test_a_short_stroke_is_a_dab_in_the_middle_of_the_region():
    truth = np.ones((80, 80), np.uint8)
    truth[30:50, 5:75] = 2
    ensemble = np.ones_like(truth)  # the whole bar missed
    lit = np.ones(truth.shape, np.float32)
    none = np.zeros_like(truth)
    long, value, _ = bench_user_loop.correction_stroke(ensemble, lit, truth, none, 0)
    short, value_short, _ = bench_user_loop.correction_stroke(
        ensemble, lit, truth, none, 0, max_px=12
    )
    assert value == value_short == 2 and long.sum() > 12
    assert short.sum() == 12 and np.all(long[short])  # part of the long stroke
    ys, xs = np.nonzero(short)
    assert np.hypot(ys - 39.5, xs - 39.5).max() < 6  # around the bar's middle, not an end


def test_no_stroke_on_the_edge_of_a_structure():
    """A sliver along the true boundary is not where a clinician draws: no stroke there."""
    truth = _square_case()
    ensemble = truth.copy()
    ensemble[8:32, 8] = 1  # the answer is one column short on the square's left edge
    stroke, value, region = bench_user_loop.correction_stroke(
        ensemble, np.ones(truth.shape, np.float32), truth, np.zeros_like(truth), unlabelled=0
    )
    assert not stroke.any() and value == -1 and region == 0


def test_nothing_lit_means_no_stroke():
    truth = _square_case()
    ensemble = truth.copy()
    ensemble[8:32, 8:20] = 1
    dark = np.zeros(truth.shape, np.float32)  # the map shows nothing: the user cannot know
    stroke, value, region = bench_user_loop.correction_stroke(
        ensemble, dark, truth, np.zeros_like(truth), unlabelled=0
    )
    assert not stroke.any() and value == -1 and region == 0


def test_a_stack_gets_one_stroke_on_one_slice():
    truth = np.stack([_square_case()] * 3)
    ensemble = truth.copy()
    ensemble[1, 8:32, 8:20] = 1
    ensemble[2, 8:12, 8:12] = 1
    stroke, value, _ = bench_user_loop.correction_stroke(
        ensemble, np.ones(truth.shape, np.float32), truth, np.zeros_like(truth), unlabelled=0
    )
    assert stroke.shape == truth.shape and value == 2
    assert stroke[1].any() and not stroke[0].any() and not stroke[2].any()


def test_the_loop_resumes_with_the_stroke_beside_a_control_without(monkeypatch):
    truth = _square_case()
    rng = np.random.default_rng(0)
    image = (np.where(truth == 2, 0.7, 0.3) + 0.05 * rng.standard_normal(truth.shape)).astype(
        np.float32
    )
    scribbles = np.zeros(truth.shape, np.uint8)
    scribbles[2, 2:38] = 1
    scribbles[20, 18:22] = 2
    case = bench_anytime.Case("square", image, scribbles, truth, 0, (2,))
    # one network, 1 step per round: the loop's bookkeeping, not the networks' quality
    small = bench_anytime.config

    def one_unet(args, **kw):
        # the walker alone as the classical answer: the floor column is then the plain walker
        return small(args, models=("unet",), classifier=False, **kw)

    monkeypatch.setattr(bench_anytime, "config", one_unet)
    args = Namespace(steps=1, rounds=1, seed=0)
    rows = bench_user_loop.run_case(case, args)
    stroke = [r for r in rows if r["arm"] == "stroke"]
    control = [r for r in rows if r["arm"] == "control"]
    assert [r["round"] for r in stroke] == [0, 1] and [r["round"] for r in control] == [0, 1]
    assert [r["steps"] for r in stroke] == [1, 2] and [r["steps"] for r in control] == [1, 2]
    assert stroke[0]["ensemble"] == control[0]["ensemble"]  # the same round 0
    assert control[0]["stroke_px"] == 0  # the control draws nothing
    for r in rows:
        assert 0.0 <= r["ensemble"] <= 1.0 and 0.0 <= r["walker"] <= 1.0
    # before any correction the product's floor walker is the plain walker
    assert stroke[0]["floor"] == pytest.approx(stroke[0]["walker"])
    assert control[1]["floor"] == pytest.approx(control[1]["walker"])
    text = bench_user_loop.table(rows, 1)
    assert [line[:5] for line in text.splitlines()[2:]] == ["| 0 |", "| 1 |"]
    alone = bench_user_loop.run_case(case, Namespace(steps=1, rounds=1, seed=0, no_control=True))
    assert [(r["arm"], r["round"]) for r in alone] == [("stroke", 0), ("stroke", 1)]


def test_a_stroke_reaches_its_own_extent_and_at_least_a_twentieth_of_the_image():
    stroke = np.zeros((100, 100), bool)
    stroke[50, 20:80] = True  # 60 px long
    assert bench_user_loop.stroke_reach(stroke) == 59.0
    dot = np.zeros((100, 100), bool)
    dot[10, 10] = True
    assert bench_user_loop.stroke_reach(dot) == 5.0  # 5 % of the longest side
    assert bench_user_loop.stroke_reach(np.zeros((3, 40, 80), bool)) == 4.0


def test_stroke_local_keeps_the_answer_before_beyond_the_reach():
    before = np.ones((40, 40), np.uint8)
    after = before.copy()
    after[5:9, 5:9] = 2  # the correction, at the stroke
    after[30:38, 30:38] = 2  # a flood far from it
    stroke = np.zeros_like(before, bool)
    stroke[6, 5:9] = True
    local = bench_user_loop.stroke_local(before, after, stroke, reach=5.0)
    assert np.all(local[5:9, 5:9] == 2)  # the neighbourhood follows the stroke
    assert np.all(local[30:38, 30:38] == 1)  # the far flood does not
    truth = before.copy()
    truth[5:9, 5:9] = 2
    got = bench_user_loop._reach_row(before, after, stroke, 5.0, truth, (2,))
    assert got["local"] == 1.0 and got["far_wrong"] == 64 and got["far_right"] == 0
    # a stack: only the stroke's slice may change
    b3, a3, s3 = (np.stack([x] * 2) for x in (before, after, stroke))
    s3[1] = False
    local3 = bench_user_loop.stroke_local(b3, a3, s3, reach=5.0)
    assert np.array_equal(local3[0], local) and np.array_equal(local3[1], before)


def test_the_reach_table_counts_answers_below_the_answer_before_the_stroke():
    def row(case, k, ens, **kw):
        base = dict(case=case, arm="stroke", round=k, ensemble=ens, walker=0.5)
        base.update(dict.fromkeys(bench_user_loop.REACH_FIELDS))
        base.update(kw)
        return base

    reach = dict(
        reach_px=10.0,
        walker_far_right=0,
        walker_far_wrong=20,
        ensemble_far_right=2,
        ensemble_far_wrong=10,
    )
    rows = [
        row("a", 0, 0.8),
        row("a", 1, 0.6, walker_local=0.7, ensemble_local=0.82, **reach),  # fell; local did not
        row("b", 0, 0.5),
        row("b", 1, 0.9, walker_local=0.9, ensemble_local=0.9, **reach),
    ]
    text = bench_user_loop.reach_table(rows)
    line = text.splitlines()[2]
    assert line.startswith("| 1 | 0.500 / 0.800 | 0.750 / 0.860 | 1 / 0 of 2 |")
    assert line.endswith("| 0 / 20 | 2 / 10 |")


def test_without_the_control_the_table_says_so():
    rows = [
        dict(case="a", arm="stroke", round=0, steps=5, ensemble=0.7, walker=0.6, stroke_px=9),
        dict(case="a", arm="stroke", round=1, steps=10, ensemble=0.8, walker=0.7, stroke_px=0),
    ]
    for r, floor in zip(rows, (0.6, 0.75)):
        r["floor"] = floor
    lines = bench_user_loop.table(rows, 1).splitlines()[2:]
    assert lines[0] == "| 0 | 5 | 0.700 / 0 of 1 | 0.600 | 0.600 | +0.100 / +0.100 | – | 9 |"
    assert lines[1].startswith("| 1 | 10 | 0.800 / 0 of 1 |")
