"""Parameters, FLOPs, latency and peak memory of every registered architecture.

Protocol (the one WNet2D publishes, so that our numbers sit beside the papers' claims):

* **input** 1 x ``in_channels`` x ``size`` x ``size`` (default 1 x 3 x 512 x 512), random normal;
  every model is built with :func:`napari_medseg.models.create_model`, so the pad-to-multiple
  wrapper is included (a no-op at 512, which all our networks divide);
* **FLOPs** = 2 x multiply-accumulates, from :class:`torch.utils.flop_counter.FlopCounterMode`.
  That counter already charges 2 FLOPs per MAC for convolutions and matrix products (a 3->8 3x3
  conv on 16 x 16 reports 110 592 = 2 x 55 296 MACs; ``tests/test_models_seed_wnet_cmunext.py``
  checks it), and it counts *only* those ops: element-wise work (norms, activations, pooling,
  interpolation) is free, as in fvcore/thop-style counts papers report. The selective scan is
  element-wise too, so it would be invisible; we count it analytically instead
  (:func:`scan_flops`) and report it separately and inside the total. Any matmuls that a scan
  backend performs internally are subtracted from the counted part so the scan is not counted
  twice;
* **latency**: ``model.eval()``, batch 1, FP32, ``torch.no_grad``. On CUDA: ``warmup`` (50)
  untimed runs, then the *mean* of ``runs`` (200) runs, each timed with CUDA events and a
  ``torch.cuda.synchronize()``. On the CPU the defaults are 2 warm-ups and the *median* of 10 runs
  (a median because the CPU is usually shared and outliers are common);
* **peak memory**: CUDA: ``torch.cuda.max_memory_allocated`` over one forward after
  ``reset_peak_memory_stats`` (weights, input and activations; not the caching allocator's
  reserve). CPU: ``tracemalloc`` cannot see torch's C++ allocator, and resident-set deltas are
  blurred by the allocator keeping freed pages, so we replay one forward under
  ``torch.profiler.profile(profile_memory=True)`` and take the peak of the running sum of the
  recorded allocations and frees (ordered by op start), plus the bytes of weights, buffers and
  input that were already allocated -- the CPU analogue of ``max_memory_allocated``.

The ``napari-medseg bench-models`` command calls :func:`run_model_efficiency`; run it at 512 only
on a machine that is not shared -- a paper-size network takes seconds per forward on a CPU.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models import count_parameters, create_model, list_models, model_info
from ..presets import PRESETS

__all__ = [
    "PUBLISHED",
    "SCAN_FLOPS_PER_STATE",
    "SCAN_FLOPS_PER_CHANNEL",
    "EfficiencyRow",
    "PublishedClaim",
    "count_flops",
    "measure_model",
    "run_model_efficiency",
    "scan_flops",
    "to_markdown",
]

# Per (batch, channel, state, position) of the recurrence
#   dA = exp(delta * A); x = dA * x + (delta * u) * B; y += x * C
# : delta*A (1), exp (1, by convention), B*(delta*u) (1) and the reuse of delta*u (~1),
# dA*x (1), + (1), x*C (1), the sum over states (1) -> 8, rounded up to 9 for the per-element
# state bookkeeping. Per (batch, channel, position) there is softplus(delta + bias) (2), delta*u
# (1), the D skip (2) and the SiLU gate (2) -> 7. Both are estimates of element-wise work that
# FlopCounterMode ignores everywhere else; they are reported separately so they can be dropped.
SCAN_FLOPS_PER_STATE = 9
SCAN_FLOPS_PER_CHANNEL = 7


def scan_flops(batch: int, channels: int, state: int, length: int) -> int:
    """Analytic FLOPs of one scan; u is (batch, channels, length), A is (channels, state)."""
    return (
        SCAN_FLOPS_PER_STATE * batch * channels * state * length
        + SCAN_FLOPS_PER_CHANNEL * batch * channels * length
    )


@dataclass(frozen=True)
class PublishedClaim:
    """What a paper says about its own network; ``None`` where it says nothing we could verify."""

    params_m: float | None = None
    gflops: float | None = None
    latency_ms: float | None = None
    peak_mem_mb: float | None = None
    setting: str = ""
    source: str = ""


# Keyed by registry name. Only the ``paper`` preset is meant to match these.
PUBLISHED: dict[str, PublishedClaim] = {
    "unet": PublishedClaim(
        params_m=1.81,
        setting="SSL4MIS UNet as used by Mamba-UNet/Weak-Mamba-UNet",
        source="Wang et al. 2024, Mamba-UNet, arXiv:2402.05079",
    ),
    "swin_unet": PublishedClaim(
        params_m=27.17,
        setting="Swin-UNet as used by Mamba-UNet/Weak-Mamba-UNet",
        source="Wang et al. 2024, Mamba-UNet, arXiv:2402.05079",
    ),
    "mamba_unet": PublishedClaim(
        params_m=19.12,
        source="Wang et al. 2024, Mamba-UNet, arXiv:2402.05079",
    ),
    "cmunext_s": PublishedClaim(
        params_m=0.42,
        setting="3 input channels, 1 class",
        source="Tang et al. 2024, arXiv:2308.01239; github.com/FengheTan9/CMUNeXt",
    ),
    "cmunext": PublishedClaim(
        params_m=3.15,
        setting="3 input channels, 1 class",
        source="Tang et al. 2024, arXiv:2308.01239; github.com/FengheTan9/CMUNeXt",
    ),
    "cmunext_l": PublishedClaim(
        params_m=8.29,
        setting="3 input channels, 1 class",
        source="Tang et al. 2024, arXiv:2308.01239; github.com/FengheTan9/CMUNeXt",
    ),
    "wnet2d": PublishedClaim(
        params_m=4.0,
        gflops=0.030,
        latency_ms=14.19,
        peak_mem_mb=2.54 * 1024,
        setting="~4 M params, ~30 M FLOPs (2xMACs) at 1x3x512x512; latency/memory on RTX 4090, "
        "FP32, bs 1. The FLOPs claim is not reachable by a full-resolution CNN (see wnet2d.py)",
        source="Li et al. 2025, WNet2D; github.com/mu1sd/WNet2D README",
    ),
    "wave_gms": PublishedClaim(
        params_m=2.6,
        setting="trainable parameters only; the frozen Tiny-VAE is not counted",
        source="Ahmed et al. 2025, Wave-GMS, arXiv:2510.03216 (abstract)",
    ),
    # MSNet (MICCAI 2021) and M2SNet (arXiv:2303.10894): Res2Net-50 based; we could not verify
    # a parameter/FLOP figure from the papers, so the columns stay blank.
    "msnet": PublishedClaim(source="Zhao et al. 2021, MSNet, MICCAI"),
    "m2snet": PublishedClaim(source="Zhao et al. 2023, M2SNet, arXiv:2303.10894"),
}


@dataclass
class EfficiencyRow:
    """One (model, preset) measurement. FLOPs are 2 x MACs; ``flops`` includes ``scan_flops``."""

    model: str
    preset: str
    params: int = 0
    trainable_params: int = 0
    flops: float = 0.0
    counted_flops: float = 0.0
    scan_flops: float = 0.0
    latency_ms: float | None = None
    latency_stat: str = ""
    runs: int = 0
    warmup: int = 0
    peak_mem_mb: float | None = None
    mem_method: str = ""
    device: str = ""
    threads: int = 0
    input_shape: tuple[int, ...] = ()
    num_classes: int = 2
    error: str = ""


# ----------------------------------------------------------------------------- FLOPs


@contextlib.contextmanager
def _scan_flop_hooks(flop_counter: FlopCounterMode | None, tally: dict):
    """Temporarily wraps every ``selective_scan`` reachable from ``napari_medseg`` modules.

    Model modules import the function by name (``from ..ops import selective_scan``), so the
    wrapper has to replace those module globals, not just the attribute of ``ops``. Only the
    outermost call is counted (the dispatcher may call a backend that is also wrapped).
    """
    from napari_medseg import ops

    targets = {id(ops.selective_scan), id(ops.selective_scan_ref)}
    depth = [0]

    def wrap(fn):
        @functools.wraps(fn)
        def counted(u, delta, A, *args, **kwargs):
            if depth[0]:
                return fn(u, delta, A, *args, **kwargs)
            before = flop_counter.get_total_flops() if flop_counter is not None else 0
            depth[0] += 1
            try:
                out = fn(u, delta, A, *args, **kwargs)
            finally:
                depth[0] -= 1
            if flop_counter is not None:
                tally["inside"] += flop_counter.get_total_flops() - before
            bsz, channels, length = u.shape
            tally["scan"] += scan_flops(bsz, channels, A.shape[-1], length)
            tally["calls"] += 1
            return out

        return counted

    patched: list[tuple[object, str, object]] = []
    wrappers: dict[int, object] = {}
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not mod_name.startswith("napari_medseg"):
            continue
        for attr, value in list(vars(mod).items()):
            if callable(value) and id(value) in targets:
                wrapped = wrappers.setdefault(id(value), wrap(value))
                patched.append((mod, attr, value))
                setattr(mod, attr, wrapped)
    try:
        yield
    finally:
        for mod, attr, value in reversed(patched):
            setattr(mod, attr, value)


def count_flops(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(FLOPs counted by FlopCounterMode excluding scans, analytic scan FLOPs) of one forward."""
    tally = {"scan": 0, "inside": 0, "calls": 0}
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter, _scan_flop_hooks(counter, tally):
            model(x)
    return float(counter.get_total_flops() - tally["inside"]), float(tally["scan"])


# ----------------------------------------------------------------------------- latency, memory


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is visible; use 'cpu'")
    return torch.device(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _latency_ms(
    model: nn.Module, x: torch.Tensor, device: torch.device, runs: int, warmup: int
) -> tuple[float, str]:
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        _sync(device)
        times = []
        if device.type == "cuda":
            for _ in range(runs):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                model(x)
                end.record()
                torch.cuda.synchronize(device)
                times.append(start.elapsed_time(end))
            return statistics.fmean(times), "mean"
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times), "median"


def _tensor_bytes(model: nn.Module, x: torch.Tensor) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(b.numel() * b.element_size() for b in model.buffers())
    return n + x.numel() * x.element_size()


def _cpu_peak_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Peak of allocations minus frees during one forward, as recorded by the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    current = peak = 0
    for e in events:
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def _peak_memory_mb(model: nn.Module, x: torch.Tensor, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad():
            model(x)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    if device.type == "cpu":
        peak = _cpu_peak_bytes(model, x) + _tensor_bytes(model, x)
        return peak / 2**20, "cpu torch.profiler alloc peak + weights/input"
    return None, f"not measured on {device.type}"


# ----------------------------------------------------------------------------- driver


def measure_model(
    name: str,
    preset: str,
    *,
    size: int = 512,
    device: str | torch.device = "auto",
    runs: int | None = None,
    warmup: int | None = None,
    in_channels: int = 3,
    num_classes: int = 2,
    measure_latency: bool = True,
    measure_memory: bool = True,
) -> EfficiencyRow:
    """Measures one (model, preset); errors (e.g. out of memory) land in ``row.error``."""
    dev = _resolve_device(device)
    if runs is None:
        runs = 200 if dev.type == "cuda" else 10
    if warmup is None:
        warmup = 50 if dev.type == "cuda" else 2
    row = EfficiencyRow(
        model=name,
        preset=preset,
        runs=runs,
        warmup=warmup,
        device=str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        threads=torch.get_num_threads(),
        input_shape=(1, in_channels, size, size),
        num_classes=num_classes,
    )
    model = None
    try:
        model = create_model(name, in_channels=in_channels, num_classes=num_classes, preset=preset)
        model = model.to(dev).eval()
        row.params = count_parameters(model)
        row.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        x = torch.randn(*row.input_shape, device=dev)
        row.counted_flops, row.scan_flops = count_flops(model, x)
        row.flops = row.counted_flops + row.scan_flops
        if measure_memory:
            row.peak_mem_mb, row.mem_method = _peak_memory_mb(model, x, dev)
        if measure_latency:
            row.latency_ms, row.latency_stat = _latency_ms(model, x, dev, runs, warmup)
    except Exception as exc:  # one broken model must not sink the whole table
        row.error = f"{type(exc).__name__}: {exc}"
    finally:
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return row


def run_model_efficiency(
    models: Sequence[str] | None = None,
    presets: Iterable[str] = PRESETS,
    size: int = 512,
    device: str = "auto",
    runs: int | None = None,
    warmup: int | None = None,
    *,
    in_channels: int = 3,
    num_classes: int = 2,
    progress=None,
) -> list[EfficiencyRow]:
    """Measures every registered model (or ``models``) in every preset it offers.

    ``runs``/``warmup`` default to 200/50 on CUDA and 10/2 on the CPU. ``progress``, if given,
    is called with each finished row (the CLI prints them as they come).
    """
    names = list(models) if models else list_models()
    rows = []
    for name in names:
        offered = model_info(name).presets
        for preset in presets:
            if preset not in offered:
                continue
            row = measure_model(
                name,
                preset,
                size=size,
                device=device,
                runs=runs,
                warmup=warmup,
                in_channels=in_channels,
                num_classes=num_classes,
            )
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def to_markdown(
    rows: Sequence[EfficiencyRow], published: dict[str, PublishedClaim] | None = None
) -> str:
    """A Markdown table with our measurements and, on ``paper`` rows, the published claims."""
    published = PUBLISHED if published is None else published
    header = (
        "| model | preset | params (M) | published params (M) | GFLOPs | of which scan | "
        "published GFLOPs | latency (ms) | published latency (ms) | peak mem (MB) | "
        "published peak mem (MB) | device |"
    )
    lines = [header, "|" + "---|" * 12]
    notes = []
    for r in rows:
        claim = published.get(r.model) if r.preset == "paper" else None
        claim = claim or PublishedClaim()
        if r.error:
            lines.append(f"| {r.model} | {r.preset} | failed: {r.error} |" + " |" * 9)
            continue
        latency = "" if r.latency_ms is None else f"{r.latency_ms:.1f} ({r.latency_stat})"
        params = f"{r.params / 1e6:.3f}"
        if r.trainable_params != r.params:  # e.g. a frozen autoencoder: papers quote trainable
            params += f" ({r.trainable_params / 1e6:.3f} trainable)"
        lines.append(
            f"| {r.model} | {r.preset} | {params} | {_fmt(claim.params_m)} | "
            f"{r.flops / 1e9:.2f} | {r.scan_flops / 1e9:.3f} | {_fmt(claim.gflops, 3)} | "
            f"{latency} | {_fmt(claim.latency_ms)} | {_fmt(r.peak_mem_mb, 0)} | "
            f"{_fmt(claim.peak_mem_mb, 0)} | {r.device} |"
        )
        if claim.source and (r.model, claim.source) not in notes:
            notes.append((r.model, claim.source + (f" ({claim.setting})" if claim.setting else "")))
    if rows:
        r0 = rows[0]
        lines.append("")
        lines.append(
            f"Input {'x'.join(map(str, r0.input_shape))}, {r0.num_classes} output classes, FP32, "
            "batch 1, eval. FLOPs = 2 x MACs (FlopCounterMode) + analytic selective-scan FLOPs. "
            f"Memory: {r0.mem_method or 'not measured'}."
        )
    for model, text in notes:
        lines.append(f"- {model}: {text}")
    return "\n".join(lines)
