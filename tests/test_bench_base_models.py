"""benchmarks/bench_base_models.py on tiny synthetic ACDC volumes: the --quick runs score
through the product's workflow, write their table, and a second invocation reuses the base
and the per-volume results instead of training and scoring again (issue 12)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_base_models  # noqa: E402
from test_collection import acdc_folder, mask_folder  # noqa: E402

FAST = ["--quick", "--threads", "1", "--steps", "2", "--ft-steps", "1", "--scratch-steps", "1"]


@pytest.fixture
def data(tmp_path):
    # patient001: a fold1 test patient; 021-022: fold1 training patients
    acdc_folder(tmp_path / "data" / "acdc", patients=(1, 21, 22))
    return tmp_path / "data"


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_acdc_base_scores_every_method_and_a_rerun_reuses_them(data, tmp_path, capsys):
    work = tmp_path / "work"
    args = ["acdc-base", "--data", str(data), "--work", str(work), *FAST]
    assert bench_base_models.main(args) == 0
    run = work / "acdc-base-quick"
    done = json.loads((run / "base" / "done.json").read_text())
    # base runs hold files out by default (0.1 of two patients: one): its card records
    # base vs walker on them, which is what lets the floor trust a base when fine-tuning
    assert done["steps"] == 2 and done["images"] == 2  # both frames of the one trained patient
    card = bench_base_models.load_checkpoint(run / "base" / "model.pt").card
    assert card["validation"]["images"] == 2 and card["validation"]["walker"] is not None
    records = _records(run / "results.jsonl")
    # the two frames of the one test patient, each zero-shot, fine-tuned, walker, scratch
    assert sorted((r["method"], r["case"]) for r in records) == sorted(
        (m, f"patient001_frame{f}")
        for m in ("zero-shot", "fine-tuned", "walker", "scratch")
        for f in ("01", "12")
    )
    assert {r["steps"] for r in records if r["method"] in ("fine-tuned", "scratch")} == {1}
    # the trio's agreement with its zero-shot answer: what review.csv ranks a folder by
    for r in records:
        if r["method"] == "zero-shot":
            assert 0.0 <= r["agreement"] <= 1.0
    for r in records:
        ens = r["scores"]["ensemble"]
        assert set(ens) == {"1", "2", "3"} and all(0 <= v["dice"] <= 1 for v in ens.values())
    table = (run / "results.md").read_text()
    assert "| base, zero-shot (no strokes) |" in table and "WSL4MIS DMPLS" in table
    assert "Targets: zero-shot" in table
    capsys.readouterr()

    # a second run: nothing trained or scored again, the same table numbers
    stamp = (run / "base" / "model.pt").stat().st_mtime_ns
    assert bench_base_models.main(args) == 0
    assert "resuming" not in capsys.readouterr().out
    assert (run / "base" / "model.pt").stat().st_mtime_ns == stamp
    assert _records(run / "results.jsonl") == records

    # other settings in the same folder are refused rather than mixed
    with pytest.raises(SystemExit, match="other settings"):
        bench_base_models.main([*args[:-1], "2"])


def test_learning_curve_adds_patients_one_at_a_time(data, tmp_path):
    work = tmp_path / "work"
    args = ["learning-curve", "--data", str(data), "--work", str(work), *FAST]
    assert bench_base_models.main(args) == 0
    run = work / "learning-curve-quick"
    k1 = json.loads((run / "k01" / "done.json").read_text())
    k2 = json.loads((run / "k02" / "done.json").read_text())
    assert (k1["images"], k2["images"]) == (2, 4)  # patient021, then 021 + 022
    from napari_medseg.checkpoints import load_checkpoint

    card = load_checkpoint(run / "k02" / "model.pt").card
    assert card["fine_tuned_from"]["images"] == 2  # k=2 continues the k=1 snapshot
    snapshots = {(r.get("k"), r["case"]) for r in _records(run / "results.jsonl")}
    assert {k for k, _ in snapshots} == {1, 2, None}  # None: the walker reference
    table = (run / "results.md").read_text()
    assert "| 1 |" in table and "| 2 |" in table
    assert "learning_curve.png" in table  # written, or why not (matplotlib missing)


def test_kvasir_base_with_dense_labels_trains_on_the_whole_masks(tmp_path):
    """The full-supervision bound: the base's training files are the masks drawn everywhere
    (every pixel a stroke, none unlabelled) while the test frames keep simulated strokes."""
    kvasir = mask_folder(tmp_path / "data" / "kvasir_seg", n=4)
    (kvasir / "split.json").write_text(
        json.dumps({"train": ["frame0", "frame1"], "test": ["frame2", "frame3"]})
    )
    work = tmp_path / "work"
    args = ["kvasir-base", "--data", str(tmp_path / "data"), "--work", str(work), *FAST]
    assert bench_base_models.main([*args, "--dense-labels", "--val-fraction", "0"]) == 0
    run = work / "kvasir-base-quick"
    scribbles = sorted((run / "views" / "train" / "kvasir_seg" / "scribbles").iterdir())
    assert [p.stem for p in scribbles] == ["frame0", "frame1"]
    import imageio.v3 as iio

    for p in scribbles:
        mask = iio.imread(kvasir / "masks" / p.name)
        assert np.array_equal(iio.imread(p), mask)  # drawn everywhere: the mask itself
    card = bench_base_models.load_checkpoint(run / "base" / "model.pt").card
    assert card["trained_on"]["images"] == 2
    assert card["trained_on"]["scribbled_pixels"] == 2 * 40 * 44  # every pixel
    methods = {r["method"] for r in _records(run / "results.jsonl")}
    assert methods == {"zero-shot", "fine-tuned", "walker"}
    assert "with their whole masks (--dense-labels)" in (run / "results.md").read_text()


def test_dense_labels_is_refused_where_it_would_be_ignored(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_base_models.main(["acdc-base", "--work", str(tmp_path), "--dense-labels", *FAST])
    assert "--dense-labels is for kvasir-base and ph2-base" in capsys.readouterr().err


def test_net_preset_widens_the_networks_and_keeps_the_recipe(tmp_path):
    """The capacity experiment: paper-width networks trained and fine-tuned with lite's
    recipe (whole slices at 128 px, AdamW, the dataset's augmentation)."""
    kvasir = mask_folder(tmp_path / "data" / "kvasir_seg", n=4)
    (kvasir / "split.json").write_text(
        json.dumps({"train": ["frame0", "frame1"], "test": ["frame2", "frame3"]})
    )
    work = tmp_path / "work"
    args = ["kvasir-base", "--data", str(tmp_path / "data"), "--work", str(work), *FAST]
    assert bench_base_models.main([*args, "--models", "unet", "--net-preset", "paper"]) == 0
    run = work / "kvasir-base-quick"
    base = bench_base_models.load_checkpoint(run / "base" / "model.pt")
    assert [(s.name, s.preset) for s in base.slots] == [("unet", "paper")]
    lite = bench_base_models.TrainConfig()
    lite.resolve("lite", bench_base_models.dataset_recipe("lite"))
    for key in ("optimizer", "lr", "batch_size", "patch_size", "max_side", "augment"):
        assert base.config[key] == getattr(lite, key), key
    methods = {r["method"] for r in _records(run / "results.jsonl")}
    assert methods == {"zero-shot", "fine-tuned", "walker"}  # fine-tuning loaded the base
