"""WNet2D, CMUNeXt (S / base / L) and the model-efficiency benchmark.

Shapes, gradients and sizes are checked for every architecture in test_model_contract.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import napari_medseg.models.wnet2d as wnet2d_mod
from napari_medseg import ops
from napari_medseg.benchmarking import (
    PUBLISHED,
    EfficiencyRow,
    count_flops,
    measure_model,
    run_model_efficiency,
    scan_flops,
    to_markdown,
)
from napari_medseg.models import count_parameters, create_model, list_models, model_info
from napari_medseg.models.cmunext import CMUNeXt, cmunext_config
from napari_medseg.models.wnet2d import MSLSB, MambaMixer, _box_mean

OURS = ["wnet2d", "cmunext_s", "cmunext", "cmunext_l"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registered_with_both_presets():
    names = list_models()
    for name in OURS:
        assert name in names
        info = model_info(name)
        assert info.presets == ("lite", "paper")
        assert info.size_multiple == 16
    assert model_info("wnet2d").family == "mamba"


@pytest.mark.parametrize("variant", ["cmunext_s", "cmunext", "cmunext_l"])
def test_cmunext_registered_head_adds_only_its_classes(variant):
    # The published counts (test_model_contract.py) are for the official code's defaults:
    # 3 input channels, 1 class; the registered 2-class model only adds dims[0] + 1 head
    # parameters.
    net = CMUNeXt(3, 1, cmunext_config(variant, "paper"))
    reg = create_model(variant, in_channels=3, num_classes=2, preset="paper")
    assert (
        count_parameters(reg) - count_parameters(net)
        == cmunext_config(variant, "paper").dims[0] + 1
    )


def test_wnet2d_uses_the_selective_scan(monkeypatch):
    """The Mamba stage must run the real S6 scan, never a convolutional stand-in."""
    calls = []
    real = wnet2d_mod.selective_scan

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(wnet2d_mod, "selective_scan", spy)
    model = create_model("wnet2d", in_channels=1, num_classes=2, preset="lite").eval()
    with torch.no_grad():
        model(torch.randn(1, 1, 64, 48))
    # one Mamba block in lite; tokens = (64/16) * (48/16), channels = 2 * 64
    assert calls == [torch.Size([1, 128, 12])]


def test_mslsb_polyphase_path_equals_dilated_convs():
    """The CPU fast path (polyphase sub-images) must compute exactly the dilated-conv block."""
    torch.manual_seed(0)
    block = MSLSB(6, 8).train()
    x = torch.randn(2, 6, 16, 20)  # even: takes the polyphase path on the CPU
    direct = block.fuse(torch.cat([b(x) for b in block.branches], dim=1)) + block.skip(x)
    assert torch.allclose(block(x), direct, atol=1e-5)
    odd = torch.randn(1, 6, 9, 11)  # odd: plain dilated convs
    block.eval()
    direct = block.fuse(torch.cat([b(odd) for b in block.branches], dim=1)) + block.skip(odd)
    assert torch.allclose(block(odd), direct, atol=1e-6)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_box_mean_is_avg_pool_without_padding(k):
    x = torch.randn(2, 3, 9, 14)
    ref = nn.functional.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
    assert torch.allclose(_box_mean(x, k), ref, atol=1e-5)


def test_mamba_mixer_is_causal():
    torch.manual_seed(0)
    mixer = MambaMixer(8, d_state=4).eval()
    x = torch.randn(1, 10, 8)
    x2 = x.clone()
    x2[:, 7:] += torch.randn(1, 3, 8)
    with torch.no_grad():
        y, y2 = mixer(x), mixer(x2)
    assert torch.allclose(y[:, :7], y2[:, :7], atol=1e-6)
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


def test_flop_counter_counts_two_flops_per_mac():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    counted, scan = count_flops(conv, torch.randn(1, 3, 16, 16))
    macs = 8 * 16 * 16 * 3 * 3 * 3
    assert counted == 2 * macs
    assert scan == 0


def test_scan_flops_are_added_analytically_and_hooks_removed():
    model = create_model("wnet2d", in_channels=3, num_classes=2, preset="lite").eval()
    original = ops.selective_scan
    counted, scan = count_flops(model, torch.randn(1, 3, 32, 32))
    # deepest level 2x2 = 4 tokens, d_inner 128, d_state 16, one block
    assert scan == scan_flops(1, 128, 16, 4)
    assert counted > 0
    assert ops.selective_scan is original
    assert wnet2d_mod.selective_scan is original


def test_run_model_efficiency_tiny_case():
    rows = run_model_efficiency(
        models=["cmunext_s"], presets=("lite", "paper"), size=64, device="cpu", runs=2, warmup=1
    )
    assert [(r.model, r.preset) for r in rows] == [("cmunext_s", "lite"), ("cmunext_s", "paper")]
    for r in rows:
        assert r.error == ""
        assert r.params == count_parameters(create_model("cmunext_s", 3, 2, "lite"))
        assert r.flops > 1e7 and r.scan_flops == 0
        assert r.latency_ms > 0 and r.latency_stat == "median" and r.runs == 2
        # at least the weights and the input; far less than a GB at 64x64
        assert r.params * 4 / 2**20 < r.peak_mem_mb < 1024
        assert r.input_shape == (1, 3, 64, 64)
    table = to_markdown(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| model | preset | params (M) | published params (M)")
    paper_line = next(line for line in lines if line.startswith("| cmunext_s | paper"))
    lite_line = next(line for line in lines if line.startswith("| cmunext_s | lite"))
    assert "| 0.42 |" in paper_line  # the published claim sits beside our number
    assert "| 0.42 |" not in lite_line
    assert PUBLISHED["cmunext_s"].source in table


def test_markdown_shows_trainable_params_when_some_are_frozen():
    row = EfficiencyRow("wave_gms", "paper", params=3_000_000, trainable_params=2_600_000)
    line = to_markdown([row]).splitlines()[2]
    assert "3.000 (2.600 trainable) | 2.60 |" in line


def test_measure_model_reports_errors_instead_of_raising():
    row = measure_model("no_such_model", "lite", size=32, device="cpu", runs=1, warmup=0)
    assert "no_such_model" in row.error
    assert "failed" in to_markdown([row])
