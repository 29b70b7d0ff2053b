"""Regenerate the screenshots of docs/widget.md by driving the real widget.

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/widget_screenshots.py

makes the screenshots at 1600x1000 and, with ``--size 1280x800``, those of a laptop screen
(named ``*-1280x800.png``).
"""

import argparse
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QEventLoop, QTimer

from napari_mireg.gui.live_layers import JACOBIAN, WARPED_LABELS
from napari_mireg.gui.sample import sample_pair
from napari_mireg.gui.widget import RegistrationWidget

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


def pause(seconds):
    started = time.perf_counter()
    wait(lambda: time.perf_counter() - started > seconds)


def shoot(viewer, name, suffix):
    pause(0.5)
    path = IMAGES / f"{name}{suffix}.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="1600x1000", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    suffix = "" if args.size == "1600x1000" else f"-{args.size}"
    IMAGES.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(width, height)
    for data, kwargs, kind in sample_pair():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = RegistrationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MI-SyN registration")
    pause(0.5)
    viewer.reset_view()
    viewer.dims.set_point(0, viewer.layers["fixed_t1"].translate[0] + 90)
    shoot(viewer, "1-inputs", suffix)

    widget.start()
    # The live view (contours, overlay, plots) during the second level. Frames are made
    # more often than in real use, so that one is drawn there whatever the machine's speed.
    widget.scheduler.pacing.share, widget.scheduler.pacing.min_interval = 0.5, 0.2
    # The status line names the level; levels stop early once they converge, so the view is
    # taken once the second level runs rather than after a count of iterations.
    runner = widget.runner
    wait(lambda: not runner.running or "Level 2/3" in widget.reporter.status.text())
    if runner.running:
        runner.pause()
        wait(lambda: runner.is_paused)
        shoot(viewer, "2-live", suffix)
        runner.resume()
    wait(lambda: not runner.running)

    # The results, with the left lateral ventricle's row clicked.
    table = widget.results.table
    rows = [r for r in range(table.rowCount()) if table.item(r, 0).text() == "4"]
    if rows:
        table.selectRow(rows[0])
        widget.results._row_clicked(rows[0], 1)
    shoot(viewer, "3-result", suffix)
    if rows:
        widget.results._row_clicked(rows[0], 1)  # every label again

    for button in widget.mode_buttons.buttons():
        if button.text() == "Checkerboard":
            button.click()
    shoot(viewer, "4-checkerboard", suffix)
    for button in widget.mode_buttons.buttons():
        if button.text() == "Overlay":
            button.click()

    jacobian = viewer.layers[widget.run_layers.name(JACOBIAN)]
    for layer in viewer.layers:
        if layer.name != widget.run_layers.name(WARPED_LABELS):
            layer.visible = layer is jacobian
    viewer.layers.selection.active = jacobian
    shoot(viewer, "5-jacobian", suffix)
    print("det J range", float(np.min(jacobian.data)), float(np.max(jacobian.data)))
    viewer.close()


if __name__ == "__main__":
    main()
