"""The anytime floor: the answer on screen is never worse than the random walker's.

The random walker on the user's strokes is computed in a second or two; networks trained from
nothing need tens of steps to reach it (ACDC: Dice 0.1 after 5 steps, 0.3–0.6 after 25), and a
busy laptop makes few steps. So the walker's probabilities are a member of the output ensemble
from the first preview on, and the networks *earn* their share of it:

    p = (1 − s) · p_walker + s · Σ w_i · p_i

(``s`` doubled on the pixels where the three networks are sure and unanimous:
:func:`~napari_medseg.inference.floor_mix`), with the networks' share ``s`` rising from 0 to
:data:`MAX_NETWORK_SHARE` as their weighted ensemble comes to agree with the walker where the
walker is sure of itself (probability ≥
:data:`CONFIDENT`), and withdrawn from networks whose structures are several times larger
or smaller than what the walker finds (:data:`AREA_RATIO`, :data:`FOUND`). Networks that
beat the walker clearly on the *held-out strokes* (:mod:`.holdout`: strokes neither they nor
the teacher saw) earn the share that way too (:func:`heldout_share`): where the walker is
poor, its sure pixels are partly wrong — unless a large part of the image contradicts them
(:func:`contrary_trust`).

On ACDC the sure pixels are ~96 % of a slice and 99.5 % right: a network that paints
structures far from the strokes, or misses a whole structure, disagrees there and gets no
share; one that agrees decides, with the walker, the pixels where the walker hesitates —
which is where the walker's errors are. On
a polyp frame the walker is sure of 3–70 % of the pixels, and networks that agreed on that
little were sometimes wrong everywhere else: hence the area check, against the area the
walker is sure of (it replaced scaling the share by the sure fraction). Measured
at 5–200 steps (docs/design.md "The anytime floor", BENCHMARKS §9). A share above one half
let the networks overrule sure walker pixels and cost up to 0.05 on ACDC.

The members' weights come from their agreement with the sure walker pixels too; the
held-out strokes are reported beside them and end a training that stops improving
(``until_plateau``). Everything here is
numpy on (Z, K, H, W) probabilities at the image's native size; nothing is modified in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..inference import MEMBER_TEMPERATURE, WALKER_SURE, member_weights
from .holdout import heldout_agreement

#: Walker probability above which a pixel counts as "the walker is sure".
CONFIDENT = WALKER_SURE  # 0.9; one value, so the report and the share mean the same "sure"
#: Agreement of the networks with the sure walker pixels at which their share starts to rise,
#: and at which it reaches its maximum. The start was 0.91 until the tenth round: on
#: dermoscopy the walker is sure *and wrong* on a tenth to a fifth of what it is sure of (a
#: lesion's pale rim called skin), networks right there agree 0.82–0.90 and earned nothing
#: (PH2 `IMD057`: networks alone 0.97, answer = walker 0.57). ACDC's 25-step networks, far
#: worse than the walker, agree at most 0.78, so 0.82 keeps a margin there; the
#: end stays at 0.98, where ACDC's networks that get worse between 100 and 200 steps still
#: take a small share (BENCHMARKS §9, tenth round).
AGREEMENT_RAMP = (0.82, 0.98)
#: The networks' largest share of the output: at one half they decide where the walker
#: hesitates and cannot overrule it where it is sure — except on the pixels where all three
#: are sure and unanimous, where the share is doubled (:func:`~napari_medseg.inference.
#: floor_mix`, twelfth round).
MAX_NETWORK_SHARE = 0.5
#: How far the networks' area of a class may stray from the area the walker *finds* for it
#: (:data:`FOUND`) before their share shrinks (ratio ``ok``, either way) and where it is gone
#: (``worst``): they may move the walker's boundaries and decide where it hesitates, not
#: invent a structure many times the size of the one it found.
AREA_RATIO = (4.0, 8.0)
#: Walker probability from which a pixel counts toward the walker's area of its class. Where
#: it hesitates its argmax measures no size: a near-tie far from every stroke flips with any
#: new stroke (BENCHMARKS §9, eighth round).
FOUND = 0.8
#: Held-out strokes: by how much the networks must beat a walker seeded without those strokes
#: before they earn a share that way, and over what further margin it reaches the maximum.
HELDOUT_MARGIN = (0.02, 0.08)
#: The held-out route's share shrinks as the image's contrary evidence grows — the sure
#: fraction times the networks' disagreement with the sure pixels (:func:`contrary_evidence`)
#: — and is gone at the second value: a clear win on a few held-out strokes does not outweigh
#: a frame that is sure almost everywhere and contradicts them (Kvasir `cju1dg44` after 5
#: steps: sure 0.99, agreement 0.68, evidence 0.32, held-out 1.0 against the walker's 0.6,
#: Dice −0.167; the brain sample after 25 steps: 0.61 × 0.22 = 0.14, +0.056). A fit to these
#: two cases (BENCHMARKS §9, third round).
HELDOUT_CONTRARY = (0.15, 0.25)
#: The largest share a base model's validation record can bring: a base that beat the walker
#: clearly on its dataset leads (the walker keeps a fifth, to break the networks' ties).
MAX_BASE_SHARE = 0.8
#: On a slice whose strokes are all of one class, how far the floor walker leans to that
#: class, from uniform (0) to certain (1) (:func:`lean_single_class_slices`).
LEAN = 0.75
#: The floor's walker runs at the image's size up to this longest side (then it is shrunk):
#: a 256² slice costs ~0.25 s, a 1920-px endoscopy frame would cost minutes.
WALKER_MAX_SIDE = 512


@dataclass
class FloorReport:
    """What the floor measured on one prediction; shown by the CLI and the widget.

    Scores are in [0, 1]; None where they could not be measured (no held-out stroke, no sure
    walker pixel, no walker at all for an image without strokes).
    """

    network_share: float = 1.0
    sure_fraction: float | None = None  # share of pixels where the walker is sure
    area_ratio: float | None = None  # worst networks/walker area ratio of a class (≥ 1)
    contrary: float | None = None  # sure fraction × (1 − agreement): against the held-out route
    base_share: float = 0.0  # what a base model's validation earned before any stroke here
    weights: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float | None] = field(default_factory=dict)  # members + "networks"
    heldout: dict[str, float | None] = field(default_factory=dict)  # members, networks, walker
    # of the pixels the walker has a say on, where the answer differs from its label, and of
    # those it is sure of (inference.departure); set on the prediction the report came with
    changed: float | None = None
    overruled: float | None = None
    # the classical answer under the networks: "walker", or walker + the stroke classifier
    # (training/stroke_classifier.py) where it classified the held-out strokes as well
    classical: str | None = None

    def summary(self, titles: Mapping[str, str] | None = None) -> str:
        """One line: the networks' share, what they changed of the walker's answer, and each
        member's held-out agreement."""
        titles = titles or {}

        def fmt(v):
            return "–" if v is None else f"{v:.3f}"

        parts = [f"{titles.get(k, k)} {fmt(v)}" for k, v in self.heldout.items() if k != "walker"]
        text = f"networks' share {self.network_share:.0%}"
        if self.classical and self.classical != "walker":
            text = f"classical answer: {self.classical}; " + text
        if self.changed is not None:
            text += f", {self.changed:.1%} of the walker's answer changed"
            if self.overruled:
                text += f" ({self.overruled:.1%} of its sure pixels overruled)"
        if self.heldout:
            text += (
                f"; held-out strokes: {', '.join(parts)}, walker {fmt(self.heldout.get('walker'))}"
            )
        return text


def floor_walker(
    image: np.ndarray,
    seeds: np.ndarray,
    num_classes: int,
    beta: float,
    max_side: int = WALKER_MAX_SIDE,
) -> np.ndarray:
    """Walker probabilities (Z, K, H, W) of a (Z, C, H, W) image at its size (≤ ``max_side``)."""
    from ..resolution import (
        resize_image,
        resize_seeds,
        scaled_size,
        upsample_probabilities,
        working_scale,
    )
    from .pseudo_labels import random_walker_probabilities

    native = tuple(image.shape[-2:])
    size = scaled_size(native, working_scale(native, max_side))
    prob = random_walker_probabilities(
        resize_image(image, size), resize_seeds(seeds, size, num_classes), num_classes, beta
    )
    return lean_single_class_slices(upsample_probabilities(prob, native), seeds)


def lean_single_class_slices(walker: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """On a slice whose strokes are all of one class, the floor leans to that class.

    The walker cannot draw a boundary from one class and says so with uniform probabilities;
    as the floor that tie would hand the slice to the networks at any share > 0. ACDC's
    annotators mark slices without a structure with background strokes only: the networks,
    granted a quarter of the output, painted structures over such a slice (patient001 ED:
    0.853 → 0.787). scikit-image's walker answers the stroke class everywhere there; the floor
    takes the stroke class :data:`LEAN` of the way from uniform to certain. Networks at share
    ``s`` overrule it only where ``s · (p_c − p_lean) > (1 − s) · LEAN``: never below a share
    of 3/7, at the full share of one half only where they are surer by 0.75. (Halfway, as it
    was, let sure networks through from a share of 1/3: patient001 ED at 200 steps, share 0.38,
    941 wrong pixels on its basal slice — BENCHMARKS §9, eighth round.) A slice without
    strokes stays uniform: there the networks answer.
    """
    k = walker.shape[1]
    lean = 1.0 / k + LEAN * (1.0 - 1.0 / k)  # K = 2: 0.875, K = 4: 0.8125
    out = walker
    for z in range(seeds.shape[0]):
        s = seeds[z]
        present = np.unique(s[s >= 0])
        if present.size != 1:
            continue
        if out is walker:
            out = walker.copy()
        c = int(present[0])
        free = s < 0
        for j in range(k):
            out[z, j][free] = lean if j == c else (1.0 - lean) / (k - 1)
    return out


def confident_agreement(
    prediction: np.ndarray, walker: np.ndarray, threshold: float = CONFIDENT
) -> float | None:
    """Mean per-class Dice of a label map against the walker's sure pixels (None: none sure)."""
    sure = walker.max(axis=1) >= threshold
    if not sure.any():
        return None
    ref = walker.argmax(axis=1)[sure]
    pred = np.asarray(prediction)[sure]
    dice = []
    for c in np.unique(ref):
        p, t = pred == c, ref == c
        dice.append(2.0 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t)))
    return float(np.mean(dice))


def area_ratio(prediction: np.ndarray, walker: np.ndarray, found: float = FOUND) -> float | None:
    """The worst ratio (≥ 1, either way) between a label map's area of a class and the area
    the walker finds for it — its pixels of that class at probability ≥ ``found`` — over the
    classes the walker finds, on the slices that have strokes (None: it finds none).

    The walker's argmax is no size where the walker hesitates. A PH2 walker with background
    strokes on one side of a lesion is at ~0.5 over half the image; one correct stroke inside
    the lesion tipped those ties to "lesion", the networks' lesion became 5× smaller than the
    walker's and lost their share (IMD040, user loop: 0.76 → 0.32). And networks that paint
    a polyp over a fold the walker hesitates on stay within 3× of its argmax while covering
    9× what it is sure of (Kvasir `cju1f320ew`, the frame no other score separated). A slice
    without strokes (uniform walker) is the networks' alone and is not compared.
    """
    k = walker.shape[1]
    top = walker.max(axis=1)
    told = top.reshape(top.shape[0], -1).max(axis=1) > 1.0 / k + 1e-3
    if not told.any():
        return None
    ref = walker[told].argmax(axis=1)
    sure = top[told] >= found
    pred = np.asarray(prediction)[told]
    worst = None
    for c in range(k):
        if not (ref == c).any():  # no stroke of this class here: nothing said about its size
            continue
        a = max(np.count_nonzero((ref == c) & sure), 1)
        b = max(np.count_nonzero(pred == c), 1)
        r = max(a / b, b / a)
        worst = r if worst is None else max(worst, r)
    return worst


def area_trust(ratio: float | None, bounds: tuple[float, float] = AREA_RATIO) -> float:
    """1 up to ``bounds[0]``, 0 from ``bounds[1]`` on, log-linear between."""
    if ratio is None:
        return 1.0
    ok, worst = bounds
    return float(np.clip(np.log(worst / ratio) / np.log(worst / ok), 0.0, 1.0))


def heldout_share(
    heldout: Mapping[str, float | None],
    max_share: float = MAX_NETWORK_SHARE,
    margin: tuple[float, float] = HELDOUT_MARGIN,
) -> float:
    """The share networks earn by beating the walker on strokes neither has seen.

    Where the walker is poor its sure pixels are partly wrong, and networks that disagree
    with them earn nothing there (the brain sample: walker Dice 0.49, networks 0.62 at 25
    steps, held-out agreement 0.96 against the walker's 0.84). The held-out strokes are the
    other, independent evidence: a clear win there (by more than ``margin[0]``) earns a share
    up to ``max_share`` at ``margin[0] + margin[1]``. 0 without held-out strokes.
    """
    nets, walker = heldout.get("networks"), heldout.get("walker")
    if nets is None or walker is None:
        return 0.0
    lo, width = margin
    return float(max_share * np.clip((nets - walker - lo) / max(width, 1e-9), 0.0, 1.0))


def contrary_evidence(sure_fraction: float | None, agreement: float | None) -> float | None:
    """Sure fraction × (1 − agreement with the sure pixels); None when either is unknown."""
    if sure_fraction is None or agreement is None:
        return None
    return float(sure_fraction * (1.0 - agreement))


def contrary_trust(contrary: float | None, bounds: tuple[float, float] = HELDOUT_CONTRARY) -> float:
    """How far the held-out route may be trusted against the sure pixels' verdict: 1 while the
    contrary evidence stays within ``bounds[0]``, 0 from ``bounds[1]`` on, linear between (1
    when it is unknown). The evidence is the sure fraction of the image times the networks'
    disagreement there, 1 − their per-class Dice on the sure pixels (:func:`contrary_evidence`):
    class-balanced, so that missing a small sure structure counts as much as a large one."""
    if contrary is None:
        return 1.0
    lo, hi = bounds
    return float(np.clip((hi - contrary) / max(hi - lo, 1e-9), 0.0, 1.0))


def base_share(validation: Mapping | None, max_share: float = MAX_BASE_SHARE) -> float:
    """The share a base model brings from its dataset: its validation Dice against the floor
    walker's on the same validation files (``checkpoint.card["validation"]``).

    A base trained on many images can be far better than a walker on a new one (PH2: zero-shot
    0.79 against the walker's 0.46), and nothing on the new image can show it — the walker's
    sure pixels are what is wrong there, and held-out strokes on a lesion's inside score 1.0
    for both. Without this route, fine-tuning such a base on a few strokes gave 0.53: the floor
    held the answer to the walker; with a share of 0.5, 0.64. The same clear-win rule as
    :func:`heldout_share`, up to :data:`MAX_BASE_SHARE` (above the networks' own 0.5: the
    evidence is many validated images, not one); 0 for a model without that record.
    """
    if not validation:
        return 0.0
    return heldout_share(
        {"networks": validation.get("dice"), "walker": validation.get("walker")}, max_share
    )


def network_share(
    agreement: float | None,
    ramp: tuple[float, float] = AGREEMENT_RAMP,
    max_share: float = MAX_NETWORK_SHARE,
) -> float:
    """The networks' share of the output for their agreement with the sure walker pixels."""
    if agreement is None:
        return 0.0
    lo, hi = ramp
    return float(max_share * np.clip((agreement - lo) / max(hi - lo, 1e-9), 0.0, 1.0))


def assess(
    member_probs: Mapping[str, np.ndarray],
    walker: np.ndarray | None,
    heldout: np.ndarray | None = None,
    walker_heldout: float | None = None,
    temperature: float = MEMBER_TEMPERATURE,
    ramp: tuple[float, float] = AGREEMENT_RAMP,
    max_share: float = MAX_NETWORK_SHARE,
    base: float = 0.0,
    heldout_scores: Mapping[str, float] | None = None,
) -> FloorReport:
    """Weights of the members and the networks' share of the output, from label-free scores.

    ``walker``: the floor walker's probabilities on the same pixels (None: no strokes on this
    image, the networks alone answer). ``heldout``: held-out stroke indices (Z, H, W), -1
    elsewhere; ``walker_heldout``: the agreement of a walker seeded *without* them (for the
    report, and for :func:`heldout_share`: the floor walker saw every stroke). ``base``: the
    share a base model earned on its dataset (:func:`base_share`). ``heldout_scores``: the
    networks' and the walker's held-out agreement recorded by the trainer (a saved trio
    predicting an image it was trained on), used when ``heldout`` is not given.
    """
    keys = list(member_probs)
    labels = {k: p.argmax(axis=1) for k, p in member_probs.items()}
    report = FloorReport(base_share=float(base))
    if heldout is not None:
        report.heldout = {k: heldout_agreement(labels[k], heldout) for k in keys}
    if walker is not None:
        report.agreement = {k: confident_agreement(labels[k], walker) for k in keys}
    # weights from the sure walker pixels: they depend only on the image, its strokes and the
    # networks, so a saved and reloaded trio weighs its members exactly as before (held-out
    # strokes are the trainer's secret); held-out agreement only where there is no walker
    scores = {k: report.agreement.get(k, report.heldout.get(k)) for k in keys}
    report.weights = member_weights(
        {k: v for k, v in scores.items() if v is not None}, keys, temperature
    ) or {k: 1.0 / len(keys) for k in keys}
    nets = sum(report.weights[k] * member_probs[k] for k in keys).argmax(axis=1)
    if heldout is not None:
        report.heldout["networks"] = heldout_agreement(nets, heldout)
        report.heldout["walker"] = walker_heldout
    elif heldout_scores:
        report.heldout = {k: heldout_scores.get(k) for k in ("networks", "walker")}
    if walker is None:
        report.network_share = 1.0
    else:
        earn_share(report, nets, walker, ramp, max_share)
    return report


def earn_share(
    report: FloorReport,
    networks: np.ndarray,
    walker: np.ndarray,
    ramp: tuple[float, float] = AGREEMENT_RAMP,
    max_share: float = MAX_NETWORK_SHARE,
    area: tuple[float, float] = AREA_RATIO,
) -> FloorReport:
    """Sets the networks' share (and what it rests on) in ``report`` from the weighted
    networks' labels (Z, H, W), the walker's probabilities and ``report.heldout``.

    Separate from :func:`assess` so that the floor benchmark can replay saved predictions
    through exactly this rule, or through other ramps and area bounds
    (``benchmarks/bench_floor_replay.py replay --ramp --area``).
    """
    report.sure_fraction = float(np.mean(walker.max(axis=1) >= CONFIDENT))
    report.agreement["networks"] = confident_agreement(networks, walker)
    # the agreement is evidence about the sure part of the image only; where the walker
    # hesitates the networks decide only if their structures are of the size the walker
    # finds, give or take a factor of four (on a polyp frame networks that agreed with every
    # sure pixel painted a third of the frame where the polyp is 4 % of it). This check took
    # over from scaling the share by the sure fraction, which held PH2's networks (0.85
    # alone) to an answer of 0.67 (BENCHMARKS §9, eighth round)
    report.area_ratio = area_ratio(networks, walker)
    sure_share = network_share(report.agreement["networks"], ramp, max_share)
    # the held-out strokes are a handful of pixels: their verdict counts only where the sure
    # pixels do not say loudly otherwise
    report.contrary = contrary_evidence(report.sure_fraction, report.agreement["networks"])
    held_share = heldout_share(report.heldout, max_share) * contrary_trust(report.contrary)
    # the area check guards the evidence from this image; a base's record is evidence from
    # many validated images, where the walker's sizes were the wrong ones (PH2: members at
    # 0.90 held at the walker's 0.25 by an area ratio of 6+ — the walker's lesion was too small)
    report.network_share = max(
        area_trust(report.area_ratio, area) * max(sure_share, held_share),
        report.base_share,
    )
    return report
