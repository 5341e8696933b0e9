"""napari-medseg: scribble-supervised segmentation with a UNet, a SwinUNet and a MambaUNet
that supervise each other through an ensemble pseudo label (Weak-Mamba-UNet).

The engine (``models``, ``ops``, ``training``, ``data``, ``metrics``, ``checkpoints``,
``inference``) never imports Qt or napari; the widget and the CLI drive it.
"""

__version__ = "0.1.0"
