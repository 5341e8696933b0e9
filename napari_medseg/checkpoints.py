"""Safe checkpoints of a trained trio.

A checkpoint is a plain dict of tensors, numbers, strings and lists, written atomically (temp
file + rename, so a crash never leaves a half-written file under the real name) and read with
``torch.load(weights_only=True)``, which refuses files that carry pickled code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .models import create_model

FORMAT = "napari-medseg-trio"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason and what to do."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
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
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a napari-medseg checkpoint (no '{FORMAT}' marker); "
            "to start from plain network weights use the model's pretrained-file option"
        )
    return state


def check_compatible(state: dict, names, in_channels: int, num_classes: int, preset) -> None:
    saved = [s["name"] for s in state["slots"]]
    if list(saved) != list(names):
        raise CheckpointError(
            f"the checkpoint holds models {saved} but {list(names)} were selected — select the "
            "same models (or start a new training)"
        )
    if int(state["num_classes"]) != int(num_classes):
        raise CheckpointError(
            f"the checkpoint was trained for {state['num_classes']} classes but {num_classes} "
            "are set — use the same class list to fine-tune"
        )
    if int(state["in_channels"]) != int(in_channels):
        kind = {1: "grayscale", 3: "RGB"}
        raise CheckpointError(
            f"the checkpoint expects {kind.get(state['in_channels'], state['in_channels'])} "
            f"images but this one is {kind.get(in_channels, in_channels)}"
        )
    saved_preset = state["slots"][0].get("preset")
    if preset is not None and saved_preset != preset:
        raise CheckpointError(
            f"the checkpoint uses preset {saved_preset!r} but {preset!r} is selected"
        )


def models_from_checkpoint(state: dict, device: str | torch.device = "cpu") -> dict:
    """Rebuilds every network of a checkpoint for prediction: {slot key: model}."""
    models = {}
    for slot in state["slots"]:
        m = create_model(
            slot["name"], int(state["in_channels"]), int(state["num_classes"]), slot["preset"]
        )
        m.load_state_dict(slot["state_dict"])
        models[slot["key"]] = m.to(device).eval()
    return models
