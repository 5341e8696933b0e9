"""Safe checkpoints of a trained trio: one typed record, one compatibility check, one format.

On disk a checkpoint is a plain dict of tensors, numbers, strings and lists marked
``format: napari-medseg-trio`` (:meth:`Checkpoint.to_dict`), written atomically
(:func:`napari_medseg.atomic.atomic_write`) and read with ``torch.load(weights_only=True)``,
which refuses files that carry pickled code. Every file records ``content_sha256``, a hash of
its weights (:func:`weights_sha256`), which :func:`load_checkpoint` recomputes: a weight changed
after saving (tampering, a damaged copy) is refused instead of predicting nonsense. In memory
it is a :class:`Checkpoint`, so that every reader (the workflow, the trainer, the widget)
sees named fields instead of dict keys, and every "can this checkpoint be used here?"
question is answered by :meth:`Checkpoint.check_compatible`.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_write
from .data.classes import ClassMap, channel_kind
from .errors import CheckpointError
from .models import create_model, list_models
from .slots import slot_keys

FORMAT = "napari-medseg-trio"
VERSION = 1


@dataclass
class SlotState:
    """One network of the trio: its slot key, architecture, preset and weights."""

    key: str
    name: str
    preset: str
    state_dict: dict[str, torch.Tensor]
    optimizer: dict | None = None


@dataclass
class Checkpoint:
    """A trained trio with what is needed to use it again on the user's images.

    ``config`` is the training configuration (``TrainConfig.to_dict()``), ``metadata`` what the
    user's task needs (``class_values``, ``class_names``, ``unlabelled``, ``kind``),
    ``member_scores`` the ensemble weights' scores, ``working_scale`` the resolution factor
    the networks were trained at. ``source`` names the file in messages; it is not saved.
    """

    config: dict
    in_channels: int
    num_classes: int
    slots: list[SlotState]
    iteration: int = 0
    working_scale: float = 1.0
    member_scores: dict[str, float] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    version: int = VERSION
    # sha256 of the weights as read from a file (None in memory); see weights_sha256
    content_sha256: str | None = field(default=None, compare=False)
    source: str = field(default="the checkpoint", compare=False)
    # the model card (build_card): what the trio is for and what it was trained on, in plain
    # types; {} in files saved before cards existed
    card: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    @property
    def models(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots)

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.slots]

    @property
    def preset(self) -> str | None:
        return self.slots[0].preset if self.slots else None

    @property
    def classes(self) -> ClassMap:
        """The user's class values; the napari convention (1..K) when none were saved."""
        values = self.metadata.get("class_values")
        if values:
            return ClassMap(tuple(values), int(self.metadata.get("unlabelled", 0)))
        return ClassMap.numbered(self.num_classes)

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.get("class_names") or [])

    @property
    def shape_prior(self) -> dict | None:
        return (self.config or {}).get("shape_prior")

    # ------------------------------------------------------------------ format
    def to_dict(self) -> dict:
        """The on-disk layout: plain types only, loadable with ``weights_only=True``."""
        return {
            "format": FORMAT,
            "version": int(self.version),
            "config": dict(self.config),
            "in_channels": int(self.in_channels),
            "num_classes": int(self.num_classes),
            "iteration": int(self.iteration),
            "working_scale": float(self.working_scale),
            "member_scores": {k: float(v) for k, v in self.member_scores.items()},
            "slots": [
                {
                    "key": s.key,
                    "name": s.name,
                    "preset": s.preset,
                    "state_dict": s.state_dict,
                    "optimizer": s.optimizer,
                }
                for s in self.slots
            ],
            "metadata": dict(self.metadata),
            "card": dict(self.card),
            "content_sha256": weights_sha256(self.slots),
        }

    @classmethod
    def from_dict(cls, state: object, source: str = "the checkpoint") -> Checkpoint:
        """Reads :meth:`to_dict`'s layout (and that of every earlier version of it)."""
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointError(
                f"{source} is not a napari-medseg checkpoint (no '{FORMAT}' marker) — load a "
                "model saved by napari-medseg (Save model, or `napari-medseg train`)"
            )
        try:
            names = [s["name"] for s in state["slots"]]
            keys = [s.get("key") or k for s, k in zip(state["slots"], slot_keys(names))]
            slots = [
                SlotState(k, s["name"], s["preset"], s["state_dict"], s.get("optimizer"))
                for s, k in zip(state["slots"], keys)
            ]
            checkpoint = cls(
                config=dict(state.get("config") or {}),
                in_channels=int(state["in_channels"]),
                num_classes=int(state["num_classes"]),
                slots=slots,
                iteration=int(state.get("iteration", 0)),
                working_scale=float(state.get("working_scale", 1.0)),
                member_scores=dict(state.get("member_scores") or {}),
                metadata=dict(state.get("metadata") or {}),
                version=int(state.get("version", VERSION)),
                content_sha256=state.get("content_sha256"),
                source=source,
                card=dict(state.get("card") or {}),
            )
            checkpoint.check_values()
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(
                f"{source} is incomplete ({type(e).__name__}: {e}) — save the model again"
            ) from None
        return checkpoint

    def check_values(self) -> None:
        """Refuses numbers no trained trio can have (a working scale of 0 would predict one
        class everywhere; no slots, no networks)."""
        problems = []
        if not (math.isfinite(self.working_scale) and 0 < self.working_scale <= 1):
            problems.append(f"working_scale {self.working_scale} (must be in (0, 1])")
        if self.in_channels < 1:
            problems.append(f"in_channels {self.in_channels}")
        if self.num_classes < 2:
            problems.append(f"num_classes {self.num_classes} (at least 2)")
        if self.iteration < 0:
            problems.append(f"iteration {self.iteration}")
        if not self.slots:
            problems.append("no networks")
        if any(not isinstance(s.state_dict, dict) for s in self.slots):
            problems.append("a network without weights")
        bad_scores = [k for k, v in self.member_scores.items() if not math.isfinite(float(v))]
        if bad_scores:
            problems.append(f"non-finite ensemble scores for {bad_scores}")
        if problems:
            raise CheckpointError(
                f"{self.source} holds values no trained model has: {'; '.join(problems)} — "
                "the file is damaged or was edited; save the model again"
            )

    def verify_content(self) -> None:
        """Refuses weights that differ from the hash recorded when the file was saved."""
        if self.content_sha256 is None:
            return  # files saved before hashes were recorded
        if not isinstance(self.content_sha256, str) or (
            weights_sha256(self.slots) != self.content_sha256
        ):
            raise CheckpointError(
                f"{self.source} was altered after it was saved: its weights do not match the "
                "content hash recorded in it (a damaged copy, or an edited file) — use an "
                "untouched copy of the model, or train it again"
            )

    # ------------------------------------------------------------------ use
    def check_compatible(
        self,
        *,
        models: Sequence[str] | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        preset: str | None = None,
        image: str = "this image",
    ) -> None:
        """Raises :class:`CheckpointError` saying why this trio cannot serve the request.

        Every argument left ``None`` is not checked; the architectures are always checked
        (a checkpoint from a newer version may name one this version lacks). ``image`` names
        the image in the message about channels.
        """
        unknown = [m for m in self.models if m not in list_models()]
        if unknown:
            raise CheckpointError(
                f"{self.source} uses architectures {unknown} that this version does not "
                "provide — update napari-medseg"
            )
        if models is not None and list(self.models) != list(models):
            raise CheckpointError(
                f"{self.source} holds models {list(self.models)} but {list(models)} were "
                "selected — select the same models (or start a new training)"
            )
        if num_classes is not None and self.num_classes != int(num_classes):
            names = self.class_names
            hint = f" ({', '.join(names)})" if names else ""
            raise CheckpointError(
                f"{self.source} was trained for {self.num_classes} classes{hint} but "
                f"{num_classes} class names are set — enter {self.num_classes} class names "
                "(or load another model)"
            )
        if in_channels is not None and self.in_channels != int(in_channels):
            raise channels_error(self.source, self.in_channels, in_channels, image)
        if preset is not None and self.preset != preset:
            raise CheckpointError(
                f"{self.source} uses preset {self.preset!r} but {preset!r} is selected — "
                f"choose {self.preset!r} to continue it"
            )


def weights_sha256(slots: Sequence[SlotState]) -> str:
    """sha256 over every slot's weights in a canonical order.

    Slots in their order; in each, the key and architecture, then every state-dict entry by
    sorted name with its dtype, shape and raw bytes (CPU, contiguous, native byte order).
    Optimiser states are not covered: they do not change what the trio predicts.
    """
    h = hashlib.sha256()
    for slot in slots:
        h.update(f"slot\0{slot.key}\0{slot.name}\0".encode())
        for name in sorted(slot.state_dict):
            value = slot.state_dict[name]
            if isinstance(value, torch.Tensor):
                t = value.detach().to("cpu").contiguous()
                h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(f"{name}\0{type(value).__name__}\0{value!r}\0".encode())
    return h.hexdigest()


def channels_error(source: str, trained: int, given: int, image: str) -> CheckpointError:
    """The one message for an image whose channels the networks were not built for."""
    kind = channel_kind(trained)
    return CheckpointError(
        f"{source} was trained on {kind} images but {image} is {channel_kind(given)} — "
        f"choose a {kind} image"
    )


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Writes ``checkpoint`` atomically; returns the path."""
    state = checkpoint.to_dict()
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Reads a checkpoint safely; :class:`CheckpointError` says why a file cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist — check the path")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} could not be read: it is not a PyTorch checkpoint file "
            "(truncated or corrupt?) — save the model again"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {path} was refused: it contains pickled code or objects that a safe "
            f"load does not allow ({str(e).splitlines()[0][:200]}). Only load checkpoints "
            "written by napari-medseg."
        ) from None
    except Exception as e:  # truncated/corrupt file
        raise CheckpointError(
            f"checkpoint {path} could not be read ({e}); it may be corrupt"
        ) from None
    checkpoint = Checkpoint.from_dict(state, source=f"the model in {path.name}")
    checkpoint.verify_content()
    return checkpoint


def load_weights(model, slot: SlotState, source: str) -> None:
    """``model.load_state_dict`` with a :class:`CheckpointError` naming the file and slot."""
    try:
        model.load_state_dict(slot.state_dict)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{source}: the weights of {slot.key} ({slot.name}) do not fit its architecture "
            f"({first}) — the file is damaged or from another version; save the model again"
        ) from None


def models_from_checkpoint(checkpoint: Checkpoint, device: str | torch.device = "cpu") -> dict:
    """Rebuilds every network of a checkpoint for prediction: {slot key: model}."""
    checkpoint.check_compatible()
    models = {}
    for slot in checkpoint.slots:
        m = create_model(slot.name, checkpoint.in_channels, checkpoint.num_classes, slot.preset)
        load_weights(m, slot, checkpoint.source)
        models[slot.key] = m.to(device).eval()
    return models


# ---------------------------------------------------------------------- model cards
def build_card(
    checkpoint: Checkpoint,
    *,
    trained_on: dict | None = None,
    validation: dict | None = None,
    run: dict | None = None,
    base: dict | None = None,
) -> dict:
    """The model card of ``checkpoint``: plain types, saved with it, printed by ``info``.

    What the checkpoint itself knows (classes, channels, preset, models, working size) is
    read from it; ``trained_on`` (dataset name, images, scribbled pixels...), ``validation``
    (Dice on held-out files), ``run`` (steps and seconds of the run, for a resume) and
    ``base`` (the card's ``trained_on`` of the model it was fine-tuned from) come from the
    caller, which alone knows them.
    """
    from datetime import datetime, timezone

    from . import __version__
    from .data.normalization import describe_normalisation

    names = checkpoint.class_names
    values = checkpoint.classes.values
    config = checkpoint.config or {}
    card = {
        "classes": [
            {"value": int(v), "name": names[i] if i < len(names) else f"class {v}"}
            for i, v in enumerate(values)
        ],
        "unlabelled": int(checkpoint.classes.unlabelled),
        "image": {
            "kind": str(checkpoint.metadata.get("kind", "auto")),
            "channels": int(checkpoint.in_channels),
        },
        "normalisation": describe_normalisation(checkpoint.in_channels),
        "working_size": {
            "max_side": config.get("max_side"),
            "scale": float(checkpoint.working_scale),
        },
        "preset": checkpoint.preset,
        "models": list(checkpoint.models),
        "iteration": int(checkpoint.iteration),
        "trained_on": dict(trained_on or {}),
        "validation": dict(validation) if validation else None,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
    }
    if run:
        card["run"] = dict(run)
    if base:
        card["fine_tuned_from"] = dict(base)
    return card


def card_text(checkpoint: Checkpoint) -> str:
    """The model card as lines for people (what ``napari-medseg info`` prints).

    A checkpoint saved before cards existed gets what its own fields say, and a note.
    """
    card = checkpoint.card or build_card(checkpoint)
    lines = [f"model card of {checkpoint.source}"]
    if not checkpoint.card:
        lines.append("  (saved without a card: only what the file itself records)")
    classes = ", ".join(f"{c['value']} {c['name']}" for c in card.get("classes", []))
    lines.append(f"  classes:        {classes}  (unlabelled: {card.get('unlabelled')})")
    image = card.get("image", {})
    lines.append(
        f"  images:         {channel_kind(image.get('channels', 1))}, kind {image.get('kind')}"
    )
    lines.append(f"  normalisation:  {card.get('normalisation')}")
    size = card.get("working_size", {})
    side = size.get("max_side") or "native"
    lines.append(f"  working size:   longest side {side} (scale {size.get('scale', 1.0):.3g})")
    lines.append(f"  preset/models:  {card.get('preset')} — {', '.join(card.get('models', []))}")
    trained = card.get("trained_on") or {}
    if trained:
        parts = [f"{k.replace('_', ' ')} {v}" for k, v in trained.items() if v is not None]
        lines.append(f"  trained on:     {'; '.join(parts)}")
    base = card.get("fine_tuned_from")
    if base:
        parts = [f"{k.replace('_', ' ')} {v}" for k, v in base.items() if v is not None]
        lines.append(f"  fine-tuned from: {'; '.join(parts)}")
    run = card.get("run")
    steps = f"{card.get('iteration')} steps"
    if run:
        steps += f" (this dataset run: {run.get('steps')} steps, {run.get('seconds', 0.0):.0f} s)"
    lines.append(f"  trained:        {steps}")
    val = card.get("validation")
    if val:
        members = val.get("members") or {}
        extra = ", ".join(f"{k} {v:.4f}" for k, v in members.items())
        lines.append(
            f"  validation:     Dice {val.get('dice', float('nan')):.4f} (ensemble, mean over "
            f"foreground classes) on {val.get('images')} file(s) at step {val.get('step')}"
            + (f"; {extra}" if extra else "")
        )
        if val.get("walker") is not None:  # what lets the floor trust the base, or not
            lines.append(
                f"                  the random walker on the same files' strokes: "
                f"{val['walker']:.4f}"
            )
    else:
        lines.append("  validation:     none")
    if card.get("unsaved"):
        lines.append("  saved:          not yet — Save model keeps it with this card")
    else:
        saved = f"{card.get('date', '?')} by napari-medseg {card.get('version')}"
        lines.append(f"  saved:          {saved}")
    return "\n".join(lines)
