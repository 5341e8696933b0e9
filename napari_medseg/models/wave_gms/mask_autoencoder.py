"""Mask autoencoder: the frozen latent space Wave-GMS decodes its predictions through.

GMS and Wave-GMS decode predicted mask latents with a *pretrained, frozen* VAE decoder (SD-VAE in
GMS, the Tiny-VAE "TAESD" in Wave-GMS). Those weights cannot be downloaded here, so this module
provides the replacement the task calls a "mask tokenizer": an autoencoder whose encoder maps a
one-hot mask to a latent at 1/8 resolution and whose decoder maps a latent back to class logits.
It is fitted on masks (:func:`pretrain_mask_autoencoder`; synthetic shapes when no mask exists yet)
and then frozen; only the image encoder and the latent mapping network of Wave-GMS train.

Why a dedicated mask autoencoder instead of an RGB one: our masks have ``num_classes`` labels, not
grey levels, so decoding straight to class logits avoids a colour read-out and lets the usual
partial cross-entropy + Dice losses of the tri-network act on the decoder output.

Why a closed-form linear path next to the conv trunk: a conv autoencoder trained from scratch
needs thousands of steps before its decoder renders anything but background -- far too slow to
run on a CPU every time a model is created -- while the PCA of 8x8 mask patches is computed in
milliseconds and already reconstructs synthetic masks with foreground Dice ~0.95 (2 classes,
4 latent channels). The conv trunk follows the TAESD layout (``conv, Block..., [conv stride 2,
Block...] x 3, conv`` / ``Clamp, conv, ReLU, [Block..., Upsample, conv] x 3, Block..., conv``) so
``paper`` has the capacity of the published frozen decoder once it is fitted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LATENT_SCALE = 8  # three stride-2 stages
IGNORE_INDEX = -1


# --------------------------------------------------------------------------- building blocks
def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of latents to (-3, 3), as TAESD does before decoding.

    It bounds the latent range, which makes latent-noise augmentation meaningful and keeps the
    frozen decoder in the regime it was fitted on whatever the mapping network outputs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class TinyBlock(nn.Module):
    """TAESD residual block: three 3x3 convs with ReLUs, identity/1x1 skip, ReLU after the sum."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


def tiny_encoder(
    in_channels: int, latent_channels: int, width: int = 64, blocks: Sequence[int] = (1, 3, 3, 3)
) -> nn.Sequential:
    """TAESD-layout encoder: (B, in, H, W) -> (B, latent, H/8, W/8)."""
    if len(blocks) != 4:
        raise ValueError(f"encoder blocks must have 4 entries (one per scale), got {blocks}")
    layers: list[nn.Module] = [_conv(in_channels, width)]
    layers += [TinyBlock(width, width) for _ in range(blocks[0])]
    for n in blocks[1:]:
        layers.append(_conv(width, width, stride=2, bias=False))
        layers += [TinyBlock(width, width) for _ in range(n)]
    layers.append(_conv(width, latent_channels))
    return nn.Sequential(*layers)


def tiny_decoder(
    latent_channels: int, out_channels: int, width: int = 64, blocks: Sequence[int] = (3, 3, 3, 1)
) -> nn.Sequential:
    """TAESD-layout decoder: (B, latent, h, w) -> (B, out, 8h, 8w)."""
    if len(blocks) != 4:
        raise ValueError(f"decoder blocks must have 4 entries (one per scale), got {blocks}")
    layers: list[nn.Module] = [Clamp(), _conv(latent_channels, width), nn.ReLU()]
    for n in blocks[:3]:
        layers += [TinyBlock(width, width) for _ in range(n)]
        layers += [nn.Upsample(scale_factor=2), _conv(width, width, bias=False)]
    layers += [TinyBlock(width, width) for _ in range(blocks[3])]
    layers.append(_conv(width, out_channels))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- labels
def labels_to_onehot(
    labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """(B, H, W) integer labels -> (B, K, H, W) float one-hot; ignored pixels become all-zero."""
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
    labels = labels.long()
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"mask values must be in [0, {num_classes - 1}] or the ignore index {ignore_index}; "
            f"found {labels[bad].unique().tolist()[:5]}. Check num_classes or remap the labels."
        )
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    return onehot * valid.unsqueeze(1).float()


# --------------------------------------------------------------------------- the autoencoder
class MaskAutoencoder(nn.Module):
    """One-hot mask -> latent at 1/8 resolution -> class logits; fitted on masks, then frozen.

    Two parallel paths, summed:

    * a *linear patch path*: each 8x8 cell of the one-hot mask (``64 * K`` values, via
      ``pixel_unshuffle``) is projected to the latent by a 1x1 conv, and decoded by the transposed
      map followed by ``pixel_shuffle``. :meth:`fit_linear` sets it in closed form to the whitened
      PCA of mask patches (the best linear code in the least-squares sense), computed in
      milliseconds -- so a usable decoder exists straight after construction, without a long CPU
      training run. Decoded logits are then a low-order (smooth, polynomial-like) pattern per
      cell: exactly what mask boundaries look like at 8x8 scale;
    * a *TAESD-layout conv trunk* (encoder and decoder, last conv zero-initialised so it starts as
      a no-op, and skipped until trained) that gradient fitting
      (:func:`pretrain_mask_autoencoder` with ``iterations > 0``) uses to add context and sharpen
      boundaries -- worth it on a GPU or with real pseudo-masks. ``width=0`` drops it.

    ``freeze()`` switches off gradients for every parameter and pins the module in eval mode (a
    later ``model.train()`` does not unfreeze it), so gradients still flow *through* ``decode`` to
    whatever produced the latent, but the decoder itself never changes.
    """

    scale = LATENT_SCALE

    def __init__(
        self,
        num_classes: int,
        latent_channels: int = 4,
        width: int = 64,
        encoder_blocks: Sequence[int] = (1, 3, 3, 3),
        decoder_blocks: Sequence[int] = (3, 3, 3, 1),
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.latent_channels = int(latent_channels)
        patch = self.scale**2 * self.num_classes
        self.enc_linear = nn.Conv2d(patch, latent_channels, 1)
        self.dec_linear = nn.Conv2d(latent_channels, patch, 1)
        self.encoder: nn.Sequential | None = None
        self.decoder: nn.Sequential | None = None
        if width > 0:
            self.encoder = tiny_encoder(num_classes, latent_channels, width, encoder_blocks)
            self.decoder = tiny_decoder(latent_channels, num_classes, width, decoder_blocks)
            for last in (self.encoder[-1], self.decoder[-1]):
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
        # The zero-initialised trunks output exactly 0 until gradient fitting trains them; skipping
        # them until then saves their (full-resolution) compute. Persistent, so checkpoints of a
        # network with a fitted trunk restore it.
        self.register_buffer("trunk_active", torch.tensor(False))
        self._trunk_on = False  # Python mirror: no device sync per forward
        self._frozen = False

    @property
    def has_trunk(self) -> bool:
        return self.decoder is not None

    def activate_trunk(self) -> None:
        if self.decoder is not None:
            self.trunk_active.fill_(True)
            self._trunk_on = True

    def _use_trunk(self) -> bool:
        return self._trunk_on

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._trunk_on = self.decoder is not None and bool(self.trunk_active)

    @property
    def frozen(self) -> bool:
        return self._frozen

    def encode(self, onehot: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) one-hot (or soft) mask -> (B, latent, H/8, W/8)."""
        z = self.enc_linear(F.pixel_unshuffle(onehot, self.scale))
        return z + self.encoder(onehot) if self._use_trunk() else z

    def encode_labels(self, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        dtype = self.enc_linear.weight.dtype
        onehot = labels_to_onehot(labels, self.num_classes, ignore_index).to(dtype)
        return self.encode(onehot)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, latent, h, w) -> (B, K, 8h, 8w) class logits."""
        logits = F.pixel_shuffle(self.dec_linear(latent), self.scale)
        return logits + self.decoder(latent) if self._use_trunk() else logits

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(onehot))

    @torch.no_grad()
    def fit_linear(self, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> float:
        """Sets the linear patch path to the whitened PCA of the 8x8 patches of ``labels``.

        Patches containing ignored pixels are skipped. The logit temperature (one scalar) is chosen
        on the same patches by cross-entropy. Returns that cross-entropy.
        """
        s, k, c = self.scale, self.num_classes, self.latent_channels
        if labels.shape[-2] % s or labels.shape[-1] % s:
            raise ValueError(f"label images must be multiples of {s} for the patch fit")
        dev = self.enc_linear.weight.device
        labels = labels.to(dev).long()
        onehot = labels_to_onehot(labels, k, ignore_index)
        patches = F.pixel_unshuffle(onehot, s).permute(0, 2, 3, 1).reshape(-1, s * s * k)
        valid = F.pixel_unshuffle((labels != ignore_index).float()[:, None], s)
        keep = valid.permute(0, 2, 3, 1).reshape(-1, s * s).all(1)
        patches = patches[keep].double()
        if patches.shape[0] < 2:
            raise ValueError("no fully labelled 8x8 patch to fit the mask autoencoder on")
        mean = patches.mean(0)
        centred = patches - mean
        evals, evecs = torch.linalg.eigh(centred.T @ centred / (patches.shape[0] - 1))
        top = evals.argsort(descending=True)[:c]
        basis, std = evecs[:, top], evals[top].clamp_min(1e-6).sqrt()
        if basis.shape[1] < c:  # more latent channels than patch dimensions: pad with zeros
            pad = c - basis.shape[1]
            basis = torch.cat([basis, basis.new_zeros(basis.shape[0], pad)], 1)
            std = torch.cat([std, std.new_ones(pad)])
        enc = (basis / std).T  # whitened: unit-variance latents on the fitting data
        recon = (centred @ basis) @ basis.T + mean  # (N, 64K), soft one-hot estimate
        target = patches.view(-1, s * s, k).argmax(-1)
        best = (float("inf"), 1.0)
        for temp in (1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0):
            logit = (temp * recon).view(-1, s * s, k)
            ce = float(F.cross_entropy(logit.reshape(-1, k), target.reshape(-1)))
            best = min(best, (ce, temp))
        ce, temp = best
        dt = self.enc_linear.weight.dtype
        self.enc_linear.weight.copy_(enc.view(c, -1, 1, 1).to(dt))
        self.enc_linear.bias.copy_((-enc @ mean).to(dt))
        self.dec_linear.weight.copy_((temp * basis * std).view(-1, c, 1, 1).to(dt))
        self.dec_linear.bias.copy_((temp * mean).to(dt))
        return ce

    def freeze(self) -> MaskAutoencoder:
        self.requires_grad_(False)
        self._frozen = True
        super().train(False)
        return self

    def unfreeze(self) -> MaskAutoencoder:
        self.requires_grad_(True)
        self._frozen = False
        return self

    def train(self, mode: bool = True) -> MaskAutoencoder:
        return super().train(mode and not self._frozen)


# --------------------------------------------------------------------------- synthetic shapes
def synthetic_masks(
    n: int,
    size: int | tuple[int, int],
    num_classes: int,
    generator: torch.Generator | None = None,
    max_shapes: int = 4,
) -> torch.Tensor:
    """Random overlapping blobs, rotated rectangles and rings labelled 1..K-1 on background 0.

    Used to fit the mask autoencoder before any real (pseudo-)masks exist: such shapes cover the
    smooth, compact, sometimes nested or touching structures of medical masks well enough that the
    decoder can render them, and their random placement avoids baking in any anatomy.
    """
    h, w = (size, size) if isinstance(size, int) else size
    g = generator

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    ys = torch.linspace(-1.0, 1.0, h).view(h, 1).expand(h, w)
    xs = torch.linspace(-1.0, 1.0, w).view(1, w).expand(h, w) * (w / max(h, 1))
    out = torch.zeros(n, h, w, dtype=torch.long)
    for i in range(n):
        count = int(torch.randint(1, max_shapes + 1, (), generator=g))
        for _ in range(count):
            cls = int(torch.randint(1, num_classes, (), generator=g))
            cy, cx = u(-0.7, 0.7), u(-0.7, 0.7) * (w / max(h, 1))
            a, b, th = u(0.12, 0.55), u(0.12, 0.55), u(0.0, np.pi)
            dy, dx = ys - cy, xs - cx
            pu = (dx * np.cos(th) + dy * np.sin(th)) / a
            pv = (-dx * np.sin(th) + dy * np.cos(th)) / b
            kind = int(torch.randint(0, 3, (), generator=g))
            if kind == 1:  # rotated rectangle
                inside = torch.maximum(pu.abs(), pv.abs()) < 1.0
            else:  # ellipse with a wobbly boundary; kind 2 hollows it into a ring
                rho = torch.sqrt(pu**2 + pv**2)
                ang = torch.atan2(pv, pu)
                edge = 1.0 + u(0.0, 0.25) * torch.cos(2 * ang + u(0, 6.3))
                edge = edge + u(0.0, 0.15) * torch.cos(3 * ang + u(0, 6.3))
                inside = rho < edge
                if kind == 2:
                    inside &= rho > edge * u(0.35, 0.7)
            out[i][inside] = cls
    return out


# --------------------------------------------------------------------------- fitting
def _resolve_autoencoder(target: nn.Module) -> nn.Module:
    """Accepts a mask autoencoder, a Wave-GMS network, or the create_model wrapper around it."""
    for candidate in (target, getattr(target, "mask_autoencoder", None)):
        if candidate is not None and hasattr(candidate, "decode") and hasattr(candidate, "encode"):
            return candidate
    inner = getattr(target, "net", None)
    if inner is not None:
        return _resolve_autoencoder(inner)
    raise TypeError(
        f"{type(target).__name__} has no mask autoencoder; pass a MaskAutoencoder, a Wave-GMS "
        "network, or the model returned by create_model('wave_gms', ...)"
    )


def _as_mask_list(masks) -> list[torch.Tensor]:
    if isinstance(masks, (np.ndarray, torch.Tensor)):
        t = torch.as_tensor(masks)
        if t.ndim == 2:
            t = t[None]
        if t.ndim == 4 and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim != 3:
            raise ValueError(
                "masks must be (H, W), (N, H, W) or a list of 2-D label images, "
                f"got shape {tuple(t.shape)}"
            )
        return [m for m in t.long()]
    out = [torch.as_tensor(np.asarray(m)).long() for m in masks]
    for m in out:
        if m.ndim != 2:
            raise ValueError(f"each mask must be a 2-D label image, got shape {tuple(m.shape)}")
    if not out:
        raise ValueError("masks is empty; pass None to fit on synthetic shapes instead")
    return out


def _random_crop(
    m: torch.Tensor, crop: int, ignore_index: int, g: torch.Generator | None
) -> torch.Tensor:
    h, w = m.shape
    ph, pw = max(0, crop - h), max(0, crop - w)
    if ph or pw:  # small masks: pad with "unknown" so padding is not learned as background
        m = F.pad(m, (0, pw, 0, ph), value=ignore_index)
        h, w = m.shape
    y = int(torch.randint(0, h - crop + 1, (), generator=g))
    x = int(torch.randint(0, w - crop + 1, (), generator=g))
    m = m[y : y + crop, x : x + crop]
    k = int(torch.randint(0, 4, (), generator=g))
    if int(torch.randint(0, 2, (), generator=g)):
        m = m.flip(-1)
    return torch.rot90(m, k, (0, 1))


def mask_reconstruction_loss(
    autoencoder: nn.Module,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    latent_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cross-entropy + soft Dice of ``decode(encode(onehot(labels)))`` against ``labels``.

    ``latent_noise`` perturbs the latent before decoding, which teaches the decoder to render
    clean masks from slightly-off latents -- exactly what the mapping network will feed it.
    """
    ae = _resolve_autoencoder(autoencoder)
    param = next(ae.parameters())
    labels = labels.to(param.device).long()
    z = ae.encode_labels(labels, ignore_index)
    if latent_noise > 0:
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
        z = z + latent_noise * noise
    logits = ae.decode(z)
    valid = (labels != ignore_index).unsqueeze(1).to(logits.dtype)
    if float(valid.sum()) == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits, labels, ignore_index=ignore_index)
    probs = logits.softmax(1) * valid
    target = labels_to_onehot(labels, ae.num_classes, ignore_index).to(logits.dtype)
    inter = (probs * target).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + target.sum((0, 2, 3))
    dice = 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()
    return ce + dice


def pretrain_mask_autoencoder(
    model_or_ae: nn.Module,
    masks=None,
    iterations: int = 200,
    *,
    batch_size: int = 8,
    crop: int = 64,
    lr: float = 1e-3,
    latent_noise: float = 0.1,
    synthetic_fraction: float = 0.25,
    linear_fit: bool = True,
    linear_fit_batches: int = 8,
    ignore_index: int = IGNORE_INDEX,
    seed: int = 0,
    freeze: bool = True,
) -> list[float]:
    """Fits the mask autoencoder on label masks (or synthetic shapes) and freezes it.

    ``masks``: ``None`` (synthetic shapes only), an ``(N, H, W)`` / ``(H, W)`` integer array or
    tensor, or a list of 2-D label images of any sizes -- e.g. pseudo-masks predicted by the
    tri-network, or dense labels. Pixels equal to ``ignore_index`` are left out (sparse scribbles
    work but dense pseudo-masks fit a much better decoder). Random ``crop`` x ``crop`` patches are
    drawn with flips/rotations; ``synthetic_fraction`` of every batch stays synthetic so the latent
    space keeps covering generic shapes.

    Two stages: a closed-form PCA fit of the linear patch path on ``linear_fit_batches`` batches
    (``linear_fit``; skipped for autoencoders without one, e.g. TAESD), then ``iterations`` Adam
    steps on cross-entropy + Dice with ``latent_noise`` added to the latents.

    Call this *before* training the mapping network: refitting changes the latent space, so a
    mapping network trained against the old decoder would have to be retrained.

    Returns the training loss of each Adam step. Runs on the device the autoencoder lives on.
    """
    ae = _resolve_autoencoder(model_or_ae)
    if crop % LATENT_SCALE:
        raise ValueError(f"crop must be a multiple of {LATENT_SCALE}, got {crop}")
    if iterations < 0 or batch_size < 1:
        raise ValueError("iterations must be >= 0 and batch_size >= 1")
    real = None if masks is None else _as_mask_list(masks)
    g = torch.Generator().manual_seed(int(seed))
    n_syn = batch_size if real is None else int(round(batch_size * synthetic_fraction))
    n_real = batch_size - n_syn

    def draw() -> torch.Tensor:
        parts = []
        if n_syn:
            parts.append(synthetic_masks(n_syn, crop, ae.num_classes, generator=g))
        if n_real:
            idx = torch.randint(0, len(real), (n_real,), generator=g).tolist()
            parts.append(torch.stack([_random_crop(real[i], crop, ignore_index, g) for i in idx]))
        return torch.cat(parts)

    if linear_fit and hasattr(ae, "fit_linear"):
        ae.fit_linear(torch.cat([draw() for _ in range(max(1, linear_fit_batches))]), ignore_index)

    was_training = ae.training
    if hasattr(ae, "unfreeze"):
        ae.unfreeze()
    else:
        ae.requires_grad_(True)
    ae.train(True)
    if iterations and hasattr(ae, "activate_trunk"):
        ae.activate_trunk()
    history: list[float] = []
    try:
        if iterations:
            params = [p for p in ae.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations)
            for _ in range(iterations):
                loss = mask_reconstruction_loss(ae, draw(), ignore_index, latent_noise, generator=g)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                history.append(float(loss.detach()))
    finally:
        if freeze:
            if hasattr(ae, "freeze"):
                ae.freeze()
            else:
                ae.requires_grad_(False).eval()
        else:
            ae.train(was_training)
    return history
