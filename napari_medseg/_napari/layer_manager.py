"""The plugin's prediction layers: made ahead of time, written in place, one change per pass.

Adding a napari layer, or uploading its data, is the most expensive thing the GUI thread does
for this plugin (vispy visuals, layer controls, repaints: tens to hundreds of ms on a
software-GL machine). :class:`PredictionLayers` therefore owns every operation on the
prediction layers and runs them from a queue, one per event-loop pass (a zero-interval timer
re-armed after each), newest data per layer only; it creates the empty layers before Train
(placeholders that follow the model slots) and writes later predictions into the layers' own
arrays. docs/design.md "The widget and the GUI thread" has the measurements.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer

from .layers import PREFIX, label_colormap, spatial_shape, spatial_transform
from .notify import notify

#: Metadata flag of a prediction layer that was created ahead of Train and is still empty.
PLACEHOLDER = "medseg_placeholder"
#: Metadata key of a prediction layer: the image's part of its name ("" or " (<image>)").
SUFFIX = "medseg_suffix"
ENSEMBLE = f"{PREFIX}ensemble"
DISAGREEMENT = f"{PREFIX}disagreement"


def write_in_place(layer, data: np.ndarray, index: int | None = None) -> bool:
    """Copies ``data`` into the layer's own array (all of it, or slice ``index``).

    Refreshes the layer only when a value changed, and returns False where writing in place
    is impossible (not a writable numpy array, another shape, a narrower dtype): then the
    caller assigns ``layer.data``. Assigning makes napari re-check dims and extent and
    repaint the layer list even for a hidden layer; a refresh is all an in-place write needs,
    and napari skips it for hidden layers (and refreshes them when they are shown).
    """
    arr = layer.data
    data = np.asarray(data)
    if not isinstance(arr, np.ndarray) or not arr.flags.writeable:
        return False
    target = arr if index is None else arr[index]
    if target.shape != data.shape or not np.can_cast(data.dtype, target.dtype, "safe"):
        return False
    if np.array_equal(target, data):
        return True
    np.copyto(target, data)
    layer.refresh()
    return True


def defer_editing_overlays(layer) -> None:
    """Delays a Labels layer's brush and polygon overlays until an editing mode is chosen.

    napari builds them (vispy visuals) when the layer is added because they count as
    visible even while no tool uses them — about a third of the cost of adding a Labels
    layer. Prediction layers are rarely edited; the overlays appear on the first switch to
    an editing mode. Uses napari's private ``_overlays``; does nothing where it differs.
    """
    overlays = getattr(layer, "_overlays", None)
    if overlays is None:
        return
    keys = [
        k
        for k in ("polygon", "brush_stroke")
        if k in overlays and getattr(overlays[k], "visible", False) is True
    ]
    if not keys:
        return
    for k in keys:
        overlays[k].visible = False

    def reveal(event=None) -> None:
        if str(layer.mode) in ("pan_zoom", "transform"):
            return
        layer.events.mode.disconnect(reveal)
        for k in keys:
            overlays[k].visible = True

    layer.events.mode.connect(reveal)


def _whole(data: np.ndarray, index: int | None, base: Callable[[], np.ndarray]) -> np.ndarray:
    """``data`` as a whole array: itself, or written into slice ``index`` of a new ``base()``."""
    if index is None:
        return data
    whole = base()
    whole[index] = data
    return whole


class PredictionLayers:
    """Every operation on one viewer's prediction layers, queued and run one per pass.

    ``parent`` owns the queue's timer (the widget). Layer names are
    ``f"{PREFIX}{title}{suffix}"`` per slot title, plus the ensemble and the disagreement.
    """

    def __init__(self, viewer, parent=None):
        self.viewer = viewer
        self._ops: OrderedDict = OrderedDict()
        self._timer = QTimer(parent)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._run_op)

    # ------------------------------------------------------------------ the queue
    @property
    def pending(self) -> bool:
        return bool(self._ops)

    def queue(self, key, op: Callable[[], None]) -> None:
        """Runs layer updates one per event-loop pass, newest data per layer only.

        Creating a napari layer (or uploading its data) costs tens to hundreds of ms in the GUI
        thread, most of it rendering; doing five in one slot was the longest freeze measured
        by benchmarks/bench_gui_responsiveness.py. One per pass lets Qt repaint and handle
        input in between; a newer prediction replaces a still-queued older one.
        """
        self._ops.pop(key, None)
        self._ops[key] = op
        if not self._timer.isActive():
            self._timer.start()

    def _run_op(self) -> None:
        if not self._ops:
            self._timer.stop()
            return
        _, op = self._ops.popitem(last=False)
        try:
            op()
        except Exception as e:  # noqa: BLE001 - a layer the user removed/edited must not crash
            notify("warning", f"could not update a prediction layer ({e})")
        if not self._ops:
            self._timer.stop()
        else:  # re-armed behind the timers that came due meanwhile: one op per pass
            self._timer.start()

    # ------------------------------------------------------------------ layers
    def get(self, name: str | None, kind):
        """The layer called ``name`` if it exists and is a ``kind``, else None."""
        if name is None or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        return layer if isinstance(layer, kind) else None

    def add(self, layer) -> None:
        """Adds a layer without making it the active one.

        napari activates every new layer, which would swap the layer controls (a costly
        repaint) and, worse, send the user's next brush stroke into a prediction layer while
        they keep drawing scribbles during training.
        """
        layers = self.viewer.layers
        activate = getattr(layers, "_activate_on_insert", None)  # private; absent: activate
        if activate is not None:
            layers._activate_on_insert = False
        try:
            layers.append(layer)
        finally:
            if activate is not None:
                layers._activate_on_insert = activate

    def set_labels(
        self,
        name: str,
        data: np.ndarray,
        image: Image,
        num_classes: int,
        visible: bool,
        slice_index: int | None,
        suffix: str = "",
    ) -> None:
        """Shows ``data`` (the whole image, or one slice) in the Labels layer ``name``.

        An existing layer of the right shape gets the data written into its own array (see
        :func:`write_in_place`); only a missing or mismatched layer is (re)created. ``suffix``:
        the image's part of the name (recorded, so that only that image's placeholders are
        renamed when a slot changes).
        """
        layer = self.get(name, Labels)
        full = spatial_shape(image.data.shape, image.rgb)
        if layer is not None and tuple(layer.data.shape) == tuple(full):
            if layer.metadata.get("medseg_classes") != num_classes:
                layer.colormap = label_colormap(num_classes, show_background=False)
                layer.metadata["medseg_classes"] = num_classes
            layer.metadata.pop(PLACEHOLDER, None)
            if not write_in_place(layer, data, slice_index):
                layer.data = _whole(data, slice_index, lambda: np.array(layer.data, copy=True))
            return
        data = _whole(data, slice_index, lambda: np.zeros(full, dtype=data.dtype))
        if layer is not None:
            self.viewer.layers.remove(layer)
        layer = Labels(
            data,
            name=name,
            colormap=label_colormap(num_classes, show_background=False),
            opacity=0.6,
            visible=visible,
            metadata={
                "medseg_classes": num_classes,
                PLACEHOLDER: not data.any(),
                SUFFIX: suffix,
            },
            **spatial_transform(image),
        )
        defer_editing_overlays(layer)
        self.add(layer)

    def set_disagreement(
        self, name: str, dis: np.ndarray, image: Image, slice_index: int | None
    ) -> None:
        """Shows the share of networks that disagree (the whole image, or one slice)."""
        layer = self.get(name, Image)
        full = spatial_shape(image.data.shape, image.rgb)
        if layer is not None and tuple(layer.data.shape) == tuple(full):
            # in place: no contrast-limit or dims recomputation, nothing at all while hidden
            if not write_in_place(layer, dis, slice_index):
                copy = lambda: np.array(layer.data, dtype=np.float32, copy=True)  # noqa: E731
                layer.data = _whole(dis, slice_index, copy)
            return
        dis = _whole(dis, slice_index, lambda: np.zeros(full, dtype=np.float32))
        if layer is not None:
            self.viewer.layers.remove(layer)
        self.add(
            Image(
                dis,
                name=name,
                colormap="magma",
                contrast_limits=(0.0, 1.0),
                blending="additive",
                opacity=0.7,
                visible=False,
                **spatial_transform(image),
            )
        )

    def prepare(
        self,
        image: Image,
        titles: dict[str, str],
        num_classes: int,
        replace: bool = True,
        suffix: str = "",
    ) -> None:
        """Queues the creation of the (empty) prediction layers that do not exist yet.

        Done ahead of Train (the widget's pre-creation) and, for what is still missing, on the
        worker's "ready" update, before the first step. ``replace``: also recreate layers whose
        shape belongs to another image (only Train does that; choosing an image never drops a
        result). ``suffix``: the image's part of the layer names (see :meth:`show`).
        """
        full = spatial_shape(image.data.shape, image.rgb)

        def wanted(name: str, kind) -> bool:
            layer = self.get(name, kind)
            if layer is None and name not in self.viewer.layers:
                return True  # missing
            return replace and (layer is None or tuple(layer.data.shape) != tuple(full))

        names = [(f"{PREFIX}{t}{suffix}", False) for t in titles.values()]
        names.append((f"{ENSEMBLE}{suffix}", True))
        for name, visible in names:
            if wanted(name, Labels):
                empty = np.zeros(full, np.uint8)
                self.queue(
                    (name, None),
                    partial(
                        self.set_labels, name, empty, image, num_classes, visible, None, suffix
                    ),
                )
        dis = f"{DISAGREEMENT}{suffix}"
        if wanted(dis, Image):
            empty = np.zeros(full, np.float32)
            self.queue((dis, None), partial(self.set_disagreement, dis, empty, image, None))

    def has_results(self, suffix: str = "") -> bool:
        """Whether the ensemble layer of the image with this ``suffix`` holds a prediction
        (not missing, not an empty placeholder)."""
        layer = self.get(f"{ENSEMBLE}{suffix}", Labels)
        return layer is not None and not layer.metadata.get(PLACEHOLDER)

    def rename_placeholders(self, titles: dict[str, str], suffix: str = "") -> None:
        """Empty layers made ahead of Train for a slot whose model changed take the new name
        (only the layers of the image with this ``suffix``)."""
        wanted = [f"{PREFIX}{t}{suffix}" for t in titles.values()]
        spare = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Labels)
            and layer.metadata.get(PLACEHOLDER)
            and layer.metadata.get(SUFFIX, "") == suffix
            and layer.name not in (*wanted, f"{ENSEMBLE}{suffix}")
        ]
        for name in wanted:
            if spare and name not in self.viewer.layers:
                spare.pop(0).name = name

    def show(
        self,
        update,
        image: Image,
        titles: dict[str, str],
        num_classes: int,
        suffix: str = "",
        slice_index: int | None = None,
    ) -> None:
        """Queues one operation per prediction layer for an update's labels and disagreement."""
        items = [
            (f"{PREFIX}{titles.get(key, key)}{suffix}", data, False)
            for key, data in update.labels.items()
        ]
        items.append((f"{ENSEMBLE}{suffix}", update.ensemble, True))
        for name, data, visible in items:
            self.queue(
                (name, slice_index),
                partial(
                    self.set_labels, name, data, image, num_classes, visible, slice_index, suffix
                ),
            )
        name = f"{DISAGREEMENT}{suffix}"
        self.queue(
            (name, slice_index),
            partial(self.set_disagreement, name, update.disagreement, image, slice_index),
        )

    def labels_of(self, titles: dict[str, str], suffix: str = "") -> dict[str, np.ndarray]:
        """Copies of the slots' and the ensemble's current layers of the image with this
        ``suffix``, by slot key (Evaluate)."""
        from .layers import copy_layer_data

        out = {}
        for key, title in titles.items():
            layer = self.get(f"{PREFIX}{title}{suffix}", Labels)
            if layer is not None:
                out[key] = copy_layer_data(layer.data)
        ens = self.get(f"{ENSEMBLE}{suffix}", Labels)
        if ens is not None:
            out["ensemble"] = copy_layer_data(ens.data)
        return out
