"""A pixel classifier on the user's strokes beside the random walker: the classical answer.

The random walker knows only where intensity changes; a class defined by *what* a pixel looks
like rather than where it lies — grey matter's ribbon between CSF and white matter, a
lesion's colour across a vignetted frame — defeats it (the brain sample: walker Dice 0.49).
A random forest on a few smoothed, differentiated copies of the image, trained on the stroke
pixels (what ilastik and napari-convpaint do), knows what pixels look like but not where the
strokes' regions end (ACDC alone: 0.32, the two blood pools look alike). Each covers the
other's blind side, in two ways:

* ``"walker × classifier"``: the product of the two probability maps (the classifier floored
  at :data:`PRODUCT_FLOOR`), renormalised — the walker decides where the classifier is unsure
  and the classifier sharpens what the walker leaves open (ACDC: +0.039 over 20 volumes);
* ``"walker on classifier"``: the walker on the image with the classifier's probabilities as
  extra channels — boundaries where either the image or the classes change (PH2: +0.29);
* ``"walker ∪ walker on classifier"``: the walker's structures, grown where ``walker on
  classifier`` finds more of them but never shrunk by it (class 0 is the background).

None is always right (Kvasir: a forest that calls a whole frame polyp-like floods it, or
a polyp's far side background-like), so :func:`choose_method` decides per image. A colour
image whose walker outline runs close to the background strokes (:data:`OUTLINE_SUPPORT`)
may only grow the walker's structures (the union): there the user's strokes drew the
outline and the classifier has only shrunk it wrongly (Kvasir); elsewhere the outline is the
walker's guess far from any stroke, which the classifier may redraw (PH2's floods). Each
candidate must classify the strokes held out from both (training/holdout.py) at least as
well as the walker — except the product on a grey image, which only a clear miss turns down
(:data:`GREY_PRODUCT_MARGIN`) — and keep its class areas within :data:`~.floor.AREA_RATIO`'s
limit of what the walker is sure of. Measured in BENCHMARKS §9 (sixteenth to eighteenth
rounds); docs/design.md "The classical answer".

Everything is numpy on (Z, C, H, W) images and (Z, H, W) class indices (-1 unlabelled).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The methods :func:`choose_method` may pick, in the order that wins a tie.
METHODS = ("walker on classifier", "walker × classifier", "walker ∪ walker on classifier")
WALKER = "walker"
UNION = METHODS[2]
#: Gaussian scales (px) of the features: smoothed intensity, gradient magnitude, Laplacian.
SCALES = (0.7, 1.6, 3.5, 5.0)
#: The classifier's probabilities are floored here before the product: a forest's 0 would
#: veto the walker outright on pixels it has never seen anything like.
PRODUCT_FLOOR = 0.05
#: Stroke pixels the forest trains on, at most (a random draw beyond): fitting stays ~1 s.
MAX_SAMPLES = 20_000
TREES = 50
DEPTH = 12
#: On a grey image the product is kept unless it agrees with the held-out strokes worse than
#: the walker by more than this. It only reweighs the walker's own probabilities, and a few
#: held-out tiles are noisy: a strict test turned it down on ACDC volumes where it beat the
#: walker by up to 0.08 (BENCHMARKS §9, seventeenth round: at or above it on 40 of 40).
GREY_PRODUCT_MARGIN = 0.05
#: A colour image's walker outline counts as drawn by the strokes when its median distance to
#: the nearest background (class 0) stroke is below this share of the image's longer side;
#: the union is then its only candidate. Read off 60 Kvasir frames and 40 PH2 images (any
#: value from 0.12 to 0.2 leaves 2–3 frames below the walker, against 10) and checked on 60
#: Kvasir frames it was not read from (BENCHMARKS §9, eighteenth round).
OUTLINE_SUPPORT = 0.15


def pixel_features(image: np.ndarray) -> np.ndarray:
    """(F, H, W) float32 features of one (C, H, W) slice: per channel the raw intensity and,
    at each of :data:`SCALES`, its Gaussian smoothing, gradient magnitude and Laplacian."""
    from scipy import ndimage as ndi

    feats = []
    for c in np.asarray(image, dtype=np.float32):
        feats.append(c)
        for s in SCALES:
            feats.append(ndi.gaussian_filter(c, s))
            feats.append(ndi.gaussian_gradient_magnitude(c, s))
            feats.append(ndi.gaussian_laplace(c, s))
    return np.stack(feats).astype(np.float32)


def classifier_probabilities(
    image: np.ndarray, seeds: np.ndarray, num_classes: int, seed: int = 0
) -> np.ndarray | None:
    """(Z, K, H, W) float32 class probabilities of a random forest trained on every stroke
    pixel of the image (all slices together); None with strokes of fewer than two classes
    (nothing to tell apart). Classes without strokes get probability 0."""
    from sklearn.ensemble import RandomForestClassifier

    seeds = np.asarray(seeds)
    present = np.unique(seeds[seeds >= 0])
    if present.size < 2:
        return None
    feats = [pixel_features(image[z]) for z in range(image.shape[0])]
    xs, ys = [], []
    for z, f in enumerate(feats):
        mask = seeds[z] >= 0
        if mask.any():
            xs.append(f[:, mask].T)
            ys.append(seeds[z][mask])
    x, y = np.concatenate(xs), np.concatenate(ys)
    rng = np.random.default_rng(seed)
    if len(x) > MAX_SAMPLES:
        pick = rng.choice(len(x), MAX_SAMPLES, replace=False)
        x, y = x[pick], y[pick]
    forest = RandomForestClassifier(
        n_estimators=TREES, max_depth=DEPTH, n_jobs=1, random_state=seed
    ).fit(x, y)
    z_count, _, h, w = image.shape
    out = np.zeros((z_count, num_classes, h, w), dtype=np.float32)
    for z, f in enumerate(feats):
        prob = forest.predict_proba(f.reshape(f.shape[0], -1).T)
        for j, c in enumerate(forest.classes_):
            out[z, int(c)] = prob[:, j].reshape(h, w)
    return out


def combine(
    method: str,
    image: np.ndarray,
    seeds: np.ndarray,
    walker: np.ndarray,
    classifier: np.ndarray | None,
    num_classes: int,
    beta: float,
) -> np.ndarray:
    """The ``method``'s probabilities (Z, K, H, W) from the walker's and the classifier's.

    Only slices whose strokes hold two classes or more change: where the walker says it knows
    nothing (no stroke) or leans to a single stroked class, so does the answer — the forest,
    seeing the whole volume's strokes, would otherwise paint structures onto slices the user
    marked as background only. Strokes keep their class.
    """
    if method == WALKER or classifier is None:
        return walker
    from .floor import floor_walker

    out = walker.copy()
    zs = [z for z in range(seeds.shape[0]) if np.unique(seeds[z][seeds[z] >= 0]).size >= 2]
    if not zs:
        return walker
    if method == "walker × classifier":
        prod = walker[zs] * (classifier[zs] + PRODUCT_FLOOR)
        out[zs] = prod / np.maximum(prod.sum(axis=1, keepdims=True), 1e-12)
    elif method == UNION:
        on = combine(METHODS[0], image, seeds, walker, classifier, num_classes, beta)
        return grown_walker(walker, on)
    elif method == "walker on classifier":
        stacked = np.concatenate([image[zs], classifier[zs]], axis=1)
        out[zs] = floor_walker(stacked, seeds[zs], num_classes, beta)
    else:
        raise ValueError(f"unknown classical method {method!r}; choose one of {METHODS}")
    for z in zs:  # strokes are certain
        s = seeds[z]
        for c in np.unique(s[s >= 0]):
            mask = s == c
            out[z][:, mask] = 0.0
            out[z, c][mask] = 1.0
    return out


def area_ratio(candidate: np.ndarray, walker: np.ndarray, found: float) -> float:
    """The worst ratio (≥ 1, either way) between a candidate's area of a class and the area
    the walker finds for it (probability ≥ ``found``), over the classes."""
    labels, wl = candidate.argmax(axis=1), walker.argmax(axis=1)
    sure = walker.max(axis=1) >= found
    worst = 1.0
    for c in range(walker.shape[1]):
        a = max(int(np.count_nonzero(labels == c)), 1)
        b = max(int(np.count_nonzero((wl == c) & sure)), 1)
        worst = max(worst, a / b, b / a)
    return worst


def grown_walker(walker: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The walker's structures grown by ``other``'s, never shrunk: each class > 0 at the
    larger of the two probabilities, the background (class 0) at the smaller, renormalised.
    With two classes its labels are the union of both answers' structures."""
    grown = np.maximum(walker, other)
    grown[:, 0] = np.minimum(walker[:, 0], other[:, 0])
    return grown / np.maximum(grown.sum(axis=1, keepdims=True), 1e-12)


def outline_distance(walker: np.ndarray, strokes: np.ndarray) -> float:
    """Median distance (a share of the longer side) from the outline of the walker's
    structures (classes > 0) to the nearest background stroke, over the slices that hold
    background and another class's strokes; ``inf`` without such a slice or outline."""
    from scipy import ndimage as ndi

    dists = []
    for z in range(strokes.shape[0]):
        s = strokes[z]
        if not (s == 0).any() or not (s > 0).any():
            continue
        structure = walker[z].argmax(axis=0) > 0
        outline = structure & ~ndi.binary_erosion(structure)
        if outline.any():
            dists.append(ndi.distance_transform_edt(s != 0)[outline])
    if not dists:
        return float("inf")
    return float(np.median(np.concatenate(dists))) / max(strokes.shape[-2:])


@dataclass
class ClassicalChoice:
    """What :func:`choose_method` decided for one image and why."""

    method: str = WALKER
    heldout: dict[str, float | None] = field(default_factory=dict)  # walker + METHODS
    area: dict[str, float] = field(default_factory=dict)  # METHODS: worst area ratio
    # colour images: the walker outline's distance to the background strokes
    outline: float | None = None
    # the chosen method's probabilities from the training strokes alone (the teacher's)
    training: np.ndarray | None = None


def choose_method(
    image: np.ndarray,
    training: np.ndarray,
    heldout: np.ndarray,
    num_classes: int,
    beta: float,
    walker: np.ndarray | None = None,
    seed: int = 0,
) -> ClassicalChoice:
    """Walker or one of :data:`METHODS` for this image, judged on the held-out strokes.

    ``training``/``heldout``: the strokes split by :func:`~.holdout.split_strokes`;
    ``walker``: the walker seeded by ``training`` if already computed. On a grey image the
    product is taken unless it agrees with the held-out strokes worse than the walker by more
    than :data:`GREY_PRODUCT_MARGIN` (balanced accuracy); otherwise the first two methods
    compete. On a colour image the candidates are the union alone when the walker's outline
    lies within :data:`OUTLINE_SUPPORT` of the background strokes (all of them, held out
    too), else the first two. A candidate must agree with the held-out strokes at least as
    well as the walker; of those the best agreement wins (ties: :data:`METHODS`' order).
    Either way a class's area must stay within :data:`~.floor.AREA_RATIO`'s outer limit of
    what the walker finds. Nothing held out: the walker (nothing to judge by).
    """
    from .floor import AREA_RATIO, FOUND, floor_walker
    from .holdout import heldout_agreement

    if walker is None:
        walker = floor_walker(image, training, num_classes, beta)
    choice = ClassicalChoice(training=walker)
    if not (np.asarray(heldout) >= 0).any():
        return choice
    classifier = classifier_probabilities(image, training, num_classes, seed)
    if classifier is None:
        return choice
    base = choice.heldout[WALKER] = heldout_agreement(walker.argmax(axis=1), heldout)
    if base is None:
        return choice
    probs = {}
    for method in METHODS:
        if method == UNION:  # grown from the other's answer, not computed again
            probs[method] = grown_walker(walker, probs[METHODS[0]])
        else:
            probs[method] = combine(method, image, training, walker, classifier, num_classes, beta)
        choice.heldout[method] = heldout_agreement(probs[method].argmax(axis=1), heldout)
        choice.area[method] = area_ratio(probs[method], walker, FOUND)
    product = METHODS[1]  # walker × classifier
    score = choice.heldout[product]
    if image.shape[1] == 1 and score is not None and score >= base - GREY_PRODUCT_MARGIN:
        if choice.area[product] <= AREA_RATIO[1]:
            choice.method, choice.training = product, probs[product]
            return choice
    candidates = METHODS[:2]
    if image.shape[1] > 1:
        strokes = np.where(np.asarray(training) >= 0, training, heldout)
        choice.outline = outline_distance(walker, strokes)
        if choice.outline < OUTLINE_SUPPORT:
            candidates = (UNION,)
    best = base
    for method in candidates:
        score = choice.heldout[method]
        if score is None or choice.area[method] > AREA_RATIO[1]:
            continue
        if score > best or (score == best and choice.method == WALKER):
            best, choice.method, choice.training = score, method, probs[method]
    return choice


def walker_size(image: np.ndarray, max_side: int) -> tuple[int, int]:
    """The (h, w) the floor walker works at for this image (≤ ``max_side``)."""
    from ..resolution import scaled_size, working_scale

    native = tuple(image.shape[-2:])
    return scaled_size(native, working_scale(native, max_side))


def choose_for_image(
    image: np.ndarray,
    training: np.ndarray,
    heldout: np.ndarray,
    num_classes: int,
    beta: float,
    seed: int = 0,
    max_side: int | None = None,
) -> ClassicalChoice:
    """:func:`choose_method` on a native-size image, at the floor walker's size (≤
    ``max_side``, :data:`~.floor.WALKER_MAX_SIDE`): a 1920-px frame's features would cost
    seconds per slice. ``choice.training`` stays at that size."""
    from ..resolution import resize_image, resize_seeds
    from .floor import WALKER_MAX_SIDE

    size = walker_size(image, max_side or WALKER_MAX_SIDE)
    if size != tuple(image.shape[-2:]):
        image = resize_image(image, size)
        training = resize_seeds(training, size, num_classes)
        heldout = np.where(training >= 0, -1, resize_seeds(heldout, size, num_classes))
    return choose_method(image, training, heldout, num_classes, beta, seed=seed)


def classical_probabilities(
    method: str,
    image: np.ndarray,
    seeds: np.ndarray,
    num_classes: int,
    beta: float,
    walker: np.ndarray | None = None,
    seed: int = 0,
    max_side: int | None = None,
) -> np.ndarray:
    """The ``method``'s (Z, K, H, W) probabilities at the image's native size, computed at
    the floor walker's size. ``walker``: the floor walker at native size, reused when the
    image is already that small."""
    from ..resolution import resize_image, resize_seeds, upsample_probabilities
    from .floor import WALKER_MAX_SIDE, floor_walker

    native = tuple(image.shape[-2:])
    size = walker_size(image, max_side or WALKER_MAX_SIDE)
    if size != native:
        image = resize_image(image, size)
        seeds = resize_seeds(seeds, size, num_classes)
        walker = None
    if walker is None:
        walker = floor_walker(image, seeds, num_classes, beta)
    if method == WALKER:
        return upsample_probabilities(walker, native)
    classifier = classifier_probabilities(image, seeds, num_classes, seed)
    prob = combine(method, image, seeds, walker, classifier, num_classes, beta)
    return upsample_probabilities(prob, native)


def classical_floor(
    image: np.ndarray,
    seeds: np.ndarray,
    num_classes: int,
    beta: float,
    holdout_fraction: float,
    seed: int = 0,
) -> tuple[str, np.ndarray]:
    """(method, native-size probabilities) of the classical answer for an image without a
    trainer (a saved trio's Predict): decided on the same held-out split the trainer draws
    (``split_strokes(seeds, holdout_fraction, seed)``), then computed on every stroke."""
    from .floor import floor_walker
    from .holdout import split_strokes

    walker = floor_walker(image, seeds, num_classes, beta)
    training, held = split_strokes(seeds, holdout_fraction, seed=seed)
    method = choose_for_image(image, training, held, num_classes, beta, seed=seed).method
    if method == WALKER:
        return method, walker
    return method, classical_probabilities(
        method, image, seeds, num_classes, beta, walker=walker, seed=seed
    )
