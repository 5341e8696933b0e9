"""What the widget's worker threads run: training, prediction, evaluation, checkpoints.

No Qt and no napari here, on purpose: everything in this module runs *off* the GUI thread
(napari ``thread_worker``), and everything it hands back is plain numpy already in the
layer's layout and label convention (uint8 values 1..K, see :mod:`napari_medseg._layers`),
so the GUI thread only assigns ``layer.data``. Keeping it Qt-free also lets the tests and the
benchmark drive it headless.

Three methods are meant for the GUI thread and only touch thread-safe state:
:meth:`TrainingSession.submit_scribbles` (a copy of the scribble layer after the user drew),
:meth:`TrainingSession.layers_ready` and :meth:`TrainingSession.request_stop`.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: How long a worker waits for the GUI to create its layers before training anyway (s).
LAYERS_WAIT_S = 5.0

#: What to tell the user when the accelerator runs out of memory.
OOM_MESSAGE = (
    "the GPU ran out of memory — choose preset 'lite', a smaller batch or patch size, or "
    "device 'cpu', then press Train again"
)


class GuiError(ValueError):
    """A problem the user can fix; the message says how."""


@dataclass
class TrainRequest:
    """Everything one Train/Resume press needs; arrays are private copies of the layers."""

    image: np.ndarray
    scribbles: np.ndarray
    class_names: Sequence[str]
    models: tuple[str, ...]
    preset: str | None = None  # None: lite on CPU, paper on GPU
    device: str = "auto"
    iterations: int = 200
    lr: float = 0.01
    batch_size: int = 8
    patch_size: int = 128
    preview_every_seconds: float = 3.0
    truth: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    threads: int | None = None  # torch CPU threads in the worker; None: default_threads()
    rw_weight: float | None = None  # None: the engine's default
    max_side: int | None = None  # working resolution (longest side); None: native size
    shape_prior: str = "none"  # "none" or "cardiac" (napari_medseg.shape_prior)
    # the slice of a stack the user is looking at: the first live preview predicts only it
    # (quick), later previews the whole stack
    preview_slice: int | None = None
    # after the "ready" update, wait (at most LAYERS_WAIT_S) for layers_ready() before training
    wait_for_layers: bool = False


def shape_prior_for(choice: str, class_names: Sequence[str]) -> dict | None:
    """The widget's prior choice for its named classes (a config dict), or GuiError why not."""
    from .shape_prior import cardiac_prior_from_names

    if choice in (None, "", "none"):
        return None
    if choice == "cardiac":
        try:
            return cardiac_prior_from_names(class_names).to_dict()
        except ValueError as e:
            raise GuiError(str(e)) from None
    raise GuiError(f"unknown shape prior {choice!r}: choose 'none' or 'cardiac'")


@dataclass
class LayerUpdate:
    """One message from a worker to the GUI thread; arrays are ready for ``layer.data``."""

    iteration: int = 0
    run_step: int = 0  # steps done in this Train/Resume press
    run_total: int = 0
    elapsed: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)
    iterations_per_second: float = 0.0
    labels: dict[str, np.ndarray] | None = None  # slot key -> values 1..K, image layout
    ensemble: np.ndarray | None = None
    disagreement: np.ndarray | None = None
    # set: the arrays are this one slice (H, W) of the stack, not the whole image
    slice_index: int | None = None
    metrics: list[dict] | None = None
    warnings: list[str] = field(default_factory=list)
    stage: str = "training"  # preparing | training | done
    done: bool = False
    stopped: bool = False
    device: str = ""
    preset: str = ""


def warm_imports() -> None:
    """Imports what Train needs, so the first press does not wait for it.

    Run when the widget opens (:func:`start_warm_up`): importing the training stack takes
    seconds (measured on 2 cores: torch ~2 s, MONAI ~2.5 s — the trainer's Dice loss imports
    it — and ``torch._dynamo`` ~2 s, which torch imports when the first optimiser is built),
    which would otherwise count against "Train → first prediction". What the first training
    step needs comes first; metrics and checkpoints (Evaluate, Save/Load) last.
    """
    from .data import normalization  # noqa: F401
    from .training import interactive, trainer  # noqa: F401

    # scipy.ndimage and skimage.morphology: the shape prior's rules on the first preview
    # (~0.45 s of imports holding the GIL in the worker otherwise)
    for name in (
        "monai.losses",
        "torch._dynamo",
        "skimage.segmentation",
        "scipy.ndimage",
        "skimage.morphology",
    ):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a warm-up only: Train reports real problems
            pass
    from . import checkpoints, inference, metrics  # noqa: F401


_warm_up_thread: threading.Thread | None = None


def _warm_up_quietly() -> None:
    try:
        warm_imports()
    except Exception:  # noqa: BLE001 - a warm-up only: Train reports real problems
        pass


def start_warm_up() -> threading.Thread:
    """Runs :func:`warm_imports` once per process, in a daemon thread.

    Not in a napari worker: those run in Qt's global thread pool, which has as many threads as
    cores, and Qt itself uses that pool from the GUI thread (large ``QImage`` conversions, for
    instance napari's activity spinner). With the warm-up and the training worker both in the
    pool on a 2-core machine, the GUI thread waited for a pool thread while holding the GIL
    that the pool threads needed: a deadlock (seen in the GUI tests).
    """
    global _warm_up_thread
    if _warm_up_thread is None:
        _warm_up_thread = threading.Thread(
            target=_warm_up_quietly, name="napari-medseg warm-up", daemon=True
        )
        _warm_up_thread.start()
    return _warm_up_thread


def warm_up_running() -> bool:
    return _warm_up_thread is not None and _warm_up_thread.is_alive()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def default_threads(cores: int | None = None) -> int:
    """Torch CPU threads for the training worker, by core count.

    One core always stays free for the GUI thread (and, on a headless machine, the X server's
    software rendering): 1 thread up to 2 cores, ``cores - 1`` above. On 2 cores a second
    torch thread does not pay: the OpenMP workers wait for each other whenever the GUI thread
    or another process takes a core, and a step got up to 10x slower (docs/design.md).
    """
    n = available_cores() if cores is None else int(cores)
    return 1 if n <= 2 else n - 1


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or isinstance(exc, MemoryError)
    )


def user_message(exc: BaseException) -> str:
    """The text of a notification for an exception raised in a worker."""
    from .checkpoints import CheckpointError
    from .training.interactive import InputError

    if isinstance(exc, (GuiError, InputError, CheckpointError)):
        return str(exc)
    if is_out_of_memory(exc):
        return OOM_MESSAGE
    return f"napari-medseg: unexpected {type(exc).__name__}: {exc}"


def evaluate_labels(
    labels: dict[str, np.ndarray],
    truth: np.ndarray,
    class_names: Sequence[str],
    spacing: Sequence[float] | None = None,
) -> list[dict]:
    """Dice and HD95 of each structure (background left out) for every named prediction.

    Predictions and truth both use values 1..K; returns rows ``{"model", "class", "name",
    "dice", "hd95"}``.
    """
    from .metrics import evaluate_segmentation

    truth = np.asarray(truth)
    values = list(range(2, len(class_names) + 1))
    names = {v: class_names[v - 1] for v in values}
    sp = tuple(spacing) if spacing is not None and len(spacing) == truth.ndim else None
    rows = []
    for model, pred in labels.items():
        if pred.shape != truth.shape:
            raise GuiError(
                f"the ground truth has shape {truth.shape} but the prediction {pred.shape} — "
                "choose a ground-truth layer made for this image"
            )
        for r in evaluate_segmentation(
            pred, truth, class_values=values, spacing=sp, class_names=names
        ):
            rows.append(
                {
                    "model": model,
                    "class": r["class"],
                    "name": r["name"],
                    "dice": float(r["dice"]),
                    "hd95": float(r["hd95"]),
                }
            )
    return rows


class _CpuThreads:
    """Limits torch's CPU threads inside the worker and restores them afterwards."""

    def __init__(self, n: int | None, device_type: str):
        self.n = n
        self.active = device_type == "cpu"

    def __enter__(self):
        import torch

        self.prev = torch.get_num_threads()
        if self.active:
            torch.set_num_threads(self.n or default_threads())
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.prev)
        return False


class TrainingSession:
    """Owns the trainer (or a loaded checkpoint) across Train, Resume, Predict and Save."""

    def __init__(self) -> None:
        self.trainer = None
        self.task = None
        self.request: TrainRequest | None = None
        self.loaded_state: dict | None = None
        self.loaded_path: str | None = None
        self._loaded_models: dict | None = None
        self._pending: np.ndarray | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._layers_ready = threading.Event()
        self._last_warning = ""

    # ------------------------------------------------------------------ GUI-thread side
    def submit_scribbles(self, scribbles: np.ndarray) -> None:
        """Hands over a *copy* of the scribble layer; the next training step picks it up."""
        with self._lock:
            self._pending = scribbles

    def layers_ready(self) -> None:
        """The GUI has created its prediction layers (see ``TrainRequest.wait_for_layers``)."""
        self._layers_ready.set()

    def request_stop(self) -> None:
        self._stop.set()
        trainer = self.trainer
        if trainer is not None:
            trainer.request_stop()

    @property
    def has_model(self) -> bool:
        return self.trainer is not None or self.loaded_state is not None

    def class_names(self) -> list[str] | None:
        if self.trainer is not None:
            return list(self.trainer.metadata.get("class_names", []))
        if self.loaded_state is not None:
            return list(self.loaded_state.get("metadata", {}).get("class_names", []))
        return None

    def resume_problem(self, request: TrainRequest) -> str | None:
        """Why Resume cannot continue the current trainer with this request (None: it can)."""
        if self.trainer is None or self.task is None:
            return (
                None
                if self.loaded_state is not None
                else ("nothing to resume yet — press Train first")
            )
        if tuple(self.trainer.config.models) != tuple(request.models):
            return "the model slots changed since the last training — press Train to start over"
        if self.trainer.num_classes != len(request.class_names):
            return "the number of classes changed since the last training — press Train"
        if tuple(self.task.spatial_shape) != tuple(request.scribbles.shape):
            return "the image changed since the last training — press Train to start on it"
        return None

    # ------------------------------------------------------------------ worker side
    def train(self, request: TrainRequest, resume: bool = False) -> Iterator[LayerUpdate]:
        """Generator run by the widget's worker: builds (or continues) the trainer and yields
        a :class:`LayerUpdate` after every step, with predictions every few seconds."""
        self._stop.clear()
        self._layers_ready.clear()
        self._last_warning = ""
        with self._lock:
            self._pending = None
        yield LayerUpdate(stage="preparing", run_total=request.iterations)
        from .device import resolve_device

        try:
            device = resolve_device(request.device)
        except ValueError:
            raise GuiError(
                f"device {request.device!r} is not available on this computer — choose 'auto' "
                "or 'cpu'"
            ) from None
        with _CpuThreads(request.threads, device.type):
            try:
                yield from self._train(request, resume, device)
            except RuntimeError as e:
                if is_out_of_memory(e):
                    self._free_accelerator()
                    raise GuiError(OOM_MESSAGE) from None
                raise

    def _train(self, request: TrainRequest, resume: bool, device) -> Iterator[LayerUpdate]:
        from .training import TrainConfig, TriNetTrainer, prepare_interactive

        class_values = tuple(range(1, len(request.class_names) + 1))
        warnings: list[str] = []
        if resume and self.trainer is not None:
            problem = self.resume_problem(request)
            if problem:
                raise GuiError(problem)
            trainer, task = self.trainer, self.task
            seeds = self._checked_seeds(request.scribbles, warnings)
            if seeds is None:
                raise GuiError(warnings.pop())
            trainer.update_scribbles([seeds])
            trainer.config.iterations = int(request.iterations)
            trainer.config.lr = float(request.lr)
        else:
            if len(class_values) < 2:
                raise GuiError("give at least two class names (background and one structure)")
            task = prepare_interactive(
                request.image, request.scribbles, unlabelled=0, class_values=class_values
            )
            warnings.extend(task.warnings)
            cfg = TrainConfig(
                models=tuple(request.models),
                preset=request.preset,
                iterations=int(request.iterations),
                lr=float(request.lr),
                batch_size=int(request.batch_size),
                patch_size=int(request.patch_size),
                device=str(device),
                preview_every_seconds=float(request.preview_every_seconds),
            )
            if request.rw_weight is not None:
                cfg.rw_weight = float(request.rw_weight)
            if request.max_side is not None:
                cfg.max_side = int(request.max_side)  # 0 = native resolution
            cfg.shape_prior = shape_prior_for(request.shape_prior, request.class_names)
            if self._stop.is_set():
                yield LayerUpdate(stage="done", done=True, stopped=True)
                return
            metadata = {
                "class_names": list(request.class_names),
                "class_values": list(class_values),
                "unlabelled": 0,
                "kind": task.kind,
            }
            self.trainer = None  # a half-built trainer must never be resumed
            trainer = TriNetTrainer(
                task.images,
                task.seeds,
                task.num_classes,
                cfg,
                checkpoint=self.loaded_state,
                metadata=metadata,
            )
            trainer.metadata["class_names"] = list(request.class_names)
            self.trainer, self.task = trainer, task
        self.request = request
        if self._stop.is_set():
            trainer.request_stop()
        # inputs are valid and the networks exist: the GUI can set up its layers
        yield LayerUpdate(
            stage="ready",
            run_total=int(request.iterations),
            device=str(trainer.device),
            preset=str(trainer.config.preset),
        )
        if request.wait_for_layers:
            self._wait_for_layers()
        start_iteration = trainer.iteration
        first = True
        preview_slice = (
            int(request.preview_slice)
            if task.kind == "stack" and request.preview_slice is not None
            else 0  # a 2-D image is one slice: the first preview still comes quicker
        )
        for upd in trainer.steps(first_preview_slices=(preview_slice,)):
            if self._stop.is_set():
                trainer.request_stop()
            seeds = self._take_pending(warnings)
            if seeds is not None:
                trainer.update_scribbles([seeds])
            out = LayerUpdate(
                iteration=upd.iteration,
                run_step=upd.iteration - start_iteration,
                run_total=int(request.iterations),
                elapsed=upd.elapsed,
                losses=dict(upd.losses),
                iterations_per_second=upd.iterations_per_second,
                stage="done" if upd.done else "training",
                done=upd.done,
                stopped=upd.stopped,
                device=str(trainer.device),
                preset=str(trainer.config.preset),
            )
            if first:
                out.warnings.extend(warnings)
                warnings.clear()
                first = False
            elif warnings:
                out.warnings.extend(warnings)
                warnings.clear()
            if upd.prediction is not None:
                self._fill_prediction(out, upd.prediction, task, upd.prediction_slices)
            if upd.done and request.truth is not None and out.labels is not None:
                out.metrics = self._metrics(out, request)
            yield out

    def _wait_for_layers(self) -> None:
        """Lets the GUI create its layers before the first step.

        Creating a napari layer is Python-heavy; a training step running meanwhile takes the
        GIL half of the time and doubles every creation freeze, while the first prediction
        comes no sooner (both halves share one interpreter).
        """
        deadline = time.perf_counter() + LAYERS_WAIT_S
        while not self._layers_ready.wait(0.05):
            if self._stop.is_set() or time.perf_counter() > deadline:
                return

    def _free_accelerator(self) -> None:
        self.trainer = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort only
            pass

    def _warn_once(self, message: str, warnings: list[str]) -> None:
        if message != self._last_warning:
            warnings.append(message)
            self._last_warning = message

    def _checked_seeds(self, scribbles: np.ndarray, warnings: list[str]) -> np.ndarray | None:
        """Seeds for new scribbles, or None (with a warning) when they cannot be used."""
        task = self.task
        if tuple(scribbles.shape) != tuple(task.spatial_shape):
            self._warn_once(
                f"the scribble layer now has shape {scribbles.shape}, not "
                f"{tuple(task.spatial_shape)}; training keeps the previous scribbles",
                warnings,
            )
            return None
        present = np.unique(scribbles)
        unknown = [int(v) for v in present if v != 0 and int(v) not in task.class_values]
        if unknown:
            self._warn_once(
                f"label value(s) {unknown} are not classes (1..{len(task.class_values)}); those "
                "strokes are ignored — pick a label from the class list",
                warnings,
            )
        seeds = task.seeds_from(scribbles)[0]
        classes = [int(v) for v in present if int(v) in task.class_values]
        if len(classes) < 2:
            self._warn_once(
                "the scribbles now hold fewer than two classes; training keeps the previous "
                "scribbles — draw background and at least one structure",
                warnings,
            )
            return None
        return seeds

    def _take_pending(self, warnings: list[str]) -> np.ndarray | None:
        with self._lock:
            raw, self._pending = self._pending, None
        if raw is None:
            return None
        return self._checked_seeds(raw, warnings)

    def _fill_prediction(
        self, out: LayerUpdate, prediction, task, slices: Sequence[int] | None = None
    ) -> None:
        from .data.normalization import restore_layout

        out.labels = {k: task.to_values(v) for k, v in prediction.per_model.items()}
        out.ensemble = task.to_values(prediction.ensemble)
        out.disagreement = restore_layout(prediction.disagreement, task.kind)
        if slices is not None and task.kind == "stack":
            if len(slices) != 1:
                raise ValueError("a live preview of several single slices is not supported")
            out.slice_index = int(slices[0])
            out.labels = {k: v[0] for k, v in out.labels.items()}
            out.ensemble = out.ensemble[0]
            out.disagreement = out.disagreement[0]

    def _metrics(self, out: LayerUpdate, request: TrainRequest) -> list[dict]:
        labels = dict(out.labels)
        labels["ensemble"] = out.ensemble
        return evaluate_labels(labels, request.truth, request.class_names, request.spacing)

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        image: np.ndarray,
        kind: str,
        slice_index: int | None = None,
        truth: np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
        spacing: Sequence[float] | None = None,
        threads: int | None = None,
        device: str = "auto",
    ) -> LayerUpdate:
        """Segments an image (or one slice of a stack) with the trained or loaded models.

        Returns the per-model and ensemble values (1..K) in the layout of what was predicted:
        the image, or the one slice (H, W) when ``slice_index`` is given.
        """
        from .data.normalization import normalize_image, restore_layout
        from .inference import combine_saved, predict_models

        if not self.has_model:
            raise GuiError("no model yet — press Train (or Load model) before predicting")
        norm = normalize_image(image, kind)
        data = norm.data
        # the shape prior's stroke rules apply when this is the image being trained on
        seeds = self.trainer.scribbles_of(data) if self.trainer is not None else None
        if slice_index is not None and norm.kind == "stack":
            data = data[slice_index : slice_index + 1]
            seeds = seeds[slice_index : slice_index + 1] if seeds is not None else None
        state_channels = (
            self.trainer.in_channels
            if self.trainer is not None
            else int(self.loaded_state["in_channels"])
        )
        if data.shape[1] != state_channels:
            kinds = {1: "grayscale", 3: "RGB"}
            raise GuiError(
                f"the model was trained on {kinds.get(state_channels, state_channels)} images but "
                f"this image is {kinds.get(data.shape[1], data.shape[1])} — choose a matching "
                "image layer"
            )
        if self.trainer is not None:
            dev = self.trainer.device
        else:
            from .device import resolve_device

            try:
                dev = resolve_device(device)
            except ValueError:
                raise GuiError(
                    f"device {device!r} is not available on this computer — choose 'auto' or 'cpu'"
                ) from None
        try:
            with _CpuThreads(threads, dev.type):
                if self.trainer is not None:
                    pred = self.trainer.predict(data, seeds=seeds)
                    values = tuple(
                        self.trainer.metadata.get("class_values")
                        or range(1, self.trainer.num_classes + 1)
                    )
                else:
                    models = self._models_from_loaded(dev)
                    scale = float(self.loaded_state.get("working_scale", 1.0))
                    probs = predict_models(models, data, dev, scale)
                    pred = combine_saved(probs, self.loaded_state)
                    meta = self.loaded_state.get("metadata", {})
                    values = tuple(
                        meta.get("class_values")
                        or range(1, int(self.loaded_state["num_classes"]) + 1)
                    )
        except RuntimeError as e:
            if is_out_of_memory(e):
                self._free_accelerator()
                raise GuiError(OOM_MESSAGE) from None
            raise
        lut = np.asarray(values, dtype=np.uint8 if max(values) < 256 else np.uint16)
        layout = "gray" if slice_index is not None else norm.kind
        out = LayerUpdate(stage="done", done=True)
        out.labels = {k: restore_layout(lut[v], layout) for k, v in pred.per_model.items()}
        out.ensemble = restore_layout(lut[pred.ensemble], layout)
        out.disagreement = restore_layout(pred.disagreement, layout)
        out.warnings = list(norm.warnings)
        if truth is not None and class_names is not None and slice_index is None:
            labels = dict(out.labels)
            labels["ensemble"] = out.ensemble
            out.metrics = evaluate_labels(labels, truth, class_names, spacing)
        return out

    def _models_from_loaded(self, device) -> dict:
        if self._loaded_models is None or self._loaded_models[0] != str(device):
            from .checkpoints import models_from_checkpoint

            self._loaded_models = (str(device), models_from_checkpoint(self.loaded_state, device))
        return self._loaded_models[1]

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike, class_names: Sequence[str] | None = None) -> Path:
        from .checkpoints import save_checkpoint

        if self.trainer is not None:
            state = self.trainer.state_dict()
        elif self.loaded_state is not None:
            state = self.loaded_state
        else:
            raise GuiError("there is no model to save yet — press Train first")
        if class_names is not None and not state.get("metadata", {}).get("class_names"):
            state.setdefault("metadata", {})["class_names"] = list(class_names)
        return save_checkpoint(state, path)

    @staticmethod
    def read_checkpoint(path: str | os.PathLike) -> dict:
        from .checkpoints import load_checkpoint

        t0 = time.perf_counter()
        state = load_checkpoint(path)
        state.setdefault("metadata", {})
        state["_load_seconds"] = time.perf_counter() - t0
        return state

    def adopt(self, state: dict, path: str | None = None) -> None:
        """Makes a loaded checkpoint the model: Predict uses it, Train fine-tunes it."""
        state.pop("_load_seconds", None)
        self.loaded_state = state
        self.loaded_path = path
        self._loaded_models = None
        self.trainer = None
        self.task = None
