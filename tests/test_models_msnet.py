"""MSNet / M2SNet through the registry: gradients per part, presets, local-weight loading."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from napari_medseg.models import count_parameters, create_model, list_models, model_info
from napari_medseg.models.msnet import PRESETS, FixedOnesFilter, build_msnet
from napari_medseg.models.res2net import (
    RES2NET50_26W_4S,
    Res2NetEncoder,
    adapt_first_conv,
)

LITE = PRESETS["lite"].encoder


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registered_with_display_names():
    names = list_models()
    assert "msnet" in names and "m2snet" in names
    assert model_info("msnet").display_name == "MSNet"
    assert model_info("m2snet").display_name == "M2SNet"
    for name in ("msnet", "m2snet"):
        assert set(model_info(name).presets) == {"lite", "paper"}
        assert model_info(name).size_multiple == 32


@pytest.mark.parametrize("name", ["msnet", "m2snet"])
@pytest.mark.parametrize("in_channels,num_classes", [(1, 2), (3, 4)])
def test_lite_gradients_reach_the_stem_every_su_and_the_filters(name, in_channels, num_classes):
    # shapes and gradients in general: test_model_contract.py
    model = create_model(name, in_channels=in_channels, num_classes=num_classes, preset="lite")
    model.train()
    y = model(torch.randn(2, in_channels, 37, 53))
    target = torch.randint(0, num_classes, (2, 37, 53))
    F.cross_entropy(y, target).backward()
    net = model.net
    stem = net.encoder.conv1[0].weight.grad
    assert stem is not None and stem.abs().sum() > 0, "no gradient reached the encoder stem"
    assert net.head.weight.grad.abs().sum() > 0
    # every SU in the pyramid takes part in the output
    for level in net.pyramid:
        for su in level:
            assert su.conv[0].weight.grad.abs().sum() > 0
    if name == "m2snet":
        assert [f.kernel_size for f in net.filters] == [3, 5]
        assert all(f.norm.weight.grad.abs().sum() > 0 for f in net.filters)
        assert not any(p is f.kernel for f in net.filters for p in net.parameters())
    else:
        assert len(net.filters) == 0


@pytest.mark.parametrize("name", ["msnet", "m2snet"])
def test_eval_mode_is_batch_independent(name):
    model = create_model(name, in_channels=1, num_classes=3, preset="lite")
    x = torch.randn(3, 1, 40, 40)
    # Calibrate BatchNorm running statistics on the data (cumulative average), as training
    # would; fresh statistics (mean 0, var 1) leave M2SNet's fixed all-ones sums unscaled.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
        model.eval()
        full = model(x)
        single = model(x[1:2])
    assert full.abs().max() < 1e3
    torch.testing.assert_close(full[1:2], single, rtol=1e-3, atol=1e-3)


def test_paper_preset_batch1_64():
    model = create_model("m2snet", in_channels=3, num_classes=2, preset="paper").train()
    # Res2Net-50-v1b without its ImageNet classifier: 25.72 M published - 2.049 M fc.
    assert count_parameters(model.net.encoder) == 23_669_352
    # Decoder of the published network (64 channels) with a 2-class head; the original
    # 1-channel MSNet is this minus 577 (head) minus 256 (the two fixed-filter BatchNorms).
    assert count_parameters(model) == 27_693_162
    x = torch.randn(1, 3, 64, 64)
    y = model(x)
    assert y.shape == (1, 2, 64, 64)
    y.square().mean().backward()
    assert model.net.encoder.layer4[2].conv3.weight.grad.abs().sum() > 0


def test_batch1_too_small_for_batchnorm_says_what_to_do():
    model = build_msnet(1, 2, "lite").train()
    with pytest.raises(ValueError, match="batch of >= 2"):
        model(torch.randn(1, 1, 32, 32))


def test_fixed_ones_filter_equals_full_all_ones_convolution():
    torch.manual_seed(1)
    x = torch.randn(2, 6, 9, 11)
    for k in (3, 5):
        f = FixedOnesFilter(6, k).eval()
        f.norm.running_mean.uniform_(-1, 1)
        f.norm.running_var.uniform_(50, 100)
        ref = F.conv2d(x, torch.ones(6, 6, k, k), padding=k // 2)
        ref = F.relu(f.norm(ref))
        torch.testing.assert_close(f(x), ref, rtol=1e-5, atol=1e-5)
    assert "kernel" not in f.state_dict()


def test_adapt_first_conv_rules():
    w = torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(adapt_first_conv(w, 1), w.sum(1, keepdim=True))
    torch.testing.assert_close(adapt_first_conv(w, 3), w)
    w5 = adapt_first_conv(w, 5)
    assert w5.shape == (4, 5, 3, 3)
    torch.testing.assert_close(w5[:, 3], w[:, 0] * 3 / 5)
    # a constant image gives the same response with 1 channel as with 3 equal channels
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(
        F.conv2d(x, adapt_first_conv(w, 1)), F.conv2d(x.expand(-1, 3, -1, -1), w)
    )


def _fake_pretrained_file(tmp_path, in_channels=3):
    """A Res2Net state dict saved like the distributed ImageNet file (with fc, DataParallel)."""
    donor = Res2NetEncoder(in_channels, LITE)
    with torch.no_grad():
        for t in donor.state_dict().values():
            if t.is_floating_point():
                t.uniform_(-1, 1)
    state = {f"module.{k}": v for k, v in donor.state_dict().items()}
    state["module.fc.weight"] = torch.randn(10, LITE.out_channels[-1])
    state["module.fc.bias"] = torch.randn(10)
    path = tmp_path / "res2net_lite.pth"
    torch.save({"state_dict": state}, path)
    return path, donor.state_dict()


@pytest.mark.parametrize("in_channels", [1, 3])
def test_local_pretrained_round_trip(tmp_path, in_channels):
    path, donor = _fake_pretrained_file(tmp_path)
    model = create_model("m2snet", in_channels=in_channels, num_classes=2, preset="lite")
    skipped = model.net.load_pretrained_encoder(path)
    assert sorted(skipped) == ["fc.bias", "fc.weight"]
    loaded = model.net.encoder.state_dict()
    for k, v in donor.items():
        if k == "conv1.0.weight" and in_channels == 1:
            torch.testing.assert_close(loaded[k], v.sum(1, keepdim=True))
        else:
            torch.testing.assert_close(loaded[k], v, msg=k)
    # the model still works after loading
    with torch.no_grad():
        assert model.eval()(torch.randn(1, in_channels, 33, 47)).shape == (1, 2, 33, 47)


def test_pretrained_errors_are_actionable(tmp_path):
    enc = Res2NetEncoder(1, LITE)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        enc.load_pretrained(tmp_path / "missing.pth")
    path, _ = _fake_pretrained_file(tmp_path)
    wider = Res2NetEncoder(1, dataclasses.replace(LITE, stem=(16, 16, 64)))
    with pytest.raises(ValueError, match="does not match"):
        wider.load_pretrained(path)


def test_paper_encoder_uses_distributed_res2net_key_names():
    keys = set(Res2NetEncoder(3, RES2NET50_26W_4S).state_dict())
    for k in (
        "conv1.0.weight",
        "conv1.6.weight",
        "bn1.running_var",
        "layer1.0.convs.2.weight",
        "layer1.0.downsample.1.weight",
        "layer2.3.bns.0.bias",
        "layer3.5.conv3.weight",
        "layer4.2.bn3.running_mean",
    ):
        assert k in keys
