"""Wave-GMS: Haar multi-resolution image encoder -> latent mapping model -> frozen mask decoder.

Wave-GMS (Ahmed, Shaikh, Mohy-ud-Din, 2025, arXiv:2510.03216) extends GMS (Huo et al., AAAI 2025,
arXiv:2403.18198). GMS segments by *translation in a latent space*: a frozen VAE encodes the image,
a small latent mapping model (LMM) turns the image latent into a mask latent, and the frozen VAE
decoder renders the mask. Few weights train, which is what makes it cheap and robust. Wave-GMS
replaces the heavy SD-VAE image encoder by a trainable, light multi-resolution encoder fed with a
3-level Haar wavelet decomposition (LiteVAE-style: one feature extractor per level, pooled to 1/8,
concatenated and aggregated) and decodes with the frozen Tiny-VAE (TAESD) decoder.

Here the frozen decoder is a :class:`MaskAutoencoder` fitted on masks (TAESD weights can replace it
when a user has them, see :mod:`.taesd`), and ``forward`` returns class logits (B, K, H, W) so the
tri-network trains it with partial CE + Dice like any other network; gradients pass *through* the
frozen decoder into the mapping network and the image encoder.

GMS also trains with an L2 loss between predicted and encoded mask latents. That term needs dense
masks; it is available as :meth:`WaveGMS.latent_loss`, e.g. for a trainer with pseudo-labels::

    net = getattr(model, "net", model)          # unwrap create_model's padding wrapper
    loss = seg_loss + w * net.latent_loss(image, pseudo_labels, ignore_index=-1)

The published alignment loss between the multi-resolution encoder's latents and TAESD's image
latents is not reproduced (it needs the TAESD image encoder, which we do not ship).

Presets. Sources: the Wave-GMS paper (~2.6M trainable parameters, Tiny-VAE decoder frozen) and
its public code (ATPLab-LUMS/Wave-GMS: ``modules/novel/lite_vae/encoder.py`` "litevae-s",
``modules/latent_mapping_model.py`` ResAttnUNet_DS, ``configs/bus_train.yaml``); TAESD sizes from
madebyollin/taesd. Our own code throughout; deviations: deterministic latent instead of
mean|logvar, SiLU instead of PReLU in the LMM, our channel-U-Net wiring, and the latent width
(below).

Parameter counts (K = classes; "in" = 1 or 3 changes them by < 0.01M):

* ``paper``: C = max(4, 2(K-1)) latent channels (TAESD's 4 for K=2, 6 for K=4); trainable 2.60M
  (image encoder 1.03M + LMM 1.57M; the paper reports ~2.6M); frozen: linear mask code 1-3k +
  conv trunks 1.22M (decoder, TAESD's size) + 1.22M (encoder, latent targets only).
* ``lite``: C = max(8, 4(K-1)); trainable 0.20M (encoder 0.10M + LMM 0.10M); frozen: linear
  mask code 2-6k + conv trunks 2 x 0.04M.

* ``paper``: extractors and aggregator = "litevae-s" (16 channels, multipliers (1, 2, 2), 2
  residual blocks each, 2 mid blocks, 12 channels per Haar level); LMM ch=32, ch_mult=(1, 2, 4, 4),
  self-attention in every block, deep-supervision heads; mask-autoencoder conv trunks with
  TAESD's width and block counts (decoder 1.22M, as TAESD's; the encoder trunk only supplies
  latent targets).
* ``lite``: the same structure, narrow (8-16 channels, one block per stage, attention only in the
  two deepest LMM blocks, no deep supervision), for interactive CPU training.

Latent width: GMS/Wave-GMS use TAESD's 4 channels for binary masks. The linear part of our mask
code needs about 2 channels per extra class to keep boundaries (PCA reconstructions of synthetic
4-class masks: foreground Dice 0.82 with 4 channels, 0.92 with 8), so C grows with the class count;
a TAESD file can therefore replace the decoder only where C == 4 (``paper``, 2 or 3 classes).

The frozen mask autoencoder is fitted at construction on synthetic shapes (closed-form patch PCA,
~0.5 s, cached per class count and preset; the conv trunk stays inactive). Refit it on real
pseudo-masks, with gradient steps that also train the trunk, via
:func:`~.mask_autoencoder.pretrain_mask_autoencoder` *before* training the mapping network.

Size multiple: 8 (three Haar levels, and the decoder upsamples 1/8 latents by 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_model
from .haar import haar_pyramid
from .mask_autoencoder import (
    IGNORE_INDEX,
    LATENT_SCALE,
    MaskAutoencoder,
    pretrain_mask_autoencoder,
)

HAAR_LEVELS = 3  # 2^3 = LATENT_SCALE: the finest level is pooled 4x, the coarsest is used as is


def _norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 2)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block (GroupNorm, SiLU, 3x3 conv) x 2, 1x1 skip if widths differ."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(n_in),
            nn.SiLU(),
            nn.Conv2d(n_in, n_out, 3, padding=1),
            _norm(n_out),
            nn.SiLU(),
            nn.Conv2d(n_out, n_out, 3, padding=1),
        )
        self.skip = nn.Identity() if n_in == n_out else nn.Conv2d(n_in, n_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class SelfAttention2d(nn.Module):
    """Single-head spatial self-attention over all latent positions (as in the GMS LMM).

    Uses ``scaled_dot_product_attention`` so large latents do not materialise the full attention
    matrix where a memory-efficient kernel exists.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class ChannelUNet(nn.Module):
    """U-Net over channels at a fixed resolution (the LiteVAE feature extractor/aggregator idea).

    Widths go up and back down with concatenated skips, but there is no spatial resampling: the
    Haar transform already did the downsampling, and resampling again would lose detail.
    """

    def __init__(
        self, n_in: int, n_out: int, width: int, mults: Sequence[int], blocks: int, mid_blocks: int
    ):
        super().__init__()
        self.inp = nn.Conv2d(n_in, width, 3, padding=1)
        ch, skips = width, []
        self.down = nn.ModuleList()
        for m in mults:
            for _ in range(blocks):
                self.down.append(ResBlock(ch, width * m))
                ch = width * m
                skips.append(ch)
        self.mid = nn.Sequential(*[ResBlock(ch, ch) for _ in range(mid_blocks)])
        self.up = nn.ModuleList()
        for m in reversed(mults):
            for _ in range(blocks):
                self.up.append(ResBlock(ch + skips.pop(), width * m))
                ch = width * m
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, n_out, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        skips = []
        for blk in self.down:
            x = blk(x)
            skips.append(x)
        x = self.mid(x)
        for blk in self.up:
            x = blk(torch.cat([x, skips.pop()], dim=1))
        return self.out(x)


class MultiResolutionEncoder(nn.Module):
    """Image -> latent at 1/8: Haar levels 1..3, one extractor per level, pool to 1/8, aggregate."""

    def __init__(self, in_channels: int, latent_channels: int, cfg: WaveGMSConfig):
        super().__init__()
        sub = 4 * in_channels  # LL, LH, HL, HH per input channel
        self.extractors = nn.ModuleList(
            ChannelUNet(
                sub,
                cfg.level_channels,
                cfg.ext_width,
                cfg.ext_mults,
                cfg.ext_blocks,
                cfg.mid_blocks,
            )
            for _ in range(HAAR_LEVELS)
        )
        self.aggregator = ChannelUNet(
            HAAR_LEVELS * cfg.level_channels,
            latent_channels,
            cfg.agg_width,
            cfg.agg_mults,
            cfg.agg_blocks,
            cfg.mid_blocks,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for level, (bands, ext) in enumerate(zip(haar_pyramid(x, HAAR_LEVELS), self.extractors)):
            f = ext(bands)
            pool = 2 ** (HAAR_LEVELS - 1 - level)
            feats.append(F.avg_pool2d(f, pool) if pool > 1 else f)
        return self.aggregator(torch.cat(feats, dim=1))


class LatentMappingModel(nn.Module):
    """Image latent -> mask latent: residual(+attention) U-Net without resampling (GMS's LMM).

    Encoder blocks widen ``ch * mults[i]``; decoder blocks each take the concatenation of the
    matching encoder feature and the previous decoder output. One head per decoder stage gives
    deep supervision in latent space (used by :meth:`WaveGMS.latent_loss`); the last head is the
    prediction.
    """

    def __init__(
        self,
        latent_channels: int,
        ch: int,
        mults: Sequence[int],
        attention: Sequence[bool],
        deep_supervision: bool,
    ):
        super().__init__()
        if len(attention) != len(mults):
            raise ValueError("attention flags must match the number of LMM stages")
        widths = [ch] + [ch * m for m in mults]
        self.stem = nn.Conv2d(latent_channels, ch, 3, padding=1)

        def block(n_in: int, n_out: int, attn: bool) -> nn.Module:
            attn_layer = SelfAttention2d(n_out) if attn else nn.Identity()
            return nn.Sequential(ResBlock(n_in, n_out), attn_layer)

        self.enc = nn.ModuleList(
            block(widths[i], widths[i + 1], attention[i]) for i in range(len(mults))
        )
        self.dec = nn.ModuleList(
            block(widths[i] + widths[i + 1], widths[i], attention[i])
            for i in reversed(range(len(mults)))
        )
        dec_widths = [widths[i] for i in reversed(range(len(mults)))]
        head_widths = dec_widths if deep_supervision else dec_widths[-1:]
        self.heads = nn.ModuleList(
            nn.Sequential(
                _norm(w), nn.SiLU(), nn.Conv2d(w, latent_channels, 3, padding=1, bias=False)
            )
            for w in head_widths
        )

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Returns the latent predictions, coarse-to-fine stage order; the last one is final."""
        feats = [self.stem(z)]
        for blk in self.enc:
            feats.append(blk(feats[-1]))
        x = feats.pop()
        outs = []
        for blk in self.dec:
            x = blk(torch.cat([feats.pop(), x], dim=1))
            outs.append(x)
        outs = outs[len(outs) - len(self.heads) :]
        return [head(o) for head, o in zip(self.heads, outs)]


@dataclass(frozen=True)
class WaveGMSConfig:
    # latent width: max(latent_min, latent_per_class * (num_classes - 1)); the linear part of the
    # mask code needs more channels per extra class to keep boundaries (see mask_autoencoder)
    latent_min: int
    latent_per_class: int
    # multi-resolution encoder
    level_channels: int
    ext_width: int
    ext_mults: tuple[int, ...]
    ext_blocks: int
    agg_width: int
    agg_mults: tuple[int, ...]
    agg_blocks: int
    mid_blocks: int  # residual blocks at the widest point of extractors and aggregator
    # latent mapping model
    lmm_width: int
    lmm_mults: tuple[int, ...]
    lmm_attention: tuple[bool, ...]
    deep_supervision: bool
    # frozen mask autoencoder (conv trunk; 0 = linear patch code only)
    ae_width: int
    ae_encoder_blocks: tuple[int, ...]
    ae_decoder_blocks: tuple[int, ...]
    # fit on synthetic shapes at construction, so the decoder works before any mask exists:
    # closed-form patch PCA on synthetic_batches x 8 masks of synthetic_crop^2, then
    # synthetic_iterations Adam steps (0: too slow on a CPU to be worth it at construction)
    synthetic_batches: int = 8
    synthetic_crop: int = 64
    synthetic_iterations: int = 0

    def latent_channels(self, num_classes: int) -> int:
        return max(self.latent_min, self.latent_per_class * (num_classes - 1))


PRESET_CONFIGS: dict[str, WaveGMSConfig] = {
    "paper": WaveGMSConfig(
        latent_min=4,
        latent_per_class=2,
        level_channels=12,
        ext_width=16,
        ext_mults=(1, 2, 2),
        ext_blocks=2,
        agg_width=16,
        agg_mults=(1, 2, 2),
        agg_blocks=2,
        mid_blocks=2,
        lmm_width=32,
        lmm_mults=(1, 2, 4, 4),
        lmm_attention=(True, True, True, True),
        deep_supervision=True,
        ae_width=64,
        ae_encoder_blocks=(1, 3, 3, 3),
        ae_decoder_blocks=(3, 3, 3, 1),
    ),
    "lite": WaveGMSConfig(
        latent_min=8,
        latent_per_class=4,
        level_channels=8,
        ext_width=8,
        ext_mults=(1,),
        ext_blocks=1,
        agg_width=16,
        agg_mults=(1, 2),
        agg_blocks=1,
        mid_blocks=1,
        lmm_width=16,
        lmm_mults=(1, 2, 2),
        lmm_attention=(False, True, True),
        deep_supervision=False,
        ae_width=16,
        ae_encoder_blocks=(1, 1, 1, 1),
        ae_decoder_blocks=(1, 1, 1, 1),
    ),
}

# Synthetic-shape fits are deterministic, so the three networks of a tri-network (same classes,
# same preset) share one fit instead of paying for it three times.
_SYNTHETIC_AE_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}


def _new_autoencoder(num_classes: int, cfg: WaveGMSConfig) -> MaskAutoencoder:
    return MaskAutoencoder(
        num_classes,
        cfg.latent_channels(num_classes),
        cfg.ae_width,
        cfg.ae_encoder_blocks,
        cfg.ae_decoder_blocks,
    )


def _synthetic_autoencoder_state(num_classes: int, cfg: WaveGMSConfig) -> dict[str, torch.Tensor]:
    key = (num_classes, cfg)
    if key not in _SYNTHETIC_AE_CACHE:
        # Own RNG stream: the fit neither depends on nor disturbs the caller's global seed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)
            ae = _new_autoencoder(num_classes, cfg)
            pretrain_mask_autoencoder(
                ae,
                None,
                cfg.synthetic_iterations,
                crop=cfg.synthetic_crop,
                linear_fit_batches=cfg.synthetic_batches,
                seed=1234,
            )
        _SYNTHETIC_AE_CACHE[key] = {k: v.detach().clone() for k, v in ae.state_dict().items()}
    return _SYNTHETIC_AE_CACHE[key]


class WaveGMS(nn.Module):
    """Image (B, C, H, W) -> class logits (B, K, H, W); H, W multiples of 8.

    Trainable: ``image_encoder`` and ``mapping``. Frozen: ``mask_autoencoder`` (its decoder renders
    the logits; its encoder only provides latent targets for :meth:`latent_loss`).
    """

    size_multiple = LATENT_SCALE

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        config: WaveGMSConfig,
        mask_autoencoder: nn.Module | None = None,
        fit_synthetic: bool = True,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.config = config
        self.latent_channels = config.latent_channels(num_classes)
        self.image_encoder = MultiResolutionEncoder(in_channels, self.latent_channels, config)
        self.mapping = LatentMappingModel(
            self.latent_channels,
            config.lmm_width,
            config.lmm_mults,
            config.lmm_attention,
            config.deep_supervision,
        )
        if mask_autoencoder is None:
            mask_autoencoder = _new_autoencoder(num_classes, config)
            if fit_synthetic:
                mask_autoencoder.load_state_dict(_synthetic_autoencoder_state(num_classes, config))
        self.mask_autoencoder: nn.Module = mask_autoencoder
        self.set_mask_autoencoder(mask_autoencoder)

    # ------------------------------------------------------------------ decoder management
    def set_mask_autoencoder(self, autoencoder: nn.Module) -> None:
        """Swaps in another frozen mask autoencoder, e.g. a :class:`TAESDMaskAutoencoder`.

        It must use this network's latent width and class count. Do it before training (and before
        loading a checkpoint saved with it): the state-dict keys follow the autoencoder.
        """
        lat = getattr(autoencoder, "latent_channels", None)
        if lat != self.latent_channels:
            raise ValueError(
                f"mask autoencoder has {lat} latent channels but this network predicts "
                f"{self.latent_channels}; TAESD (4 channels) fits the 'paper' preset with 2 or 3 "
                "classes"
            )
        if getattr(autoencoder, "num_classes", None) != self.num_classes:
            raise ValueError(
                f"mask autoencoder decodes {getattr(autoencoder, 'num_classes', None)} classes, "
                f"the network has {self.num_classes}"
            )
        if hasattr(autoencoder, "freeze"):
            autoencoder.freeze()
        else:
            autoencoder.requires_grad_(False)
        self.mask_autoencoder = autoencoder

    def train(self, mode: bool = True) -> WaveGMS:
        super().train(mode)
        self.mask_autoencoder.train(False)  # frozen: stays in eval whatever the trainer does
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ forward
    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (B, {self.in_channels}, H, W) images, got shape {tuple(x.shape)}"
            )
        if x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError(
                f"H and W must be multiples of {self.size_multiple}, got {x.shape[-2]}x"
                f"{x.shape[-1]}; build the model with create_model('wave_gms', ...) to pad "
                "automatically"
            )

    def predict_latents(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Mask latents from every LMM head (coarse-to-fine; the last one is the prediction)."""
        self._check(x)
        return self.mapping(self.image_encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask_autoencoder.decode(self.predict_latents(x)[-1])

    def latent_loss(
        self, x: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE_INDEX
    ) -> torch.Tensor:
        """GMS latent matching: mean squared error between predicted and encoded mask latents.

        ``mask`` holds dense integer labels (B, H, W) (or (B, 1, H, W)); pixels equal to
        ``ignore_index`` are unknown, and every 8x8 latent cell touching one is left out because
        its target latent would be wrong. Averaged over all deep-supervision heads. Any H x W
        (padded here to a multiple of 8). Returns 0 when no cell is fully labelled.
        """
        if mask.ndim == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        h, w = x.shape[-2:]
        if mask.shape != (x.shape[0], h, w):
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match images {tuple(x.shape)}"
            )
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
            mask = F.pad(mask, (0, pw, 0, ph), value=ignore_index)
        mask = mask.to(x.device).long()
        with torch.no_grad():
            target = self.mask_autoencoder.encode_labels(mask, ignore_index).to(x.dtype)
            valid = (mask != ignore_index).to(x.dtype).unsqueeze(1)
            cell_ok = (F.avg_pool2d(valid, m) > 0.999).to(x.dtype)
        denom = cell_ok.sum() * target.shape[1]
        losses = []
        for pred in self.predict_latents(x):
            err = ((pred - target) ** 2 * cell_ok).sum()
            losses.append(err / denom.clamp_min(1.0))
        return torch.stack(losses).mean()


def build_wave_gms(
    in_channels: int, num_classes: int, preset: str = "lite", fit_synthetic: bool = True
) -> WaveGMS:
    """Builds an (unpadded) Wave-GMS network; ``fit_synthetic=False`` skips the decoder fit."""
    try:
        cfg = PRESET_CONFIGS[preset]
    except KeyError:
        raise ValueError(
            f"unknown Wave-GMS preset {preset!r}; choose one of {', '.join(PRESET_CONFIGS)}"
        ) from None
    return WaveGMS(in_channels, num_classes, cfg, fit_synthetic=fit_synthetic)


@register_model(
    "wave_gms",
    display_name="Wave-GMS",
    family="generative latent mapping",
    size_multiple=LATENT_SCALE,
    description=(
        "Haar multi-resolution encoder + latent mapping model decoded by a frozen mask "
        "autoencoder (Wave-GMS, 2025; GMS, AAAI 2025). Few trainable weights."
    ),
)
def wave_gms(in_channels: int, num_classes: int, preset: str) -> nn.Module:
    return build_wave_gms(in_channels, num_classes, preset)
