"""One workflow for every surface: validate → prepare → train → predict → user values → save.

The napari session, every CLI command and the demo drive a trio only through
:class:`Workflow`. It holds the user's :class:`Task` (class values and names, the unlabelled
value, the image kind and spacing) and the trio — a trainer being trained, or a saved
:class:`~napari_medseg.checkpoints.Checkpoint` (the *base*: predicted with as it is, or
fine-tuned by the next training). It speaks the user's language both ways: images and
scribble maps in, label maps in the user's values and the image's layout out
(:class:`Segmentation`), so no surface converts class indices or layouts itself.

Training takes a list of (image, scribbles) pairs — one today for every surface — so that
training across images, base models and batch prediction extend this class rather than each
surface. Predicting an arbitrary image (not the one trained on) is a first-class call.

Qt-free and thread-agnostic: a GUI runs these methods in a worker; only
:meth:`Workflow.request_stop` and :meth:`Workflow.update_scribbles` are meant to be called
while :meth:`Workflow.train`'s iterator runs elsewhere.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .checkpoints import (
    Checkpoint,
    build_card,
    channels_error,
    load_checkpoint,
    save_checkpoint,
)
from .data.classes import ClassMap
from .data.collection import Collection, CollectionItem
from .data.normalization import normalize_image, restore_layout
from .data.validation import validate_image, validate_inputs, validate_scribble_update
from .errors import ConfigError, InputError, MedsegError
from .training import InteractiveTask, TrainConfig, TrainerUpdate, TriNetTrainer
from .training.interactive import prepare_interactive
from .training.stroke_history import WalkerHistory
from .training.trainer import FLOOR_CACHE_SLICES

#: An image and its scribble map, as the user has them (any supported layout and values).
Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class Task:
    """What the user segments, in their terms.

    ``class_values``: the label value of each class, in class order; ``None`` until known (the
    values the scribbles use become the classes). ``class_names[i]`` names class ``i``.
    ``kind`` and ``in_channels`` describe the images trained on (``"auto"``/``None`` until
    the first training). ``spacing``: pixel spacing in the images' axis order, for distances
    and for the label files written.
    """

    class_values: tuple[int, ...] | None = None
    class_names: tuple[str, ...] = ()
    unlabelled: int = 0
    kind: str = "auto"
    in_channels: int | None = None
    spacing: tuple[float, ...] | None = None

    @classmethod
    def named(cls, class_names: Sequence[str], spacing=None) -> Task:
        """The napari convention: class ``i`` is label value ``i + 1``, 0 is unlabelled."""
        names = tuple(class_names)
        if len(names) < 2:
            raise InputError("give at least two class names (background and one structure)")
        values = ClassMap.numbered(len(names)).values
        return cls(values, names, 0, spacing=None if spacing is None else tuple(spacing))

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> Task:
        meta = checkpoint.metadata
        classes = checkpoint.classes
        return cls(
            classes.values,
            tuple(checkpoint.class_names),
            classes.unlabelled,
            kind=str(meta.get("kind", "auto")),
            in_channels=checkpoint.in_channels,
        )

    @property
    def classes(self) -> ClassMap:
        if self.class_values is None:
            raise MedsegError("the classes are not known yet — train on scribbles first")
        return ClassMap(self.class_values, self.unlabelled)

    def metadata(self) -> dict:
        """What a checkpoint keeps of the task (class names only when there are some)."""
        meta = {
            "class_values": list(self.classes.values),
            "unlabelled": self.unlabelled,
            "kind": self.kind,
        }
        if self.class_names:
            meta["class_names"] = list(self.class_names)
        return meta


@dataclass
class Segmentation:
    """Label maps in the user's values and the predicted image's layout.

    ``labels``: one map per network (slot key → (H, W) or (Z, H, W)); ``ensemble`` the
    trio's answer; ``disagreement`` the share of the voters that differ from it — the
    networks, and the floor's walker where it has strokes to go on (float32 in [0, 1];
    written as ``disagreement.tif``). With ``slice_index`` set the arrays are that one
    slice (H, W) of a stack.
    """

    labels: dict[str, np.ndarray]
    ensemble: np.ndarray
    disagreement: np.ndarray
    slice_index: int | None = None
    warnings: list[str] = field(default_factory=list)
    # what the anytime floor measured (training.floor.FloorReport): the networks' share of
    # the ensemble and the held-out stroke agreements; None for an image without strokes
    report: object | None = None

    def with_ensemble(self) -> dict[str, np.ndarray]:
        """Every label map, the ensemble last under the key ``"ensemble"``."""
        return {**self.labels, "ensemble": self.ensemble}


@dataclass
class Progress(TrainerUpdate):
    """A trainer update plus what the user sees of it.

    ``run_step``: steps done by this :meth:`Workflow.train` call (a resumed trainer's
    ``iteration`` counts from its start); ``segmentation``: the update's prediction in the
    user's values and layout, when it carries one.
    """

    run_step: int = 0
    segmentation: Segmentation | None = None
    # dataset training (Workflow.train_dataset): the validation just measured, the
    # checkpoint just written
    validation: Validation | None = None
    saved: Path | None = None


@dataclass
class Validation:
    """The trio on a dataset's validation files, against their dense labels.

    ``dice``: the ensemble's Dice, per foreground class (every class but the first) averaged
    over the files (a volume is scored in 3-D), then over the classes; ``per_class`` those
    class means; ``members`` the same mean for each network; ``step`` the trainer's iteration;
    ``walker`` the floor walker's Dice on the same files from their strokes.
    """

    dice: float
    per_class: dict[int, float]
    members: dict[str, float]
    images: int
    step: int
    seconds: float = 0.0
    # the floor walker on the same files from their own strokes (None: some had none); a base
    # that beats it clearly earns a share of the floor on new images (training/floor.py)
    walker: float | None = None

    def to_dict(self) -> dict:
        return {
            "dice": float(self.dice),
            "walker": None if self.walker is None else float(self.walker),
            "per_class": {str(k): float(v) for k, v in self.per_class.items()},
            "members": {k: float(v) for k, v in self.members.items()},
            "images": int(self.images),
            "step": int(self.step),
        }


@dataclass
class DatasetInputs:
    """What :meth:`Workflow.prepare_dataset` read: the split and what was trained on."""

    collection: Collection
    train: list[CollectionItem]
    val: list[CollectionItem]
    val_fraction: float
    split_seed: int
    slices: int = 0
    scribbled_pixels: int = 0
    skipped: list[str] = field(default_factory=list)

    def trained_on(self) -> dict:
        c = self.collection
        return {
            "dataset": c.name,
            "folder": str(c.folder.resolve()),
            "layout": c.layout,
            "images": len(self.train) - len(self.skipped),
            "slices": self.slices,
            "scribbled_pixels": self.scribbled_pixels,
            "simulated_scribbles": c.simulated,
            "validation_images": len(self.val),
            "validation_fraction": self.val_fraction,
            "split_seed": self.split_seed,
            **({"acdc_fold": c.fold} if c.fold is not None else {}),
        }


@dataclass
class FolderPrediction:
    """Where :meth:`Workflow.predict_folder` is: ``done`` of ``total`` images predicted;
    ``source`` and ``segmentation`` the image just predicted (None before the first and in
    the last); ``written`` the final files (the last only) and ``outputs`` their
    :class:`~napari_medseg.outputs.StagedOutputs` (what an earlier run left, what it removed)."""

    done: int
    total: int
    folder: Path
    source: Path | None = None
    segmentation: Segmentation | None = None
    written: list[Path] | None = None
    outputs: object | None = None
    #: the last one only: per image, the networks' agreement with the answer, lowest first
    #: (what ``review.csv`` holds; :func:`~napari_medseg.inference.member_agreement`)
    review: list[dict] | None = None


def _output_stem(path: Path) -> str:
    """``scan.nii.gz`` → ``scan``; any other file its stem (one label file per image)."""
    return path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem


#: The float map written beside the label files: where the answer is most likely wrong.
DISAGREEMENT_FILE = "disagreement.tif"
#: Written beside a folder's label files: its images, those the networks agree on least first.
REVIEW_FILE = "review.csv"


def review_row(source: Path, target: Path, segmentation: Segmentation) -> dict:
    """A folder prediction's row for one image: the networks' agreement with the answer
    (:func:`~napari_medseg.inference.member_agreement`) and the share of pixels any voter
    disputes."""
    from .inference import member_agreement

    return {
        "image": source.name,
        "prediction": target.name,
        "agreement": member_agreement(segmentation.labels, segmentation.ensemble),
        "disputed": float(np.mean(segmentation.disagreement > 0)),
    }


def rank_for_review(rows: Sequence[dict]) -> list[dict]:
    """Lowest agreement first; rows without one (a single network) last, in their order."""
    return sorted(rows, key=lambda r: (r["agreement"] is None, r["agreement"] or 0.0))


def review_hint(rows: Sequence[dict], n: int = 3) -> str:
    """The sentence the CLI and the widget show after a folder prediction: the ``n`` least
    agreed images of ``rows`` (ranked, :func:`rank_for_review`); empty for one network."""
    ranked = [r for r in rows if r["agreement"] is not None][:n]
    if not ranked:
        return ""
    least = ", ".join(f"{r['image']} ({r['agreement']:.2f})" for r in ranked)
    return (
        f"the networks agree least on: {least} — review those first "
        f"({REVIEW_FILE} ranks every image)"
    )


def write_review(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """``review.csv``: image, prediction file, agreement (0–1, empty for one network) and
    disputed share, in the order given."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "prediction", "agreement", "disputed"])
        for r in rows:
            a = "" if r["agreement"] is None else f"{r['agreement']:.4f}"
            w.writerow([r["image"], r["prediction"], a, f"{r['disputed']:.4f}"])
    return Path(path)


def output_names(keys: Sequence[str]) -> list[str]:
    """The files a segmentation is written as: ``ensemble.tif``, ``<slot key>.tif`` and
    ``disagreement.tif``."""
    return ["ensemble.tif", *(f"{k}.tif" for k in keys), DISAGREEMENT_FILE]


def write_segmentation(
    segmentation: Segmentation, folder: str | os.PathLike, spacing=None, place=None
) -> list[Path]:
    """``ensemble.tif``, one ``<slot key>.tif`` per network and ``disagreement.tif`` in
    ``folder``; their paths.

    The disagreement (float32, 0–1: the share of the networks and of the floor's walker that
    differ from the answer) is what the widget shows as a layer: a command-line user needs
    it as much to know where to draw the next stroke.
    ``place``: maps a file name to the path to write it to (a staging folder,
    :class:`napari_medseg.outputs.StagedOutputs.path`) instead of ``folder / name``.
    """
    from .data.readers import write_labels, write_map

    folder = Path(folder)
    place = place or (lambda name: folder / name)
    maps = {"ensemble": segmentation.ensemble, **segmentation.labels}
    written = [
        Path(write_labels(place(f"{name}.tif"), labels, spacing=spacing))
        for name, labels in maps.items()
    ]
    disagreement = place(DISAGREEMENT_FILE)
    return [*written, Path(write_map(disagreement, segmentation.disagreement, spacing=spacing))]


def score_segmentation(
    segmentation: Segmentation,
    truth: np.ndarray,
    task: Task,
    *,
    case: str | None = None,
    spacing=None,
) -> list[dict]:
    """Metric rows of every network and of the ensemble against ``truth`` (the task's values).

    One row per foreground class (every class but the first) and model, with ``model``
    (slot key or ``"ensemble"``), ``case`` and the metrics of
    :func:`~napari_medseg.metrics.evaluate_segmentation` (Dice, IoU, HD95, ASD...): a volume
    is scored in 3-D, as the ACDC protocol scores it. Distances are in ``spacing`` units
    (voxels without one).
    """
    from .metrics.multiclass import evaluate_segmentation

    values = task.classes.values
    names = {v: task.class_names[i] for i, v in enumerate(values) if i < len(task.class_names)}
    truth = np.asarray(truth).astype(np.int64)
    rows = []
    for model, labels in segmentation.with_ensemble().items():
        for r in evaluate_segmentation(
            np.asarray(labels).astype(np.int64),
            truth,
            class_values=values[1:],
            spacing=spacing,
            class_names=names or None,
            case=case,
        ):
            r["model"] = model
            rows.append(r)
    return rows


def release_memory(device) -> None:
    """Returns the accelerator memory the caching allocator holds (after a Stop or a run):
    other programs, and the next training, get it back. No-op on the CPU."""
    import gc

    import torch

    if getattr(device, "type", str(device)).startswith("cuda") and torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


class Workflow:
    """A task and its trio: train on (image, scribbles) pairs, predict any image, save, load."""

    def __init__(
        self,
        task: Task | None = None,
        base: Checkpoint | None = None,
        walker_history: WalkerHistory | None = None,
    ):
        if task is None:
            task = Task.from_checkpoint(base) if base is not None else Task()
        elif task.class_values is None and base is not None:
            # fine-tuning keeps the classes the trio was trained for
            task = replace(task, class_values=base.classes.values)
        self.task = task
        self.base = base
        self.trainer: TriNetTrainer | None = None
        self.inputs: list[InteractiveTask] = []
        self._base_models: tuple[str, dict] | None = None
        # the floor's last whole-image decision per (image, strokes): a slice predicted alone
        # is combined as it was in the whole image
        self._decisions: OrderedDict[bytes, object] = OrderedDict()
        # the floor a saved trio was given for a whole image: its slices take their part of it
        self._classical_floors: dict[bytes, tuple[str, np.ndarray]] = {}
        # the floor walker's Dice on each validation file (its strokes do not change)
        self._walker_validation: dict[str, float | None] = {}
        # what the card says the trio was trained on (set by set_inputs / prepare_dataset)
        self.trained_on: dict = {}
        self.dataset: DatasetInputs | None = None
        self.validation: Validation | None = None
        self._run = (0, 0.0)  # (steps, seconds) of a dataset run before this process
        self._run_now = (0, 0.0)  # ... and up to the last step
        self._resumed = False  # the base is this dataset run's own last checkpoint
        self.distributed = None  # training.distributed.Distributed under torchrun
        # the walker each image slice last showed (training/stroke_history.py): a workflow
        # that follows another on the same images takes the last one's (``walker_history``),
        # so its walkers are not recomputed and, with stroke_local, strokes added before the
        # new Train change the floor only near them
        self.walker_history = (
            walker_history if walker_history is not None else WalkerHistory(FLOOR_CACHE_SLICES)
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Workflow:
        """A workflow around a saved trio: it predicts as saved, and training fine-tunes it."""
        return cls(base=load_checkpoint(path))

    # ------------------------------------------------------------------ what it holds
    @property
    def has_model(self) -> bool:
        return self.trainer is not None or self.base is not None

    @property
    def models(self) -> tuple[str, ...]:
        """Architecture of each slot (the trainer's, else the base's)."""
        if self.trainer is not None:
            return tuple(self.trainer.config.models)
        return self.base.models if self.base is not None else ()

    @property
    def preset(self) -> str | None:
        """The preset in force: the trainer's, resolved from the device and the recipe (the
        config a driver passed stays as it was given), else the base's."""
        if self.trainer is not None:
            return self.trainer.config.preset
        return (self.base.config or {}).get("preset") if self.base is not None else None

    @property
    def keys(self) -> list[str]:
        """Slot keys, as in :attr:`Segmentation.labels`."""
        if self.trainer is not None:
            return list(self.trainer.keys)
        return self.base.keys if self.base is not None else []

    @property
    def num_classes(self) -> int | None:
        if self.trainer is not None:
            return self.trainer.num_classes
        return self.base.num_classes if self.base is not None else None

    def base_settings(self) -> dict:
        """The :class:`TrainConfig` fields a fine-tuning keeps from the base unless told."""
        if self.base is None:
            return {}
        return {
            "models": self.base.models,
            "preset": self.base.preset,
            "shape_prior": self.base.shape_prior,
        }

    # ------------------------------------------------------------------ training
    def set_inputs(self, pairs: Sequence[Pair]) -> list[str]:
        """Validates and normalises the images and scribbles to train on; returns warnings.

        Fixes the task's classes (declared, the base's, or the scribbled values of all pairs)
        and kind. Raises :class:`~napari_medseg.errors.InputError` saying what to fix; the
        workflow is unchanged then.
        """
        pairs = list(pairs)
        if not pairs:
            raise InputError("no image to train on — give an image and its scribbles")
        task = self.task
        values = task.class_values
        if values is None and len(pairs) > 1:  # every image's strokes count
            found = {
                v for im, sc in pairs for v in validate_inputs(im, sc, task.unlabelled).class_values
            }
            values = tuple(sorted(found))
        inputs = [
            prepare_interactive(image, scribbles, task.unlabelled, values)
            for image, scribbles in pairs
        ]
        first = inputs[0]
        if any(t.images[0].shape[1] != first.images[0].shape[1] for t in inputs):
            raise InputError("all images must be grayscale, or all RGB — not a mix")
        self.inputs = inputs
        self.dataset = None
        self.trained_on = {
            "dataset": None,
            "images": len(inputs),
            "scribbled_pixels": int(sum(int((t.seeds[0] >= 0).sum()) for t in inputs)),
        }
        self.task = replace(
            task,
            class_values=first.class_values,
            kind=first.kind,
            in_channels=int(first.images[0].shape[1]),
        )
        return [w for t in inputs for w in t.warnings]

    def build(self, config: TrainConfig) -> None:
        """Builds the networks for the inputs (fine-tuning the base, when there is one)."""
        if self.dataset is not None and not self.inputs:
            raise MedsegError("a dataset is built by prepare_dataset(), not build()")
        if not self.inputs:
            raise MedsegError("no images to train on yet — call set_inputs() first")
        config.check()
        old, self.trainer = self.trainer, None  # a half-built trainer must never be continued
        if old is not None:
            device = old.device
            del old
            release_memory(device)
        self.trainer = TriNetTrainer(
            [t.images[0] for t in self.inputs],
            [t.seeds[0] for t in self.inputs],
            len(self.task.classes.values),
            config,
            checkpoint=self.base,
            metadata=self.task.metadata(),
            walker_history=self.walker_history,
        )
        # a base validated better than the walker teaches these images itself (trainer.py)
        self.trainer.teach_from_base()

    def prepare(self, pairs: Sequence[Pair], config: TrainConfig) -> list[str]:
        """:meth:`set_inputs` then :meth:`build`; returns the inputs' warnings."""
        warnings = self.set_inputs(pairs)
        self.build(config)
        return warnings

    def train(
        self,
        pairs: Sequence[Pair] | None = None,
        config: TrainConfig | None = None,
        *,
        preview_slice: int | None = None,
        started: float | None = None,
    ) -> Iterator[Progress]:
        """Trains and yields a :class:`Progress` after every step, the final one last.

        With ``pairs`` the trio is prepared first (errors are raised here, before the
        iterator); without, the prepared (or last) trainer continues — a Resume.
        ``preview_slice``: the slice of a stack the user looks at: the first live previews
        predict only it, later ones the whole stack. ``started``: the ``time.perf_counter()``
        at which a time budget began (default: now), so reading and building count in it.
        """
        if pairs is not None:
            self.prepare(pairs, config or TrainConfig())
        elif self.trainer is None:
            raise MedsegError("nothing to train yet — give an image and its scribbles")
        return self._steps(preview_slice, started)

    def _steps(
        self, preview_slice: int | None, started: float | None, already=(0, 0.0)
    ) -> Iterator[Progress]:
        trainer = self.trainer
        kind = self.inputs[trainer.preview or 0].kind if self.inputs else "stack"
        # a 2-D image is one slice: its first preview is the whole image
        first = (int(preview_slice),) if kind == "stack" and preview_slice is not None else (0,)
        start = trainer.iteration
        for upd in trainer.steps(first_preview_slices=first, started=started, already=already):
            seg = None
            if upd.prediction is not None:
                slices = upd.prediction_slices if kind == "stack" else None
                if slices is not None and len(slices) != 1:
                    raise ValueError("a live preview of several single slices is not supported")
                seg = self._segmentation(upd.prediction, kind, slices[0] if slices else None)
            fields_ = {f.name: getattr(upd, f.name) for f in fields(TrainerUpdate)}
            if upd.done:
                release_memory(trainer.device)  # the activations' cache, after Stop or the end
            yield Progress(**fields_, run_step=upd.iteration - start, segmentation=seg)

    def configure(self, **changes) -> None:
        """Changes training settings of the current trainer for its next :meth:`train`.

        E.g. ``configure(iterations=300, lr=0.003)`` before a Resume.
        """
        if self.trainer is None:
            raise MedsegError("nothing to configure yet — train first")
        cfg = self.trainer.config
        unknown = [k for k in changes if k not in TrainConfig.__dataclass_fields__]
        if unknown:
            raise ConfigError(f"unknown training setting(s) {unknown}")
        replace(cfg, **changes).check()  # refused before anything changes
        for k, v in changes.items():
            setattr(cfg, k, v)

    def update_scribbles(self, scribbles: np.ndarray, index: int = 0) -> list[str]:
        """New scribbles for input ``index`` (the user kept drawing); returns warnings.

        Safe while :meth:`train`'s iterator runs in another thread: the next step takes them
        up. Raises :class:`~napari_medseg.errors.InputError` when they cannot replace the
        previous ones (training then keeps the previous ones).
        """
        if self.trainer is None:
            raise MedsegError("nothing is being trained")
        inp = self.inputs[index]
        warnings = validate_scribble_update(
            scribbles, inp.spatial_shape, inp.class_values, inp.unlabelled
        )
        inp.seeds = inp.seeds_from(scribbles)
        self.trainer.update_scribbles([t.seeds[0] for t in self.inputs])
        return warnings

    def request_stop(self) -> None:
        """Ends training before its next step (from any thread)."""
        if self.trainer is not None:
            self.trainer.request_stop()

    def discard_trainer(self) -> None:
        """Forgets the trainer (e.g. after the accelerator ran out of memory); the base stays."""
        self.trainer = None
        self.inputs = []

    # ------------------------------------------------------------------ datasets
    def prepare_dataset(
        self,
        collection: Collection,
        config: TrainConfig,
        *,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        resume: bool = False,
    ) -> list[str]:
        """Reads a dataset's training files and builds the trio for them; returns warnings.

        ``val_fraction`` of the files (of the patients, for ACDC) are held out and scored by
        :meth:`validate`. Each file is read, normalised and brought to the working resolution
        one at a time; only the working-resolution copies are kept (a dataset's images at
        full size would not fit). The working resolution is the base's when fine-tuning or
        resuming, else the one that brings the *median* longest side to ``max_side`` (one
        factor for all images, as prediction applies one; the largest frames are then trained
        on in crops). ``resume``: the base is this run's own last checkpoint: its budget, step
        count and learning-rate schedule continue (:meth:`train_dataset`).
        """
        from .data.classes import channel_kind
        from .data.collection import DatasetError
        from .device import resolve_device
        from .presets import dataset_recipe, default_preset
        from .resolution import resize_image, resize_seeds, scaled_size, working_scale
        from .training.distributed import from_environment

        train, val = collection.split(val_fraction, split_seed)
        # under torchrun: this process trains on its shard; rank 0 alone validates and saves
        distributed = from_environment(resolve_device(config.device))
        if distributed is not None:
            train = distributed.shard(train)
            if not train:
                raise DatasetError(
                    f"{distributed.world} processes but only {len(collection.items) - len(val)} "
                    "training file(s) — start at most one process per training file"
                )
        classes = ClassMap(collection.class_values, collection.unlabelled)
        base = self.base
        if base is not None and base.num_classes != classes.num_classes:
            from .errors import CheckpointError

            raise CheckpointError(
                f"{base.source} was trained for {base.num_classes} classes but {collection.folder}"
                f" holds {classes.num_classes} ({list(classes.values)}) — start from scratch or "
                "from a model with the same classes"
            )
        names = collection.class_names or (base.class_names if base is not None else ())
        preset = config.preset or default_preset(resolve_device(config.device))
        config = replace(config)  # the caller's config stays as given
        config.resolve(preset, dataset_recipe(preset))  # a dataset's recipe, unless told
        if base is not None:
            scale = base.working_scale
        else:
            sides = sorted(max(it.shape[-2:]) for it in train)
            median = sides[len(sides) // 2]
            scale = working_scale((median, median), config.max_side)
        images, seeds, skipped = [], [], []
        warnings = list(collection.warnings)
        kind, channels, pixels, slices = collection.kind, None, 0, 0
        for it in train:
            sample = collection.read(it, truth=False)
            norm = normalize_image(sample.image, collection.kind)
            scr = np.asarray(sample.scribbles)
            if scr.shape != tuple(norm.spatial_shape):
                raise DatasetError(
                    f"{it.scribbles or it.image}: scribbles of shape {scr.shape} do not match "
                    f"the image's {tuple(norm.spatial_shape)} — draw them on this image"
                )
            seed = classes.to_indices(scr if norm.kind == "stack" else scr[None])
            if not (seed >= 0).any():
                skipped.append(it.name)
                continue
            data = norm.data
            if channels is None:
                channels, kind = int(data.shape[1]), norm.kind
            elif data.shape[1] != channels:
                raise DatasetError(
                    f"{it.image} is {channel_kind(data.shape[1])} but the dataset's first image "
                    f"is {channel_kind(channels)} — a dataset's images are all grey or all RGB"
                )
            size = scaled_size(data.shape[-2:], scale)
            images.append(resize_image(data, size))
            seeds.append(resize_seeds(seed, size, classes.num_classes))
            pixels += int((seed >= 0).sum())
            slices += int(((seed >= 0).reshape(seed.shape[0], -1)).any(1).sum())
        if skipped:
            warnings.append(f"{len(skipped)} file(s) without strokes left out: {skipped[:5]}")
        if not images:
            raise DatasetError(f"no file of {collection.folder} holds a stroke to train on")
        n_train, n_skipped = len(train), len(skipped)
        if distributed is not None:  # the card counts every process's files
            n_train, slices, pixels, n_skipped = distributed.total(
                n_train, slices, pixels, n_skipped
            )
        self.task = Task(
            collection.class_values,
            tuple(names),
            collection.unlabelled,
            kind=kind,
            in_channels=channels,
        )
        self.inputs = []
        self.trainer = None
        self.dataset = DatasetInputs(
            collection, train, val, val_fraction, split_seed, slices, pixels, skipped
        )
        self.trained_on = self.dataset.trained_on()
        self.trained_on["images"] = n_train - n_skipped
        if distributed is not None:
            self.trained_on["processes"] = distributed.world
        self.validation = None
        self.trainer = TriNetTrainer(
            images,
            seeds,
            classes.num_classes,
            config,
            preview=None,
            checkpoint=base,
            metadata=self.task.metadata(),
            working_scale=scale,
        )
        self.distributed = distributed
        self.trainer.set_distributed(distributed)
        self._resumed = bool(resume and base is not None)
        self._run = (0, 0.0)
        if self._resumed:
            run = (base.card or {}).get("run") or {}
            self._run = (int(run.get("steps", 0)), float(run.get("seconds", 0.0)))
            # the run's sampling goes on instead of replaying its first batches
            self.trainer.reseed(config.seed + self._run[0])
            done = (base.card or {}).get("trained_on", {}).get("dataset")
            if done and done != collection.name:
                warnings.append(f"{base.source} was trained on {done!r}, not {collection.name!r}")
        self._run_now = self._run
        return warnings

    def validate(self) -> Validation | None:
        """Scores the trio on the dataset's validation files (None when there are none)."""
        import time

        from .metrics.multiclass import class_dice

        ds = self.dataset
        if ds is None or not ds.val or not self.has_model:
            return None
        t0 = time.perf_counter()
        foreground = self.task.classes.values[1:]
        per_class: dict[int, list[float]] = {v: [] for v in foreground}
        members: dict[str, list[float]] = {}
        walkers: list[float] = []
        n = 0
        for it in ds.val:
            known = it.name in self._walker_validation
            sample = ds.collection.read(it, scribbles=not known)
            if sample.truth is None:
                continue
            seg = self.predict(sample.image, kind=ds.collection.kind, image_name=str(it.image))
            for v, d in class_dice(seg.ensemble, sample.truth, foreground).items():
                per_class[v].append(d)
            for k, lab in seg.labels.items():
                dice = class_dice(lab, sample.truth, foreground)
                members.setdefault(k, []).append(float(np.mean(list(dice.values()))))
            if not known:
                self._walker_validation[it.name] = self._walker_dice(sample, ds.collection.kind)
            if self._walker_validation[it.name] is not None:
                walkers.append(self._walker_validation[it.name])
            n += 1
        if not n:
            return None
        means = {v: float(np.mean(d)) for v, d in per_class.items()}
        return Validation(
            dice=float(np.mean(list(means.values()))),
            per_class=means,
            members={k: float(np.mean(d)) for k, d in members.items()},
            images=n,
            step=self.trainer.iteration if self.trainer is not None else self.base.iteration,
            seconds=time.perf_counter() - t0,
            walker=float(np.mean(walkers)) if len(walkers) == n else None,
        )

    def _walker_dice(self, sample, kind: str) -> float | None:
        """The floor walker's Dice on a validation file from its own strokes (None: it has
        none): what a base must beat to earn a share of the floor on new images
        (:func:`~napari_medseg.training.floor.base_share`)."""
        from .metrics.multiclass import class_dice
        from .training.floor import floor_walker

        if sample.scribbles is None:
            return None
        norm = normalize_image(sample.image, kind)
        scr = np.asarray(sample.scribbles)
        seeds = self.task.classes.to_indices(scr if norm.kind == "stack" else scr[None])
        if not (seeds >= 0).any():
            return None
        beta = self.trainer.config.rw_beta if self.trainer is not None else TrainConfig().rw_beta
        idx = floor_walker(norm.data, seeds, self.task.classes.num_classes, beta).argmax(axis=1)
        labels = restore_layout(self.task.classes.to_values(idx.astype(np.uint8)), norm.kind)
        dice = class_dice(labels, sample.truth, self.task.classes.values[1:])
        return float(np.mean(list(dice.values())))

    def evaluate(
        self,
        collection: Collection,
        items: Sequence[CollectionItem] | None = None,
        *,
        spacing=None,
        device: str = "auto",
    ) -> Iterator[tuple[CollectionItem, Segmentation, list[dict]]]:
        """Scores the trio on files it has not seen, without their strokes (zero-shot).

        For each of ``items`` (default: all of ``collection``) with dense labels, one file at
        a time: the segmentation and its metric rows (:func:`score_segmentation`: every
        network and the ensemble, per foreground class, a volume in 3-D). ``spacing``: the
        voxel size for distances when the files carry none (ACDC's .h5 do not).
        """
        for it in collection.items if items is None else items:
            sample = collection.read(it, scribbles=False)
            if sample.truth is None:
                continue
            seg = self.predict(
                sample.image, kind=collection.kind, device=device, image_name=str(it.image)
            )
            rows = score_segmentation(
                seg, sample.truth, self.task, case=it.name, spacing=spacing or sample.spacing
            )
            yield it, seg, rows

    def train_dataset(
        self,
        *,
        save_to: str | os.PathLike | None = None,
        save_every: float | None = 300.0,
        validate_every: float | None = 120.0,
        started: float | None = None,
    ) -> Iterator[Progress]:
        """Trains on the prepared dataset; yields a :class:`Progress` after every step.

        Every ``validate_every`` seconds (and at the end) the update carries a
        :class:`Validation`; every ``save_every`` seconds (and at the end, finished or
        stopped) the trio is written atomically to ``save_to`` with its card, so an
        interrupted run loses at most those seconds (``prepare_dataset(resume=True)``).
        The budget (``config.seconds``/``iterations``) covers the training steps; the final
        validation and checkpoint come after it.
        """
        import time

        if self.dataset is None or self.trainer is None:
            raise MedsegError("no dataset prepared — call prepare_dataset() first")
        last_val = last_save = time.perf_counter()
        before = self._run
        main = self.is_main
        for upd in self._steps(None, started, already=before):
            self._run_now = (before[0] + upd.run_step, before[1] + upd.elapsed)
            now = time.perf_counter()
            if not main:  # under torchrun rank 0 alone validates and writes
                yield upd
                continue
            if upd.done or (validate_every and now - last_val >= validate_every):
                found = self.validate()
                if found is not None:
                    upd.validation = self.validation = found
                last_val = time.perf_counter()
            if save_to is not None and (upd.done or (save_every and now - last_save >= save_every)):
                upd.saved = self.save(save_to)
                last_save = time.perf_counter()
            yield upd

    @property
    def run_before(self) -> tuple[int, float]:
        """(steps, seconds) a resumed dataset run had done before this process."""
        return self._run

    @property
    def run_done(self) -> tuple[int, float]:
        """(steps, seconds) of the dataset run so far, earlier processes included."""
        return self._run_now

    @property
    def is_main(self) -> bool:
        """False in every process but rank 0 of a ``torchrun`` dataset training."""
        return self.distributed is None or self.distributed.is_main

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike],
        out: str | os.PathLike,
        *,
        device: str = "auto",
    ) -> Iterator[tuple[Path, Path, Segmentation]]:
        """Predicts each image file; writes ``out/<stem>.tif`` (the ensemble, in the user's
        values, with the image's spacing) and yields (input, output, segmentation)."""
        from .data.readers import load_image, write_labels

        out = Path(out)
        for path in map(Path, paths):
            image = load_image(path)
            seg = self.predict(image.array, device=device, image_name=path.name)
            written = write_labels(
                out / f"{_output_stem(path)}.tif", seg.ensemble, spacing=image.spacing
            )
            yield path, Path(written), seg

    def predict_folder(
        self,
        folder: str | os.PathLike,
        out: str | os.PathLike,
        *,
        device: str = "auto",
        inputs: Sequence[str | os.PathLike] = (),
        option: str = "--out",
    ) -> Iterator[FolderPrediction]:
        """Predicts every image file of ``folder`` into ``out/<stem>.tif`` (the ensemble) and
        ranks them in ``out/review.csv`` by how much the networks agree with the answer (the
        images a reviewer should look at first, first).

        Staged like every run's outputs (:class:`~napari_medseg.outputs.StagedOutputs`): the
        folder is checked and the names are checked against the inputs (``inputs``: more
        files the run reads, e.g. the model file) before any image is predicted; files are
        written aside and moved into ``out`` at the end, so a run that is stopped (the
        iterator closed) or fails leaves ``out`` as it was. Yields one
        :class:`FolderPrediction` before the first image (``done`` 0, for a progress bar),
        one after each image, and the last with ``written`` set.
        """
        from .data.collection import image_files
        from .outputs import StagedOutputs

        folder = Path(folder)
        files = image_files(folder) if folder.is_dir() else []
        if not files:
            raise InputError(
                f"{folder} holds no image files (.tif/.png/.jpg/.nii/.h5...) — give a folder of "
                "images, one image file, or a DICOM series folder"
            )
        total = len(files)
        with StagedOutputs(out, [*inputs, *files], option=option) as outputs:
            outputs.check_names([*(_output_stem(p) + ".tif" for p in files), REVIEW_FILE])
            yield FolderPrediction(0, total, outputs.target)
            rows = []
            for i, (path, target, seg) in enumerate(
                self.predict_files(files, outputs.staging, device=device), start=1
            ):
                outputs.path(target.name)  # staged there already: registered for the move
                rows.append(review_row(path, target, seg))
                yield FolderPrediction(i, total, outputs.target, path, seg)
            review = rank_for_review(rows)
            write_review(outputs.path(REVIEW_FILE), review)
            written = outputs.commit()
            yield FolderPrediction(
                total, total, outputs.target, written=written, outputs=outputs, review=review
            )

    # ------------------------------------------------------------------ prediction
    def device_for(self, choice: str = "auto"):
        """The device predictions run on: the trainer's, else ``choice`` resolved."""
        if self.trainer is not None:
            return self.trainer.device
        from .device import resolve_device

        return resolve_device(choice)

    def predict(
        self,
        image: np.ndarray,
        *,
        kind: str = "auto",
        slice_index: int | None = None,
        device: str = "auto",
        image_name: str = "this image",
        scribbles: np.ndarray | None = None,
    ) -> Segmentation:
        """Segments any image (2-D, RGB or a stack) with the trio, in the user's values.

        ``slice_index``: only that slice of a stack (the arrays are then (H, W)). The shape
        prior's stroke rules apply when ``image`` is one being trained on (its current strokes
        are known); any other image gets the stroke-free rules only. ``device`` is used by a
        loaded trio; a trainer predicts where it trains. ``scribbles``: the user's strokes on
        this image (its spatial shape, the task's values), for an image the trio is not training
        on: with strokes the walker is part of the answer until the networks earn their share
        (the anytime floor), for a loaded trio too.
        """
        if not self.has_model:
            raise MedsegError("no model yet — train one (or load a saved model) before predicting")
        # the same check as training's: no 3×3, all-NaN or (32, 32, 2) image is segmented
        validate_image(image, image_name)
        try:
            norm = normalize_image(image, kind)
        except MedsegError:
            raise
        except ValueError as e:  # a kind the array cannot have
            raise InputError(f"{image_name}: {e}") from None
        data = norm.data
        channels = self.trainer.in_channels if self.trainer is not None else self.base.in_channels
        if data.shape[1] != channels:
            source = "the model" if self.trainer is not None else self.base.source
            raise channels_error(source, channels, data.shape[1], image_name)
        # an image being trained on keeps its strokes: the floor and the prior's stroke rules
        found = self.trainer.strokes_of(data) if self.trainer is not None else None
        seeds, heldout = found if found is not None else (None, None)
        if found is None and scribbles is not None:
            if tuple(np.shape(scribbles)) != tuple(norm.spatial_shape):
                raise InputError(
                    f"the scribbles have shape {tuple(np.shape(scribbles))} but {image_name} "
                    f"needs {tuple(norm.spatial_shape)} — use scribbles drawn on this image"
                )
            scr = np.asarray(scribbles)
            seeds = self.task.classes.to_indices(scr if norm.kind == "stack" else scr[None])
        key = None
        if seeds is not None:
            digest = hashlib.blake2b(np.ascontiguousarray(data).tobytes(), digest_size=16)
            digest.update(np.ascontiguousarray(seeds).tobytes())
            key = digest.digest()
        decision = None
        if slice_index is not None and norm.kind == "stack":
            one = slice(slice_index, slice_index + 1)
            data = data[one]
            seeds = None if seeds is None else seeds[one]
            heldout = None if heldout is None else heldout[one]
            decision = self._decisions.get(key)
        else:
            slice_index = None
        if self.trainer is not None:
            prediction = self.trainer.predict(data, seeds=seeds, heldout=heldout, decision=decision)
        else:
            prediction = self._predict_base(
                data, device, seeds, decision, key, None if slice_index is None else one
            )
        if key is not None and slice_index is None and prediction.report is not None:
            self._decisions[key] = prediction.report
            while len(self._decisions) > 16:
                self._decisions.popitem(last=False)
        seg = self._segmentation(prediction, norm.kind, slice_index)
        seg.warnings = list(norm.warnings)
        return seg

    def _classical_floor(self, data: np.ndarray, seeds: np.ndarray, config: TrainConfig):
        """(method, probabilities) of the floor for a saved trio: the classical answer as the
        trainer decides it (training/stroke_classifier.py), or the walker with it off."""
        from .training.floor import floor_walker
        from .training.stroke_classifier import classical_floor

        k, beta = self.base.num_classes, config.rw_beta
        if not config.classifier:
            return "walker", floor_walker(data, seeds, k, beta)
        return classical_floor(data, seeds, k, beta, config.holdout_fraction, config.seed)

    def _predict_base(
        self,
        data: np.ndarray,
        device: str,
        seeds: np.ndarray | None = None,
        decision=None,
        key: bytes | None = None,
        part: slice | None = None,
    ):
        """The saved trio's prediction, combined as its training did (weights, prior), with
        the walker on ``seeds`` as the floor when the image has strokes."""
        from .checkpoints import models_from_checkpoint
        from .inference import combine_predictions, member_weights, predict_models
        from .shape_prior import ShapePrior
        from .training.floor import assess, base_share

        dev = self.device_for(device)
        if self._base_models is None or self._base_models[0] != str(dev):
            self._base_models = (str(dev), models_from_checkpoint(self.base, dev))
        probs = predict_models(self._base_models[1], data, dev, self.base.working_scale)
        weights, share, walker, report = (
            member_weights(self.base.member_scores, probs),
            1.0,
            None,
            None,
        )
        config = TrainConfig.from_dict(self.base.config or {})
        if config.floor and seeds is not None and (seeds >= 0).any():
            whole = self._classical_floors.get(key) if part is not None else None
            if whole is not None:  # a slice of an image predicted whole: its floor's slice
                method, walker = whole[0], whole[1][part]
            else:
                method, walker = self._classical_floor(data, seeds, config)
                if key is not None and part is None:
                    while len(self._classical_floors) >= 4:
                        self._classical_floors.pop(next(iter(self._classical_floors)))
                    self._classical_floors[key] = (method, walker)
            base = base_share((self.base.card or {}).get("validation"))
            recorded = (self.base.metadata.get("floor_heldout") or {}).get(key.hex() if key else "")
            report = (
                decision
                if decision is not None
                else replace(
                    assess(probs, walker, base=base, heldout_scores=recorded), classical=method
                )
            )
            weights, share = report.weights, report.network_share
        prediction = combine_predictions(
            probs,
            weights=weights,
            prior=ShapePrior.from_dict(self.base.shape_prior),
            seeds=seeds,
            walker=walker,
            network_share=share,
        )
        prediction.report = report
        return prediction

    def _segmentation(self, prediction, kind: str, slice_index: int | None) -> Segmentation:
        """Per-slice class indices → user values in the layout of ``kind`` (or one slice)."""
        classes = self.task.classes

        def layout(a: np.ndarray) -> np.ndarray:
            return a[0] if slice_index is not None else restore_layout(a, kind)

        return Segmentation(
            labels={k: layout(classes.to_values(v)) for k, v in prediction.per_model.items()},
            ensemble=layout(classes.to_values(prediction.ensemble)),
            disagreement=layout(prediction.disagreement),
            slice_index=slice_index,
            report=prediction.report,
        )

    # ------------------------------------------------------------------ persistence
    def checkpoint(self) -> Checkpoint:
        """The trio as it would be saved: the trainer's state, else the base."""
        if self.trainer is not None:
            checkpoint = self.trainer.state_dict()
            lineage = self._lineage()
            run = None
            if self.dataset is not None:
                cfg = self.trainer.config
                steps, seconds = self._run_now
                run = {
                    "steps": int(steps),
                    "seconds": float(seconds),
                    "budget_iterations": cfg.iterations,
                    "budget_seconds": cfg.seconds,
                }
            checkpoint.card = build_card(
                checkpoint,
                trained_on=self.trained_on,
                validation=self.validation.to_dict() if self.validation else None,
                run=run,
                base=lineage,
            )
            # the held-out strokes' verdicts on the images predicted whole: the trainer's
            # secret strokes are not saved, but a reloaded trio must decide those images'
            # floor as its trainer did (training/floor.py: the held-out route)
            heldout = {
                key.hex(): {"networks": float(r.heldout["networks"]), "walker": float(w)}
                for key, r in self._decisions.items()
                if (getattr(r, "heldout", None) or {}).get("networks") is not None
                and (w := r.heldout.get("walker")) is not None
            }
            if heldout:
                checkpoint.metadata["floor_heldout"] = heldout
            return checkpoint
        if self.base is not None:
            return self.base
        raise MedsegError("there is no model to save yet — train one first")

    def _lineage(self) -> dict | None:
        """What the card's ``fine_tuned_from`` names: the base's training set (a resumed
        dataset run keeps the lineage its base already had)."""
        base_card = (self.base.card or {}) if self.base is not None else {}
        if self._resumed:
            return base_card.get("fine_tuned_from")
        return base_card.get("trained_on") or None

    def outline(self) -> Checkpoint:
        """The trio as :meth:`checkpoint` would describe it, without its weights.

        Cheap (no tensor is touched, no BatchNorm re-estimated), so a GUI thread can show the
        model card (:func:`~napari_medseg.checkpoints.card_text`) and ask
        :meth:`~napari_medseg.checkpoints.Checkpoint.check_compatible` whether the trio fits an
        image or a training, with the same messages as for a file. A loaded base is returned
        as it is.
        """
        from .checkpoints import SlotState

        trainer = self.trainer
        if trainer is None:
            if self.base is not None:
                return self.base
            raise MedsegError("there is no model yet — train one (or load a saved model) first")
        cfg = trainer.config
        shell = Checkpoint(
            config=cfg.to_dict(),
            in_channels=int(trainer.in_channels),
            num_classes=int(trainer.num_classes),
            slots=[SlotState(k, m, str(cfg.preset), {}) for k, m in zip(trainer.keys, cfg.models)],
            iteration=int(trainer.iteration),
            working_scale=float(trainer.scale),
            member_scores=dict(trainer.member_scores),
            metadata={**trainer.metadata, **self.task.metadata()},
            source="the current model",
        )
        shell.card = build_card(shell, trained_on=self.trained_on, base=self._lineage())
        shell.card["unsaved"] = True  # its date is now, not a file's: say so on the card
        return shell

    def fit_problem(
        self,
        *,
        models: Sequence[str] | None = None,
        num_classes: int | None = None,
        in_channels: int | None = None,
        preset: str | None = None,
        image: str = "this image",
    ) -> str | None:
        """Why the trio cannot predict ``image`` or start a training with these settings
        (None: it can). Arguments left ``None`` are not checked; the message says what to do
        (:meth:`~napari_medseg.checkpoints.Checkpoint.check_compatible`'s wording)."""
        if not self.has_model:
            return None
        try:
            self.outline().check_compatible(
                models=models,
                num_classes=num_classes,
                in_channels=in_channels,
                preset=preset,
                image=image,
            )
        except MedsegError as e:
            return str(e)
        return None

    def start_point(self) -> Checkpoint | None:
        """The trio a new training should start from: the trainer's current weights (with
        their optimiser states and card, so the card's lineage and the step count go on),
        else the loaded base, else None (from scratch). Tensor work: call it in a worker."""
        if self.trainer is not None:
            checkpoint = self.checkpoint()
            checkpoint.source = "the current model"
            return checkpoint
        return self.base

    def save(self, path: str | os.PathLike, class_names: Sequence[str] | None = None) -> Path:
        """Writes the trio to ``path`` (atomically). ``class_names`` are recorded when the
        model has none (a model loaded from an older file, say)."""
        checkpoint = self.checkpoint()
        if class_names and not checkpoint.class_names:
            checkpoint.metadata["class_names"] = list(class_names)
        return save_checkpoint(checkpoint, path)
