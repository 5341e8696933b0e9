"""napari-medseg: scribble-supervised segmentation with a UNet, a SwinUNet and a MambaUNet
that supervise each other through an ensemble pseudo label (Weak-Mamba-UNet).

The engine (``models``, ``ops``, ``training``, ``data``, ``metrics``, ``checkpoints``,
``inference``) and the facade every surface drives (``workflow``) never import Qt or napari;
the surfaces are the napari plugin (``_napari``) and the command line (``cli``).
docs/design.md "Layout" has the map; ``lint-imports`` checks it.
"""

__version__ = "0.1.0"
