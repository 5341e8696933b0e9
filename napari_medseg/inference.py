"""Inference of one network on a stack of slices, tiled for large images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .resolution import resize_image, scaled_size, upsample_probabilities
from .shape_prior import ShapePrior, apply_shape_prior

# Above this many pixels per slice a whole-slice forward pass may not fit in memory:
# MONAI's sliding-window inference predicts overlapping tiles and blends them (Gaussian).
TILE_THRESHOLD_PIXELS = 1024 * 1024
TILE_SIZE = 512


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    tile_size: int | None = None,
) -> np.ndarray:
    """Softmax probabilities (Z, K, H, W) float32 for a normalised (Z, C, H, W) image.

    The model is put in eval mode and restored to its previous mode afterwards, so this can run
    between training steps.
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (Z, C, H, W) image, got shape {image.shape}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        z, _, h, w = image.shape
        tile = tile_size or (TILE_SIZE if h * w > TILE_THRESHOLD_PIXELS else None)
        out = []
        for s in range(0, z, batch_size):
            x = torch.from_numpy(np.ascontiguousarray(image[s : s + batch_size])).to(device)
            if tile is not None and (h > tile or w > tile):
                from monai.inferers import sliding_window_inference

                logits = sliding_window_inference(
                    x,
                    roi_size=(tile, tile),
                    sw_batch_size=batch_size,
                    predictor=model,
                    overlap=0.25,
                    mode="gaussian",
                )
            else:
                logits = model(x)
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(out, axis=0)
    finally:
        model.train(was_training)


def predict_models(
    models: dict[str, nn.Module],
    image: np.ndarray,
    device: torch.device | str = "cpu",
    scale: float = 1.0,
    batch_size: int = 4,
) -> dict[str, np.ndarray]:
    """Probabilities of every network at the native size of a (Z, C, H, W) image.

    ``scale`` is the working resolution the networks were trained at (see
    :mod:`napari_medseg.resolution`): the image is shrunk by it, predicted, and the
    probabilities interpolated back.
    """
    native = tuple(image.shape[-2:])
    small = resize_image(image, scaled_size(native, scale))
    return {
        k: upsample_probabilities(predict_probabilities(m, small, device, batch_size), native)
        for k, m in models.items()
    }


@dataclass
class Prediction:
    """Class indices (not user label values) per network and for the ensemble."""

    per_model: dict[str, np.ndarray]  # key -> (Z, H, W) uint8
    ensemble: np.ndarray  # (Z, H, W) uint8
    disagreement: np.ndarray  # (Z, H, W) float32 in [0, 1]
    ensemble_probabilities: np.ndarray | None = None  # (Z, K, H, W) float32
    # what the anytime floor measured (napari_medseg.training.floor.FloorReport), when the
    # image had strokes to measure against
    report: object | None = None
    # how far the answer departs from the floor's walker: the share of the pixels the walker
    # has a say on where the answer differs from it, and of those it is sure of (≥
    # WALKER_SURE) — the networks overruled it there (None: no walker in the mix)
    walker_changed: float | None = None
    walker_overruled: float | None = None


#: Softness of the ensemble weights: a member whose score is this much lower counts e⁻¹ as
#: much (chosen on ACDC: docs/design.md "The anytime floor").
MEMBER_TEMPERATURE = 0.05


def member_weights(
    scores: dict[str, float] | None, keys, temperature: float = MEMBER_TEMPERATURE
) -> dict[str, float] | None:
    """Ensemble weights from each member's agreement score (softmax over score / temperature).

    The scores are how well each network matches the dense target it trains on, where that
    target is trustworthy (the confident random-walker pixels, or the scribbles): a member
    that lags the others should not pull the ensemble below its best member (docs/design.md
    "The ensemble"). None (no scores yet, or one missing) means equal weights.
    """
    keys = list(keys)
    if not scores or any(k not in scores for k in keys):
        return None
    s = np.array([float(scores[k]) for k in keys])
    if not np.all(np.isfinite(s)):
        return None
    w = np.exp((s - s.max()) / max(temperature, 1e-6))
    return dict(zip(keys, (w / w.sum()).tolist()))


#: Walker probability from which a pixel counts as one the walker is sure of — for the
#: floor's share (``training.floor.CONFIDENT`` is this value) and for :func:`departure`.
WALKER_SURE = 0.9

#: Where the three networks give a pixel the same label and their weighted probability of it is
#: at least this, their share of the floor's mix is doubled there (up to the whole pixel):
#: sure, unanimous networks may overrule a walker that is sure and wrong — a lesion's pale rim
#: called skin — which the share of one half cannot (BENCHMARKS §9, twelfth round).
OVERRULE_SURE = 0.9


def floor_mix(
    walker: np.ndarray,
    networks: np.ndarray,
    share: float,
    member_labels: list[np.ndarray] | None = None,
    sure: float = OVERRULE_SURE,
) -> np.ndarray:
    """The anytime floor's output probabilities: ``(1 − s) · walker + s · networks`` per pixel.

    ``s`` is ``share``, and ``min(1, 2 · share)`` where every one of ``member_labels`` (each
    network's argmax, (Z, H, W); two at least) gives the networks' label and ``networks``
    gives it at least ``sure``.

    Why per pixel: a share above one half for the whole image lets the networks overrule the
    walker's sure pixels wherever they lean the other way, and cost up to 0.05 on ACDC; where
    all three architectures agree and are sure, they were right against a sure walker more
    often than wrong on every recorded set (BENCHMARKS §9, twelfth round: PH2 +0.025 mean
    Dice, ACDC and Kvasir unchanged within 0.002, 25 → 22 budgets below the walker). The
    share — the evidence that the networks learnt this image — still decides whether they
    have a say at all: at 0 the walker answers everywhere.
    """
    if share <= 0.0 or member_labels is None or len(member_labels) < 2:
        # one network has no one to agree with
        return (1.0 - share) * walker + share * networks
    label = networks.argmax(axis=1)
    overrule = networks.max(axis=1) >= sure
    for member in member_labels:
        overrule &= member == label
    pixel = np.where(overrule, min(1.0, 2.0 * share), share)[:, None].astype(networks.dtype)
    return (1.0 - pixel) * walker + pixel * networks


def combine_predictions(
    probs: dict[str, np.ndarray],
    with_probabilities: bool = False,
    weights: dict[str, float] | None = None,
    prior: ShapePrior | None = None,
    seeds: np.ndarray | None = None,
    walker: np.ndarray | None = None,
    network_share: float = 1.0,
) -> Prediction:
    """Per-model argmax, ensemble argmax of the (weighted) mean, and where the members disagree
    with it (the networks, and the walker where it has a say: :func:`walker_vote`).

    ``weights``: one per member (see :func:`member_weights`); None averages equally.
    ``walker``: the random walker's probabilities on the image's strokes; the ensemble is then
    ``(1 - network_share) · walker + network_share · networks``, the share doubled where the
    networks are sure and unanimous (:func:`floor_mix`; the anytime floor,
    :mod:`napari_medseg.training.floor`).
    ``prior``: anatomical rules applied to every label map (:mod:`napari_medseg.shape_prior`),
    with ``seeds`` (Z, H, W class indices, -1 unlabelled) for the rules that need strokes.
    The probabilities stay as the networks gave them.
    """
    raw = {k: p.argmax(axis=1).astype(np.uint8) for k, p in probs.items()}
    per_model = {k: apply_shape_prior(labels, seeds, prior) for k, labels in raw.items()}
    if weights is None:
        mean = np.mean(np.stack(list(probs.values())), axis=0)
    else:
        total = sum(float(weights[k]) for k in probs)
        mean = sum(float(weights[k]) / total * p for k, p in probs.items())
    if walker is not None:
        mean = floor_mix(walker, mean, network_share, list(raw.values()))
    ensemble = apply_shape_prior(mean.argmax(axis=1).astype(np.uint8), seeds, prior)
    stacked = np.stack(list(per_model.values()))
    dissent = (stacked != ensemble[None]).sum(axis=0).astype(np.float32)
    voters = np.full(ensemble.shape, len(per_model), dtype=np.float32)
    changed = overruled = None
    if walker is not None:
        walker_dissent, informed = walker_vote(walker, ensemble, seeds, prior)
        dissent += walker_dissent
        voters += informed
        changed, overruled = departure(walker, walker_dissent, informed)
    # share of the voters whose label differs from the ensemble: 0 = all agree
    disagreement = dissent / voters
    return Prediction(
        per_model,
        ensemble,
        disagreement,
        mean if with_probabilities else None,
        walker_changed=changed,
        walker_overruled=overruled,
    )


def departure(
    walker: np.ndarray, dissent: np.ndarray, informed: np.ndarray, sure: float = WALKER_SURE
) -> tuple[float | None, float | None]:
    """(changed, overruled): the share of the walker's informed pixels where the answer
    differs from its label, and of its sure pixels (probability ≥ ``sure``) where it does.

    Why: the networks' share says how far they are trusted, not what they did with it; since
    sure, unanimous networks may overrule the walker pixel by pixel (:func:`floor_mix`), a
    share of 40 % can change nothing or a tenth of the image. The user reads here how far
    the answer on screen is the networks' own rather than the classical one (None where the
    walker has no say anywhere: no strokes; ``overruled`` is 0 where it is sure nowhere).
    """
    told = informed > 0
    if not told.any():
        return None, None
    differs = dissent > 0
    sure_px = told & (walker.max(axis=1) >= sure)
    overruled = float(np.count_nonzero(differs & sure_px) / max(np.count_nonzero(sure_px), 1))
    return float(np.count_nonzero(differs & told) / np.count_nonzero(told)), overruled


def member_agreement(per_model: dict[str, np.ndarray], answer: np.ndarray) -> float | None:
    """Mean per-class Dice of each network's label map with the answer (None for one network).

    A folder of scans predicted by a loaded trio has no strokes to check anything against;
    where the three networks — a CNN, a transformer and a state-space model, trained together
    but built differently — paint different structures, the answer is a guess. The lowest
    agreement is where a reviewer should look first (``review.csv`` of a folder prediction).
    Classes are those either map holds; background counts like any class.
    """
    from .metrics.multiclass import class_dice

    if len(per_model) < 2:
        return None
    answer = np.asarray(answer)
    dice = []
    for labels in per_model.values():
        labels = np.asarray(labels)
        present = np.union1d(np.unique(labels), np.unique(answer))
        dice.extend(class_dice(labels, answer, present.tolist()).values())
    return float(np.mean(dice))


def walker_vote(
    walker: np.ndarray,
    ensemble: np.ndarray,
    seeds: np.ndarray | None = None,
    prior: ShapePrior | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(walker differs from the ensemble, walker has a say) per pixel, as float32 0/1 maps.

    The floor's walker is a member of the output, so its dissent belongs in the disagreement
    map: where the networks earned the share to overrule it, the three networks agree with
    the answer and the map used to stay dark — exactly where the floor cannot tell right from
    wrong without another stroke (Kvasir ``cju1f320ew``: the networks, unanimous and sure,
    extend the polyp over a fold no stroke marks; on the Kvasir budgets below the walker the
    map lit 23 % of the answer's errors at 200 steps, with the walker's vote 49 %: BENCHMARKS
    §9, sixth round). A walker that has nothing to go on (uniform probabilities: a slice
    without strokes) casts no vote.
    """
    k = walker.shape[1]
    informed = walker.max(axis=1) > 1.0 / k + 1e-6
    label = apply_shape_prior(walker.argmax(axis=1).astype(np.uint8), seeds, prior)
    return ((label != ensemble) & informed).astype(np.float32), informed.astype(np.float32)
