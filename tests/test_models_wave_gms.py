"""Wave-GMS: Haar transform, registry integration, frozen decoder, mask-AE fitting, TAESD files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_medseg.models import count_parameters, create_model, model_info
from napari_medseg.models.wave_gms import (
    MaskAutoencoder,
    TAESDMaskAutoencoder,
    build_wave_gms,
    haar_dwt,
    haar_idwt,
    haar_pyramid,
    labels_to_onehot,
    load_taesd_decoder,
    load_taesd_encoder,
    mask_reconstruction_loss,
    pretrain_mask_autoencoder,
    synthetic_masks,
)
from napari_medseg.models.wave_gms import network as wg_network
from napari_medseg.models.wave_gms.mask_autoencoder import tiny_decoder, tiny_encoder
from napari_medseg.models.wave_gms.taesd import TAESD_DECODER_BLOCKS, TAESD_ENCODER_BLOCKS


def _inner(model):
    return getattr(model, "net", model)


def _fg_dice(pred: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    scores = []
    for c in range(1, k):
        p, t = pred == c, labels == c
        if int(t.sum()) + int(p.sum()) == 0:
            continue
        scores.append(float(2 * (p & t).sum() / (p.sum() + t.sum())))
    return sum(scores) / len(scores)


# ----------------------------------------------------------------------------- Haar
def test_haar_dwt_idwt_perfect_reconstruction_and_orthonormality():
    x = torch.randn(2, 3, 16, 24, dtype=torch.float64)
    y = haar_dwt(x)
    assert y.shape == (2, 12, 8, 12)
    torch.testing.assert_close(haar_idwt(y), x, rtol=0, atol=1e-12)
    # orthonormal: energy is preserved
    torch.testing.assert_close((y**2).sum(), (x**2).sum())
    # sub-band-major layout: LL of a constant image is 2 * value, details vanish
    c = torch.full((1, 2, 4, 4), 3.0, dtype=torch.float64)
    yc = haar_dwt(c)
    torch.testing.assert_close(yc[:, :2], torch.full((1, 2, 2, 2), 6.0, dtype=torch.float64))
    assert yc[:, 2:].abs().max() < 1e-12
    # a vertical edge shows up only in the LH band (differences across columns)
    edge = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    edge[..., ::2] = 1.0
    ye = haar_dwt(edge)
    assert ye[:, 1].abs().min() > 0.9 and ye[:, 2:].abs().max() < 1e-12


def test_haar_pyramid_levels_and_gradients():
    x = torch.rand(1, 1, 32, 40, dtype=torch.float64)
    pyr = haar_pyramid(x, 3)
    assert [tuple(p.shape) for p in pyr] == [(1, 4, 16, 20), (1, 4, 8, 10), (1, 4, 4, 5)]
    # normalised LL of level 3 is the 8x8 block mean
    torch.testing.assert_close(pyr[2][:, :1], F.avg_pool2d(x, 8))
    xs = torch.randn(1, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: haar_idwt(haar_dwt(t) ** 2), (xs,))
    with pytest.raises(ValueError, match="even"):
        haar_dwt(torch.zeros(1, 1, 5, 4))
    with pytest.raises(ValueError, match="divisible by 8"):
        haar_pyramid(torch.zeros(1, 1, 20, 16), 3)


# ----------------------------------------------------------------------------- registry
def test_registered_with_display_name_and_multiple():
    info = model_info("wave_gms")
    assert info.display_name == "Wave-GMS"
    assert info.size_multiple == 8
    assert set(info.presets) >= {"lite", "paper"}


@pytest.mark.parametrize("in_channels,num_classes", [(1, 2), (3, 4), (1, 4), (3, 2)])
def test_gradients_reach_encoder_and_mapping_but_not_the_frozen_autoencoder(
    in_channels, num_classes
):
    # shapes and gradients in general: test_model_contract.py
    torch.manual_seed(0)
    model = create_model("wave_gms", in_channels, num_classes, "lite")
    out = model(torch.randn(2, in_channels, 37, 53))
    target = torch.randint(0, num_classes, (2, 37, 53))
    F.cross_entropy(out, target).backward()
    net = _inner(model)
    for part in (net.image_encoder, net.mapping):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in net.mask_autoencoder.parameters())


def test_frozen_decoder_unchanged_while_mapping_learns():
    torch.manual_seed(1)
    model = create_model("wave_gms", 1, 3, "lite")
    net = _inner(model)
    model.train()  # must not unfreeze the decoder
    assert not net.mask_autoencoder.training
    assert not any(p.requires_grad for p in net.mask_autoencoder.parameters())
    ae_before = {k: v.clone() for k, v in net.mask_autoencoder.state_dict().items()}
    map_before = [p.detach().clone() for p in net.mapping.parameters()]
    # a naive trainer hands *all* parameters (with weight decay) to the optimizer
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(3)
    labels = synthetic_masks(4, 32, 3, generator=g)
    images = labels.float()[:, None] * 0.5 + 0.2 * torch.randn(4, 1, 32, 32, generator=g)
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for k, v in net.mask_autoencoder.state_dict().items():
        torch.testing.assert_close(v, ae_before[k], rtol=0, atol=0)
    changed = [not torch.equal(a, b) for a, b in zip(map_before, net.mapping.parameters())]
    assert all(changed)
    assert min(losses[-3:]) < 0.8 * losses[0]


def test_same_weights_and_global_rng_whether_or_not_synthetic_fit_is_cached():
    def build():
        torch.manual_seed(7)
        m = create_model("wave_gms", 1, 2, "lite")
        return m, torch.rand(3)

    m1, r1 = build()
    wg_network._SYNTHETIC_AE_CACHE.clear()
    m2, r2 = build()
    torch.testing.assert_close(r1, r2)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_paper_preset_sizes():
    net = build_wave_gms(3, 2, "paper", fit_synthetic=False)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = count_parameters(net) - trainable
    assert 2.4e6 < trainable < 2.8e6  # published: ~2.6M trainable
    assert 2.2e6 < frozen < 2.7e6  # TAESD-sized decoder (~1.2M) + mask encoder (~1.2M)
    lite = build_wave_gms(3, 2, "lite", fit_synthetic=False)
    assert sum(p.numel() for p in lite.parameters() if p.requires_grad) < 0.1 * trainable
    out = net(torch.randn(1, 3, 16, 24))
    assert out.shape == (1, 2, 16, 24)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.randn(1, 3, 12, 16))


# ----------------------------------------------------------------------------- mask autoencoder
def test_mask_autoencoder_pretraining_reduces_reconstruction_loss():
    torch.manual_seed(0)
    k = 3
    test = synthetic_masks(8, 32, k, generator=torch.Generator().manual_seed(11))
    ae = MaskAutoencoder(k, latent_channels=8, width=8, encoder_blocks=(1, 1, 1, 1),
                         decoder_blocks=(1, 1, 1, 1))  # fmt: skip
    with torch.no_grad():
        untrained = float(mask_reconstruction_loss(ae, test))
    pretrain_mask_autoencoder(ae, None, iterations=0, crop=32, linear_fit_batches=4)
    with torch.no_grad():
        linear_only = float(mask_reconstruction_loss(ae, test))
        pred = ae(labels_to_onehot(test, k)).argmax(1)
    assert linear_only < 0.6 * untrained
    assert _fg_dice(pred, test, k) > 0.85
    history = pretrain_mask_autoencoder(
        ae, None, iterations=15, crop=32, batch_size=8, linear_fit=False, lr=3e-3
    )
    with torch.no_grad():
        fitted = float(mask_reconstruction_loss(ae, test))
    assert len(history) == 15
    assert fitted < linear_only
    assert bool(ae.trunk_active)
    # a checkpoint restores the fitted trunk (and its activation) in a fresh autoencoder
    fresh = MaskAutoencoder(k, 8, 8, (1, 1, 1, 1), (1, 1, 1, 1))
    fresh.load_state_dict(ae.state_dict())
    onehot = labels_to_onehot(test, k)
    with torch.no_grad():
        torch.testing.assert_close(fresh(onehot), ae(onehot))
    assert ae.frozen and not ae.training
    assert not any(p.requires_grad for p in ae.parameters())
    ae.train()
    assert not ae.training  # frozen stays in eval


def test_pretrain_on_real_masks_of_any_size_with_ignored_pixels():
    k = 2
    masks = [synthetic_masks(1, s, k, generator=torch.Generator().manual_seed(s))[0]
             for s in (24, 40)]  # fmt: skip
    masks[1][:5] = -1  # unlabelled rows
    model = create_model("wave_gms", 1, k, "lite")
    history = pretrain_mask_autoencoder(model, masks, iterations=3, crop=32, batch_size=4)
    assert len(history) == 3 and all(h == h for h in history)  # finite, no NaN
    ae = _inner(model).mask_autoencoder
    assert ae.frozen and not any(p.requires_grad for p in ae.parameters())
    with pytest.raises(ValueError, match="mask values"):
        pretrain_mask_autoencoder(ae, torch.full((1, 16, 16), 5), iterations=1, crop=16)


def test_latent_loss_odd_sizes_ignore_and_gradients():
    torch.manual_seed(0)
    model = create_model("wave_gms", 1, 3, "lite")
    net = _inner(model)
    x = torch.randn(2, 1, 37, 53)
    mask = torch.randint(0, 3, (2, 37, 53))
    loss = net.latent_loss(x, mask)
    assert loss.ndim == 0 and float(loss) > 0
    loss.backward()
    assert all(p.grad is not None for p in net.mapping.parameters())
    assert all(p.grad is None for p in net.mask_autoencoder.parameters())
    assert float(net.latent_loss(x, torch.full_like(mask, -1))) == 0.0


# ----------------------------------------------------------------------------- TAESD files
def _random_taesd():
    torch.manual_seed(0)
    dec = tiny_decoder(4, 3, 64, TAESD_DECODER_BLOCKS)
    enc = tiny_encoder(3, 4, 64, TAESD_ENCODER_BLOCKS)
    for p in list(dec.parameters()) + list(enc.parameters()):
        p.data.normal_(0, 0.05)
    return dec, enc


def test_taesd_local_file_round_trip(tmp_path):
    dec, enc = _random_taesd()
    torch.save(dec.state_dict(), tmp_path / "taesd_decoder.pth")
    torch.save(enc.state_dict(), tmp_path / "taesd_encoder.pth")
    # diffusers AutoencoderTiny layout: prefixed keys, decoder indices shifted (no Clamp module)
    diffusers = {f"decoder.layers.{int(k.split('.', 1)[0]) - 1}.{k.split('.', 1)[1]}": v
                 for k, v in dec.state_dict().items()}  # fmt: skip
    diffusers.update({f"encoder.layers.{k}": v for k, v in enc.state_dict().items()})
    torch.save(diffusers, tmp_path / "autoencoder_tiny.pth")

    z = torch.randn(1, 4, 3, 5)
    img = torch.rand(1, 3, 24, 40)
    for dec_file, enc_file in [("taesd_decoder.pth", "taesd_encoder.pth"),
                               ("autoencoder_tiny.pth", "autoencoder_tiny.pth")]:  # fmt: skip
        loaded_dec = load_taesd_decoder(tmp_path / dec_file)
        loaded_enc = load_taesd_encoder(tmp_path / enc_file)
        with torch.no_grad():
            torch.testing.assert_close(loaded_dec(z), dec(z))
            torch.testing.assert_close(loaded_enc(img), enc(img))
        assert not any(p.requires_grad for p in loaded_dec.parameters())

    # plugs into a paper-preset network (4 latent channels for 2 classes) as its frozen decoder
    net = build_wave_gms(1, 2, "paper", fit_synthetic=False)
    net.set_mask_autoencoder(TAESDMaskAutoencoder(loaded_dec, 2, encoder=loaded_enc))
    x = torch.randn(1, 1, 16, 16)
    out = net(x)
    assert out.shape == (1, 2, 16, 16)
    (out.mean() + net.latent_loss(x, torch.randint(0, 2, (1, 16, 16)))).backward()
    assert all(p.grad is not None for p in net.mapping.parameters())
    assert all(p.grad is None for p in net.mask_autoencoder.parameters())

    with pytest.raises(ValueError, match="latent channels"):
        build_wave_gms(1, 2, "lite", fit_synthetic=False).set_mask_autoencoder(
            TAESDMaskAutoencoder(loaded_dec, 2)
        )
    with pytest.raises(FileNotFoundError, match="nothing is fetched"):
        load_taesd_decoder(tmp_path / "missing.pth")
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError):
        load_taesd_decoder(tmp_path / "bad.pth")
