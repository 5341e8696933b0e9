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

import hashlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..checkpoints import Checkpoint, SlotState
from ..device import resolve_device
from ..inference import Prediction, combine_predictions, member_weights, predict_models
from ..models import create_model
from ..presets import default_preset, recipe
from ..resolution import resize_image, resize_seeds, scaled_size, working_scale
from ..shape_prior import ShapePrior, apply_shape_prior
from ..slots import slot_keys
from .augmentation import augment_batch
from .losses import (
    IGNORE_INDEX,
    PseudoLabelDice,
    balanced_class_weights,
    partial_cross_entropy,
)
from .pseudo_labels import ensemble_pseudo_label, random_simplex_weights, random_walker_labels
from .schedule import poly_lr

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

    def resolve(self, preset: str) -> None:
        """Fills the fields left ``None`` with the preset's recipe (unknown presets are errors)."""
        for k, v in recipe(preset).items():
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


class TriNetTrainer:
    """Trains networks that supervise each other from scribbles.

    images: list of (Z, C, H, W) float32 arrays (already normalised; one entry for the
    interactive protocol, many for the dataset protocol). seeds: matching (Z, H, W) int arrays
    of class indices with ``-1`` where nothing is scribbled. ``preview`` selects which entry the
    live predictions show.
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
    ):
        self.config = config or TrainConfig()
        cfg = self.config
        if len(images) != len(seeds) or not images:
            raise ValueError("give one seed array per image (and at least one image)")
        self.device = resolve_device(cfg.device)
        cfg.resolve(cfg.preset or default_preset(self.device))
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
        largest = max(max(im.shape[-2:]) for im in images)
        self.scale = working_scale((largest, largest), cfg.max_side)
        self._native_images = [np.ascontiguousarray(im, dtype=np.float32) for im in images]
        self._images = [
            resize_image(im, scaled_size(im.shape[-2:], self.scale)) for im in self._native_images
        ]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pending_seeds: list[np.ndarray] | None = None
        self._rw_cache: dict[tuple[int, int], tuple[bytes, np.ndarray]] = {}
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
        self.iteration = 0
        # how well each member fits the trustworthy part of its target: the ensemble weights
        self.member_scores: dict[str, float] = {}
        self._dice = PseudoLabelDice(self.num_classes)
        if checkpoint is not None:
            self.load_state(checkpoint)

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
        if len(seeds) != len(self._images) or any(
            s.shape != (im.shape[0], *n.shape[-2:])
            for s, im, n in zip(seeds, self._images, self._native_images)
        ):
            raise ValueError("the scribbles no longer match the image's shape")
        resized = [
            resize_seeds(np.ascontiguousarray(s, dtype=np.int64), im.shape[-2:], self.num_classes)
            for s, im in zip(seeds, self._images)
        ]
        # slices that hold at least one stroke are the only ones worth sampling
        slices = [
            (i, z) for i, s in enumerate(resized) for z in range(s.shape[0]) if (s[z] >= 0).any()
        ]
        if not slices:
            raise ValueError("the scribbles have no labelled pixels — draw at least one stroke")
        self._seeds, self._slices = resized, slices
        self._native_seeds = seeds
        self._rw: list[np.ndarray] | None = None  # rebuilt lazily (cached per slice)
        self._class_weights = None

    def update_scribbles(self, seeds: Sequence[np.ndarray]) -> None:
        """Replaces the scribbles; taken up before the next step (safe from any thread)."""
        with self._lock:
            self._pending_seeds = [np.array(s, dtype=np.int64, copy=True) for s in seeds]

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _random_walker(self) -> list[np.ndarray]:
        """Random-walker labels, recomputed only for slices whose scribbles changed."""
        out = []
        for i, (im, sd) in enumerate(zip(self._images, self._seeds)):
            vol = np.full(sd.shape, -1, dtype=np.int64)
            for z in range(sd.shape[0]):
                key = hashlib.blake2b(sd[z].tobytes(), digest_size=16).digest()
                cached = self._rw_cache.get((i, z))
                if cached is None or cached[0] != key:
                    lab = random_walker_labels(
                        im[z : z + 1],
                        sd[z : z + 1],
                        self.num_classes,
                        beta=self.config.rw_beta,
                        min_confidence=self.config.rw_confidence,
                    )[0]
                    cached = self._rw_cache[(i, z)] = (key, lab)
                vol[z] = cached[1]
            if self.config.prior_on_teacher:
                vol = apply_shape_prior(vol, sd, self.shape_prior)
            out.append(vol)
        return out

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

    def _sample_batch(self, use_rw: bool):
        cfg = self.config
        p = cfg.patch_size or cfg.max_side or 256  # crop size when slices differ in size
        imgs, segs, rws = [], [], []
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
                continue
            h, w = sd.shape
            # centre the crop on a random stroke pixel (jittered) so every crop teaches something
            ys, xs = np.nonzero(sd >= 0)
            k = int(self._rng.integers(len(ys)))
            cy = ys[k] + int(self._rng.integers(-p // 3, p // 3 + 1))
            cx = xs[k] + int(self._rng.integers(-p // 3, p // 3 + 1))
            y0 = int(np.clip(cy - p // 2, min(0, h - p), max(0, h - p)))
            x0 = int(np.clip(cx - p // 2, min(0, w - p), max(0, w - p)))
            if h < p:
                y0 = -((p - h) // 2)
            if w < p:
                x0 = -((p - w) // 2)
            imgs.append(self._crop(img, y0, x0, p, 0.0))
            segs.append(self._crop(sd, y0, x0, p, IGNORE_INDEX))
            if rw is not None:
                rws.append(self._crop(rw[i][z], y0, x0, p, IGNORE_INDEX))
        x = torch.from_numpy(np.stack(imgs))
        labels = [torch.from_numpy(np.stack(segs))]
        if rw is not None:
            labels.append(torch.from_numpy(np.stack(rws)))
        if cfg.augment:
            x, labels = augment_batch(x, labels, self._gen)
        return x.to(self.device), [lab.to(self.device) for lab in labels]

    # ------------------------------------------------------------------ training
    def _step(self, progress: float | None) -> tuple[dict[str, float], float]:
        cfg = self.config
        lr = poly_lr(cfg.lr, progress or 0.0, cfg.poly_power)
        use_rw = cfg.rw_weight > 0
        x, labels = self._sample_batch(use_rw)
        scribble = labels[0]
        rw = labels[1] if use_rw else None
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
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in self.optimizers.values():
            opt.step()
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

    def ensemble_weights(self) -> dict[str, float] | None:
        """The members' weights in the ensemble (None: equal)."""
        return member_weights(self.member_scores, self.keys)

    def steps(self, first_preview_slices: Sequence[int] | None = None) -> Iterator[TrainerUpdate]:
        """Trains until the budget is spent or a stop is requested, yielding after each step.

        ``first_preview_slices``: the first preview predicts only these slices of the preview
        image, after a quicker BatchNorm re-estimation, so that a GUI shows the slice the user
        looks at within seconds; later previews and the final one cover the whole image.
        """
        cfg = self.config
        start = time.perf_counter()
        last_preview = None
        done_here = 0
        lr = cfg.lr
        losses: dict[str, float] = {}
        seed_message = ""
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
            elapsed = time.perf_counter() - start
            progress = cfg.budget_progress(done_here, elapsed)
            if self._stop.is_set() or (progress is not None and progress >= 1.0):
                break
            losses, lr = self._step(progress)
            self.iteration += 1
            done_here += 1
            elapsed = time.perf_counter() - start
            update = TrainerUpdate(
                iteration=self.iteration,
                total_iterations=(self.iteration - done_here + cfg.iterations)
                if cfg.iterations
                else None,
                elapsed=elapsed,
                lr=lr,
                losses=losses,
                iterations_per_second=done_here / max(elapsed, 1e-9),
                message=seed_message,
            )
            seed_message = ""
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
        elapsed = time.perf_counter() - start
        final = TrainerUpdate(
            iteration=self.iteration,
            total_iterations=None,
            elapsed=elapsed,
            lr=lr,
            losses=losses,
            iterations_per_second=done_here / max(elapsed, 1e-9),
            done=True,
            stopped=self._stop.is_set(),
            message="stopped" if self._stop.is_set() else "finished",
        )
        if self.preview is not None and not self._stop.is_set():
            final.prediction = self.predict(
                self._native_images[self.preview], seeds=self._native_seeds[self.preview]
            )
        self._stop.clear()  # a later steps() call resumes; a stop asked before this one counted
        yield final

    def run(self) -> TrainerUpdate:
        """Runs :meth:`steps` to the end and returns the final update."""
        final = None
        for update in self.steps():
            final = update
        return final

    # ------------------------------------------------------------------ inference
    def _preview_prediction(
        self, slices: Sequence[int] | None
    ) -> tuple[Prediction, tuple[int, ...] | None]:
        """A live preview: the whole preview image, or only ``slices`` of it (quicker)."""
        image = self._native_images[self.preview]
        seeds = self._native_seeds[self.preview]
        picked = tuple(sorted({int(z) for z in slices or () if 0 <= int(z) < image.shape[0]}))
        if not picked or len(picked) == image.shape[0]:
            return self.predict(image, bn_batches=PREVIEW_BN_BATCHES, seeds=seeds), None
        sel = list(picked)
        pred = self.predict(image[sel], bn_batches=PREVIEW_BN_BATCHES, seeds=seeds[sel])
        return pred, picked

    def scribbles_of(self, image: np.ndarray) -> np.ndarray | None:
        """The current scribbles (Z, H, W indices) of ``image`` if it is one being trained on.

        Lets a caller that only holds the image (the widget's Predict) get the same stroke
        rules of the shape prior as the live previews; None for any other image.
        """
        for im, sd in zip(self._native_images, self._native_seeds):
            if im.shape == image.shape and np.array_equal(im, image):
                return sd
        return None

    @torch.no_grad()
    def predict(
        self,
        image: np.ndarray,
        with_probabilities: bool = False,
        bn_batches: int = BN_RECALIBRATE_BATCHES,
        seeds: np.ndarray | None = None,
    ) -> Prediction:
        """Predicts a (Z, C, H, W) image with every network; ensemble = mean probability.

        The image is taken at its native size and brought to the training's working resolution
        (the same factor, so structures keep the apparent size the networks learnt).
        ``bn_batches``: training batches for the BatchNorm re-estimation of short runs.
        ``seeds``: the image's scribbles (Z, H, W), for the shape prior's rules that need them.
        """
        if self.iteration < BN_RECALIBRATE_BELOW:
            self._recalibrate_batchnorm(bn_batches)
        probs = predict_models(
            self.models, image, self.device, self.scale, self.config.predict_batch_size
        )
        return combine_predictions(
            probs, with_probabilities, self.ensemble_weights(), self.shape_prior, seeds
        )

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

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Checkpoint:
        """The trio as a :class:`~napari_medseg.checkpoints.Checkpoint` (save it to keep it)."""
        return Checkpoint(
            config=self.config.to_dict(),
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            iteration=self.iteration,
            working_scale=self.scale,
            member_scores=dict(self.member_scores),
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
            self.models[key].load_state_dict(slot.state_dict)
            if slot.optimizer:
                try:
                    self.optimizers[key].load_state_dict(slot.optimizer)
                except (ValueError, KeyError):
                    pass  # optimiser layout changed: momentum restarts, weights are kept
        self.iteration = int(state.iteration)
        scores = state.member_scores or {}
        self.member_scores = {k: float(scores[k]) for k in self.keys if k in scores}
        for k, v in state.metadata.items():
            self.metadata.setdefault(k, v)
