"""benchmarks/bench_floor_replay.py on a hand-made recording: replay scores the recorded mix,
re-applies the shape prior a run trained with, and the ring experiment measures agreement on
the held-out ring (issue 11)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_floor_replay  # noqa: E402


def _probs(labels: np.ndarray) -> np.ndarray:
    """One-hot (1, 2, H, W) float16 probabilities of a (H, W) 0/1 label map."""
    p = np.stack([labels == 0, labels == 1]).astype(np.float16)[None]
    return 0.9 * p + 0.05


def _recording(folder: Path, walker: np.ndarray, nets: np.ndarray, share: float, **extra):
    """One case, one budget (5 steps), the truth a filled 4x4 square."""
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    case = folder / "frame1"
    case.mkdir(parents=True)
    np.savez_compressed(case / "truth.npz", truth=truth, fg=np.array([1]), values=np.array([0, 1]))
    np.savez_compressed(
        case / "s5.npz",
        walker=_probs(walker),
        share=share,
        weights=np.array([1.0]),
        heldout=np.array([json.dumps({})]),
        m_unet=_probs(nets),
        **extra,
    )
    return truth


def _row(text: str) -> list[str]:
    return next(line for line in text.splitlines() if line.startswith("| 5 |")).split(" | ")


def test_replay_scores_the_recorded_mix(tmp_path, capsys):
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    walker = truth.copy()
    walker[2, 2:6] = 0  # the walker misses a row of the square: Dice 12/14
    _recording(tmp_path / "rec", walker, truth, share=0.9)  # networks exact, share 0.9
    bench_floor_replay.main(["replay", str(tmp_path / "rec")])
    row = _row(capsys.readouterr().out)
    assert row[1] == "0.857"  # walker
    assert row[2] == "1.000"  # networks alone
    assert row[3].startswith("1.000 (+0.143 / +0.143 / 0 of 1)")  # recorded share: their mix


def test_replay_applies_the_prior_the_run_trained_with(tmp_path, capsys):
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    walker = truth.copy()
    walker[3:5, 3:5] = 0  # a hole in the square that the convex rule fills
    seeds = np.full((1, 8, 8), -1, np.int64)
    seeds[0, 0, 0], seeds[0, 2, 2] = 0, 1
    prior = json.dumps({"exhaustive_slices": False, "convex": [1], "walls": []})
    _recording(tmp_path / "rec", walker, walker, share=0.0, prior=np.array([prior]), seeds=seeds)
    bench_floor_replay.main(["replay", str(tmp_path / "rec")])
    row = _row(capsys.readouterr().out)
    assert row[1] == "1.000"  # the hole filled: what predict with the prior shows


def test_ring_reports_the_networks_agreement_on_the_held_out_ring(tmp_path, capsys):
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    nets = truth.copy()
    nets[2, 2:6] = 0  # wrong on the top row of the square
    _recording(tmp_path / "rec", truth, nets, share=0.5)
    ring = np.full((8, 8), -1, np.int8)
    ring[2, 2:6] = 1  # the held-out ring: the top row (4 pixels) and 4 background pixels
    ring[1, 2:6] = 0
    np.savez_compressed(tmp_path / "rec" / "frame1" / "ring.npz", ring=ring)
    bench_floor_replay.main(["ring", str(tmp_path / "rec")])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("| frame1 |"))
    # networks: 4 of 8 ring pixels right; walker: all 8; 8 ring pixels
    assert line.endswith("| 0.500 | 1.000 | 8 |")


def test_set_reads_numbers_as_numbers_and_refuses_a_bare_or_unknown_key():
    got = bench_floor_replay.settings(["pseudo_weight=0", 'models=["unet"]', "device=cpu"])
    assert got == {"pseudo_weight": 0, "models": ["unet"], "device": "cpu"}
    with pytest.raises(SystemExit, match="key=value"):
        bench_floor_replay.settings(["pseudo_weight"])
    with pytest.raises(SystemExit, match="no setting 'pseudo_wieght'"):
        bench_floor_replay.settings(["pseudo_wieght=0"])


def test_disagreement_shows_the_walker_dissent_where_the_networks_overrule_it(tmp_path, capsys):
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    nets = truth.copy()
    nets[6, 2:6] = 1  # the networks, sure, add a row below the square that is not there
    _recording(tmp_path / "rec", truth, nets, share=0.0)
    budget = tmp_path / "rec" / "frame1" / "s5.npz"
    saved = dict(np.load(budget))
    walker = saved["walker"].astype(np.float32)
    walker[0, :, 6, 2:6] = np.array([0.55, 0.45])[:, None]  # the walker hesitates there
    saved["walker"] = walker.astype(np.float16)
    np.savez_compressed(budget, **saved)
    bench_floor_replay.main(["disagreement", str(tmp_path / "rec")])
    row = _row(capsys.readouterr().out)
    assert row[1] == "0.062"  # the wrong row: 4 of 64 pixels
    # the one network agrees with the answer it carried: its map lights nothing
    assert row[2] == "0.000 / 0.000 / 0.000" and row[3] == "0.000 (1)"
    # the walker's vote lights exactly the wrong row, on a budget below the walker
    assert row[4] == "0.062 / 1.000 / 1.000" and row[5].startswith("1.000 (1)")


def test_replay_takes_another_ramp_and_lists_the_budgets_below_the_walker(tmp_path, capsys):
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    _recording(tmp_path / "rec", truth, truth, share=0.0)  # the walker is exact
    nets = truth.copy()
    nets[6, 2:6] = 1  # the networks paint one row too many, and are sure of it
    p = np.stack([nets == 0, nets == 1]).astype(np.float16)[None]
    with np.load(tmp_path / "rec" / "frame1" / "s5.npz") as d:
        kept = {k: d[k] for k in d.files if k != "m_unet"}
    np.savez_compressed(tmp_path / "rec" / "frame1" / "s5.npz", **kept, m_unet=0.98 * p + 0.01)
    # agreement with the sure walker pixels: mean Dice (0.957, 0.889) = 0.923
    bench_floor_replay.main(["replay", str(tmp_path / "rec")])
    out = capsys.readouterr().out
    assert "agreement ramp 0.82 → 0.98" in out
    assert "Budgets below the walker under this tree's rule: 0" in out  # share 0.32: walker wins
    bench_floor_replay.main(["replay", str(tmp_path / "rec"), "--ramp", "0.5,0.6"])
    out = capsys.readouterr().out
    assert "agreement ramp 0.5 → 0.6" in out
    assert "Budgets below the walker under this tree's rule: 1" in out  # the full share
    assert _row(out)[-1].strip().endswith("0.00 / 0.50 |")
    line = next(x for x in out.splitlines() if x.startswith("| rec | frame1 | 5 |"))
    assert "| 0.50 | 0.923 |" in line
    with pytest.raises(SystemExit, match="two numbers"):
        bench_floor_replay.main(["replay", str(tmp_path / "rec"), "--area", "4"])


def test_replay_mixes_as_the_product_and_linear_mix_replays_the_old_mix(tmp_path, capsys):
    """Three sure, unanimous networks overrule a sure walker at a share of 0.4 (doubled
    there: ``inference.floor_mix``); ``--linear-mix`` mixes every pixel at 0.4 and keeps it."""
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    walker = truth.copy()
    walker[2, 2:6] = 0  # sure and wrong on a row: Dice 12/14
    _recording(tmp_path / "rec", walker, truth, share=0.4)
    budget = tmp_path / "rec" / "frame1" / "s5.npz"
    with np.load(budget) as d:
        saved = {k: d[k] for k in d.files}
    saved["weights"] = np.array([1 / 3, 1 / 3, 1 / 3])
    saved["m_swin"] = saved["m_mamba"] = saved["m_unet"]
    np.savez_compressed(budget, **saved)
    bench_floor_replay.main(["replay", str(tmp_path / "rec")])
    out = capsys.readouterr().out
    assert "the share doubled where the networks are sure and unanimous" in out
    assert _row(out)[3].startswith("1.000 (+0.143")  # the recorded share, the product's mix
    bench_floor_replay.main(["replay", str(tmp_path / "rec"), "--linear-mix"])
    out = capsys.readouterr().out
    assert "every pixel mixed at the share" in out
    assert _row(out)[3].startswith("0.857 (+0.000")  # at 0.4 the sure walker keeps its row
