"""Losses of scribble supervision: partial cross-entropy and Dice against pseudo labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -1


def partial_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy over scribbled pixels only (``target == IGNORE_INDEX`` elsewhere).

    Returns 0 (with a graph) when a batch happens to contain no scribbled pixel, so that a
    random crop that misses every stroke cannot produce NaN.
    """
    valid = target != IGNORE_INDEX
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.long(), weight=weight, ignore_index=IGNORE_INDEX)


def balanced_class_weights(
    labels: list, num_classes: int, clip: float = 10.0, power: float = 1.0
) -> torch.Tensor:
    """Inverse-frequency weights over the labelled pixels (to ``power``), clipped to [1/clip, clip].

    Scribbles of a small structure have few pixels next to long background strokes: unweighted,
    a network's first hundred steps learn "background everywhere". ``power`` < 1 tempers the
    weights: on dense targets (95 % background) full inverse weights make a young network paint
    the structures far too large.
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for lab in labels:
        t = torch.as_tensor(lab)
        t = t[t >= 0]
        counts += torch.bincount(t.flatten(), minlength=num_classes)[:num_classes].double()
    present = counts > 0
    w = torch.ones(num_classes, dtype=torch.float64)
    w[present] = (counts[present].sum() / (present.sum() * counts[present])) ** power
    w = w.clamp(1.0 / clip, clip)
    return (w / w[present].mean()).float()


class PseudoLabelDice:
    """Soft Dice of a network's softmax against a hard pseudo label (MONAI's DiceLoss).

    Pixels marked ``IGNORE_INDEX`` (padding from rotations) are removed from both sides.
    """

    def __init__(self, num_classes: int):
        from monai.losses import DiceLoss  # imported here: MONAI takes seconds to import

        self.num_classes = num_classes
        self._dice = DiceLoss(
            softmax=False,
            to_onehot_y=False,
            include_background=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )

    def __call__(self, logits: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
        prob = torch.softmax(logits, dim=1)
        valid = (pseudo != IGNORE_INDEX).unsqueeze(1).to(prob.dtype)
        onehot = F.one_hot(pseudo.clamp_min(0).long(), self.num_classes).permute(0, 3, 1, 2)
        return self._dice(prob * valid, onehot.to(prob.dtype) * valid)
