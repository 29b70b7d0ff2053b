"""Regenerate the screenshots of docs/widget.md by driving the real widget.

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/widget_screenshots.py

makes the screenshots at 1600x1000 and, with ``--size 1280x800``, those of a laptop screen
(named ``*-1280x800.png``); ``--out FOLDER`` writes them elsewhere than docs/images.

The pair is the MNI template (2 mm) and a deformed, T2-like copy, each with a 96-label
parcellation in SynthSeg ids (``tests/testdata.py``: ``parcellated_pair``; needs nilearn),
as a SynthSeg run with cortical parcels gives; ``--pair sample`` takes the bundled sample
(7 tissue labels) instead.
"""

import argparse
import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QEventLoop, QTimer

from napari_mireg.gui.display import labels_colormap, layer_kwargs, to_display
from napari_mireg.gui.live_layers import JACOBIAN
from napari_mireg.gui.sample import sample_pair
from napari_mireg.gui.widget import RegistrationWidget

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"


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


def shoot(viewer, folder, name, suffix):
    pause(0.5)
    path = folder / f"{name}{suffix}.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")


def parcellated_layers():
    """The parcellated pair as napari layer data (labels hidden, as the sample's)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import testdata

    pair = testdata.parcellated_pair(zoom=2)
    names = {
        "fixed": "fixed_t1",
        "moving": "moving_t2",
        "fixed_labels": "fixed_synthseg",
        "moving_labels": "moving_synthseg",
    }
    layers = []
    for key, name in names.items():
        display, affine = to_display(pair[key], pair["affine"])
        kwargs = layer_kwargs(affine, name, affine=pair["affine"], shape=pair[key].shape)
        if key.endswith("labels"):
            kwargs.update(colormap=labels_colormap(np.unique(display)), visible=False)
            layers.append((display, kwargs, "labels"))
        else:
            kwargs["colormap"] = "gray"
            layers.append((display, kwargs, "image"))
    return layers


def click(buttons, text):
    for button in buttons.buttons():
        if button.text() == text:
            button.click()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="1600x1000", help="window size, WIDTHxHEIGHT")
    parser.add_argument("--out", default=str(IMAGES), help="folder of the screenshots")
    parser.add_argument("--pair", choices=("parcellation", "sample"), default="parcellation")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    suffix = "" if args.size == "1600x1000" else f"-{args.size}"
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(width, height)
    for data, kwargs, kind in (
        parcellated_layers() if args.pair == "parcellation" else sample_pair()
    ):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = RegistrationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MI-SyN registration")
    pause(0.5)
    viewer.reset_view()
    # An axial slice through the lateral ventricles (z = 14 mm).
    viewer.dims.set_point(0, 14.0)
    shoot(viewer, folder, "1-inputs", suffix)

    widget.start()
    # The live view (overlay, plots) during the second level. Frames are made more often
    # than in real use, so that one is drawn there whatever the machine's speed.
    widget.scheduler.pacing.share, widget.scheduler.pacing.min_interval = 0.5, 0.2
    # The status line names the level; levels stop early once they converge, so the view is
    # taken once the second level runs rather than after a count of iterations.
    runner = widget.runner
    wait(lambda: not runner.running or "Level 2/3" in widget.reporter.status.text())
    if runner.running:
        runner.pause()
        wait(lambda: runner.is_paused)
        shoot(viewer, folder, "2-live", suffix)
        runner.resume()
    wait(lambda: not runner.running)

    # The results: the worst labels' outlines (the default with many labels).
    shoot(viewer, folder, "3-result", suffix)
    # The worst label with at least 100 voxels clicked in the table: the view goes to it.
    table = widget.table
    if table is not None:
        sizes = {row["label"]: row["fixed_voxels"] for row in table.rows}
        dice = {row["label"]: row["dice"] for row in table.rows}
        label = min((lab for lab in dice if sizes[lab] >= 100), key=dice.get)
        rows = widget.results.table
        row = next(r for r in range(rows.rowCount()) if rows.item(r, 0).text() == str(label))
        rows.selectRow(row)
        rows.scrollToItem(rows.item(row, 0))
        widget.results._row_clicked(row, 1)
        shoot(viewer, folder, "3-selected", suffix)
        widget.results._row_clicked(row, 1)  # back to the worst labels

    click(widget.mode_buttons, "Composite")
    shoot(viewer, folder, "4-composite", suffix)
    click(widget.mode_buttons, "Checkerboard")
    shoot(viewer, folder, "4-checkerboard", suffix)
    click(widget.mode_buttons, "Swipe")
    shoot(viewer, folder, "4-swipe", suffix)
    click(widget.mode_buttons, "Dice map")
    shoot(viewer, folder, "5-dice-map", suffix)
    click(widget.mode_buttons, "Overlay")
    for plane in ("Coronal", "Sagittal"):
        click(widget.plane_buttons, plane)
        shoot(viewer, folder, f"6-{plane.lower()}", suffix)
    click(widget.plane_buttons, "Axial")

    click(widget.mode_buttons, "Det J")  # makes the det J layer and shows it
    jacobian = viewer.layers[widget.run_layers.name(JACOBIAN)]
    viewer.layers.selection.active = jacobian
    shoot(viewer, folder, "7-jacobian", suffix)
    print("det J range", float(np.min(jacobian.data)), float(np.max(jacobian.data)))
    viewer.close()


if __name__ == "__main__":
    main()
