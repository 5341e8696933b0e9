"""Anatomical conventions that scribbles cannot teach, applied to label maps slice by slice.

Why this exists (docs/design.md "Shape priors"): on ACDC the trio and its random-walker teacher
follow image intensity, but the experts' masks follow a convention. The LV cavity includes the
dark papillary muscles and trabeculae, so its outline is smooth and convex; the myocardium is a
thin ring of fairly even thickness; a structure the annotator did not mark on a slice is not on
that slice. Intensity-driven labels break all three: the myocardium comes out ~70 % too large
(it swallows the papillary muscles and the dark tissue around the heart), and the RV appears on
apical slices where there is none. The rules below encode the conventions directly:

* ``exhaustive_slices`` — on a slice that holds strokes, a class without strokes is absent
  (its pixels go to the nearest other class). Only for scribbles drawn that way (ACDC's are);
  a lone corrective background stroke would erase that slice's structures.
* ``convex`` — each listed class is one convex region on every slice: its main component
  (the one holding its strokes) filled to its convex hull, its other islands dropped.
* ``walls`` — (wall, cavity) pairs: the wall is no thicker than twice the median distance of
  its strokes from the cavity. Users draw a wall's stroke along its middle, so that distance
  is half its thickness; the rule needs no parameter and adapts to every slice.

Rules never change a scribbled pixel. Everything here works in class *indices* (0..K-1, -1 for
"unlabelled/unknown"); :func:`parse_shape_prior` turns what a user wrote in label *values* into
indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Minimum stroke pixels of a wall on a slice before its thickness is trusted.
MIN_WALL_STROKE_PIXELS = 3
#: A wall is never limited below this thickness (pixels), whatever its strokes say.
MIN_WALL_THICKNESS = 2.0


@dataclass(frozen=True)
class ShapePrior:
    """Which rules apply, in class indices. The default applies nothing."""

    exhaustive_slices: bool = False
    convex: tuple[int, ...] = ()
    walls: tuple[tuple[int, int], ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.exhaustive_slices or self.convex or self.walls)

    def to_dict(self) -> dict:
        """Plain types, so that checkpoints (loaded with ``weights_only``) can carry it."""
        return {
            "exhaustive_slices": self.exhaustive_slices,
            "convex": list(self.convex),
            "walls": [list(w) for w in self.walls],
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> ShapePrior:
        d = d or {}
        return cls(
            exhaustive_slices=bool(d.get("exhaustive_slices", False)),
            convex=tuple(int(c) for c in d.get("convex", ())),
            walls=tuple((int(w), int(c)) for w, c in d.get("walls", ())),
        )


#: Label values of the CLI's "cardiac" prior: ACDC's (0 background, 1 RV, 2 Myo, 3 LV).
CARDIAC_VALUES = {"cavity": 3, "wall": 2}

#: Class names the widget recognises for the cardiac prior (lower case).
CAVITY_NAMES = ("lv", "lv cavity", "left ventricle", "lv blood pool", "blood pool")
WALL_NAMES = ("myo", "myocardium", "lv myocardium", "wall")


def cardiac_prior(cavity: int, wall: int) -> ShapePrior:
    """Short-axis cardiac convention: a convex LV cavity, its wall around it, complete slices."""
    return ShapePrior(exhaustive_slices=True, convex=(cavity,), walls=((wall, cavity),))


def parse_shape_prior(spec: str | None, class_values: Sequence[int]) -> ShapePrior:
    """A user's prior, written in label values, as class indices.

    ``spec``: "none", "cardiac", or comma-separated rules: ``slices`` (exhaustive slices),
    ``convex=V`` (repeatable), ``wall=W:C`` (wall value W around cavity value C), e.g.
    ``"slices,convex=3,wall=2:3"``. Raises ValueError naming what to fix.
    """
    spec = (spec or "none").strip().lower()
    values = [int(v) for v in class_values]

    def index(v: int) -> int:
        if v not in values:
            raise ValueError(
                f"the shape prior names class value {v}, but the classes are {values} — "
                "use the values the scribbles are drawn with"
            )
        return values.index(v)

    if spec == "none":
        return ShapePrior()
    if spec == "cardiac":
        return cardiac_prior(index(CARDIAC_VALUES["cavity"]), index(CARDIAC_VALUES["wall"]))
    d = {"exhaustive_slices": False, "convex": [], "walls": []}
    for term in filter(None, (t.strip() for t in spec.split(","))):
        key, _, arg = term.partition("=")
        try:
            if key == "slices" and not arg:
                d["exhaustive_slices"] = True
            elif key == "convex" and arg:
                d["convex"].append(int(arg))
            elif key == "wall" and ":" in arg:
                w, c = arg.split(":", 1)
                d["walls"].append([int(w), int(c)])
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"cannot read the shape prior term {term!r}: use 'none', 'cardiac' or "
                "comma-separated 'slices', 'convex=VALUE', 'wall=WALL:CAVITY'"
            ) from None

    return ShapePrior(
        exhaustive_slices=d["exhaustive_slices"],
        convex=tuple(index(v) for v in d["convex"]),
        walls=tuple((index(w), index(c)) for w, c in d["walls"]),
    )


def cardiac_prior_from_names(names: Sequence[str]) -> ShapePrior:
    """The cardiac prior for classes known by name (the widget), or ValueError saying why not."""
    low = [n.strip().lower() for n in names]
    cavity = next((i for i, n in enumerate(low) if n in CAVITY_NAMES), None)
    wall = next((i for i, n in enumerate(low) if n in WALL_NAMES), None)
    if cavity is None or wall is None:
        raise ValueError(
            "the cardiac prior needs a class named 'LV' (the cavity) and one named 'Myo' (its "
            f"wall); the classes are {list(names)} — rename them or choose no prior"
        )
    return cardiac_prior(cavity, wall)


# ---------------------------------------------------------------- rules (one slice each)
def _nearest_other(lab: np.ndarray, move: np.ndarray, keep: np.ndarray) -> None:
    """Gives each pixel of ``move`` the label of the nearest pixel of ``keep`` (in place)."""
    from scipy import ndimage as ndi

    if not move.any() or not keep.any():
        return
    idx = ndi.distance_transform_edt(~keep, return_distances=False, return_indices=True)
    lab[move] = lab[tuple(i[move] for i in idx)]


def _drop_unscribbled(lab: np.ndarray, seeds: np.ndarray) -> None:
    drawn = np.unique(seeds[seeds >= 0])
    if drawn.size == 0:
        return
    kept = np.isin(lab, drawn)
    _nearest_other(lab, ~kept & (lab >= 0), kept)


def _fill_convex(lab: np.ndarray, cls: int, seeds: np.ndarray | None) -> None:
    """One convex region: the class's main component filled to its hull, its islands dropped.

    The main component is the one holding most of the class's strokes on the slice (the
    largest when it has none). Without this, the hull of scattered pixels — an early preview,
    a noisy classifier — would paint most of the slice.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import convex_hull_image

    mask = lab == cls
    if mask.sum() < 3:
        return
    comps, n = ndi.label(mask)
    if n > 1:
        votes = np.bincount(comps[seeds == cls], minlength=n + 1)[1:] if seeds is not None else 0
        sizes = np.bincount(comps.ravel(), minlength=n + 1)[1:]
        main = 1 + int(np.argmax(votes * (sizes.max() + 1) + sizes))
        islands = mask & (comps != main)
        _nearest_other(lab, islands, ~mask)
        mask = comps == main
    try:
        hull = convex_hull_image(mask)
    except Exception:  # collinear pixels: no 2-D hull, nothing to fill
        return
    lab[hull] = cls


def _limit_wall(lab: np.ndarray, seeds: np.ndarray, wall: int, cavity: int) -> None:
    from scipy import ndimage as ndi

    strokes = seeds == wall
    cav = lab == cavity
    if strokes.sum() < MIN_WALL_STROKE_PIXELS or not cav.any():
        return
    dist = ndi.distance_transform_edt(~cav)
    half = float(np.median(dist[strokes]))
    limit = max(2.0 * half, MIN_WALL_THICKNESS)
    too_far = (lab == wall) & (dist > limit)
    _nearest_other(lab, too_far, (lab != wall) & (lab >= 0))


def apply_shape_prior(
    labels: np.ndarray, seeds: np.ndarray | None, prior: ShapePrior | None
) -> np.ndarray:
    """A copy of ``labels`` (Z, H, W) class indices with the prior's rules applied per slice.

    ``seeds``: the scribbles as (Z, H, W) indices with -1 unlabelled, or None (then only the
    rules that need no strokes — convex fill — apply). Scribbled pixels keep their label.
    """
    labels = np.asarray(labels)
    if prior is None or not prior.active:
        return labels
    if seeds is not None and seeds.shape != labels.shape:
        raise ValueError(f"labels {labels.shape} and scribbles {seeds.shape} differ in shape")
    out = labels.astype(np.int64, copy=True)
    for z in range(out.shape[0]):
        lab = out[z]
        sd = seeds[z] if seeds is not None else None
        if sd is not None and prior.exhaustive_slices:
            _drop_unscribbled(lab, sd)
        for cls in prior.convex:
            _fill_convex(lab, cls, sd)
        if sd is not None:
            for wall, cavity in prior.walls:
                _limit_wall(lab, sd, wall, cavity)
            scribbled = sd >= 0
            lab[scribbled] = labels[z][scribbled]
    return out.astype(labels.dtype, copy=False)
