"""Regenerate the screenshots of docs/widget.md by driving the real widget.

xvfb-run -a .venv/bin/python scripts/widget_screenshots.py
"""

import time
from pathlib import Path

import napari
from qtpy.QtCore import QEventLoop, QTimer

from napari_mireg._sample_data import sample_pair
from napari_mireg._widget import JACOBIAN, UPDATE, WARPED, WARPED_LABELS, RegistrationWidget

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def wait(until, timeout=300.0):
    """Spin the Qt event loop until `until()` is true."""
    loop = QEventLoop()
    started = time.perf_counter()
    timer = QTimer()
    timer.timeout.connect(
        lambda: (until() or time.perf_counter() - started > timeout) and loop.quit()
    )
    timer.start(50)
    loop.exec()
    timer.stop()


def shoot(viewer, name):
    wait(lambda: True)
    viewer.screenshot(str(IMAGES / name), canvas_only=False, flash=False)
    print(f"wrote {IMAGES / name}")


def main():
    IMAGES.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1280)  # the whole panel, without scrolling
    for data, kwargs, kind in sample_pair():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.layers["fixed_synthseg"].visible = False
    viewer.layers["moving_synthseg"].visible = False
    widget = RegistrationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MI-SyN registration")
    viewer.dims.set_point(0, viewer.layers["fixed_t1"].translate[0] + 90)
    shoot(viewer, "1-inputs.png")

    widget.start()
    # A live view (layers, plots) drawn during the second level.
    wait(lambda: widget.plots.values.size > 45)
    widget.worker.pause()
    wait(lambda: widget.worker.is_paused)
    viewer.layers["moving_t2"].visible = False
    shoot(viewer, "2-live.png")
    widget.worker.resume()
    wait(lambda: widget.worker is None)

    for layer in viewer.layers:
        layer.visible = layer.name in ("fixed_t1", WARPED_LABELS)
    viewer.layers[WARPED_LABELS].opacity = 0.45
    shoot(viewer, "3-result.png")

    for layer in viewer.layers:
        layer.visible = layer.name == JACOBIAN
    shoot(viewer, "4-jacobian.png")

    for layer in viewer.layers:
        layer.visible = layer.name in ("fixed_t1", WARPED, UPDATE)
    viewer.layers[UPDATE].visible = False
    widget.clean_layer("moving_synthseg")
    for layer in viewer.layers:
        layer.visible = layer.name in ("fixed_t1", "moving_synthseg cleaned")
    shoot(viewer, "5-clean-labels.png")
    viewer.close()


if __name__ == "__main__":
    main()
