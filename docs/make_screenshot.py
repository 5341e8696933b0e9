"""Writes docs/screenshot.png from a real napari session: the MRI sample, its scribbles, the
three networks' predictions, the ensemble and their disagreement, and the docked widget.

Everything on the picture is produced by the plugin as a user would drive it: open the
sample, press Train (UNet / SwinUNet / MambaUNet, lite, CPU), Stop after ``--seconds``,
Predict the stack with the ground truth selected (fills the Dice/HD95 table). The only
additions are for the picture: napari's grid mode with one panel per layer, each panel with
a view of the same image underneath (no data copied). Run under Xvfb on a headless machine::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshot.py [--seconds 120]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _wait(app, condition, timeout: float) -> None:
    t0 = time.perf_counter()
    while not condition():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=120.0, help="training time before Stop")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--slice", type=int, default=2, help="slice of the stack to show")
    p.add_argument("--out", type=Path, default=HERE / "screenshot.png")
    args = p.parse_args(argv)

    from qtpy.QtWidgets import QApplication

    try:  # under PyQt5, napari toasts a deprecation notice that would cover part of the picture
        import napari._qt.qt_main_window as qt_main_window

        qt_main_window.SHOW_QT_WARNING = False
    except (ImportError, AttributeError):
        pass

    from napari_medseg._napari.launcher import open_viewer
    from napari_medseg._napari.widget import PREDICT_TARGETS

    viewer, w = open_viewer("mri", show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1600, 1000)
    w.truth_combo.setCurrentText("ground truth")
    w.device_combo.setCurrentText("cpu")
    w.preset_combo.setCurrentText("lite")
    w.iterations_spin.setValue(100_000)
    w.batch_spin.setValue(args.batch)
    w.patch_spin.setValue(args.patch)
    w.preview_spin.setValue(10.0)
    viewer.dims.set_current_step(0, args.slice)

    w.train_btn.click()
    t0 = time.perf_counter()
    _wait(app, lambda: time.perf_counter() - t0 > args.seconds, args.seconds + 60)
    w.stop_btn.click()
    _wait(app, lambda: not w.is_busy, 600)
    w.target_combo.setCurrentText(PREDICT_TARGETS[1])
    w.predict_btn.click()
    _wait(app, lambda: not w.is_busy and not w.layers_pending, 600)

    # one grid panel per layer, each over a view of the image (same array, no copy); the
    # disagreement map makes way for the ground truth
    image = viewer.layers["MRI T1"]
    panels = [
        "scribbles",
        "medseg: UNet",
        "medseg: SwinUNet",
        "medseg: MambaUNet",
        "medseg: ensemble",
        "ground truth",
    ]
    viewer.layers.remove("medseg: disagreement")
    order = []
    for i, name in enumerate(panels):
        layer = viewer.layers[name]
        layer.visible = True
        base = (
            image
            if i == 0
            else viewer.add_image(
                image.data,
                name=f"MRI T1 · {name.removeprefix('medseg: ')}",
                scale=image.scale,
                contrast_limits=image.contrast_limits,
            )
        )
        order += [base, layer]
    for idx, layer in enumerate(order):
        viewer.layers.move(viewer.layers.index(layer), idx)
    viewer.grid.enabled = True
    viewer.grid.stride = 2
    viewer.grid.shape = (2, 3)
    viewer.layers.selection.active = viewer.layers["scribbles"]
    viewer.reset_view()
    for _ in range(30):
        app.processEvents()
        time.sleep(0.03)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False, flash=False)
    print(f"{w.status_label.text()}\nwrote {args.out}")
    w.shutdown()
    viewer.close()
    return args.out


if __name__ == "__main__":
    main()
