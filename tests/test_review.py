"""The review rank of a folder prediction: the networks' agreement with the answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_medseg.inference import member_agreement
from napari_medseg.workflow import Segmentation, rank_for_review, review_row, write_review


def _disc(r: int, cx: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[:32, :32]
    return np.where((yy - 16) ** 2 + (xx - cx) ** 2 <= r * r, 2, 1).astype(np.uint8)


def test_agreement_is_one_for_unanimous_networks_and_falls_as_they_part():
    answer = _disc(8)
    assert member_agreement({"a": answer, "b": answer.copy()}, answer) == pytest.approx(1.0)
    near = member_agreement({"a": answer, "b": _disc(7)}, answer)
    far = member_agreement({"a": answer, "b": _disc(8, cx=26)}, answer)
    assert 1.0 > near > far > 0.0
    # a network that misses the structure: its class-2 Dice is 0, background still counts
    empty = member_agreement({"a": answer, "b": np.ones_like(answer)}, answer)
    assert empty < far
    # one network has nothing to disagree with
    assert member_agreement({"a": answer}, answer) is None


def test_review_rows_rank_the_least_agreed_image_first_and_are_written(tmp_path: Path):
    answer = _disc(8)

    def seg(other):
        labels = {"a": answer, "b": other}
        dis = (other != answer).astype(np.float32) / 2
        return Segmentation(labels=labels, ensemble=answer, disagreement=dis)

    rows = [
        review_row(Path("good.tif"), Path("good.tif"), seg(answer.copy())),
        review_row(Path("bad.png"), Path("bad.tif"), seg(_disc(8, cx=26))),
        {"image": "one.tif", "prediction": "one.tif", "agreement": None, "disputed": 0.0},
    ]
    assert rows[0]["disputed"] == 0.0 and rows[1]["disputed"] > 0.0
    ranked = rank_for_review(rows)
    assert [r["image"] for r in ranked] == ["bad.png", "good.tif", "one.tif"]
    lines = write_review(tmp_path / "review.csv", ranked).read_text().splitlines()
    assert lines[0] == "image,prediction,agreement,disputed"
    assert lines[1].startswith("bad.png,bad.tif,0.")
    assert lines[3] == "one.tif,one.tif,,0.0000"


def test_the_benchmark_reports_whether_low_agreement_finds_the_bad_answers():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_anytime

    rows = [
        {"case": f"c{i}", "method": "ensemble", "budget": "60 s", "dice": d, "agreement": a}
        for i, (a, d) in enumerate([(0.5, 0.2), (0.9, 0.8), (0.7, 0.6), (0.95, 0.9)])
    ]
    rows.append({"case": "w", "method": "walker (floor, beta 2000)", "budget": "-", "dice": 0.5})
    text = " ".join(bench_anytime.review_rank_lines(rows))
    assert "**+1.00**" in text and "(the timed runs, 4 cases)" in text
    assert "lowest agreement has mean Dice 0.200, the rest 0.767" in text
    # too few timed cases: no claim at all
    assert bench_anytime.review_rank_lines(rows[:3]) == []
