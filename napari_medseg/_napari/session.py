"""What the widget's worker threads run: training, prediction, evaluation, checkpoints.

No Qt and no napari here, on purpose: everything in this module runs *off* the GUI thread
(napari ``thread_worker``), and everything it hands back is plain numpy already in the
layer's layout and label convention (uint8 values 1..K, see :mod:`.layers`), so the GUI thread
only writes arrays into layers. Keeping it Qt-free also lets the tests and the benchmark drive
it headless. The segmentation itself is :class:`napari_medseg.workflow.Workflow`'s, the same
as the CLI's; this module adds what a GUI needs around it: a thread policy, a wait for the
layers, scribbles handed over while training, messages once, out-of-memory advice.

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

from ..errors import InputError, MedsegError

#: How long a worker waits for the GUI to create its layers before training anyway (s).
LAYERS_WAIT_S = 5.0

#: What to tell the user when the accelerator runs out of memory.
OOM_MESSAGE = (
    "the GPU ran out of memory — choose preset 'lite', a smaller batch or patch size, or "
    "device 'cpu', then press Train again"
)


class GuiError(MedsegError):
    """A problem with what the widget was asked to do; the message says how to fix it."""


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
    # the classical answer may combine the walker with a classifier on the strokes
    # (TrainConfig.classifier); False: the walker alone
    classifier: bool = True
    # the slice of a stack the user is looking at: the first live preview predicts only it
    # (quick), later previews the whole stack
    preview_slice: int | None = None
    # after the "ready" update, wait (at most LAYERS_WAIT_S) for layers_ready() before training
    wait_for_layers: bool = False
    # what Train starts from: "current" (the trained or loaded trio, when there is one: it
    # carries from image to image) or "scratch" (new networks)
    start: str = "current"
    # more (image, scribbles) pairs trained on together with this one ("every open image with
    # strokes"); ``image``/``scribbles`` stay the first pair: previews and live strokes are its
    more: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def shape_prior_for(choice: str, class_names: Sequence[str]) -> dict | None:
    """The widget's prior choice for its named classes (a config dict), or GuiError why not."""
    from ..shape_prior import cardiac_prior_from_names

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
    """One message from a worker to the GUI thread; arrays are ready for the layers."""

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
    report: object | None = None  # the floor's report (training.floor.FloorReport)

    def show(self, segmentation) -> LayerUpdate:
        """Carries a :class:`~napari_medseg.workflow.Segmentation` (already in layer values)."""
        self.labels = dict(segmentation.labels)
        self.ensemble = segmentation.ensemble
        self.disagreement = segmentation.disagreement
        self.slice_index = segmentation.slice_index
        self.warnings.extend(segmentation.warnings)
        self.report = segmentation.report
        return self


def warm_imports() -> None:
    """Imports what Train needs, so the first press does not wait for it.

    Run when the widget opens (:func:`start_warm_up`): importing the training stack takes
    seconds (torch, MONAI for the Dice loss, ``torch._dynamo`` for the first optimiser; the
    measured times are in docs/design.md "The widget and the GUI thread"), which would
    otherwise count against "Train → first prediction". What the first training step needs
    comes first; metrics and checkpoints (Evaluate, Save/Load) last.
    """
    from ..data import normalization  # noqa: F401
    from ..training import interactive, trainer  # noqa: F401

    # scipy.ndimage and skimage.morphology: the shape prior's rules on the first preview
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
    from .. import checkpoints, inference, metrics, workflow  # noqa: F401


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
    software rendering): 1 thread up to 2 cores, ``cores - 1`` above — a second torch thread
    on 2 cores made steps much slower (docs/design.md "The widget and the GUI thread").
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
    if isinstance(exc, MedsegError):
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
    from ..metrics import evaluate_segmentation

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


def _free_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort only
        pass


class TrainingSession:
    """Owns the widget's :class:`~napari_medseg.workflow.Workflow` across Train, Resume,
    Predict, Save and Load."""

    def __init__(self) -> None:
        self.workflow = None  # napari_medseg.workflow.Workflow once trained or loaded
        self.request: TrainRequest | None = None
        self.loaded_path: str | None = None
        self._pending: np.ndarray | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cancel_task = threading.Event()  # Stop for a folder prediction
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

    def cancel_task(self) -> None:
        """Stop for a folder prediction: it ends after the image it is on, writing nothing."""
        self._cancel_task.set()

    def arm_task(self) -> None:
        """Called on the GUI thread before a stoppable task starts (a Stop pressed right
        after must not be undone by the worker starting late)."""
        self._cancel_task.clear()

    def request_stop(self) -> None:
        self._stop.set()
        if self.workflow is not None:
            self.workflow.request_stop()

    @property
    def has_model(self) -> bool:
        return self.workflow is not None and self.workflow.has_model

    def model_stamp(self) -> tuple | None:
        """Which weights a prediction comes from: it changes when training moves them or
        another model is loaded (the widget re-predicts an image whose layers are older)."""
        wf = self.workflow
        if wf is None or not wf.has_model:
            return None
        if wf.trainer is not None:
            return ("trained", id(wf.trainer), int(wf.trainer.iteration))
        return ("loaded", id(wf.base))

    @property
    def trainer(self):
        """The trainer being (or last) trained; None after Load or before Train."""
        return self.workflow.trainer if self.workflow is not None else None

    @property
    def base(self):
        """The loaded checkpoint that Train fine-tunes and Predict uses without a trainer."""
        return self.workflow.base if self.workflow is not None else None

    def class_names(self) -> list[str] | None:
        if self.workflow is None or not self.workflow.has_model:
            return None
        return list(self.workflow.task.class_names)

    def slot_models(self) -> tuple[tuple[str, ...], list[str]]:
        """(architectures, slot keys) of the model Predict would use."""
        wf = self.workflow
        return (wf.models, wf.keys) if wf is not None else ((), [])

    def resume_problem(self, request: TrainRequest) -> str | None:
        """Why Resume cannot continue the current trainer with this request (None: it can)."""
        wf = self.workflow
        if self.trainer is None:
            return None if self.base is not None else "nothing to resume yet — press Train first"
        if tuple(wf.models) != tuple(request.models):
            return "the model slots changed since the last training — press Train to start over"
        if wf.num_classes != len(request.class_names):
            return "the number of classes changed since the last training — press Train"
        if tuple(wf.inputs[0].spatial_shape) != tuple(request.scribbles.shape):
            return "the image changed since the last training — press Train to start on it"
        if len(wf.inputs) != 1 + len(request.more):
            return "the images to train on changed since the last training — press Train"
        return None

    def start_problem(self, request: TrainRequest, in_channels: int, image: str) -> str | None:
        """Why Train cannot start from the current model with this request (None: it can, or
        it starts from scratch). Cheap: the GUI thread asks before anything runs."""
        if request.start != "current" or not self.has_model:
            return None
        problem = self.workflow.fit_problem(
            models=request.models,
            num_classes=len(request.class_names),
            in_channels=in_channels,
            preset=request.preset,
            image=image,
        )
        if problem:
            return f"{problem} — or choose 'Start from: scratch' to train new networks"
        return None

    def start_text(self, request: TrainRequest) -> str:
        """What Train starts from, in words (the status line and a notification)."""
        if request.start != "current" or not self.has_model:
            return "from scratch"
        if self.trainer is not None:
            return f"continuing the current model ({self.trainer.iteration} steps so far)"
        source = Path(self.loaded_path).name if self.loaded_path else "the loaded model"
        return f"fine-tuning {source} ({self.base.iteration} steps so far)"

    def model_card(self) -> str | None:
        """The current model's card as ``napari-medseg info`` prints it (None: no model)."""
        from ..checkpoints import card_text

        if not self.has_model:
            return None
        return card_text(self.workflow.outline())

    def fit_problem(self, in_channels: int, image: str) -> str | None:
        """Why the current model cannot predict an image with ``in_channels`` channels."""
        if not self.has_model:
            return None
        return self.workflow.fit_problem(in_channels=in_channels, image=image)

    # ------------------------------------------------------------------ worker side
    def train(self, request: TrainRequest, resume: bool = False) -> Iterator[LayerUpdate]:
        """Generator run by the widget's worker: builds (or continues) the workflow's trainer
        and yields a :class:`LayerUpdate` after every step, with predictions every few
        seconds."""
        self._stop.clear()
        self._layers_ready.clear()
        self._last_warning = ""
        with self._lock:
            self._pending = None
        yield LayerUpdate(stage="preparing", run_total=request.iterations)
        from ..device import resolve_device

        device = resolve_device(request.device)
        with _CpuThreads(request.threads, device.type):
            try:
                yield from self._train(request, resume, device)
            except RuntimeError as e:
                if is_out_of_memory(e):
                    self._discard_trainer()
                    raise GuiError(OOM_MESSAGE) from None
                raise

    def _train(self, request: TrainRequest, resume: bool, device) -> Iterator[LayerUpdate]:
        from ..training import TrainConfig
        from ..workflow import Task, Workflow

        warnings: list[str] = []
        if resume and self.trainer is not None:
            problem = self.resume_problem(request)
            if problem:
                raise GuiError(problem)
            wf = self.workflow
            warnings.extend(wf.update_scribbles(request.scribbles))
            wf.configure(iterations=int(request.iterations), lr=float(request.lr))
        else:
            # the current trio (trained or loaded) carries on, unless told to start afresh;
            # whether it fits was asked before (start_problem), the trainer checks it again
            base = None
            if request.start == "current" and self.has_model:
                base = self.workflow.start_point()
            wf = Workflow(
                Task.named(request.class_names, request.spacing),
                base=base,
                walker_history=None if self.workflow is None else self.workflow.walker_history,
            )
            warnings.extend(wf.set_inputs([(request.image, request.scribbles), *request.more]))
            cfg = TrainConfig(
                models=tuple(request.models),
                preset=request.preset,
                iterations=int(request.iterations),
                lr=float(request.lr),
                batch_size=int(request.batch_size),
                patch_size=int(request.patch_size),
                device=str(device),
                preview_every_seconds=float(request.preview_every_seconds),
                adapt_threads=True,  # a busy core must not stall the user's Train
            )
            if request.rw_weight is not None:
                cfg.rw_weight = float(request.rw_weight)
            if request.max_side is not None:
                cfg.max_side = int(request.max_side)  # 0 = native resolution
            cfg.shape_prior = shape_prior_for(request.shape_prior, request.class_names)
            cfg.classifier = bool(request.classifier)
            if self._stop.is_set():
                yield LayerUpdate(stage="done", done=True, stopped=True)
                return
            # the old trainer is gone from here on, even if building the new one fails
            self.workflow = wf
            self.loaded_path = None  # the trio is no longer the file's
            wf.build(cfg)
        self.request = request
        if self._stop.is_set():
            wf.request_stop()
        trainer = wf.trainer
        # inputs are valid and the networks exist: the GUI can set up its layers
        yield LayerUpdate(
            stage="ready",
            run_total=int(request.iterations),
            device=str(trainer.device),
            preset=str(wf.preset),
        )
        if request.wait_for_layers:
            self._wait_for_layers()
        first = True
        for progress in wf.train(preview_slice=request.preview_slice):
            if self._stop.is_set():
                wf.request_stop()
            self._take_pending(warnings)
            out = LayerUpdate(
                iteration=progress.iteration,
                run_step=progress.run_step,
                run_total=int(request.iterations),
                elapsed=progress.elapsed,
                losses=dict(progress.losses),
                iterations_per_second=progress.iterations_per_second,
                stage="done" if progress.done else "training",
                done=progress.done,
                stopped=progress.stopped,
                device=str(trainer.device),
                preset=str(wf.preset),
            )
            if first or warnings:
                out.warnings.extend(warnings)
                warnings.clear()
                first = False
            if progress.segmentation is not None:
                out.show(progress.segmentation)
            if progress.done and request.truth is not None and out.labels is not None:
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

    def _discard_trainer(self) -> None:
        if self.workflow is not None:
            self.workflow.discard_trainer()
        _free_accelerator_memory()

    def _warn_once(self, message: str, warnings: list[str]) -> None:
        if message != self._last_warning:
            warnings.append(message)
            self._last_warning = message

    def _take_pending(self, warnings: list[str]) -> None:
        """Hands the scribbles drawn since the last step to the workflow (warnings once)."""
        with self._lock:
            raw, self._pending = self._pending, None
        if raw is None:
            return
        try:
            found = self.workflow.update_scribbles(raw)
        except InputError as e:  # training keeps the previous scribbles
            found = [str(e)]
        for message in found:
            self._warn_once(message, warnings)

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
        scribbles: np.ndarray | None = None,
    ) -> LayerUpdate:
        """Segments an image (or one slice of a stack) with the trained or loaded models.

        ``scribbles``: the strokes drawn on this image (the floor's walker uses them).

        Returns the per-model and ensemble values (1..K) in the layout of what was predicted:
        the image, or the one slice (H, W) when ``slice_index`` is given.
        """
        if not self.has_model:
            raise GuiError("no model yet — press Train (or Load model) before predicting")
        wf = self.workflow
        try:
            with _CpuThreads(threads, wf.device_for(device).type):
                seg = wf.predict(
                    image,
                    kind=kind,
                    slice_index=slice_index,
                    device=device,
                    image_name="this image layer",
                    scribbles=scribbles,
                )
        except RuntimeError as e:
            if is_out_of_memory(e):
                self._discard_trainer()
                raise GuiError(OOM_MESSAGE) from None
            raise
        out = LayerUpdate(stage="done", done=True).show(seg)
        if truth is not None and class_names is not None and seg.slice_index is None:
            labels = dict(out.labels)
            labels["ensemble"] = out.ensemble
            out.metrics = evaluate_labels(labels, truth, class_names, spacing)
        return out

    def predict_many(
        self,
        items: Sequence[tuple[str, np.ndarray, str, np.ndarray | None]],
        device: str = "auto",
        threads: int | None = None,
    ) -> Iterator[tuple[str, LayerUpdate | None, str | None]]:
        """Predicts several images one after the other ("every open image").

        ``items``: (name, image, kind, scribbles or None). Yields (name, update, None) per
        image, or (name, None, message) for one that cannot be predicted — the others still
        are.
        """
        for name, image, kind, scribbles in items:
            try:
                out = self.predict(image, kind, threads=threads, device=device, scribbles=scribbles)
            except MedsegError as e:
                yield name, None, f"'{name}': {e}"
                continue
            yield name, out, None

    def predict_folder(
        self,
        folder: str | os.PathLike,
        out: str | os.PathLike,
        device: str = "auto",
        threads: int | None = None,
    ) -> Iterator[tuple[int, int, str, list[Path] | None, list[dict] | None]]:
        """Predicts every image file of ``folder`` into ``out`` (one ``<stem>.tif`` each and
        ``review.csv``, staged: :meth:`~napari_medseg.workflow.Workflow.predict_folder`).
        Yields (done, total, last file name, written files and the review rows at the end);
        closing the generator (Stop) leaves ``out`` as it was."""
        if not self.has_model:
            raise GuiError("no model yet — press Train (or Load model) before predicting")
        wf = self.workflow
        inputs = [self.loaded_path] if self.loaded_path else []
        with _CpuThreads(threads, wf.device_for(device).type):
            steps = wf.predict_folder(
                folder, out, device=device, inputs=inputs, option="the output folder"
            )
            try:
                for step in steps:
                    name = step.source.name if step.source is not None else ""
                    yield step.done, step.total, name, step.written, step.review
                    if self._cancel_task.is_set():
                        return  # closes the staged run here, in the worker: nothing written
            finally:
                steps.close()

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike, class_names: Sequence[str] | None = None) -> Path:
        if not self.has_model:
            raise GuiError("there is no model to save yet — press Train first")
        return self.workflow.save(path, class_names)

    @staticmethod
    def read_checkpoint(path: str | os.PathLike):
        """Reads a checkpoint (in a worker); the GUI thread then checks and adopts it."""
        from ..checkpoints import load_checkpoint

        return load_checkpoint(path)

    def adopt(self, checkpoint, path: str | None = None) -> None:
        """Makes a loaded checkpoint the model: Predict uses it, Train fine-tunes it."""
        from ..workflow import Workflow

        self.workflow = Workflow(base=checkpoint)
        self.loaded_path = path
