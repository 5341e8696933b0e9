"""The tri-network trainer: one iterator that :class:`napari_medseg.workflow.Workflow` drives.

Each step trains every network on a batch of scribbled crops with

    loss_i = pCE(scribbles) + w_rw · CE(random-walker labels)
             + w_ps · Dice(p_i, ensemble pseudo label)

where the ensemble pseudo label is argmax(α·pA + β·pB + γ·pC) with (α, β, γ) drawn uniformly on
the simplex every step (Weak-Mamba-UNet). The iterator yields a :class:`TrainerUpdate` after every
step; every ``preview_every_seconds`` (and at the end) the update carries fresh predictions of the
image being annotated, so a GUI can refresh its layers without ever touching tensors itself.

The trainer owns no thread: ``request_stop`` may be called from any thread and the loop stops
before its next step; ``update_scribbles`` swaps the scribbles used by the following steps.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from ..checkpoints import Checkpoint, SlotState, load_weights
from ..device import resolve_device
from ..errors import ConfigError
from ..inference import Prediction, combine_predictions, member_weights, predict_models
from ..models import create_model
from ..presets import default_preset, recipe, single_slice_recipe
from ..resolution import resize_image, resize_seeds, scaled_size, upsample_probabilities
from ..resolution import working_scale as _working_scale
from ..shape_prior import ShapePrior, apply_shape_prior
from ..slots import slot_keys
from .augmentation import augment_batch
from .distributed import Distributed
from .floor import FloorReport, assess, base_share, floor_walker
from .holdout import heldout_agreement, split_strokes
from .losses import (
    IGNORE_INDEX,
    PseudoLabelDice,
    balanced_class_weights,
    partial_cross_entropy,
)
from .pseudo_labels import (
    ensemble_pseudo_label,
    random_simplex_weights,
    random_walker_probabilities,
)
from .schedule import poly_lr
from .stroke_classifier import WALKER as CLASSICAL_WALKER
from .stroke_classifier import ClassicalChoice, choose_for_image, classical_probabilities
from .stroke_history import STROKE_FAR, WalkerHistory, digest, reach_since
from .threads import ThreadTuner
from .weight_average import WeightAverage

DEFAULT_TRIO = ("unet", "swin_unet", "mamba_unet")

# Below this many iterations BatchNorm statistics are re-estimated before each prediction,
# from this many training batches; live previews use fewer: with 8 batches a preview every
# 3 s took ~2.5 s of the trio's time in the GUI (half its steps), and the final prediction
# (and ``predict``) still gets all 8.
BN_RECALIBRATE_BELOW = 2000
BN_RECALIBRATE_BATCHES = 8
PREVIEW_BN_BATCHES = 2
# Exponential average of the members' agreement scores (``_update_scores``): ~the last 10 steps
SCORE_MOMENTUM = 0.8
#: Walker slices (probabilities at the image's size) kept for the floor, across images.
FLOOR_CACHE_SLICES = 64
#: A time budget keeps this share of the expected final prediction's cost in reserve.
FINAL_RESERVE_FACTOR = 1.3
#: Plateau: held-out agreement that counts as an improvement, and the steps without one (at
#: least, or this share of the steps done) after which ``until_plateau`` stops.
PLATEAU_DELTA = 0.002
PLATEAU_MIN_STEPS = 30
PLATEAU_SHARE = 0.3


@dataclass
class TrainConfig:
    """Everything that decides a training run; plain types only so checkpoints stay safe."""

    models: tuple[str, ...] = DEFAULT_TRIO
    preset: str | None = None  # None: "paper" on CUDA, "lite" elsewhere
    iterations: int | None = None
    seconds: float | None = None
    # None: the preset's recipe (napari_medseg.presets.RECIPES)
    batch_size: int | None = None
    patch_size: int | None = None  # 0: whole slices (when they share one size)
    optimizer: str | None = None  # "sgd" (the paper's) or "adamw" (fewer steps to converge)
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    pseudo_weight: float = 1.0
    pseudo_rampup: float | None = None  # fraction of the budget over which Dice ramps up
    rw_weight: float | None = None  # cross-entropy to the random walker; 0 disables the walker
    rw_dice_weight: float | None = None  # Dice to the random walker
    rw_confidence: float | None = None  # walker pixels below this probability are ignored
    rw_balance_power: float | None = None  # 1: inverse-frequency class weights, 0: none
    # sharper, edge-following walker boundaries than scikit-image's 130 (docs/design.md)
    rw_beta: float = 2000.0
    balance_classes: bool = True  # class weights in both cross-entropies
    augment: bool | None = None  # rot90/flip, small rotations, gamma
    device: str = "auto"
    seed: int = 0
    preview_every_seconds: float | None = 5.0
    preview_first_after_steps: int = 1
    predict_batch_size: int = 4
    max_side: int | None = None  # working resolution: longest side in px (0 = native)
    # anatomical rules (napari_medseg.shape_prior.ShapePrior.to_dict(), class indices) applied
    # to every prediction and, with prior_on_teacher, to the random walker's target
    shape_prior: dict | None = None
    prior_on_teacher: bool = True
    # the anytime floor (training/floor.py): the walker's probabilities are part of every
    # prediction of an image with strokes until the networks earn a share
    floor: bool = True
    # opt-in: a new stroke changes the walker (the floor's and the teacher's) only within its
    # reach, the slice keeping the walker it showed before elsewhere (stroke_history.py).
    # Off by default: with short strokes it cost −0.025 (Kvasir) and −0.040 (PH2) in the user
    # loop and put 7 of 20 answers below the plain walker (BENCHMARKS §9, fifteenth round)
    stroke_local: bool = False
    # beyond a new stroke's reach: "keep" the walker shown before, or "blend" it with the new
    # one (where the two disagree the floor is unsure and the networks decide; the teacher
    # does not teach there) — blend lost PH2's IMD021 (0.952 → 0.512)
    stroke_far: str = "keep"
    # "blend": the previous walker's weight beyond the reach (0.5: the mean; above it, near
    # ties stay with what the slice showed)
    stroke_blend_old: float = 0.5
    # share of the previewed image's stroke tiles no network and no teacher sees (0: none)
    holdout_fraction: float = 0.2
    # the classical answer (training/stroke_classifier.py): a pixel classifier on the strokes
    # beside the walker, for the floor and the teacher of the previewed image, where it
    # classifies the held-out strokes at least as well as the walker alone
    classifier: bool = True
    # stop once the networks' held-out agreement stops improving (seconds/iterations still cap)
    until_plateau: bool = False
    # torch's CPU thread count chosen from measured steps (training/threads.py): None for time
    # budgets only (step budgets stay independent of the machine's load), True for any budget
    # (the widget: its step budget is a duration to the user), False never
    adapt_threads: bool | None = None
    # experiment (bench_floor_replay.py --ring): the previewed image's sure teacher pixels
    # within this many working pixels of the walker's unsure band are held out of the dense
    # teacher, so that agreement there tests how the networks extend the sure part (0: none)
    ring_holdout: int = 0
    # experiment (training/weight_average.py): predict from an exponential moving average of
    # each network's weights with this decay (0: from the current weights)
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raises :class:`~napari_medseg.errors.ConfigError` for a setting no run can use.

        A zero, negative, NaN or infinite budget would train forever (or never); a zero batch
        or learning rate would crash or learn nothing after minutes. Called on construction,
        by the trainer (fields may have been set since) and by ``Workflow.configure``.
        """

        def number(name, value, low, *, integer=False, low_ok=True, high=None):
            if value is None:
                return
            bad_type = isinstance(value, bool) or not isinstance(
                value, numbers.Integral if integer else numbers.Real
            )
            if not bad_type and not integer:
                bad_type = not math.isfinite(float(value))
            too_low = not bad_type and (value < low if low_ok else value <= low)
            too_high = not bad_type and high is not None and value > high
            if bad_type or too_low or too_high:
                kind = "a whole number" if integer else "a finite number"
                bound = f"≥ {low}" if low_ok else f"> {low}"
                upper = f" and ≤ {high}" if high is not None else ""
                raise ConfigError(
                    f"training setting {name}={value!r} is not allowed: it must be {kind} "
                    f"{bound}{upper} (or unset)"
                )

        number("iterations", self.iterations, 1, integer=True)
        number("seconds", self.seconds, 0, low_ok=False)
        number("batch_size", self.batch_size, 1, integer=True)
        number("patch_size", self.patch_size, 0, integer=True)
        number("lr", self.lr, 0, low_ok=False)
        number("momentum", self.momentum, 0, high=1)
        number("weight_decay", self.weight_decay, 0)
        for name in ("pseudo_weight", "rw_weight", "rw_dice_weight", "rw_balance_power"):
            number(name, getattr(self, name), 0)
        number("rw_confidence", self.rw_confidence, 0, high=1)
        number("rw_beta", self.rw_beta, 0, low_ok=False)
        number("preview_every_seconds", self.preview_every_seconds, 0)
        number("predict_batch_size", self.predict_batch_size, 1, integer=True)
        number("max_side", self.max_side, 0, integer=True)
        if self.max_side is not None and 0 < self.max_side < 16:
            raise ConfigError(
                f"training setting max_side={self.max_side} is too small: give 0 (native "
                "resolution) or at least 16 px"
            )
        number("holdout_fraction", self.holdout_fraction, 0, high=0.9)
        number("ring_holdout", self.ring_holdout, 0, integer=True)
        number("stroke_blend_old", self.stroke_blend_old, 0, high=1.0)
        if self.stroke_far not in STROKE_FAR:
            raise ConfigError(f"stroke_far must be one of {STROKE_FAR}; got {self.stroke_far!r}")
        number("ema_decay", self.ema_decay, 0)
        if self.ema_decay is not None and self.ema_decay >= 1:
            raise ConfigError(
                f"training setting ema_decay={self.ema_decay!r} is not allowed: give 0 (off) "
                "or a decay below 1, e.g. 0.95"
            )
        if not self.models:
            raise ConfigError("no models selected — choose at least one, e.g. unet")

    def resolve(self, preset: str, situation: dict | None = None) -> None:
        """Fills the fields left ``None`` with ``situation`` (what a dataset or a single image
        changes in the recipe, presets.py), then the preset's recipe (unknown presets are
        errors)."""
        for k, v in {**recipe(preset), **(situation or {})}.items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        self.preset = preset

    def budget_progress(self, iteration: int, elapsed: float) -> float | None:
        parts = []
        if self.iterations:
            parts.append(iteration / self.iterations)
        if self.seconds:
            parts.append(elapsed / self.seconds)
        return max(parts) if parts else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["models"] = list(self.models)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "models" in known:
            known["models"] = tuple(known["models"])
        return cls(**known)


@dataclass
class TrainerUpdate:
    iteration: int
    total_iterations: int | None
    elapsed: float
    lr: float
    losses: dict[str, float]
    iterations_per_second: float
    prediction: Prediction | None = None
    prediction_slices: tuple[int, ...] | None = None  # slices predicted (None: the whole image)
    done: bool = False
    stopped: bool = False
    message: str = ""
    # running held-out stroke agreement (training batches) of each member and of "networks"
    heldout: dict[str, float] | None = None


class TriNetTrainer:
    """Trains networks that supervise each other from scribbles.

    images: list of (Z, C, H, W) float32 arrays (already normalised; one entry for the
    interactive protocol, many for the dataset protocol). seeds: matching (Z, H, W) int arrays
    of class indices with ``-1`` where nothing is scribbled. ``preview`` selects which entry the
    live predictions show.

    ``working_scale``: the images and seeds are already at the working resolution, this factor
    times their native size (a dataset read file by file, so that no native copy of hundreds
    of images is held: the trainer then keeps none either). Only without a preview.

    ``walker_history``: the walker each image slice last showed (stroke_history.py), shared
    with an earlier trainer on the same images (its walkers need not be recomputed; with
    ``stroke_local`` a Train after new strokes changes the floor only near them); a new,
    empty one by default.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        seeds: Sequence[np.ndarray],
        num_classes: int,
        config: TrainConfig | None = None,
        *,
        preview: int | None = 0,
        checkpoint: Checkpoint | None = None,
        metadata: dict | None = None,
        working_scale: float | None = None,
        walker_history: WalkerHistory | None = None,
    ):
        # a copy: the preset's recipe is filled into it, and the caller's config may serve
        # another image (one 2-D image resolves to other settings than a stack)
        self.config = replace(config) if config is not None else TrainConfig()
        cfg = self.config
        cfg.check()
        if len(images) != len(seeds) or not images:
            raise ValueError("give one seed array per image (and at least one image)")
        self.device = resolve_device(cfg.device)
        preset = cfg.preset or default_preset(self.device)
        # one 2-D image: augmentation is the only variety its batches can have
        one_slice = sum(int(np.shape(im)[0]) for im in images) == 1
        cfg.resolve(preset, single_slice_recipe(preset) if one_slice else None)
        self.num_classes = int(num_classes)
        self.in_channels = int(images[0].shape[1])
        for im, sd in zip(images, seeds):
            if (
                im.ndim != 4
                or sd.ndim != 3
                or im.shape[0] != sd.shape[0]
                or im.shape[2:] != sd.shape[1:]
            ):
                raise ValueError(
                    f"image {im.shape} and scribbles {sd.shape} do not match: expected "
                    "(Z, C, H, W) and (Z, H, W)"
                )
            if im.shape[1] != self.in_channels:
                raise ValueError("all images must have the same number of channels")
        self.metadata = dict(metadata or {})
        self.preview = preview
        self.shape_prior = ShapePrior.from_dict(cfg.shape_prior)
        if working_scale is not None:
            if preview is not None:
                raise ValueError("images given at the working resolution cannot be previewed")
            self.scale = float(working_scale)
            # no native copies: nothing is previewed, and the images are not predicted with
            # their strokes (strokes_of finds none)
            self._native_images: list[np.ndarray] | None = None
            self._images = [np.ascontiguousarray(im, dtype=np.float32) for im in images]
        else:
            largest = max(max(im.shape[-2:]) for im in images)
            self.scale = _working_scale((largest, largest), cfg.max_side)
            if checkpoint is not None and (checkpoint.working_scale or 0) > 0:
                # fine-tuning keeps the base's scale: structures keep the apparent size the
                # base learnt them at, and its zero-shot prediction used the same factor
                self.scale = float(checkpoint.working_scale)
            self._native_images = [np.ascontiguousarray(im, dtype=np.float32) for im in images]
            self._images = [
                resize_image(im, scaled_size(im.shape[-2:], self.scale))
                for im in self._native_images
            ]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pending_seeds: list[np.ndarray] | None = None
        # the teacher per slice: (training strokes' digest, labels, top probability, every
        # stroke of the slice — the last only where strokes can change, for stroke_history)
        self._rw_cache: dict[tuple[int, int], tuple] = {}
        # the floor's walker, per image slice content, as last shown (stroke_history.py)
        self.walker_history = (
            walker_history if walker_history is not None else WalkerHistory(FLOOR_CACHE_SLICES)
        )
        self._bn_key: tuple | None = None  # what the BatchNorm statistics were estimated for
        # the classical answer of the previewed image (stroke_classifier.py): (strokes'
        # digest, choice), and the floor's probabilities of the chosen method
        self._classical: tuple[bytes, ClassicalChoice] | None = None
        self._classical_floor: tuple[tuple, np.ndarray] | None = None
        self._preview_keys: list[bytes] | None = None
        self._floor_method = CLASSICAL_WALKER  # what the last floor was (the report's)
        self._set_seeds([np.asarray(s) for s in seeds])

        torch.manual_seed(cfg.seed)
        self._rng = np.random.default_rng(cfg.seed)
        self._gen = torch.Generator().manual_seed(cfg.seed)
        self.keys = slot_keys(cfg.models)
        self.models: dict[str, nn.Module] = {}
        for key, name in zip(self.keys, cfg.models):
            self.models[key] = create_model(
                name, self.in_channels, self.num_classes, cfg.preset
            ).to(self.device)
        self.optimizers = {k: self._make_optimizer(m) for k, m in self.models.items()}
        self._average: WeightAverage | None = None
        self._restart_average()
        self.iteration = 0
        # how well each member fits the trustworthy part of its target, and the held-out
        # strokes (running averages over training batches): the members' weights
        self.member_scores: dict[str, float] = {}
        self.heldout_scores: dict[str, float] = {}
        self._step_seconds: list[float] = []  # the last steps' durations (time budgets)
        self._predict_seconds: float | None = None  # the last whole-image prediction's
        self._dice = PseudoLabelDice(self.num_classes)
        # data-parallel training (training/distributed.py): gradients averaged over processes
        self.distributed: Distributed | None = None
        # a base's validation record: the share the floor grants it on any image (floor.py)
        record = (checkpoint.card or {}).get("validation") if checkpoint is not None else None
        self.base_share = base_share(record)
        # the base's own confident labels, the teacher where it was validated better than the
        # walker (set by teach_from_base; None: the walker teaches)
        self._base_labels: list[np.ndarray] | None = None
        if checkpoint is not None:
            self.load_state(checkpoint)

    @torch.no_grad()
    def teach_from_base(self) -> bool:
        """Makes the loaded base's own confident labels the dense teacher, before any step,
        when its validation record says it beats the walker (``base_share`` > 0).

        Fine-tuning a validated base toward the walker's pseudo labels made it worse (PH2:
        zero-shot 0.79, a UNet member 0.865 → 0.555 after 20 steps on IMD132, walker 0.46):
        the walker is the weaker teacher there. The base's labels where it is confident
        (≥ ``rw_confidence``) teach instead; the walker's fill what the base is unsure of; the
        strokes always win. Per-image training only (a dataset's every slice would be
        predicted). Returns whether it took effect.
        """
        if self.base_share <= 0.0:
            return False
        keys = list(self.models)
        weights = member_weights(self.member_scores, keys) or {k: 1 / len(keys) for k in keys}
        labels = []
        for im in self._images:  # already at the working resolution
            probs = predict_models(
                self.models, im, self.device, 1.0, self.config.predict_batch_size
            )
            mean = sum(weights[k] * probs[k] for k in keys)
            lab = mean.argmax(axis=1).astype(np.int64)
            lab[mean.max(axis=1) < self.config.rw_confidence] = -1
            labels.append(lab)
        self._base_labels = labels
        self._rw = None
        return True

    def set_distributed(self, distributed: Distributed | None) -> None:
        """Trains as one of several processes: rank 0's weights now, averaged gradients from
        the next step on (each process holding its own shard of the images)."""
        self.distributed = distributed
        if distributed is not None:
            distributed.broadcast_weights(self.models.values())
            self._restart_average()

    def reseed(self, seed: int) -> None:
        """New generators for batches, augmentation and dropout (a resumed run should not
        replay the batches its first steps drew)."""
        torch.manual_seed(seed)
        self._rng = np.random.default_rng(seed)
        self._gen = torch.Generator().manual_seed(seed)
        self._bn_key = None

    def _make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose 'sgd' or 'adamw'")

    # ------------------------------------------------------------------ scribbles
    def _set_seeds(self, seeds: list[np.ndarray]) -> None:
        for s in seeds:
            if s.size and (s.max() >= self.num_classes or s.min() < IGNORE_INDEX):
                raise ValueError(
                    f"scribble class indices must lie in -1..{self.num_classes - 1}; got "
                    f"{int(s.min())}..{int(s.max())}"
                )
        natives = self._native_images or self._images
        if len(seeds) != len(self._images) or any(
            s.shape != (im.shape[0], *n.shape[-2:])
            for s, im, n in zip(seeds, self._images, natives)
        ):
            raise ValueError("the scribbles no longer match the image's shape")
        if not any((s >= 0).any() for s in seeds):
            raise ValueError("the scribbles have no labelled pixels — draw at least one stroke")
        # held-out strokes (training/holdout.py) of the previewed image: no network and no
        # teacher sees them; they measure the networks against the walker
        parts = [
            split_strokes(s, self.config.holdout_fraction, seed=self.config.seed)
            if i == self.preview
            else (s, np.full(s.shape, -1, dtype=np.int64))
            for i, s in enumerate(seeds)
        ]
        size = [im.shape[-2:] for im in self._images]
        resized = [
            resize_seeds(np.ascontiguousarray(t, dtype=np.int64), hw, self.num_classes)
            for (t, _), hw in zip(parts, size)
        ]
        held = [
            np.where(r >= 0, -1, resize_seeds(h, hw, self.num_classes))
            for r, (_, h), hw in zip(resized, parts, size)
        ]
        # slices that hold at least one stroke are the only ones worth sampling
        slices = [
            (i, z) for i, s in enumerate(resized) for z in range(s.shape[0]) if (s[z] >= 0).any()
        ]
        self._seeds, self._slices = resized, slices
        self._heldout = held
        self._native_heldout = [h for _, h in parts]
        self._native_seeds = seeds
        self._rw: list[np.ndarray] | None = None  # rebuilt lazily (cached per slice)
        self.ring: np.ndarray | None = None  # set with the teacher (ring_holdout)
        self._class_weights = None
        self._bn_key = None  # other strokes, other batches

    def update_scribbles(self, seeds: Sequence[np.ndarray]) -> None:
        """Replaces the scribbles; taken up before the next step (safe from any thread)."""
        with self._lock:
            self._pending_seeds = [np.array(s, dtype=np.int64, copy=True) for s in seeds]

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _teacher(self, i: int, z: int) -> tuple[np.ndarray, np.ndarray]:
        """The teaching walker's labels and top probability (h, w) on slice z of image i,
        seeded by the training strokes; recomputed only when that slice's strokes changed.

        Only the argmax and its probability are kept (3–5 bytes a pixel instead of 4 per
        class): a dataset's thousands of slices stay small in memory.
        """
        sd = self._seeds[i]
        key = digest(sd[z])
        cached = self._rw_cache.get((i, z))
        if cached is None or cached[0] != key:
            prob = random_walker_probabilities(
                self._images[i][z : z + 1],
                sd[z : z + 1],
                self.num_classes,
                beta=self.config.rw_beta,
            )[0]
            dtype = np.uint8 if self.num_classes <= 256 else np.int32
            labels, top, strokes = prob.argmax(axis=0).astype(dtype), prob.max(axis=0), None
            if self._native_images is not None:  # strokes can change (stroke_local)
                strokes = np.where(sd[z] >= 0, sd[z], self._heldout[i][z]).astype(np.int16)
                near = None
                if cached is not None and self.config.stroke_local:
                    near = reach_since(cached[3], strokes)
                if near is not None:
                    if self.config.stroke_far == "keep":
                        labels = np.where(near, labels, cached[1])
                        top = np.where(near, top, cached[2])
                    else:  # blend: agreeing pixels as sure as both, contested ones untaught
                        same = labels == cached[1]
                        top = np.where(near, top, np.where(same, (top + cached[2]) / 2, 0.0))
                        top = top.astype(np.float32)
            cached = (key, labels, top, strokes)
            self._rw_cache[(i, z)] = cached
        return cached[1], cached[2]

    def _random_walker(self) -> list[np.ndarray]:
        """The walker's dense target: its labels where it is confident, -1 elsewhere."""
        out = []
        floor = 1.0 / self.num_classes + 1e-6  # uniform: the walker knows nothing there
        self.ring = None
        for i, sd in enumerate(self._seeds):
            vol = np.full(sd.shape, -1, dtype=np.int64)
            ring = np.full(sd.shape, -1, dtype=np.int64) if i == self.preview else None
            classical = self._classical_teacher(i)
            for z in range(sd.shape[0]):
                labels, top = (
                    self._teacher(i, z) if classical is None else (classical[0][z], classical[1][z])
                )
                lab = labels.astype(np.int64)
                lab[(top < self.config.rw_confidence) | (top <= floor)] = -1
                if ring is not None and self.config.ring_holdout > 0:
                    near = sure_ring(lab, sd[z], self.config.ring_holdout)
                    ring[z][near] = lab[near]
                    lab[near] = -1
                if self._base_labels is not None and self._base_labels[i].shape == sd.shape:
                    base = self._base_labels[i][z]
                    lab = np.where(base >= 0, base, lab)  # the validated base teaches first
                vol[z] = np.where(sd[z] >= 0, sd[z], lab)
            if self.config.prior_on_teacher:
                vol = apply_shape_prior(vol, sd, self.shape_prior)
            if ring is not None and (ring >= 0).any():
                vol[ring >= 0] = -1  # the prior's rules may have relabelled it
                self.ring = ring
            out.append(vol)
        return out

    def walker_heldout(self) -> float | None:
        """Held-out stroke agreement of the walker seeded by the training strokes (the
        networks' comparison: the floor's walker sees every stroke)."""
        if self.preview is None:
            return None
        held = self._heldout[self.preview]
        zs = [z for z in range(held.shape[0]) if (held[z] >= 0).any()]
        if not zs:
            return None
        classical = self._classical_teacher(self.preview)
        if classical is not None:
            pred = classical[0][zs]
        else:
            pred = np.stack([self._teacher(self.preview, z)[0] for z in zs])
        return heldout_agreement(pred, held[zs])

    def classical_choice(self) -> ClassicalChoice | None:
        """Walker or walker + classifier for the previewed image (stroke_classifier.py),
        decided once per set of strokes on the held-out strokes; None where it does not apply
        (turned off, a dataset trainer, no previewed image)."""
        cfg = self.config
        i = self.preview
        if not cfg.classifier or i is None or self._native_images is None:
            return None
        seeds, held = self._native_seeds[i], self._native_heldout[i]
        key = digest(seeds)
        if self._classical is None or self._classical[0] != key:
            training = np.where(held >= 0, -1, seeds)
            choice = choose_for_image(
                self._native_images[i], training, held, self.num_classes, cfg.rw_beta, cfg.seed
            )
            self._classical = (key, choice)
        return self._classical[1]

    def _classical_teacher(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(labels, top probability) (Z, h, w) of the chosen classical method at the working
        resolution, seeded by the training strokes — None where the walker teaches."""
        if i != self.preview:
            return None
        choice = self.classical_choice()
        if choice is None or choice.method == CLASSICAL_WALKER or choice.training is None:
            return None
        prob = upsample_probabilities(choice.training, tuple(self._images[i].shape[-2:]))
        return prob.argmax(axis=1).astype(np.uint8), prob.max(axis=1)

    def _classical_floor_of(self, keys: list[bytes], seeds: np.ndarray) -> np.ndarray | None:
        """The chosen classical method's probabilities for slices of the previewed image
        (matched by content, so a one-slice preview gets its slice of the whole answer);
        None for any other image or where the walker alone is the answer."""
        choice = self.classical_choice()
        if choice is None or choice.method == CLASSICAL_WALKER:
            return None
        i = self.preview
        native, nseeds = self._native_images[i], self._native_seeds[i]
        if self._preview_keys is None:
            self._preview_keys = [digest(native[z]) for z in range(native.shape[0])]
        try:
            zs = [self._preview_keys.index(k) for k in keys]
        except ValueError:
            return None
        if not np.array_equal(nseeds[zs], seeds):
            return None
        key = (digest(nseeds), choice.method)
        if self._classical_floor is None or self._classical_floor[0] != key:
            walker = self._floor_walker(native, nseeds, classical=False)
            prob = classical_probabilities(
                choice.method,
                native,
                nseeds,
                self.num_classes,
                self.config.rw_beta,
                walker=walker,
                seed=self.config.seed,
            )
            self._classical_floor = (key, prob)
        return self._classical_floor[1][zs]

    def _floor_walker(
        self, image: np.ndarray, seeds: np.ndarray, classical: bool = True
    ) -> np.ndarray:
        """The floor's walker probabilities (Z, K, H, W) for any image and strokes, computed
        once per slice and strokes (the walker history); with ``stroke_local`` new only
        within reach of strokes added since (stroke_history.py). On the previewed image, the
        classical answer instead where walker + classifier was chosen (``classical``)."""
        out, keys = [], []
        self._floor_method = CLASSICAL_WALKER
        for z in range(image.shape[0]):
            key = digest(image[z])
            keys.append(key)
            prob = self.walker_history.shown(key, seeds[z])
            if prob is None:
                plain = floor_walker(
                    image[z : z + 1], seeds[z : z + 1], self.num_classes, self.config.rw_beta
                )[0]
                prob = self.walker_history.show(
                    key,
                    seeds[z],
                    plain,
                    local=self.config.stroke_local,
                    far=self.config.stroke_far,
                    old_weight=self.config.stroke_blend_old,
                )
            out.append(prob)
        if classical:
            chosen = self._classical_floor_of(keys, seeds)
            if chosen is not None:
                self._floor_method = self._classical[1].method
                return chosen
        return np.stack(out)

    def shown_walker(self, index: int = 0) -> np.ndarray:
        """The floor's walker (Z, K, H, W probabilities, native size) on training image
        ``index`` with its current strokes — stroke-local as the previews show it."""
        if self._native_images is None:
            raise ValueError("a dataset trainer keeps no native images to walk on")
        return self._floor_walker(self._native_images[index], self._native_seeds[index])

    # ------------------------------------------------------------------ batches
    def _crop(self, arr: np.ndarray, y0: int, x0: int, p: int, fill) -> np.ndarray:
        h, w = arr.shape[-2:]
        out = np.full(arr.shape[:-2] + (p, p), fill, dtype=arr.dtype)
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + p, h), min(x0 + p, w)
        out[..., ys - y0 : ye - y0, xs - x0 : xe - x0] = arr[..., ys:ye, xs:xe]
        return out

    def _whole_slices(self) -> bool:
        """Whole slices instead of crops: the patch covers every slice and all share one size."""
        p = self.config.patch_size
        shapes = {im.shape[-2:] for im in self._images}
        return len(shapes) == 1 and (p <= 0 or p >= max(next(iter(shapes))))

    def _sample_batch(self, use_rw: bool, with_heldout: bool = False):
        """(images, [scribbles, walker target (use_rw), held-out strokes (with_heldout)])."""
        cfg = self.config
        p = cfg.patch_size or cfg.max_side or 256  # crop size when slices differ in size
        imgs, segs, rws, helds = [], [], [], []
        if use_rw and self._rw is None:
            self._rw = self._random_walker()
        rw = self._rw if use_rw else None
        whole = self._whole_slices()
        for _ in range(cfg.batch_size):
            i, z = self._slices[int(self._rng.integers(len(self._slices)))]
            img, sd = self._images[i][z], self._seeds[i][z]
            if whole:
                # exactly what prediction sees (same padding, same token/window grid)
                imgs.append(img)
                segs.append(sd)
                if rw is not None:
                    rws.append(rw[i][z])
                if with_heldout:
                    helds.append(self._heldout[i][z])
                continue
            h, w = sd.shape
            # centre the crop on a random stroke pixel (jittered) so every crop teaches something
            ys, xs = np.nonzero(sd >= 0)
            k = int(self._rng.integers(len(ys)))
            cy = ys[k] + int(self._rng.integers(-p // 3, p // 3 + 1))
            cx = xs[k] + int(self._rng.integers(-p // 3, p // 3 + 1))
            y0 = int(np.clip(cy - p // 2, min(0, h - p), max(0, h - p)))
            x0 = int(np.clip(cx - p // 2, min(0, w - p), max(0, w - p)))
            # a slice smaller than the crop is seen as prediction sees it: extended at its
            # bottom and right by reflection (PadToMultiple), not framed by zeros — zero
            # frames shift the token networks' grids (Dice 0.2 zero-shot on new patients)
            y0, x0 = max(y0, 0), max(x0, 0)
            imgs.append(self._crop(_reflect_to(img, p), y0, x0, p, 0.0))
            segs.append(self._crop(sd, y0, x0, p, IGNORE_INDEX))
            if rw is not None:
                rws.append(self._crop(rw[i][z], y0, x0, p, IGNORE_INDEX))
            if with_heldout:
                helds.append(self._crop(self._heldout[i][z], y0, x0, p, IGNORE_INDEX))
        x = torch.from_numpy(np.stack(imgs))
        labels = [torch.from_numpy(np.stack(segs))]
        if rw is not None:
            labels.append(torch.from_numpy(np.stack(rws)))
        if with_heldout:
            labels.append(torch.from_numpy(np.stack(helds)))
        if cfg.augment:
            x, labels = augment_batch(x, labels, self._gen)
        return x.to(self.device), [lab.to(self.device) for lab in labels]

    # ------------------------------------------------------------------ training
    def _step(self, progress: float | None) -> tuple[dict[str, float], float]:
        cfg = self.config
        lr = poly_lr(cfg.lr, progress or 0.0, cfg.poly_power)
        use_rw = cfg.rw_weight > 0
        has_heldout = any((h >= 0).any() for h in self._heldout)
        x, labels = self._sample_batch(use_rw, with_heldout=has_heldout)
        scribble = labels[0]
        rw = labels[1] if use_rw else None
        heldout = labels[-1] if has_heldout else None
        ramp = 1.0
        if cfg.pseudo_rampup > 0 and progress is not None:
            ramp = float(np.exp(-5.0 * (1.0 - min(progress / cfg.pseudo_rampup, 1.0)) ** 2))
        for m in self.models.values():
            m.train()
        logits = {k: m(x) for k, m in self.models.items()}
        probs = [torch.softmax(lg, dim=1) for lg in logits.values()]
        weights = random_simplex_weights(len(probs), self._gen)
        pseudo = ensemble_pseudo_label(probs, weights)
        # rotations leave borders without image content: keep them out of the pseudo loss too
        pseudo = torch.where(scribble == IGNORE_INDEX, pseudo, scribble)
        losses = {}
        total = 0.0
        w_scr = w_rw = None
        if cfg.balance_classes:
            if self._class_weights is None:
                self._class_weights = (
                    balanced_class_weights(self._seeds, self.num_classes).to(self.device),
                    balanced_class_weights(
                        self._rw, self.num_classes, power=cfg.rw_balance_power
                    ).to(self.device)
                    if self._rw is not None
                    else None,
                )
            w_scr, w_rw = self._class_weights
        for k, lg in logits.items():
            loss_ce = partial_cross_entropy(lg, scribble, w_scr)
            loss = loss_ce
            if rw is not None:
                loss = loss + cfg.rw_weight * partial_cross_entropy(lg, rw, w_rw)
                if cfg.rw_dice_weight > 0:
                    loss = loss + cfg.rw_dice_weight * self._dice(lg, rw)
            if len(self.models) > 1 and cfg.pseudo_weight > 0:
                loss = loss + cfg.pseudo_weight * ramp * self._dice(lg, pseudo)
            losses[k] = float(loss.detach())
            total = total + loss
        self._update_scores(logits, rw if rw is not None else scribble)
        if heldout is not None:
            self._update_heldout(logits, heldout)
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
        total.backward()
        if self.distributed is not None:
            self.distributed.average_gradients(self.models.values())
        for opt in self.optimizers.values():
            opt.step()
        if self._average is not None:
            self._average.update()
        losses["total"] = float(total.detach())
        return losses, lr

    @torch.no_grad()
    def _update_scores(self, logits: dict[str, torch.Tensor], target: torch.Tensor) -> None:
        """Mean Dice of each member's argmax against ``target`` on its labelled pixels.

        The target is the confident random-walker labels (99.5 % right on ACDC, where they
        cover ~96 % of a slice) or, without the walker, the scribbles: a label-free estimate of
        which member is ahead, measured on the batch the step trains on anyway.
        """
        valid = target >= 0
        if not bool(valid.any()):
            return
        classes = torch.arange(self.num_classes, device=target.device).view(1, -1, 1, 1)
        truth = (target.unsqueeze(1) == classes) & valid.unsqueeze(1)  # (B, K, H, W)
        truth_count = truth.sum(dim=(0, 2, 3))
        present = truth_count > 0
        for k, lg in logits.items():
            pred = (lg.argmax(dim=1, keepdim=True) == classes) & valid.unsqueeze(1)
            inter = (pred & truth).sum(dim=(0, 2, 3))
            dice = 2.0 * inter[present] / (pred.sum(dim=(0, 2, 3)) + truth_count)[present]
            score = float(dice.float().mean())
            old = self.member_scores.get(k)
            self.member_scores[k] = (
                score if old is None else SCORE_MOMENTUM * old + (1 - SCORE_MOMENTUM) * score
            )

    @torch.no_grad()
    def _update_heldout(self, logits: dict[str, torch.Tensor], heldout: torch.Tensor) -> None:
        """Running held-out stroke agreement of each member and of the networks' ensemble."""
        if not bool((heldout >= 0).any()):
            return
        truth = heldout.cpu().numpy()
        probs = {k: torch.softmax(lg.float(), dim=1) for k, lg in logits.items()}
        weights = self.ensemble_weights() or {k: 1.0 / len(probs) for k in probs}
        mix = sum(weights[k] * p for k, p in probs.items())
        preds = {k: p.argmax(dim=1) for k, p in probs.items()}
        preds["networks"] = mix.argmax(dim=1)
        for k, pred in preds.items():
            score = heldout_agreement(pred.cpu().numpy(), truth)
            old = self.heldout_scores.get(k)
            self.heldout_scores[k] = (
                score if old is None else SCORE_MOMENTUM * old + (1 - SCORE_MOMENTUM) * score
            )

    def member_score(self, key: str) -> float | None:
        """A member's label-free score: its agreement with the sure walker pixels and with the
        held-out strokes, averaged (whichever exist)."""
        parts = [d[key] for d in (self.member_scores, self.heldout_scores) if key in d]
        return float(np.mean(parts)) if parts else None

    def ensemble_weights(self) -> dict[str, float] | None:
        """The members' weights for an image without strokes (None: equal)."""
        scores = {k: v for k in self.keys if (v := self.member_score(k)) is not None}
        return member_weights(scores, self.keys)

    def steps(
        self,
        first_preview_slices: Sequence[int] | None = None,
        started: float | None = None,
        already: tuple[int, float] = (0, 0.0),
    ) -> Iterator[TrainerUpdate]:
        """Trains until the budget is spent or a stop is requested, yielding after each step.

        ``first_preview_slices``: the first previews cover only these slices of the preview
        image (the walker's at once, the networks' after the first step, with a quicker
        BatchNorm re-estimation), so that a GUI shows the slice the user looks at within
        seconds; later previews and the final one cover the whole image. ``started``: the
        ``time.perf_counter()`` at which the user's time budget began (reading, building the
        networks and the walker count in it); the final prediction is kept inside it too.
        ``already``: (steps, seconds) of this budget spent before (a resumed run): the budget
        and the learning-rate schedule continue from there instead of starting again.
        """
        cfg = self.config
        start = time.perf_counter() if started is None else float(started)
        self._step_seconds = []
        plateau = _Plateau()
        threads = self._thread_tuner()
        try:
            yield from self._steps(cfg, start, first_preview_slices, already, threads, plateau)
        finally:
            if threads is not None:
                threads.restore()

    def _thread_tuner(self) -> ThreadTuner | None:
        """On a CPU, this process alone: the thread count that steps fastest now.

        By default only under a time budget: step budgets keep torch's count, so that their
        results do not depend on the machine's load (``adapt_threads=True`` tunes them too).
        """
        cfg = self.config
        wanted = cfg.adapt_threads is True or (cfg.adapt_threads is None and bool(cfg.seconds))
        if not wanted or self.device.type != "cpu":
            return None
        if self.distributed is not None or torch.get_num_threads() < 2:
            return None
        return ThreadTuner(torch.get_num_threads())

    def _steps(self, cfg, start, first_preview_slices, already, threads, plateau):
        last_preview = None
        done_here = 0
        lr = cfg.lr
        losses: dict[str, float] = {}
        seed_message = ""
        if self.preview is not None and cfg.floor and cfg.preview_every_seconds is not None:
            # the walker's answer first: seconds before any network has learnt anything
            pred, picked = self._walker_preview(first_preview_slices)
            yield self._update(start, done_here, lr, losses, prediction=pred, slices=picked)
        if self.preview is not None and cfg.floor:
            # the whole image's walker now, inside the budget, not in the final prediction
            self._floor_walker(self._native_images[self.preview], self._native_seeds[self.preview])
        while True:
            with self._lock:
                pending, self._pending_seeds = self._pending_seeds, None
            if pending is not None:
                try:
                    self._set_seeds(pending)
                except ValueError as e:  # keep training on the previous scribbles
                    seed_message = f"new scribbles ignored: {e}"
                else:
                    seed_message = ""
                plateau = _Plateau()  # new strokes: new held-out strokes, a new curve
            elapsed = time.perf_counter() - start
            progress = cfg.budget_progress(
                already[0] + done_here, already[1] + elapsed + self._reserve()
            )
            stop = (
                self._stop.is_set()
                or (progress is not None and progress >= 1.0)
                or (cfg.until_plateau and plateau.reached(done_here))
            )
            if self.distributed is not None:  # every rank: rank 0's schedule, the same stop
                progress, stop = self.distributed.agree(progress, stop)
            if stop:
                break
            if threads is not None:
                threads.before_step()
            t0 = time.perf_counter()
            losses, lr = self._step(progress)
            took = time.perf_counter() - t0
            if threads is not None:
                threads.after_step(took)
            self._step_seconds = (self._step_seconds + [took])[-5:]
            self.iteration += 1
            done_here += 1
            plateau.record(done_here, self._plateau_score())
            update = self._update(start, done_here, lr, losses, message=seed_message)
            seed_message = ""
            elapsed = update.elapsed
            due = (
                cfg.preview_every_seconds is not None
                and self.preview is not None
                and (
                    (last_preview is None and done_here >= cfg.preview_first_after_steps)
                    or (
                        last_preview is not None
                        and elapsed - last_preview >= cfg.preview_every_seconds
                    )
                )
            )
            if due:
                update.prediction, update.prediction_slices = self._preview_prediction(
                    first_preview_slices if last_preview is None else None
                )
                last_preview = time.perf_counter() - start
            yield update
        stopped = self._stop.is_set()
        final = self._update(start, done_here, lr, losses, done=True, stopped=stopped)
        final.total_iterations = None
        final.message = "stopped" if stopped else "finished"
        if self.preview is not None and not stopped:
            final.prediction = self._timed_predict(self.preview)
            final.elapsed = time.perf_counter() - start
        self._stop.clear()  # a later steps() call resumes; a stop asked before this one counted
        yield final

    def _update(self, start, done_here, lr, losses, prediction=None, slices=None, **kw):
        elapsed = time.perf_counter() - start
        cfg = self.config
        return TrainerUpdate(
            iteration=self.iteration,
            total_iterations=(self.iteration - done_here + cfg.iterations)
            if cfg.iterations
            else None,
            elapsed=elapsed,
            lr=lr,
            losses=dict(losses),
            iterations_per_second=done_here / max(elapsed, 1e-9),
            prediction=prediction,
            prediction_slices=slices,
            heldout=dict(self.heldout_scores) or None,
            **kw,
        )

    def _reserve(self) -> float:
        """Seconds a time budget keeps for the next step and the final prediction.

        The final prediction re-estimates BatchNorm (forward passes of training batches) and
        predicts every slice; a forward pass costs about a third of a step. Measured whole-image
        predictions replace the estimate when they took longer (a busy machine).
        """
        if not self.config.seconds or not self._step_seconds:
            return 0.0
        step = float(np.median(self._step_seconds))
        if self.preview is None:
            return step
        slices = self._native_images[self.preview].shape[0]
        batches = -(-slices // self.config.predict_batch_size)
        final = step / 3.0 * (BN_RECALIBRATE_BATCHES + batches)
        if self._predict_seconds is not None:
            final = max(final, self._predict_seconds)
        return step + FINAL_RESERVE_FACTOR * final

    def _plateau_score(self) -> float | None:
        """What ``until_plateau`` watches: the networks' held-out agreement (else their mean
        agreement with the sure walker pixels)."""
        if "networks" in self.heldout_scores:
            return self.heldout_scores["networks"]
        return float(np.mean(list(self.member_scores.values()))) if self.member_scores else None

    def run(self) -> TrainerUpdate:
        """Runs :meth:`steps` to the end and returns the final update."""
        final = None
        for update in self.steps():
            final = update
        return final

    # ------------------------------------------------------------------ inference
    def _picked(self, slices: Sequence[int] | None) -> list[int] | None:
        """The valid ``slices`` of the preview image, or None for all of them."""
        n = self._native_images[self.preview].shape[0]
        picked = sorted({int(z) for z in slices or () if 0 <= int(z) < n})
        return None if not picked or len(picked) == n else picked

    def _walker_preview(
        self, slices: Sequence[int] | None
    ) -> tuple[Prediction, tuple[int, ...] | None]:
        """The floor alone (the walker on every stroke), for the first preview."""
        sel = self._picked(slices)
        image = self._native_images[self.preview]
        seeds = self._native_seeds[self.preview]
        if sel is not None:
            image, seeds = image[sel], seeds[sel]
        walker = self._floor_walker(image, seeds, classical=False)  # seconds, not more
        ensemble = apply_shape_prior(
            walker.argmax(axis=1).astype(np.uint8), seeds, self.shape_prior
        )
        pred = Prediction(
            per_model={},
            ensemble=ensemble,
            disagreement=np.zeros(ensemble.shape, np.float32),
            report=FloorReport(network_share=0.0),
        )
        return pred, None if sel is None else tuple(sel)

    def _timed_predict(self, index: int, bn_batches: int = BN_RECALIBRATE_BATCHES) -> Prediction:
        """Predicts a whole training image with its strokes; remembers how long it took."""
        t0 = time.perf_counter()
        pred = self.predict(
            self._native_images[index],
            bn_batches=bn_batches,
            seeds=self._native_seeds[index],
            heldout=self._native_heldout[index],
        )
        if bn_batches == BN_RECALIBRATE_BATCHES:
            self._predict_seconds = time.perf_counter() - t0
        return pred

    def _preview_prediction(
        self, slices: Sequence[int] | None
    ) -> tuple[Prediction, tuple[int, ...] | None]:
        """A live preview: the whole preview image, or only ``slices`` of it (quicker)."""
        sel = self._picked(slices)
        if sel is None:
            return self._timed_predict(self.preview, PREVIEW_BN_BATCHES), None
        pred = self.predict(
            self._native_images[self.preview][sel],
            bn_batches=PREVIEW_BN_BATCHES,
            seeds=self._native_seeds[self.preview][sel],
            heldout=self._native_heldout[self.preview][sel],
        )
        return pred, tuple(sel)

    def strokes_of(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(strokes, held-out strokes) (Z, H, W indices) of ``image`` if it is being trained on.

        Lets a caller that only holds the image (the widget's Predict, the CLI) get the same
        floor and shape-prior stroke rules as the live previews; None for any other image.
        """
        for im, sd, held in zip(
            self._native_images or (), self._native_seeds, self._native_heldout
        ):
            if im.shape == image.shape and np.array_equal(im, image):
                return sd, held
        return None

    def scribbles_of(self, image: np.ndarray) -> np.ndarray | None:
        """The current strokes of ``image`` if it is being trained on (see :meth:`strokes_of`)."""
        found = self.strokes_of(image)
        return None if found is None else found[0]

    @torch.no_grad()
    def predict(
        self,
        image: np.ndarray,
        with_probabilities: bool = False,
        bn_batches: int = BN_RECALIBRATE_BATCHES,
        seeds: np.ndarray | None = None,
        heldout: np.ndarray | None = None,
        decision: FloorReport | None = None,
    ) -> Prediction:
        """Predicts a (Z, C, H, W) image with every network and combines them with the floor.

        The image is taken at its native size and brought to the training's working resolution
        (the same factor, so structures keep the apparent size the networks learnt).
        ``bn_batches``: training batches for the BatchNorm re-estimation of short runs.
        ``seeds``: the image's strokes (Z, H, W indices): with them the walker on those strokes
        is a member of the ensemble until the networks earn a share (training/floor.py), and
        the shape prior's stroke rules apply. ``heldout``: held-out strokes, for the report.
        ``decision``: the floor's weights and share decided on the whole image, for a part of
        it (one slice), so that the part is predicted as in the whole.
        Without strokes the networks alone answer, weighted by their running scores.
        """
        with self._predicting_weights():
            if self.iteration < BN_RECALIBRATE_BELOW:
                self._recalibrate_batchnorm(bn_batches)
            probs = predict_models(
                self.models, image, self.device, self.scale, self.config.predict_batch_size
            )
        has_strokes = seeds is not None and bool((np.asarray(seeds) >= 0).any())
        walker = self._floor_walker(image, seeds) if self.config.floor and has_strokes else None
        report = None
        weights, share = self.ensemble_weights(), 1.0
        if walker is not None and decision is not None:
            report, weights, share = decision, decision.weights, decision.network_share
        elif walker is not None or (heldout is not None and (heldout >= 0).any()):
            report = assess(probs, walker, heldout, self.walker_heldout(), base=self.base_share)
            weights, share = report.weights, report.network_share
        pred = combine_predictions(
            probs,
            with_probabilities,
            weights,
            self.shape_prior,
            seeds,
            walker=walker,
            network_share=share,
        )
        if report is not None and walker is not None:
            # a copy: a decision taken on the whole image is shared by its slices' previews
            report = replace(
                report,
                changed=pred.walker_changed,
                overruled=pred.walker_overruled,
                classical=self._floor_method,
            )
        pred.report = report
        return pred

    def _restart_average(self) -> None:
        """Starts the weight average (``ema_decay``) from the networks' current weights."""
        decay = self.config.ema_decay or 0.0
        self._average = WeightAverage(self.models, decay) if decay > 0 else None
        self._averaged = False

    @contextmanager
    def _predicting_weights(self) -> Iterator[None]:
        """The networks carry the weights that predict: the average when there is one."""
        if self._average is None:
            yield
            return
        with self._average.applied():
            self._averaged = True
            try:
                yield
            finally:
                self._averaged = False

    @torch.no_grad()
    def _recalibrate_batchnorm(self, batches: int = BN_RECALIBRATE_BATCHES) -> None:
        """Re-estimates BatchNorm statistics from training batches before predicting.

        After a few hundred steps the running averages (momentum 0.1) still remember the
        initial weights; eval-mode predictions then collapse to one class. A handful of
        forward passes with a cumulative average gives statistics of the current weights.
        """
        bns = [
            mod
            for m in self.models.values()
            for mod in m.modules()
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.track_running_stats
        ]
        if not bns:
            return
        # the batches are drawn with restored generators: the same step and the same batches
        # give the same statistics, so predicting many images between two steps (a dataset's
        # validation files) re-estimates them once
        key = (self.iteration, batches, self.config.batch_size, self._averaged)
        if self._bn_key == key:
            return
        saved = [(b, b.momentum) for b in bns]
        modes = {k: m.training for k, m in self.models.items()}
        for b in bns:
            b.reset_running_stats()
            b.momentum = None
        for m in self.models.values():
            m.train()
        state = self._rng.bit_generator.state  # keep training batches reproducible
        gstate = self._gen.get_state()
        try:
            # dropout draws from torch's global generator: fork it so that predicting twice
            # gives the same answer and the training steps after it stay reproducible
            with torch.random.fork_rng(devices=[]):
                for _ in range(batches):
                    x, _ = self._sample_batch(False)
                    for m in self.models.values():
                        m(x)
        finally:
            self._rng.bit_generator.state = state
            self._gen.set_state(gstate)
            for b, mom in saved:
                b.momentum = mom
            for k, m in self.models.items():
                m.train(modes[k])
        self._bn_key = key

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Checkpoint:
        """The trio as a :class:`~napari_medseg.checkpoints.Checkpoint` (save it to keep it).

        A short run's BatchNorm statistics are re-estimated first (as :meth:`predict` does):
        the running averages still remember the initial weights, and a loaded checkpoint
        predicts with the statistics it holds — without this, a trio saved without a
        prediction just before (a dataset run, the ACDC protocol) predicted worse once loaded
        than its trainer did.
        """
        if self.iteration < BN_RECALIBRATE_BELOW:
            self._recalibrate_batchnorm()
        return Checkpoint(
            config=self.config.to_dict(),
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            iteration=self.iteration,
            working_scale=self.scale,
            # what weights the members on an image without strokes (see member_score)
            member_scores={k: v for k in self.keys if (v := self.member_score(k)) is not None},
            slots=[
                SlotState(
                    key=k,
                    name=n,
                    preset=self.config.preset,
                    state_dict={
                        p: t.detach().cpu() for p, t in self.models[k].state_dict().items()
                    },
                    optimizer=self.optimizers[k].state_dict(),
                )
                for k, n in zip(self.keys, self.config.models)
            ],
            metadata=self.metadata,
        )

    def load_state(self, state: Checkpoint) -> None:
        """Loads a saved trio (same architectures and class count) to continue or fine-tune."""
        state.check_compatible(
            models=self.config.models,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            preset=self.config.preset,
        )
        for slot, key in zip(state.slots, self.keys):
            load_weights(self.models[key], slot, state.source)
            if slot.optimizer:
                try:
                    self.optimizers[key].load_state_dict(slot.optimizer)
                except (ValueError, KeyError):
                    pass  # optimiser layout changed: momentum restarts, weights are kept
        self.iteration = int(state.iteration)
        self._bn_key = None
        self._restart_average()
        scores = state.member_scores or {}
        self.member_scores = {k: float(scores[k]) for k in self.keys if k in scores}
        for k, v in state.metadata.items():
            self.metadata.setdefault(k, v)


def _reflect_to(image: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) extended at the bottom and right to at least ``size`` as the networks' own
    padding does (reflect; replicate where the image is too small to reflect)."""
    ph, pw = max(0, size - image.shape[-2]), max(0, size - image.shape[-1])
    if not ph and not pw:
        return image
    mode = "reflect" if ph < image.shape[-2] and pw < image.shape[-1] else "edge"
    return np.pad(image, ((0, 0), (0, ph), (0, pw)), mode=mode)


class _Plateau:
    """Tracks the best score and the step it came at, for ``until_plateau``."""

    def __init__(self) -> None:
        self.best: float | None = None
        self.best_step = 0

    def record(self, step: int, score: float | None) -> None:
        if score is not None and (self.best is None or score > self.best + PLATEAU_DELTA):
            self.best, self.best_step = score, step

    def reached(self, step: int) -> bool:
        patience = max(PLATEAU_MIN_STEPS, int(PLATEAU_SHARE * step))
        return self.best is not None and step - self.best_step >= patience


def sure_ring(labels: np.ndarray, seeds: np.ndarray, width: int) -> np.ndarray:
    """The sure teacher pixels (``labels`` ≥ 0, not strokes) within ``width`` pixels of an
    unsure one (-1): where the walker's sure part meets the band it hesitates in (H, W bool).
    Empty where the walker is sure everywhere or nowhere."""
    from scipy.ndimage import binary_dilation

    unsure = labels < 0
    if not unsure.any() or unsure.all():
        return np.zeros(labels.shape, dtype=bool)
    return binary_dilation(unsure, iterations=width) & ~unsure & (seeds < 0)
