"""Presets: the names, each one's training recipe, and which one a device gets by default.

A preset names a pair: the network sizes (each architecture file maps the name to its widths)
and the training recipe below. ``paper`` is the published configuration for a GPU and many
iterations; ``lite`` is sized and tuned for a CPU minute on the image being annotated — how
each of its values was chosen is in docs/design.md ("The lite recipe").

Free of torch on purpose: the widget lists the presets while the training stack may still be
importing in the warm-up thread.
"""

from __future__ import annotations

from .errors import choices_error

#: Every preset, in the order the widget and the CLI offer them.
PRESETS: tuple[str, ...] = ("lite", "paper")

#: The training recipe of each preset: the :class:`~napari_medseg.training.TrainConfig` fields
#: a preset fills when the user leaves them unset.
RECIPES: dict[str, dict] = {
    "lite": dict(
        batch_size=4,
        patch_size=0,  # whole slices: training sees exactly what prediction sees
        max_side=128,
        optimizer="adamw",
        lr=3e-3,
        augment=False,  # the networks predict the very image they learn from
        rw_weight=1.0,
        rw_dice_weight=1.0,
        rw_confidence=0.9,  # the walker's uncertain pixels are left to the networks
        rw_balance_power=0.5,
        pseudo_rampup=0.3,
    ),
    "paper": dict(
        batch_size=8,
        patch_size=256,
        max_side=0,
        optimizer="sgd",
        lr=0.01,
        augment=True,
        rw_weight=0.5,
        rw_dice_weight=0.0,
        rw_confidence=0.0,
        rw_balance_power=1.0,
        pseudo_rampup=0.1,
    ),
}


#: What training on a dataset changes in each preset's recipe (``Workflow.prepare_dataset``,
#: for the fields the user left unset). ``lite`` switches augmentation back on: it is off for
#: one stack because the networks predict the very image they learn from, while a dataset's
#: trio must predict images it never saw (docs/design.md "Cross-image training"; not yet
#: measured against the per-image recipe — ``--no-augment`` gives the latter).
DATASET_RECIPES: dict[str, dict] = {
    "lite": dict(augment=True),
    "paper": dict(),
}


def check_preset(name: str) -> str:
    """``name`` if it is a preset; a :class:`~napari_medseg.errors.ConfigError` listing them."""
    if name not in PRESETS:
        raise choices_error("preset", name, PRESETS)
    return name


def recipe(name: str) -> dict:
    """The training recipe of a preset (a copy); an unknown name is an error, never a fallback."""
    return dict(RECIPES[check_preset(name)])


def default_preset(device) -> str:
    """``paper`` networks are affordable on a CUDA GPU; elsewhere only ``lite`` is interactive.

    ``device``: a ``torch.device`` or its name (``"cuda:0"``, ``"cpu"``...).
    """
    kind = getattr(device, "type", str(device).split(":")[0])
    return "paper" if kind == "cuda" else "lite"


#: What training on a single 2-D image (one slice in all: a photo, an endoscopy frame, one
#: MRI slice) changes in each preset's recipe, for the fields the user left unset. Whole
#: slices make every batch of such an image four copies of one picture: augmentation is then
#: the networks' only variety. Measured with the floor (BENCHMARKS §9, fifth round): 12 Kvasir
#: frames, ensemble − walker +0.020 → +0.057 at 200 steps and worst case −0.130 → −0.006;
#: on ACDC stacks (10 slices) it slowed the networks (50 steps: 0.77 → 0.46) and stays off.
SINGLE_SLICE_RECIPES: dict[str, dict] = {
    "lite": dict(augment=True),
    "paper": dict(),
}


def single_slice_recipe(name: str) -> dict:
    """What :data:`SINGLE_SLICE_RECIPES` changes for one 2-D image in preset ``name``."""
    return dict(SINGLE_SLICE_RECIPES[check_preset(name)])


def dataset_recipe(name: str) -> dict:
    """What :data:`DATASET_RECIPES` changes for a dataset in preset ``name`` (a copy)."""
    return dict(DATASET_RECIPES[check_preset(name)])
