"""Imports every architecture module so that each registers itself."""

# ruff: noqa: F401
from . import unet  # isort: skip
from . import swin_unet  # isort: skip
from . import mamba_unet  # isort: skip
from . import wnet2d  # isort: skip
from . import cmunext  # isort: skip
from . import msnet  # isort: skip
from . import wave_gms  # isort: skip
