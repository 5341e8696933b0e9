"""Loading local pretrained weights into the architectures (never downloads anything).

Published checkpoints come in several wrappings: a bare state dict, ``{"model": ...}`` or
``{"state_dict": ...}``, keys prefixed by ``module.`` (DataParallel), ``swin_unet.`` or
``mamba_unet.`` (the official segmentation wrappers), and models built here are wrapped by
:class:`~napari_medseg.models.registry.PadToMultiple` (prefix ``net.``). :func:`load_pretrained`
strips and adds those prefixes, skips tensors whose shape does not fit (a different number of
classes, say) instead of failing, and says exactly what was loaded and what was not.

Two adaptations follow the official training code:

* a 3-channel patch-embedding / first-conv kernel loaded into a 1-channel model is summed over
  its input channels, which is the same as feeding the gray image repeated three times (what
  the official Swin-Unet / Mamba-UNet wrappers do);
* ``mirror_encoder=True`` also copies encoder stage ``layers.i`` into decoder stage
  ``layers_up.(n-1-i)`` where shapes agree, as the official ``load_from`` does with ImageNet
  encoders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

_WRAPPER_PREFIXES = ("module.", "swin_unet.", "mamba_unet.", "model.")
# Buffers derived from hyper-parameters; old checkpoints store them, these models recompute.
_DERIVED = ("relative_position_index", "attn_mask", "num_batches_tracked")


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did; ``str(report)`` is a readable summary."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def some(keys: list[str]) -> str:
            head = ", ".join(keys[:5])
            return head + (f", ... (+{len(keys) - 5})" if len(keys) > 5 else "")

        lines = [f"loaded {len(self.loaded)} tensors"]
        for name in ("adapted", "missing", "unexpected", "shape_mismatch"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"{name} ({len(keys)}): {some(keys)}")
        return "\n".join(lines)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key], path)
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise ValueError(
        f"{path} does not contain a state dict (a dict of tensors, optionally under 'model' or "
        "'state_dict'); save one with torch.save(model.state_dict(), path)"
    )


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and sd:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    return sd


def _mirror_encoder(sd: dict[str, torch.Tensor], num_stages: int) -> dict[str, torch.Tensor]:
    out = dict(sd)
    for k, v in sd.items():
        m = re.match(r"layers\.(\d+)\.(blocks\..*)", k)
        if m:
            out.setdefault(f"layers_up.{num_stages - 1 - int(m.group(1))}.{m.group(2)}", v)
    return out


def load_pretrained(
    model: nn.Module, path: str | Path, strict: bool = False, mirror_encoder: bool = False
) -> LoadReport:
    """Loads a local state-dict file into ``model`` and reports what matched.

    ``strict=True`` raises (with the report) if any model tensor stays unloaded or any file
    tensor is unused; ``strict=False`` loads whatever fits. The file is read with
    ``torch.load(..., weights_only=True)``, so it cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights {path} not found; napari-medseg never downloads weights, so "
            "put the .pth file there yourself"
        )
    sd = _strip_prefixes(_unwrap(torch.load(path, map_location="cpu", weights_only=True), path))
    sd = {k: v for k, v in sd.items() if not k.endswith(_DERIVED)}
    target = model.state_dict()
    target_keys = [k for k in target if not k.endswith(_DERIVED)]
    if target_keys and all(k.startswith("net.") for k in target_keys):
        sd = {("net." + k if not k.startswith("net.") else k): v for k, v in sd.items()}
    if mirror_encoder:
        stages = {int(m.group(1)) for k in sd if (m := re.search(r"layers\.(\d+)\.", k))}
        prefix = "net." if any(k.startswith("net.layers.") for k in sd) else ""
        if stages:
            unprefixed = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            mirrored = _mirror_encoder(unprefixed, max(stages) + 1)
            # Only decoder tensors the model has: the bottleneck stage has no mirror.
            sd.update({prefix + k: v for k, v in mirrored.items() if prefix + k in target})

    report = LoadReport()
    to_load: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k not in target:
            report.unexpected.append(k)
            continue
        want = target[k]
        if v.shape == want.shape:
            to_load[k] = v
        elif (
            v.dim() == 4
            and want.dim() == 4
            and want.shape[1] == 1
            and v.shape[1] == 3
            and (v.shape[0] == want.shape[0] and v.shape[2:] == want.shape[2:])
        ):
            to_load[k] = v.sum(dim=1, keepdim=True)
            report.adapted.append(f"{k} (3 input channels summed to 1)")
        else:
            report.shape_mismatch.append(f"{k}: file {tuple(v.shape)} vs model {tuple(want.shape)}")
    report.loaded = sorted(to_load)
    report.missing = [k for k in target_keys if k not in to_load]
    if strict and (report.missing or report.unexpected or report.shape_mismatch):
        raise RuntimeError(f"strict loading of {path} failed:\n{report}")
    model.load_state_dict(to_load, strict=False)
    return report
