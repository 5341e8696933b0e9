"""Headless demo: train the trio on a bundled sample for a short while and show the result.

Writes the predictions as label TIFFs and a PNG overlay (scribbles | ensemble | truth per
slice) so that someone without a display can still see what the tool does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def _to_rgb(gray_or_rgb: np.ndarray) -> np.ndarray:
    x = np.asarray(gray_or_rgb, dtype=np.float32)
    lo, hi = np.percentile(x, [0.5, 99.5])
    x = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat(x[..., None], 3, axis=-1) if x.ndim == 2 else x[..., :3]


def overlay_png(
    path: Path, image: np.ndarray, panels: list[np.ndarray], kind: str, max_slices: int = 4
) -> Path:
    """One row per slice: the image under each label map (0 = transparent)."""
    from skimage.color import label2rgb
    from skimage.io import imsave

    if kind != "stack":
        image = image[None]
        panels = [p[None] for p in panels]
    z = image.shape[0]
    picks = np.unique(np.linspace(0, z - 1, min(z, max_slices)).round().astype(int))
    rows = []
    for s in picks:
        base = _to_rgb(image[s])
        tiles = [
            label2rgb(p[s].astype(np.int64), image=base, bg_label=0, alpha=0.45, image_alpha=1.0)
            for p in panels
        ]
        rows.append(np.concatenate([base, *tiles], axis=1))
    canvas = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, canvas, check_contrast=False)
    return path


def run_demo(out: Path, seconds: float = 45.0, sample: str = "mri") -> dict:
    """Trains on the sample and writes its outputs; ``result["interrupted"]``: Ctrl-C stopped
    the training early (what it reached is saved all the same, see :mod:`.interrupt`)."""
    from ..metrics import evaluate_segmentation
    from ..outputs import StagedOutputs
    from ..sample_data import load_mri_sample, load_rgb_sample
    from ..training import TrainConfig
    from ..workflow import Task, Workflow, write_segmentation
    from .interrupt import StopOnInterrupt
    from .progress import drive, print_floor

    cfg = TrainConfig(seconds=seconds, preview_every_seconds=None)  # a bad budget: refused
    with StagedOutputs(out) as outputs:  # checked before training; moved into place at the end
        data = load_mri_sample() if sample == "mri" else load_rgb_sample()
        workflow = Workflow(Task(class_names=tuple(data.get("class_names", ()))))
        workflow.prepare([(data["image"], data["scribbles"])], cfg)
        with StopOnInterrupt(workflow) as interrupt:
            print(
                f"napari-medseg demo: training {', '.join(cfg.models)} "
                f"({workflow.preset}) on "
                f"{workflow.device_for()} for {seconds:.0f} s on the {sample.upper()} sample "
                f"({data.get('description', '')})",
                file=sys.stderr,
            )
            final = drive(workflow.train(), cfg, "demo")
        segmentation = final.segmentation or workflow.predict(data["image"])
        write_segmentation(segmentation, out, place=outputs.path)
        workflow.save(outputs.path("model.pt"))
        ensemble = segmentation.ensemble
        truth = data.get("truth")
        panels = [np.asarray(data["scribbles"]), ensemble] + ([truth] if truth is not None else [])
        overlay_png(outputs.path("overlay.png"), data["image"], panels, workflow.task.kind)
        files = outputs.commit()
    out = outputs.target
    result = {
        "iterations": final.iteration,
        "seconds": final.elapsed,
        "files": files,
        "interrupted": interrupt.requested,
    }
    if truth is not None:
        values = workflow.task.class_values
        rows = evaluate_segmentation(ensemble, np.asarray(truth), class_values=values)
        names = list(data.get("class_names", []))
        for r in rows:
            v = r["class"]
            name = names[v - 1] if 0 < v <= len(names) else str(v)
            print(f"  Dice {name:>12s}: {r['dice']:.3f}")
        result["dice"] = {r["class"]: r["dice"] for r in rows}
    print_floor(segmentation)
    steps = f"{final.iteration} iteration{'' if final.iteration == 1 else 's'}"
    print(f"{steps} in {final.elapsed:.0f} s. Outputs:")
    for f in files:
        print(f"  {f}")
    print(f"Open {out / 'overlay.png'} to see scribbles | ensemble prediction | truth per slice.")
    if interrupt.requested:
        print(
            f"napari-medseg: interrupted after {final.iteration} iterations — the model and the "
            f"predictions reached so far are saved in {out}",
            file=sys.stderr,
        )
    return result
