"""UNet, SwinUNet and MambaUNet: registry, masks, scans and weight loading.

Shapes, gradients and sizes are checked for every architecture in test_model_contract.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_medseg.models import create_model, list_models, model_info
from napari_medseg.models.mamba_unet import SS2D
from napari_medseg.models.pretrained import load_pretrained
from napari_medseg.models.swin_unet import SwinBlock, window_attention_mask
from napari_medseg.ops import selective_scan_ref

CORE = {"unet": "UNet", "swin_unet": "SwinUNet", "mamba_unet": "MambaUNet"}


def test_registry_lists_core_models() -> None:
    names = list_models()
    for name, display in CORE.items():
        assert name in names
        info = model_info(name)
        assert info.display_name == display
        assert set(info.presets) == {"lite", "paper"}


def test_unknown_model_and_preset_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'.*unet"):
        create_model("resnet")
    with pytest.raises(ValueError, match="no preset 'huge'.*lite"):
        create_model("unet", preset="huge")


def test_eval_mode_is_deterministic_and_batch_independent() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 1, 40, 40)
    for name in CORE:
        model = create_model(name, 1, 4, "lite").eval()
        with torch.no_grad():
            full = model(x)
            single = model(x[1:2])
        torch.testing.assert_close(full[1:2], single, atol=1e-4, rtol=1e-4)


def _official_shift_mask(size: int, ws: int, shift: int) -> torch.Tensor:
    """The slice-based mask of the official Swin code, for a size x size map (size % ws == 0)."""
    img = torch.zeros(size, size)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[hs, wsl] = cnt
            cnt += 1
    win = img.view(size // ws, ws, size // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, -100.0, 0.0)


def test_shift_mask_matches_official_construction() -> None:
    ws, shift = 7, 3
    mask = window_attention_mask(14, 21, ws, shift, shift, torch.device("cpu"))
    assert mask.shape == (6, 49, 49)
    # Square 14x14 case against the official construction (the mask depends only on where
    # the seams are, so a 14x14 map checks both axes).
    mask_sq = window_attention_mask(14, 14, ws, shift, shift, torch.device("cpu"))
    torch.testing.assert_close(mask_sq, _official_shift_mask(14, ws, shift))
    assert window_attention_mask(14, 14, ws, 0, 0, torch.device("cpu")) is None


def test_padded_window_attention_ignores_padding() -> None:
    """A 5x6 map inside one 7x7 window must equal dense attention over its 30 real tokens."""
    torch.manual_seed(0)
    dim, heads, ws = 8, 2, 7
    blk = SwinBlock(dim, heads, ws, shifted=True, mlp_ratio=2.0, drop_path=0.0).eval()
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_()
    x = torch.randn(2, 5, 6, dim)
    with torch.no_grad():
        got = blk(x)
        # Dense reference: real tokens only, bias looked up by their 7x7-window positions.
        y = blk.norm1(x).reshape(2, 30, dim)
        pos = torch.tensor([r * ws + c for r in range(5) for c in range(6)])
        q, k, v = blk.attn.qkv(y).view(2, 30, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        idx = blk.attn.relative_position_index[pos][:, pos]
        bias = blk.attn.relative_position_bias_table[idx].permute(2, 0, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) * (dim // heads) ** -0.5 + bias, dim=-1)
        a = blk.attn.proj((att @ v).transpose(1, 2).reshape(2, 30, dim)).view(2, 5, 6, dim)
        ref = x + a
        ref = ref + blk.mlp(blk.norm2(ref))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_cross_scan_matches_four_directional_reference() -> None:
    """SS2D's batched 4-direction scan equals four separate scans in their own orders."""
    torch.manual_seed(0)
    ss = SS2D(d_model=4, d_state=3)
    b, d, h, w = 2, ss.d_inner, 3, 5
    x = torch.randn(b, d, h, w)
    with torch.no_grad():
        got = ss._cross_scan(x)  # (B, H, W, D)
        # Token orders as index lists into the row-major flattening.
        grid = torch.arange(h * w).view(h, w)
        orders = [
            grid.flatten(),
            grid.t().flatten(),
            grid.flatten().flip(0),
            grid.t().flatten().flip(0),
        ]
        flat = x.flatten(2)
        n, r = ss.d_state, ss.dt_rank
        ref = torch.zeros(b, d, h * w)
        for kdir, order in enumerate(orders):
            seq = flat[:, :, order]  # (B, D, L) in this direction's order
            dbl = torch.einsum("bdl,cd->bcl", seq, ss.x_proj_weight[kdir])
            dt = torch.einsum("brl,dr->bdl", dbl[:, :r], ss.dt_projs_weight[kdir])
            sl = slice(kdir * d, (kdir + 1) * d)
            y = selective_scan_ref(
                seq,
                dt,
                -torch.exp(ss.A_logs[sl]),
                dbl[:, r : r + n],
                dbl[:, r + n :],
                D=ss.Ds[sl],
                delta_bias=ss.dt_projs_bias[kdir],
                delta_softplus=True,
            )
            ref[:, :, order] += y  # back to row-major positions
    torch.testing.assert_close(got, ref.view(b, d, h, w).permute(0, 2, 3, 1), atol=1e-5, rtol=1e-4)


def test_mamba_init_follows_mamba() -> None:
    ss = SS2D(d_model=32, d_state=8)
    torch.testing.assert_close(ss.A_logs[5], torch.log(torch.arange(1.0, 9.0)))
    assert torch.all(ss.Ds == 1)
    dt = F.softplus(ss.dt_projs_bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6


def test_load_pretrained_roundtrip_prefixes_and_gray_adaptation(tmp_path) -> None:
    torch.manual_seed(0)
    src = create_model("swin_unet", 3, 4, "lite").eval()
    # Saved like the official wrapper: bare net under a "swin_unet." prefix, inside "model".
    path = tmp_path / "swin.pth"
    torch.save({"model": {"swin_unet." + k: v for k, v in src.net.state_dict().items()}}, path)

    same = create_model("swin_unet", 3, 4, "lite").eval()
    report = load_pretrained(same, path, strict=True)
    assert not report.missing and not report.unexpected and not report.shape_mismatch
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(same(x), src(x))

    gray = create_model("swin_unet", 1, 4, "lite").eval()
    report = load_pretrained(gray, path)
    assert any("patch_embed.proj.weight" in a for a in report.adapted)
    g = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gray(g), src(g.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)

    other_classes = create_model("swin_unet", 3, 2, "lite")
    report = load_pretrained(other_classes, path)
    assert [s.split(":")[0] for s in report.shape_mismatch] == ["net.output.weight"]
    assert report.missing == ["net.output.weight"]
    with pytest.raises(RuntimeError, match="shape_mismatch"):
        load_pretrained(other_classes, path, strict=True)


def test_load_pretrained_mirrors_encoder_and_never_downloads(tmp_path) -> None:
    torch.manual_seed(0)
    src = create_model("mamba_unet", 1, 4, "lite")
    encoder_only = {k: v for k, v in src.net.state_dict().items() if k.startswith("layers.")}
    path = tmp_path / "encoder.pth"
    torch.save(encoder_only, path)
    dst = create_model("mamba_unet", 1, 4, "lite")
    report = load_pretrained(dst, path, mirror_encoder=True)
    assert not report.unexpected
    torch.testing.assert_close(
        dst.net.layers_up[3].blocks[0].self_attention.x_proj_weight,
        src.net.layers[0].blocks[0].self_attention.x_proj_weight,
    )
    torch.testing.assert_close(
        dst.net.layers_up[1].blocks[0].self_attention.in_proj.weight,
        src.net.layers[2].blocks[0].self_attention.in_proj.weight,
    )
    assert "net.patch_embed.proj.weight" in report.missing
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_pretrained(dst, tmp_path / "missing.pth")
