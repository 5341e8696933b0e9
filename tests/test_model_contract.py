"""What every registered architecture promises, checked for each one in ``list_models()``.

Any H×W (odd sizes included), 1- or 3-channel input, logits of the input's size, gradients to
every trainable parameter, ``lite`` no larger than ``paper``, and the ``paper`` size the
publication states where it states one. A new architecture gets these checks by registering;
its own file of tests is for what only it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from napari_medseg.models import count_parameters, create_model, list_models
from napari_medseg.models._token_unet import DropPath

MODELS = list_models()


@dataclass(frozen=True)
class Published:
    """A publication's parameter count for its configuration (our ``paper`` preset)."""

    in_channels: int
    num_classes: int
    params: float
    rel_tol: float
    lite_share: float = 1.0  # ``lite`` has at most this share of the published size
    source: str = ""


# UNet/SwinUNet/MambaUNet: Mamba-UNet paper, Table 1 / WSL4MIS, 4 classes. UNet's official input
# is 1 channel; the official Swin-Unet and Mamba-UNet repeat gray to 3 channels, a difference of
# 2 * 16 * 96 = 3072 patch-embedding weights, far below the tolerance. CMUNeXt: the official
# code's defaults (3 channels, 1 class; the registered 2-class head adds dims[0] + 1).
PUBLISHED = {
    "unet": Published(1, 4, 1.81e6, 0.02, 0.3, "WSL4MIS"),
    "swin_unet": Published(1, 4, 27.17e6, 0.02, 0.3, "Mamba-UNet Table 1"),
    "mamba_unet": Published(1, 4, 19.12e6, 0.02, 0.3, "Mamba-UNet Table 1"),
    "wnet2d": Published(3, 2, 4.0e6, 0.05, 1 / 3, 'WNet paper: "~4 M"'),
    "cmunext_s": Published(3, 2, 0.42e6, 0.02, source="CMUNeXt"),
    "cmunext": Published(3, 2, 3.15e6, 0.02, source="CMUNeXt"),
    "cmunext_l": Published(3, 2, 8.29e6, 0.02, source="CMUNeXt"),
}


def _wave_gms_side_heads(model: torch.nn.Module, name: str) -> bool:
    heads = model.net.mapping.heads
    return name.startswith("net.mapping.heads.") and not name.startswith(
        f"net.mapping.heads.{len(heads) - 1}."
    )


#: Parameters the logits do not use, by design. Wave-GMS's deep-supervision heads (all but the
#: last, ``paper`` only) feed its latent loss (``WaveGMS.latent_loss``), not the logits.
NOT_IN_LOGITS = {"wave_gms": _wave_gms_side_heads}


def _deterministic(model: torch.nn.Module) -> torch.nn.Module:
    """Train mode (dropout, batch statistics) but without stochastic depth.

    With drop-path a whole block may be skipped for every sample of a small batch, and its
    parameters then legitimately get no gradient; the gradient test wants every block used.
    """
    model.train()
    for m in model.modules():
        if isinstance(m, DropPath):
            m.p = 0.0
    return model


def _biases_before_batchnorm(model: torch.nn.Module) -> set[str]:
    names = set()
    for prefix, mod in model.named_modules():
        if isinstance(mod, torch.nn.Sequential):
            kids = list(mod.named_children())
            for (i, a), (_, b) in zip(kids, kids[1:]):
                if isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d):
                    names.add(f"{prefix}.{i}.bias")
    return names


def _check_forward_backward(
    model: torch.nn.Module, x: torch.Tensor, num_classes: int, name: str
) -> None:
    x = x.requires_grad_(True)
    out = model(x)
    assert out.shape == (x.shape[0], num_classes, *x.shape[-2:])
    assert torch.isfinite(out).all()
    # A loss that depends on every logit and is not invariant to per-pixel shifts.
    target = torch.randint(0, num_classes, (x.shape[0], *x.shape[-2:]))
    F.cross_entropy(out, target).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    aside = NOT_IN_LOGITS.get(name, lambda model, n: False)
    trained = [
        (n, p) for n, p in model.named_parameters() if p.requires_grad and not aside(model, n)
    ]
    no_grad = [n for n, p in trained if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    for n, p in trained:
        assert torch.isfinite(p.grad).all(), n
    # A conv bias right before BatchNorm is cancelled by the normalisation, so its gradient is
    # zero up to rounding; every other parameter must actually be trained.
    cancelled = _biases_before_batchnorm(model)
    dead = [n for n, p in trained if n not in cancelled and p.grad.abs().max() == 0]
    assert not dead, f"parameters with an all-zero gradient: {dead[:5]}"


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_channels,num_classes", [(1, 2), (3, 4)])
def test_lite_any_size_shapes_and_gradients(name: str, in_channels: int, num_classes: int):
    torch.manual_seed(0)
    model = _deterministic(create_model(name, in_channels, num_classes, "lite"))
    _check_forward_backward(model, torch.randn(2, in_channels, 37, 53), num_classes, name)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_paper_any_size_shapes_and_gradients(name: str, in_channels: int):
    # Batch 1 at 37x53 (padded to each architecture's multiple: for the token models the
    # MambaUNet bottleneck is 2x2 and its A_log still matters) keeps the 20-28 M models fast.
    torch.manual_seed(0)
    model = _deterministic(create_model(name, in_channels, 3, "paper"))
    _check_forward_backward(model, torch.randn(1, in_channels, 37, 53), 3, name)


@pytest.mark.parametrize("name", MODELS)
def test_lite_is_no_larger_than_paper_and_paper_matches_the_publication(name: str):
    claim = PUBLISHED.get(name, Published(1, 2, 0.0, 1.0))
    c, k = claim.in_channels, claim.num_classes
    paper = count_parameters(create_model(name, c, k, "paper"))
    lite = count_parameters(create_model(name, c, k, "lite"))
    assert lite <= paper
    if name in PUBLISHED:
        assert paper == pytest.approx(claim.params, rel=claim.rel_tol), (paper, claim.source)
        assert lite <= claim.lite_share * claim.params
