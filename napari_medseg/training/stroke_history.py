"""A new stroke changes the walker near it, not across the image.

Why: the random walker is global. A correct stroke of class c raises c's probability on every
pixel of the slice, and where the previous walker was near a tie, far from the stroke, the
label flips — in the simulated user loop 98 % (Kvasir) and 97 % (PH2) of the pixels the walker
changed beyond a correction stroke's extent were changed to a wrong label (BENCHMARKS §9,
fourteenth round). The floor is the walker, so a correction could make the answer worse
somewhere the user never pointed at. With ``TrainConfig.stroke_local`` (opt-in: with short
strokes it cost more than it saved, BENCHMARKS §9, fifteenth round) the walker a slice shows
after new strokes is the new walker within the new strokes' reach and the walker the slice
showed before everywhere else; erasing or relabelling a stroke starts the slice afresh (plain
walker on all strokes), and so does the first boundary on a slice (strokes of a second class
where there was one).

Everything works on one slice: strokes as (H, W) class indices, -1 unlabelled; walkers as
(K, H, W) probabilities or any per-pixel arrays of the slice's size.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

#: What a slice shows beyond the reach of new strokes: the walker it showed before ("keep"),
#: or the mean of that and the new walker ("blend": where the two disagree the floor is
#: unsure and the networks decide).
STROKE_FAR = ("keep", "blend")

#: A stroke reaches its own extent (bounding-box diagonal), at least this share of the slice's
#: longest side: a user drawing along a wrong region spans it, and a short stroke still
#: corrects its neighbourhood.
REACH_FRACTION = 0.05


def added_strokes(before: np.ndarray, after: np.ndarray) -> np.ndarray | None:
    """Pixels stroked in ``after`` that ``before`` had not stroked; None when a stroke of
    ``before`` was erased or given another class (the history no longer applies)."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        return None
    was = before >= 0
    if (was & (after != before)).any():
        return None
    return (after >= 0) & ~was


def stroke_reach(added: np.ndarray, fraction: float = REACH_FRACTION) -> np.ndarray:
    """Pixels within reach of the ``added`` strokes (H, W bool): each connected stroke
    reaches as far as its own bounding-box diagonal, at least ``fraction`` of the longest
    side."""
    from scipy import ndimage

    added = np.asarray(added, bool)
    if not added.any():
        return np.zeros(added.shape, bool)
    comps, n = ndimage.label(added, structure=np.ones((3, 3), bool))
    floor = fraction * max(added.shape)
    reach = np.zeros(n + 1)
    for k, box in enumerate(ndimage.find_objects(comps), start=1):
        extent = np.hypot(box[0].stop - box[0].start - 1, box[1].stop - box[1].start - 1)
        reach[k] = max(float(extent), floor)
    dist, (iy, ix) = ndimage.distance_transform_edt(~added, return_indices=True)
    return dist <= reach[comps[iy, ix]]


def drew_a_boundary(strokes: np.ndarray) -> bool:
    """Whether strokes of two classes or more are on the slice (the walker draws a boundary
    only then; with fewer it answers uniform or leaning, and has shown nothing to keep)."""
    strokes = np.asarray(strokes)
    return np.unique(strokes[strokes >= 0]).size >= 2


def reach_since(before: np.ndarray, after: np.ndarray) -> np.ndarray | None:
    """Where the strokes added from ``before`` to ``after`` reach (H, W bool); None when the
    slice starts afresh: a stroke erased or relabelled, or no boundary drawn ``before``."""
    if not drew_a_boundary(before):
        return None
    added = added_strokes(before, after)
    return None if added is None else stroke_reach(added)


def digest(array: np.ndarray) -> bytes:
    """A short content key for an image slice or a stroke map."""
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest()


class WalkerHistory:
    """The walker each image slice last showed, with the strokes it was shown for.

    Keyed by the slice's content, so that a history outlives one trainer (Train again on the
    same image, a Resume) and applies to whichever slices a preview predicts. At most
    ``capacity`` slices are remembered (least recently used go first; a forgotten slice
    starts afresh, i.e. plain walker, as before this rule existed).
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = int(capacity)
        self._last: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def shown(self, key: bytes, strokes: np.ndarray) -> np.ndarray | None:
        """The walker last shown for slice ``key`` if it was for exactly these strokes."""
        last = self._last.get(key)
        if last is None or not np.array_equal(last[0], strokes):
            return None
        self._last.move_to_end(key)
        return last[1]

    def show(
        self,
        key: bytes,
        strokes: np.ndarray,
        walker: np.ndarray,
        local: bool = True,
        far: str = "keep",
        old_weight: float = 0.5,
    ) -> np.ndarray:
        """What slice ``key`` shows for ``strokes`` given the plain ``walker`` on them (its
        last dimensions the slice's): ``walker`` within reach of the strokes added since the
        last time; elsewhere the slice's previous walker (``far="keep"``) or its weighted mean
        with ``walker`` (``"blend"``, ``old_weight`` on the previous); ``local=False``:
        ``walker``. Remembered for the next time."""
        strokes = np.asarray(strokes)
        last = self._last.get(key) if local else None
        shown = walker
        near = None
        if last is not None and last[1].shape == np.shape(walker):
            near = reach_since(last[0], strokes)
        if near is not None:
            if far == "keep":
                beyond = last[1]
            else:
                beyond = old_weight * last[1] + (1.0 - old_weight) * walker
            shown = np.where(near, walker, beyond).astype(walker.dtype)
        if not drew_a_boundary(strokes):
            # one class or none: the walker says nothing yet and nothing is kept, so the
            # first boundary drawn on the slice gives the plain walker
            self._last.pop(key, None)
            return shown
        self._last[key] = (strokes.astype(np.int16, copy=True), shown)
        self._last.move_to_end(key)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)
        return shown
