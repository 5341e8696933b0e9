"""Wave-GMS (registered as ``wave_gms``): generative latent-mapping segmentation.

Importing this package registers the model. See :mod:`.network` for the architecture and presets,
:mod:`.mask_autoencoder` for the frozen decoder and its fitting, :mod:`.taesd` for optional local
TAESD weights, and :mod:`.haar` for the wavelet transform.
"""

from .haar import haar_dwt, haar_idwt, haar_pyramid
from .mask_autoencoder import (
    MaskAutoencoder,
    labels_to_onehot,
    mask_reconstruction_loss,
    pretrain_mask_autoencoder,
    synthetic_masks,
)
from .network import PRESET_CONFIGS, WaveGMS, WaveGMSConfig, build_wave_gms
from .taesd import TAESDMaskAutoencoder, load_taesd_decoder, load_taesd_encoder

__all__ = [
    "PRESET_CONFIGS",
    "MaskAutoencoder",
    "TAESDMaskAutoencoder",
    "WaveGMS",
    "WaveGMSConfig",
    "build_wave_gms",
    "haar_dwt",
    "haar_idwt",
    "haar_pyramid",
    "labels_to_onehot",
    "load_taesd_decoder",
    "load_taesd_encoder",
    "mask_reconstruction_loss",
    "pretrain_mask_autoencoder",
    "synthetic_masks",
]
