"""GPU check: what to know the first time napari-medseg meets a CUDA machine, in ≤ 8 minutes.

Stages (each has its own time limit and reports its own failure; one broken stage never hides
the others):

1. **CUDA tests**: ``pytest -m cuda`` (tests/test_cuda.py: the scan on CUDA against the float64
   reference, a trainer step of the lite and paper trios, memory released after a trainer is
   dropped).
2. **Selective scan**: our chunked torch scan on CUDA against the float64 sequential reference
   on the CPU (max relative error of the output and of every gradient) and its speed, forward
   (no grad) and forward + backward, timed with CUDA events, at L = 784 and 3136 (the token
   counts of a 28² and a 56² Mamba stage), D = 768, N = 16, B = 1; the same for mamba-ssm's
   kernel when it imports.
3. **Trio steps**: it/s of the real TriNetTrainer step (three networks, pseudo labels, losses,
   SGD), paper preset at batch 24, 224² (the official Weak-Mamba-UNet script: ≈ 2.1 it/s on an
   RTX 3090), and of the lite trio with its own recipe; peak CUDA memory during the steps, and
   memory allocated/reserved once the trainer is dropped and ``torch.cuda.empty_cache()`` ran.
4. **ACDC**: the dataset protocol (fold1) with the paper preset for 3 minutes, scored on 10 test
   volumes (3-D Dice per class and HD95 in voxels: the h5 files carry no spacing).

``--data`` is a folder of WSL4MIS ACDC volumes (``patientNNN_frameMM.h5``). A subset is enough:
the stage trains on the fold1 training patients present (021-100) and scores the first
``--test-volumes`` fold1 test volumes present (patients 001-020). E.g. patients 001-005 (10 test
volumes, 7.5 MiB) + patients 021-050 (60 training volumes, 37 MiB): 44.5 MiB. Mind that the
first step computes the random-walker labels of every training slice on the CPU (~0.3 s per
slice on a 2-core EPYC, ~570 slices for 60 volumes) inside the 3 minutes; the row says when the
first step came. Without ``--data`` the stage is reported as skipped (``--dry-run``: a synthetic
folder).

``--dry-run`` runs every stage on the CPU at tiny sizes (scan L = 16, D = 8; batch 2 at 64²; two
iterations; a synthetic two-volume ACDC-like folder) so that the script is known to work before a
GPU is there; ``make test`` runs it (tests/test_gpu_check.py).

    python benchmarks/gpu_check.py --data acdc_subset --out bench_output/gpu_check.md
    python benchmarks/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_scan import make_inputs  # noqa: E402

from napari_medseg.ops import (  # noqa: E402
    available_backends,
    selective_scan,
    selective_scan_ref,
)

WMU_IT_S_3090 = 2.1  # official Weak-Mamba-UNet training script, batch 24, 224², RTX 3090
WMU_ACDC_DICE = 0.9171  # Weak-Mamba-UNet paper, ACDC with scribbles, full training schedule


@dataclass(frozen=True)
class Sizes:
    """What each stage runs; FULL on a GPU, DRY on the CPU to prove the script works."""

    scan_lengths: tuple[int, ...]
    scan_dim: int
    scan_state: int
    scan_repeats: int
    paper_batch: int
    paper_size: int
    lite_batch: int | None  # None: the lite preset's own recipe
    lite_size: int | None
    step_warmup: int
    step_iterations: int
    acdc_seconds: float | None
    acdc_iterations: int | None
    acdc_batch: int | None
    acdc_patch: int | None
    limits: dict[str, float]


FULL = Sizes(
    scan_lengths=(784, 3136),
    scan_dim=768,
    scan_state=16,
    scan_repeats=20,
    paper_batch=24,
    paper_size=224,
    lite_batch=None,
    lite_size=None,
    step_warmup=3,
    step_iterations=20,
    acdc_seconds=180.0,
    acdc_iterations=None,
    acdc_batch=None,
    acdc_patch=None,
    # the sum stays under 8 minutes even when every stage runs into its limit
    limits={"tests": 50, "scan": 60, "steps": 90, "acdc": 270},
)
DRY = Sizes(
    scan_lengths=(16,),
    scan_dim=8,
    scan_state=4,
    scan_repeats=2,
    paper_batch=2,
    paper_size=64,
    lite_batch=2,
    lite_size=64,
    step_warmup=1,
    step_iterations=2,
    acdc_seconds=None,
    acdc_iterations=2,
    acdc_batch=2,
    acdc_patch=64,
    # generous: the dry run asks "does every stage run?", and a busy 2-core machine (make test
    # beside a benchmark) took over 120 s for a stage that takes 20 s when it is quiet
    limits={"tests": 400, "scan": 300, "steps": 400, "acdc": 400},
)


@dataclass
class Row:
    stage: str
    result: str
    target: str = ""
    seconds: float = 0.0


class StageTimeout(Exception):
    """A stage ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raises StageTimeout in the main thread after ``seconds`` (SIGALRM; Python code and
    every CUDA launch return control often enough for it to land)."""

    def expire(signum, frame):
        raise StageTimeout(f"stopped after its {seconds:.0f} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_stage(name: str, fn: Callable[[list[Row]], None], limit: float) -> list[Row]:
    """Runs one stage; rows it produced before a failure are kept, the failure is a row too."""
    rows: list[Row] = []
    t0 = time.perf_counter()
    try:
        with time_limit(limit):
            fn(rows)
    except Exception as exc:  # noqa: BLE001 - a failing stage is a result, not a crash
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        rows.append(Row(name, f"FAILED: {type(exc).__name__}: {msg}"[:300]))
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    total = time.perf_counter() - t0
    if rows and not any(r.seconds for r in rows):
        rows[-1].seconds = total
    return rows


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median over ``repeats`` after one warm-up: CUDA events on a GPU, perf_counter elsewhere."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- 1. CUDA tests


def stage_tests(rows: list[Row], sizes: Sizes, device: torch.device) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=sizes.limits["tests"] - 5,
    )
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    summary = lines[-1].strip("= ") if lines else proc.stderr.strip()[-200:]
    ok = proc.returncode == 0
    note = "" if device.type == "cuda" else " (no CUDA here: skips expected)"
    rows.append(
        Row(
            "CUDA tests (`pytest -m cuda`)",
            summary + note if ok else f"FAILED (exit {proc.returncode}): {summary}",
            "all pass",
            time.perf_counter() - t0,
        )
    )
    if not ok:
        failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
        for ln in failed[:5]:
            rows.append(Row("CUDA tests", ln[:300]))


# ----------------------------------------------------------------------------- 2. scan


def _scan_errors(backend: str, inputs: dict, device: torch.device) -> tuple[float, float]:
    """(max rel error of y, max rel error over all gradients) against float64 on the CPU."""
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(inputs["u"].shape, generator=g, dtype=torch.float64)
    ref = {k: v.double().clone().requires_grad_() for k, v in inputs.items()}
    y_ref = selective_scan_ref(**ref, delta_softplus=True)
    y_ref.backward(gy)
    ours = {k: v.to(device).clone().requires_grad_() for k, v in inputs.items()}
    y = selective_scan(**ours, delta_softplus=True, backend=backend)
    y.backward(gy.float().to(device))

    def rel(a, b):
        return ((a.detach().double().cpu() - b.detach()).abs().max() / b.abs().max()).item()

    return rel(y, y_ref), max(rel(ours[k].grad, ref[k].grad) for k in inputs)


def _scan_speed(backend: str, inputs: dict, repeats: int, device: torch.device):
    x = {k: v.to(device) for k, v in inputs.items()}
    with torch.no_grad():
        fwd = median_seconds(
            lambda: selective_scan(**x, delta_softplus=True, backend=backend), repeats, device
        )
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    gy = torch.ones_like(x["u"])

    def fwd_bwd():
        for v in leaves.values():
            v.grad = None
        selective_scan(**leaves, delta_softplus=True, backend=backend).backward(gy)

    return fwd, median_seconds(fwd_bwd, repeats, device)


def stage_scan(rows: list[Row], sizes: Sizes, device: torch.device) -> None:
    backends = ["torch"] + (["mamba_ssm"] if "mamba_ssm" in available_backends() else [])
    if "mamba_ssm" not in backends:
        from napari_medseg.ops.selective_scan import _load_mamba

        why = _load_mamba()[1] or "no CUDA device"
        rows.append(Row("scan: mamba-ssm kernel", f"not available ({why[:120]})", "optional"))
    speeds: dict[tuple[str, int], tuple[float, float]] = {}
    for L in sizes.scan_lengths:
        inputs = make_inputs(1, sizes.scan_dim, sizes.scan_state, L)
        shape = f"L={L}, D={sizes.scan_dim}, N={sizes.scan_state}"
        for backend in backends:
            t0 = time.perf_counter()
            y_err, g_err = _scan_errors(backend, inputs, device)
            rows.append(
                Row(
                    f"scan accuracy, {backend} on {device.type}, {shape}",
                    f"max rel err: y {y_err:.1e}, gradients {g_err:.1e}",
                    "vs float64 sequential reference (CPU); fp32: ≲1e-4 y, ≲1e-3 grads",
                    time.perf_counter() - t0,
                )
            )
            t0 = time.perf_counter()
            fwd, fb = _scan_speed(backend, inputs, sizes.scan_repeats, device)
            speeds[(backend, L)] = (fwd, fb)
            other = speeds.get(("mamba_ssm", L)) if backend == "torch" else speeds.get(("torch", L))
            ref = (
                f"{'mamba-ssm' if backend == 'torch' else 'torch'}: "
                f"{other[0] * 1e3:.2f} / {other[1] * 1e3:.2f} ms"
                if other
                else ""
            )
            rows.append(
                Row(
                    f"scan speed, {backend} on {device.type}, {shape}",
                    f"fwd {fwd * 1e3:.2f} ms, fwd+bwd {fb * 1e3:.2f} ms (median of "
                    f"{sizes.scan_repeats})",
                    ref,
                    time.perf_counter() - t0,
                )
            )


# ----------------------------------------------------------------------------- 3-4. trio steps


def synthetic_task(z: int, size: int, seed: int = 0):
    """(Z, 1, H, W) image, (Z, H, W) scribbles and labels: 4 concentric regions (0 outside,
    3 in the centre) like a short-axis heart, a short stroke in each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 2)
    label = np.where(r < 0.25, 3, np.where(r < 0.45, 2, np.where(r < 0.7, 1, 0)))
    image = np.stack([label / 4 + rng.normal(0, 0.05, label.shape) for _ in range(z)])
    seeds = np.full((z, size, size), -1, np.int64)
    mid = size // 2
    for c, radius in ((3, 0.1), (2, 0.35), (1, 0.6), (0, 0.85)):
        x = int(mid + radius * size / 2)
        seeds[:, mid - 1 : mid + 2, min(x, size - 3) : min(x + 3, size)] = c
    return image[:, None].astype(np.float32), seeds, np.repeat(label[None], z, 0).astype(np.uint8)


def _memory(device: torch.device) -> tuple[float, float]:
    return torch.cuda.memory_allocated(device) / 2**20, torch.cuda.memory_reserved(device) / 2**20


def _trio_steps(preset: str, batch, size, sizes: Sizes, device: torch.device):
    """(it/s over the timed steps, peak MiB or None, label of the setting)."""
    from napari_medseg.training import TrainConfig, TriNetTrainer

    image, seeds, _ = synthetic_task(4, size or 256)
    cfg = TrainConfig(
        preset=preset,
        device=str(device),
        iterations=sizes.step_warmup + sizes.step_iterations,
        batch_size=batch,
        patch_size=size,
        preview_every_seconds=None,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = TriNetTrainer([image], [seeds], 4, cfg, preview=None)
    stamps = []
    for upd in trainer.steps():
        if not upd.done:
            stamps.append(time.perf_counter())
    timed = stamps[sizes.step_warmup - 1 :]  # from the end of the last warm-up step
    it_s = (len(timed) - 1) / (timed[-1] - timed[0])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    setting = f"batch {cfg.batch_size}, " + (
        f"{cfg.patch_size}² crops" if cfg.patch_size else f"whole slices at {cfg.max_side} px"
    )
    del trainer
    return it_s, peak, setting


def stage_steps(rows: list[Row], sizes: Sizes, device: torch.device) -> None:
    runs = (
        (
            "paper",
            sizes.paper_batch,
            sizes.paper_size,
            f"official WMU ≈ {WMU_IT_S_3090} it/s (batch 24, 224², RTX 3090)",
        ),
        ("lite", sizes.lite_batch, sizes.lite_size, "lite recipe (interactive, CPU-sized)"),
    )
    for preset, batch, size, target in runs:
        t0 = time.perf_counter()
        it_s, peak, setting = _trio_steps(preset, batch, size, sizes, device)
        rows.append(
            Row(
                f"{preset} trio step ({setting}) on {device.type}",
                f"{it_s:.2f} it/s ({sizes.step_iterations} timed steps)",
                target,
                time.perf_counter() - t0,
            )
        )
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            alloc, reserved = _memory(device)
            rows.append(
                Row(
                    f"{preset} trio CUDA memory",
                    f"peak {peak:.0f} MiB while training; after Stop (trainer dropped, "
                    f"empty_cache): {alloc:.0f} MiB allocated, {reserved:.0f} MiB reserved",
                    "after Stop ≈ 0",
                )
            )
        else:
            rows.append(Row(f"{preset} trio CUDA memory", "n/a (no CUDA)", "after Stop ≈ 0"))


# ----------------------------------------------------------------------------- 5. ACDC


def write_synthetic_acdc(folder: Path) -> Path:
    """Two ACDC-like volumes: patient001 (a fold1 test patient) and patient021 (training)."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    for patient, seed in ((1, 0), (21, 1)):
        image, seeds, label = synthetic_task(3, 64, seed=seed)
        scribble = np.where(seeds >= 0, seeds, 4).astype(np.uint16)  # 4 = unlabelled
        with h5py.File(folder / f"patient{patient:03d}_frame01.h5", "w") as f:
            f["image"], f["label"], f["scribble"] = image[:, 0], label, scribble
    return folder


def _acdc_subset(data: Path, test_volumes: int, workdir: Path) -> tuple[Path, int, int]:
    """A folder of links: the fold1 training volumes present and the first test volumes."""
    from napari_medseg.data.datasets import acdc_split

    split = acdc_split(data, 1)
    if not split.train or not split.test:
        raise ValueError(
            f"{data} needs fold1 training volumes (patients 021-100) and test volumes "
            f"(001-020); found {len(split.train)} and {len(split.test)}"
        )
    subset = workdir / "acdc_subset"
    subset.mkdir()
    chosen = split.test[:test_volumes]
    for p in (*split.train, *chosen):
        (subset / p.name).symlink_to(p.resolve())
    return subset, len(split.train), len(chosen)


def stage_acdc(
    rows: list[Row], sizes: Sizes, device: torch.device, data: Path | None, test_volumes: int
) -> None:
    """``train --dataset acdc --fold fold1`` in-process: the dataset machinery (Workflow)."""
    from napari_medseg.data.collection import open_collection
    from napari_medseg.training import TrainConfig
    from napari_medseg.training.dataset_protocol import ACDC_CLASSES, summary_table
    from napari_medseg.workflow import Workflow

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        tmp = Path(tmp)
        if data is None:
            data = write_synthetic_acdc(tmp / "synthetic_acdc")
        subset, n_train, n_test = _acdc_subset(Path(data), test_volumes, tmp)
        cfg = TrainConfig(
            preset="paper",
            device=str(device),
            seconds=sizes.acdc_seconds,
            iterations=sizes.acdc_iterations,
            batch_size=sizes.acdc_batch,
            patch_size=sizes.acdc_patch,
            preview_every_seconds=None,
        )
        everything = open_collection(subset)
        workflow = Workflow()
        workflow.prepare_dataset(everything.acdc_fold(1), cfg, val_fraction=0.0)
        start = time.perf_counter()
        finals, first_step = [], []
        for upd in workflow.train_dataset(save_to=tmp / "run" / "model.pt", validate_every=0):
            if not first_step:  # the walker labels every training slice before step 1
                first_step.append(time.perf_counter() - start)
            finals.append(upd)
        scored = []
        for _, _, got in workflow.evaluate(everything.acdc_fold(1, test=True)):
            scored += got
    ens = summary_table(scored)["ensemble"]
    dice = [ens[c]["dice"] for c in ACDC_CLASSES]
    hd = np.mean([ens[c]["hd95"] for c in ACDC_CLASSES])
    final = finals[-1]
    budget = f"{cfg.seconds:g} s" if cfg.seconds else f"{cfg.iterations} iterations"
    rows.append(
        Row(
            f"ACDC fold1, paper trio, {budget} on {device.type}, {n_train} training / "
            f"{n_test} test volumes",
            f"ensemble Dice {np.mean(dice):.3f} (RV {dice[0]:.3f}, Myo {dice[1]:.3f}, LV "
            f"{dice[2]:.3f}), HD95 {hd:.1f} voxels; {final.iteration} it "
            f"({final.iterations_per_second:.2f} it/s; first step after {first_step[0]:.0f} s, "
            "random-walker labels of every training slice on the CPU)",
            f"WMU paper {WMU_ACDC_DICE} Dice after its full schedule (not comparable to a "
            "3-minute run)",
            time.perf_counter() - t0,
        )
    )


# ----------------------------------------------------------------------------- report


def markdown(rows: list[Row], device: torch.device, dry_run: bool, total: float) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        cuda = f"CUDA {torch.version.cuda}"
    else:
        name, cuda = platform.processor() or platform.machine(), "no CUDA"
    mode = " — DRY RUN (CPU, tiny sizes: the numbers mean nothing)" if dry_run else ""
    lines = [
        f"### GPU check ({datetime.datetime.now():%Y-%m-%d %H:%M}){mode}",
        "",
        f"{name}, {cuda}, torch {torch.__version__}, scan backends {available_backends()}; "
        f"total {total:.0f} s.",
        "",
        "| stage | result | target / reference | time (s) |",
        "|---|---|---|---:|",
    ]
    for r in rows:
        cells = [c.replace("|", "\\|") for c in (r.stage, r.result, r.target)]
        lines.append(f"| {cells[0]} | {cells[1]} | {cells[2]} | {r.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None, help="folder of ACDC h5 volumes")
    p.add_argument("--test-volumes", type=int, default=10, help="ACDC test volumes scored")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: does it all run?")
    args = p.parse_args(argv)

    sizes = DRY if args.dry_run else FULL
    if args.dry_run:
        device = torch.device("cpu")
        # tiny tensors: one thread is as fast, and never fights another process for a core
        # (two spinning OpenMP threads on a busy 2-core machine run ~40x slower)
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("no CUDA device: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    if args.data is not None and not args.data.is_dir():
        print(f"--data {args.data} is not a folder", file=sys.stderr)
        return 2
    start = time.perf_counter()
    rows: list[Row] = []
    rows += run_stage("CUDA tests", lambda r: stage_tests(r, sizes, device), sizes.limits["tests"])
    rows += run_stage("scan", lambda r: stage_scan(r, sizes, device), sizes.limits["scan"])
    rows += run_stage("trio steps", lambda r: stage_steps(r, sizes, device), sizes.limits["steps"])
    if args.data is None and not args.dry_run:
        rows.append(Row("ACDC", "skipped: no --data folder", "see --help for the subset"))
    else:
        rows += run_stage(
            "ACDC",
            lambda r: stage_acdc(r, sizes, device, args.data, args.test_volumes),
            sizes.limits["acdc"],
        )
    table = markdown(rows, device, args.dry_run, time.perf_counter() - start)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
