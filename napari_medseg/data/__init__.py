"""Reading, normalising, validating and simulating scribbles for images (no Qt/napari).

Submodules: :mod:`.readers` (files), :mod:`.datasets` (Kvasir/PH2 folders, ACDC folds),
:mod:`.normalization` (intensities, channels-first layout), :mod:`.validation` (input
checks with actionable errors), :mod:`.scribbles` (scribbles simulated from dense masks).
"""

from .datasets import (
    AcdcSplit,
    ImageMaskDataset,
    ImageMaskPair,
    acdc_fold_patients,
    acdc_split,
    find_data_dir,
    list_acdc_volumes,
    list_image_mask_pairs,
    load_pair,
)
from .normalization import NormalizedImage, normalize_image, to_channels_first
from .readers import (
    ACDC_UNLABELLED,
    AcdcVolume,
    ImageData,
    load_image,
    read_acdc_volume,
    read_image,
    read_labels,
    write_labels,
)
from .scribbles import simulate_scribbles
from .validation import InputError, InputSummary, validate_inputs

__all__ = [
    "ACDC_UNLABELLED",
    "AcdcSplit",
    "AcdcVolume",
    "ImageData",
    "ImageMaskDataset",
    "ImageMaskPair",
    "InputError",
    "InputSummary",
    "NormalizedImage",
    "acdc_fold_patients",
    "acdc_split",
    "find_data_dir",
    "list_acdc_volumes",
    "list_image_mask_pairs",
    "load_image",
    "load_pair",
    "normalize_image",
    "read_acdc_volume",
    "read_image",
    "read_labels",
    "simulate_scribbles",
    "to_channels_first",
    "validate_inputs",
    "write_labels",
]
