"""Every tooltip of the dock widget, in one place (so the wording stays consistent)."""

from __future__ import annotations

TOOLTIPS: dict[str, str] = {
    "new_scribbles": "Adds an empty Labels layer matching the image",
    "classes": (
        "Class names separated by commas. Label 1 in the scribble layer is the first class "
        "(background), label 2 the second, …; label 0 means 'not scribbled'."
    ),
    "truth": "Optional ground truth (values 1..K) for Dice and HD95",
    "shape_prior": (
        "Anatomical rules applied to every prediction and to the networks' target. "
        "Cardiac: the class named LV is a convex cavity (papillary muscles included), the "
        "class named Myo is no thicker than twice its strokes' distance from the cavity "
        "(draw its strokes along the middle of the wall), and a class without strokes on a "
        "scribbled slice is absent there (scribble every structure a slice shows)"
    ),
    "classifier": (
        "What the answer starts from before the networks earn a share: the random walker on "
        "your strokes, combined with a pixel classifier trained on them where that "
        "classifies strokes held out from both at least as well (the report says which). "
        "Untick if the combination floods a region the walker got right: the walker alone"
    ),
    "preset": (
        "lite: small networks that train interactively on a CPU; "
        "paper: the published sizes (use a GPU)"
    ),
    "patch": "crop size in px at the working resolution; 0 = whole slices",
    "refresh": "How often the prediction layers refresh while training",
    "max_side": (
        "Train and predict at a reduced size (longest side in pixels) — much faster on a "
        "CPU for large photographs; predictions are brought back to the full size"
    ),
    "train": (
        "Start training — from what 'Start from' says: the current model (trained or loaded: "
        "it carries on from image to image) or new networks"
    ),
    "start_from": (
        "What Train starts from: new networks, the current model, or a saved model of your "
        "library (Save model stores there) or any file. A model whose classes or image "
        "channels do not fit is refused before anything runs"
    ),
    "model_card": "The model card: classes, images, what it was trained on (napari-medseg info)",
    "train_on": (
        "This image, or every open image that has a scribble layer with strokes (named "
        "'<image> scribbles', or the one '…scribbles' layer of its shape): one model for all"
    ),
    "predict_on": (
        "The slice on screen, the whole image or stack, another image layer, every open image "
        "(each gets its own prediction layers), or every image file of a folder (label files "
        "written into a folder you choose, with review.csv: the images the networks agree on "
        "least first)"
    ),
    "resume": "Continue the last training with the current scribbles",
    "evaluate": "Dice / HD95 of the prediction layers against the ground truth",
}


def metric_tooltip(row: dict) -> str:
    """The tooltip of one cell of the metrics table."""
    return (
        f"{row['name']}: Dice {row['dice']:.4f}, HD95 {row['hd95']:.2f} "
        "(in the image's scale units; background not scored)"
    )
