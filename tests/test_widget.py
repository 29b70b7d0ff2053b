"""The napari dock widget, reader, writer and sample data, driven for real under Xvfb."""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("napari")

from qtpy.QtWidgets import QScrollArea  # noqa: E402

from napari_mireg import _widget, files  # noqa: E402
from napari_mireg._plots import CURVE_COLOUR  # noqa: E402
from napari_mireg._reader import get_reader  # noqa: E402
from napari_mireg._sample_data import sample_pair  # noqa: E402
from napari_mireg._widget import (  # noqa: E402
    DISPLACEMENT,
    JACOBIAN,
    UPDATE,
    WARPED,
    WARPED_LABELS,
    RegistrationWidget,
)
from napari_mireg._writer import write_displacement  # noqa: E402
from napari_mireg.labels import LABEL_COLOURS  # noqa: E402

RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def viewer_with_pair(make_napari_viewer):
    viewer = make_napari_viewer()
    for data, kwargs, kind in sample_pair():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer


def make_widget(viewer, iterations="8,4", prealign="rigid"):
    widget = RegistrationWidget(viewer)
    widget.iterations.setText(iterations)
    widget.prealign.setCurrentText(prealign)
    viewer.window.add_dock_widget(widget)
    return widget


def record_frames(widget):
    """Keep every Frame the widget is given (the worker connects to `show_frame` on start)."""
    frames = []
    show = widget.show_frame

    def recording(frame):
        frames.append(frame)
        show(frame)

    widget.show_frame = recording
    return frames


def run_to_end(qtbot, widget):
    frames = record_frames(widget)
    assert widget.start() is not None
    wait_idle(qtbot, widget)
    return frames


def wait_idle(qtbot, widget):
    """Wait until the run has ended (the worker's signals may come before any connection)."""
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT_MS)


def test_widget_runs_live_and_shows_results(viewer_with_pair, qtbot, tmp_path, monkeypatch):
    viewer = viewer_with_pair
    bars = []

    class RecordedProgress(_widget.progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(_widget, "progress", RecordedProgress)
    widget = make_widget(viewer)
    assert widget.fixed_choice.currentText() == "fixed_t1"
    assert widget.moving_choice.currentText() == "moving_t2"
    assert widget.moving_labels_choice.currentText() == "moving_synthseg"
    frames = run_to_end(qtbot, widget)

    assert frames[0].stage == "start" and frames[0].warped is not None
    heavy = [f for f in frames if f.stage == "syn" and f.warped is not None]
    assert heavy and heavy[0].update_magnitude.max() > 0
    # Every level's update is shown on the fixed grid, so its layer never changes shape.
    assert {f.update_magnitude.shape for f in heavy} == {viewer.layers["fixed_t1"].data.shape}
    assert len(widget.energies) == sum(1 for f in frames if f.energy is not None) >= 6
    assert widget.result is not None and widget.status.text() == "Done"
    # napari's activity dock had a bar for the run, moved with the drawn frames, then closed.
    assert len(bars) == 1 and bars[0].total == widget.progress.maximum()
    assert 0 < bars[0].n <= bars[0].total and bars[0].disable
    assert widget.result.mi_after > widget.result.mi_before
    for name in (WARPED, WARPED_LABELS, UPDATE, JACOBIAN, DISPLACEMENT):
        assert name in viewer.layers
    fixed = viewer.layers["fixed_t1"]
    assert viewer.layers[WARPED].data.shape == fixed.data.shape
    np.testing.assert_allclose(viewer.layers[WARPED].scale, fixed.scale)
    assert viewer.layers[WARPED].data.max() > 0
    assert set(np.unique(viewer.layers[WARPED_LABELS].data)) >= {2, 3, 41, 42}
    histogram = widget.plots.histogram
    assert histogram.shape == (32, 32) and np.ptp(histogram) > 1
    assert np.array_equal(widget.plots.values, widget.energies)
    low, high = widget.plots.y_limits
    assert low <= min(widget.energies) and max(widget.energies) <= high
    # The plots are painted: the histogram panel shows many colours, the curve its own.
    painted = widget.plots.grab().toImage()
    width, height = painted.width(), painted.height()
    left_colours = {
        painted.pixel(x, y)
        for x in range(width // 8, width // 2, 3)
        for y in range(height // 4, 3 * height // 4, 3)
    }
    right_colours = {
        painted.pixel(x, y) for x in range(width // 2, width, 2) for y in range(height)
    }
    assert len(left_colours) > 10
    assert CURVE_COLOUR.rgb() in right_colours
    # The table: whole brain and mean first, then one row per label, with real scores.
    totals, table = widget.totals_table, widget.overlap_table
    assert (
        totals.item(0, 1).text() == "whole brain" and totals.item(1, 1).text() == "mean over labels"
    )
    assert float(totals.item(0, 2).text()) == pytest.approx(widget.table.whole_dice, abs=1e-4)
    assert table.rowCount() == len(widget.table.rows)
    table.sortItems(2)  # by Dice
    dice = [float(table.item(row, 2).text()) for row in range(table.rowCount())]
    assert dice == sorted(dice)
    assert 0.8 < widget.table.whole_dice <= 1 and 0.5 < widget.table.mean_dice <= 1
    names = {table.item(row, 1).text() for row in range(table.rowCount())}
    assert {"Left-Cerebral-White-Matter", "Right-Cerebral-Cortex"} <= names
    assert "folds" in widget.summary.text() and "Dice whole brain" in widget.summary.text()

    # Exports land on the fixed file's own grid, in the formats of files.py.
    widget.export_forward(tmp_path / "warp.nii.gz")
    widget.export_affine(tmp_path / "affine.txt")
    widget.export_warped_labels(tmp_path / "labels.nii.gz")
    widget.export_table(tmp_path / "overlap.csv")
    fixed_file = nib.load(fixed.metadata["path"])
    warp = nib.load(tmp_path / "warp.nii.gz")
    assert warp.shape == fixed_file.shape + (1, 3)
    np.testing.assert_allclose(warp.affine, fixed_file.affine, atol=1e-4)
    assert (tmp_path / "overlap.csv").read_text() == widget.table.to_csv_text()
    assert files.load_volume(tmp_path / "labels.nii.gz", labels=True).shape == fixed_file.shape

    # Continue refines from the current map with more finest-level iterations.
    before = len(widget.energies)
    widget.more_iterations.setValue(3)
    widget.start(continue_from=widget.result)
    wait_idle(qtbot, widget)
    assert len(widget.energies) == before + 3 and widget.status.text() == "Done"


def test_live_layers_take_frames_in_place(viewer_with_pair):
    """A frame is copied into the live layer's buffer and re-sliced, with no data event
    (which would rebuild napari's colour shaders); arrays the widget was given are never
    written.
    """
    viewer = viewer_with_pair
    widget = make_widget(viewer)
    fixed = viewer.layers["fixed_t1"]
    affine, shape = fixed.metadata["display_affine"], fixed.data.shape
    first = np.zeros(shape, np.float32)
    layer = widget._show_live(WARPED, first, "image", affine)
    data_events = []
    layer.events.data.connect(data_events.append)
    centre = tuple(np.mean(layer.extent.world, axis=0))
    widget._show_live(WARPED, np.full(shape, 3.0, np.float32), "image", affine)
    assert layer.data is first and np.all(first == 3.0) and not data_events
    assert layer.get_value(centre, world=True) == 3.0  # the drawn slice shows the new frame

    result = np.ones(shape, np.float32)
    widget._show_layer(WARPED, result, "image", affine)
    data_events.clear()
    later = np.full(shape, 5.0, np.float32)
    widget._show_live(WARPED, later, "image", affine)
    assert np.all(result == 1.0) and layer.data is later and len(data_events) == 1
    widget._show_live(WARPED, np.full(shape, 7.0, np.float32), "image", affine)
    assert np.all(later == 7.0) and len(data_events) == 1
    assert layer.get_value(centre, world=True) == 7.0


def test_cancel_stops_within_an_iteration_and_keeps_the_viewer_usable(
    viewer_with_pair, qtbot, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    viewer = viewer_with_pair
    widget = make_widget(viewer, iterations="200,200,200", prealign="none")
    frames = record_frames(widget)
    worker = widget.start()
    qtbot.waitUntil(lambda: any(f.stage == "syn" for f in frames), timeout=RUN_TIMEOUT_MS)
    assert widget.run_button.text() == "Cancel"
    with qtbot.waitSignal(worker.finished, timeout=5_000):
        widget.run_button.click()
    assert widget.status.text() == "Cancelled" and widget.result is None
    assert widget.run_button.text() == "Run" and not widget.continue_button.isEnabled()
    assert len(frames) < 50
    assert list(tmp_path.iterdir()) == []
    viewer.add_image(np.ones((4, 4)), name="still usable")
    assert "still usable" in viewer.layers


def test_engine_errors_are_shown_and_the_widget_returns_to_idle(
    viewer_with_pair, qtbot, monkeypatch
):
    shown = []
    monkeypatch.setattr(_widget, "show_error", shown.append)
    viewer = viewer_with_pair
    widget = make_widget(viewer)
    viewer.add_image(np.full((20, 20, 20), 3.0, np.float32), name="constant")
    widget.moving_choice.setCurrentText("constant")
    widget.start()
    wait_idle(qtbot, widget)
    assert shown and "Registration failed" in shown[0] and "constant" in shown[0]
    assert widget.run_button.text() == "Run" and widget.status.text().startswith("Failed")
    viewer.add_image(np.ones((30, 30), np.float32), name="flat 2D")
    widget.moving_choice.setCurrentText("flat 2D")
    assert widget.start() is None
    assert "3D but flat 2D is 2D" in shown[-1]


def test_reader_and_writer_round_trip_a_non_identity_affine(tmp_path):
    affine = np.array([[0, 0, -1.5, 40], [1.2, 0, 0, -30], [0, 2.0, 0, -20], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((10, 12, 14)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    files.save_volume(path, data, affine)
    ((layer_data, kwargs, kind),) = get_reader(str(path))(str(path))
    assert kind == "image" and np.allclose(kwargs["metadata"]["affine"], affine)
    reread = files.load_volume(path)
    assert sorted(layer_data.shape) == sorted(data.shape)
    assert np.isclose(layer_data.sum(), reread.data.sum())
    assert get_reader(str(tmp_path / "notes.txt")) is None

    labels_path = tmp_path / "subject_synthseg.nii.gz"
    files.save_volume(labels_path, (data > 0.5) * 41, affine, labels=True)
    ((_, label_kwargs, kind),) = get_reader(str(labels_path))(str(labels_path))
    assert kind == "labels"
    assert np.allclose(np.array(label_kwargs["colormap"][41][:3]) * 255, LABEL_COLOURS[41])

    from napari_mireg.transforms import DisplacementField, as_volume

    field = np.random.default_rng(1).normal(size=(10, 12, 14, 3)).astype(np.float32)
    meta = {"metadata": {"displacement": DisplacementField(field, as_volume(data, affine))}}
    written = write_displacement(str(tmp_path / "field.nii.gz"), field[..., 0], meta)
    loaded = files.load_transform(written[0])
    np.testing.assert_allclose(loaded.field, field, rtol=1e-6)
    np.testing.assert_allclose(loaded.grid.affine, affine, atol=1e-5)
    assert write_displacement(str(tmp_path / "none.nii.gz"), field[..., 0], {}) == []


def test_manifest_is_valid():
    npe2 = Path(sys.executable).parent / "npe2"
    done = subprocess.run([str(npe2), "validate", "napari-mireg"], capture_output=True, text=True)
    assert done.returncode == 0 and "valid" in done.stdout + done.stderr


def test_warped_labels_are_drawn_on_screen(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    for data, kwargs, kind in sample_pair():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = make_widget(viewer, iterations="4", prealign="none")
    run_to_end(qtbot, widget)
    for layer in viewer.layers:
        layer.visible = layer.name == WARPED_LABELS
    viewer.layers[WARPED_LABELS].opacity = 1.0
    viewer.dims.set_point(
        0, viewer.layers[WARPED_LABELS].translate[0] + 40 * viewer.layers[WARPED_LABELS].scale[0]
    )
    viewer.reset_view()
    pixels = viewer.screenshot(canvas_only=True, flash=False)[..., :3].reshape(-1, 3)
    white_matter = np.all(np.abs(pixels.astype(int) - LABEL_COLOURS[2]) <= 3, axis=1)
    cortex = np.all(np.abs(pixels.astype(int) - LABEL_COLOURS[3]) <= 3, axis=1)
    assert white_matter.mean() > 0.01 and cortex.mean() > 0.01


def test_pacing_keeps_heavy_frames_within_their_share(monkeypatch):
    """A heavy frame is due once the last one's cost (computing + drawing) is at most
    `share` of the time since it, and never sooner than `min_interval`.
    """
    from napari_mireg import _frames

    now = [100.0]
    monkeypatch.setattr(_frames.time, "perf_counter", lambda: now[0])
    pacing = _frames.Pacing(share=0.1, min_interval=1.0)
    assert pacing.due()  # nothing drawn yet
    pacing.frame_made(started=99.95)  # 50 ms of computing
    pacing.drawn(0.25)  # 250 ms to draw: 0.3 s a frame
    for waited, due in ((0.5, False), (1.0, False), (2.6, False), (2.75, True)):
        now[0] = 100.0 + waited
        assert pacing.due() is due, waited
    # Drawing counts as the median of the last three frames: one slow frame (the first
    # pays for compiling shaders) does not hold the view back for long.
    pacing.frame_made(started=now[0] - 0.01)
    pacing.drawn(0.01)  # median(0.25, 0.01) = 0.13: wait 1.26 s
    start = now[0]
    for waited, due in ((1.2, False), (1.3, True)):
        now[0] = start + waited
        assert pacing.due() is due, waited
    pacing.frame_made(started=now[0] - 0.01)
    pacing.drawn(0.01)  # median 0.01: the 1 s floor holds
    start = now[0]
    for waited, due in ((0.9, False), (1.0, True)):
        now[0] = start + waited
        assert pacing.due() is due, waited
    # Without live images nothing is ever due, even before the first frame.
    never = _frames.Pacing(min_interval=np.inf)
    assert never.due() is False
    never.frame_made(started=now[0])
    now[0] += 1e6
    assert never.due() is False


def test_without_live_images_only_the_plots_move(viewer_with_pair, qtbot, monkeypatch):
    """Live images off: the SyN frames carry the energy and histogram but no images, and
    still move the plots during the run; the result layers come at the end.
    """
    monkeypatch.setattr(_widget, "PROGRESS_SECONDS", 0.0)
    widget = make_widget(viewer_with_pair, iterations="6,3")
    widget.live_images.setChecked(False)
    curve_lengths = []
    draw = widget._draw_plots
    monkeypatch.setattr(
        widget,
        "_draw_plots",
        lambda histogram: (
            curve_lengths.append(len(widget.energies) if widget.result is None else None),
            draw(histogram),
        ),
    )
    frames = run_to_end(qtbot, widget)
    syn = [f for f in frames if f.stage == "syn"]
    assert len(syn) == len(widget.energies) >= 6
    assert all(f.warped is None and f.joint_histogram is not None for f in syn)
    during_run = [n for n in curve_lengths if n is not None]
    assert len(during_run) >= 3 and during_run == sorted(during_run) and during_run[0] >= 1
    assert np.array_equal(widget.plots.values, widget.energies)
    assert widget.status.text() == "Done" and WARPED in viewer_with_pair.layers
    assert viewer_with_pair.layers[WARPED].data.max() > 0


def test_the_panel_scrolls_so_the_window_fits_a_laptop_screen(make_napari_viewer):
    """The panel is taller than a laptop's screen: it scrolls vertically, never sideways."""
    widget = make_widget(make_napari_viewer())
    content = widget.findChild(QScrollArea).widget()
    assert content.minimumSizeHint().height() > 800
    assert widget.minimumSizeHint().height() < 200
    assert widget.minimumSizeHint().width() > content.minimumSizeHint().width()
