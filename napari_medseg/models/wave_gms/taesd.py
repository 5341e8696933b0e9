"""Optional use of published TAESD ("Tiny-VAE") weights from a local file -- never downloaded.

Wave-GMS decodes with the frozen TAESD decoder (madebyollin/taesd). Users who have the files can
plug them in; nothing here reaches the network.

Accepted files (``torch.load(..., weights_only=True)``; ``.pth``/``.pt``, not ``.safetensors``):

* The original TAESD checkpoints ``taesd_decoder.pth`` / ``taesd_encoder.pth``: a flat state dict of
  an ``nn.Sequential``. Decoder keys (``N`` = sequential index, ``Block`` = three 3x3 convs at
  ``conv.0``, ``conv.2``, ``conv.4``)::

      0 Clamp | 1 conv(latent->64) "1.weight"/"1.bias" | 2 ReLU
      3-5 Block "3.conv.0.weight" ... | 6 Upsample | 7 conv no bias "7.weight"
      8-10 Block | 11 Upsample | 12 conv | 13-15 Block | 16 Upsample | 17 conv
      18 Block | 19 conv(64->3) "19.weight"/"19.bias"

  Encoder: ``0`` conv(3->64), ``1`` Block, then three times ``conv stride 2 (no bias)`` + 3
  Blocks (indices 2-13), ``14`` conv(64->latent).
* A diffusers ``AutoencoderTiny`` state dict converted to ``.pth`` (keys ``decoder.layers.N...`` /
  ``encoder.layers.N...``). The diffusers decoder has no Clamp module, so its indices are shifted
  by one; this is corrected on load.

The latent channel count (4 for SD1/SD2 TAESD) is read from the weights. TAESD decodes RGB in
[0, 1]; :class:`TAESDMaskAutoencoder` turns that into class logits with a fixed colour palette
(background black, class 1 white as in GMS, further classes saturated colours), so it can replace
:class:`MaskAutoencoder` in a Wave-GMS network with 4 latent channels (``paper``, 2 or 3
classes).
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from .mask_autoencoder import IGNORE_INDEX, labels_to_onehot, tiny_decoder, tiny_encoder

TAESD_WIDTH = 64
TAESD_DECODER_BLOCKS = (3, 3, 3, 1)
TAESD_ENCODER_BLOCKS = (1, 3, 3, 3)

# Class colours in TAESD's [0, 1] RGB space; GMS renders binary masks as white on black.
PALETTE = (
    (0.0, 0.0, 0.0),
    (1.0, 1.0, 1.0),
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 0.0),
    (1.0, 0.0, 1.0),
    (0.0, 1.0, 1.0),
    (0.5, 0.5, 0.5),
)


def _read_state_dict(path: str | os.PathLike, part: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"TAESD {part} weights not found at {path!r}. Download taesd_{part}.pth yourself "
            "(https://github.com/madebyollin/taesd) and pass its local path; nothing is fetched "
            "automatically."
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle with code, safetensors, corrupt file ...
        raise ValueError(
            f"could not read {path!r} as a plain PyTorch state dict ({exc}). Use the .pth files "
            "of madebyollin/taesd, or convert a .safetensors file with "
            "torch.save(safetensors.torch.load_file(f), 'taesd_decoder.pth')."
        ) from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path!r} holds a {type(sd).__name__}, expected a state dict")
    return _normalise_keys(sd, part)


def _normalise_keys(sd: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    """Maps TAESD / diffusers key layouts onto the TAESD nn.Sequential layout."""
    prefix = f"{part}.layers."
    if any(k.startswith(prefix) for k in sd):  # diffusers AutoencoderTiny
        shift = 1 if part == "decoder" else 0  # diffusers decoder lacks the Clamp module
        out = {}
        for k, v in sd.items():
            if k.startswith(prefix):
                idx, rest = k[len(prefix) :].split(".", 1)
                out[f"{int(idx) + shift}.{rest}"] = v
        return out
    sd = {re.sub(rf"^(module\.)?({part}\.)?", "", k): v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if re.match(r"^\d+\.", k)}


def _load_into(net: nn.Sequential, sd: dict[str, torch.Tensor], path, part: str) -> nn.Sequential:
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path!r} does not match the TAESD {part} layout (see napari_medseg.models.wave_gms."
            f"taesd): missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}"
        )
    net.requires_grad_(False)
    return net.eval()


def load_taesd_decoder(path: str | os.PathLike) -> nn.Sequential:
    """Frozen TAESD decoder (latent -> RGB in ~[0, 1], 8x upsampling) from a local file."""
    sd = _read_state_dict(path, "decoder")
    if "1.weight" not in sd:
        raise ValueError(f"{path!r} has no '1.weight' (first decoder conv); not a TAESD decoder")
    latent = sd["1.weight"].shape[1]
    net = tiny_decoder(latent, 3, TAESD_WIDTH, TAESD_DECODER_BLOCKS)
    return _load_into(net, sd, path, "decoder")


def load_taesd_encoder(path: str | os.PathLike) -> nn.Sequential:
    """Frozen TAESD encoder (RGB in [0, 1] -> latent at 1/8) from a local file."""
    sd = _read_state_dict(path, "encoder")
    last = max((int(k.split(".")[0]) for k in sd), default=-1)
    if "0.weight" not in sd or f"{last}.weight" not in sd:
        raise ValueError(f"{path!r} does not look like a TAESD encoder state dict")
    latent = sd[f"{last}.weight"].shape[0]
    net = tiny_encoder(3, latent, TAESD_WIDTH, TAESD_ENCODER_BLOCKS)
    return _load_into(net, sd, path, "encoder")


class TAESDMaskAutoencoder(nn.Module):
    """Adapts TAESD (RGB latent space) to the mask-autoencoder interface of Wave-GMS.

    ``decode`` renders RGB with the frozen TAESD decoder and reads class logits out as
    ``-sharpness * ||rgb - colour_k||^2`` (fixed, differentiable, no parameters); ``encode``
    paints the mask with the palette and runs the TAESD encoder (needed only for the latent loss).
    """

    scale = 8

    def __init__(
        self,
        decoder: nn.Sequential,
        num_classes: int,
        encoder: nn.Sequential | None = None,
        sharpness: float = 10.0,
    ):
        super().__init__()
        if not 2 <= num_classes <= len(PALETTE):
            raise ValueError(
                f"the TAESD colour read-out supports 2..{len(PALETTE)} classes, got {num_classes}; "
                "use the built-in MaskAutoencoder for more classes"
            )
        self.num_classes = int(num_classes)
        self.decoder = decoder
        self.encoder = encoder
        self.latent_channels = int(decoder[1].weight.shape[1])
        self.register_buffer("palette", torch.tensor(PALETTE[:num_classes]), persistent=False)
        self.sharpness = float(sharpness)
        self.freeze()

    @property
    def frozen(self) -> bool:
        return True

    def freeze(self) -> TAESDMaskAutoencoder:
        self.requires_grad_(False)
        super().train(False)
        return self

    def train(self, mode: bool = True) -> TAESDMaskAutoencoder:
        return super().train(False)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        rgb = self.decoder(latent)  # (B, 3, H, W)
        pal = self.palette.to(rgb.dtype)
        d2 = ((rgb.unsqueeze(1) - pal.view(1, -1, 3, 1, 1)) ** 2).sum(2)
        return -self.sharpness * d2

    def encode(self, onehot: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise RuntimeError(
                "this TAESD mask autoencoder has no encoder; pass encoder=load_taesd_encoder(path) "
                "to use the latent loss"
            )
        rgb = torch.einsum("bkhw,kc->bchw", onehot, self.palette.to(onehot.dtype))
        return self.encoder(rgb)

    def encode_labels(self, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        onehot = labels_to_onehot(labels, self.num_classes, ignore_index)
        return self.encode(onehot.to(self.palette.dtype))
