"""The napari dock widget, reader, writer and sample data, driven for real under Xvfb."""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import testdata

pytest.importorskip("napari")

from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtWidgets import QScrollArea  # noqa: E402

from napari_mireg import files
from napari_mireg.gui import frame_scheduler as _scheduler  # noqa: E402
from napari_mireg.gui import frames as _frames  # noqa: E402
from napari_mireg.gui import progress as _progress  # noqa: E402
from napari_mireg.gui import widget as _widget  # noqa: E402
from napari_mireg.gui.display import labels_colormap, layer_kwargs, to_display  # noqa: E402
from napari_mireg.gui.inspection import OVERLAY_OPACITY  # noqa: E402
from napari_mireg.gui.label_display import FIXED_OUTLINE, WARPED_OUTLINE  # noqa: E402
from napari_mireg.gui.live_layers import (  # noqa: E402
    CHECKERBOARD,
    DISPLACEMENT,
    FIXED_CONTOURS,
    JACOBIAN,
    UPDATE,
    WARPED,
    WARPED_LABELS,
    LiveLayers,
    run_layer_name,
)
from napari_mireg.gui.plots import CURVE_COLOUR  # noqa: E402
from napari_mireg.gui.reader import get_reader  # noqa: E402
from napari_mireg.gui.sample import sample_data_path, sample_pair  # noqa: E402
from napari_mireg.gui.widget import RegistrationWidget  # noqa: E402
from napari_mireg.gui.writer import write_volume  # noqa: E402
from napari_mireg.labels import LABEL_COLOURS  # noqa: E402

RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def every_frame_heavy(monkeypatch):
    """Every SyN iteration gives a heavy frame (the pacing of a real run depends on the
    machine's speed; a short test run could otherwise end before one is due).
    """
    monkeypatch.setattr(_scheduler, "Pacing", lambda: _frames.Pacing(share=1.0, min_interval=0.0))


def make_widget(viewer, iterations="8,4", prealign="rigid"):
    return testdata.docked_widget(viewer, iterations, prealign)


def record_frames(widget):
    """Keep every Frame the widget is given from now on."""
    frames = []
    widget.runner.frame_arrived.connect(frames.append)
    return frames


def run_to_end(qtbot, widget):
    frames = record_frames(widget)
    assert widget.start() is not None
    wait_idle(qtbot, widget)
    return frames


def wait_idle(qtbot, widget):
    """Wait until the run has ended (the worker's signals may come before any connection)."""
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)


def test_widget_runs_live_and_shows_results(
    viewer_with_pair, qtbot, tmp_path, monkeypatch, every_frame_heavy
):
    viewer = viewer_with_pair
    bars = []

    class RecordedProgress(_progress.progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(_progress, "progress", RecordedProgress)
    widget = make_widget(viewer)
    assert widget.inputs.fixed_choice.currentText() == "fixed_t1"
    assert widget.inputs.moving_choice.currentText() == "moving_t2"
    assert widget.inputs.moving_labels_choice.currentText() == "moving_synthseg"
    frames = run_to_end(qtbot, widget)

    assert frames[0].stage == "start" and frames[0].warped is not None
    heavy = [f for f in frames if f.stage == "syn" and f.warped is not None]
    assert heavy and heavy[0].update_magnitude.max() > 0
    # Every level's update is shown on the fixed grid, so its layer never changes shape.
    assert {f.update_magnitude.shape for f in heavy} == {viewer.layers["fixed_t1"].data.shape}
    assert len(widget.reporter.energies) == sum(1 for f in frames if f.energy is not None) >= 6
    assert widget.result is not None and widget.reporter.status.text() == "Done"
    # napari's activity dock had a bar for the run, moved with the drawn frames, then closed.
    assert len(bars) == 1 and bars[0].total == widget.reporter.bar.maximum()
    assert 0 < bars[0].n <= bars[0].total and bars[0].disable
    assert widget.result.mi_after > widget.result.mi_before
    # The run's layers are named after it; the update magnitude layer became the
    # displacement's; det J is made when first shown.
    for base in (WARPED, WARPED_LABELS, DISPLACEMENT, FIXED_CONTOURS):
        assert run_layer_name(base, 1) in viewer.layers
    assert run_layer_name(UPDATE, 1) not in viewer.layers
    assert run_layer_name(JACOBIAN, 1) not in viewer.layers
    warped = viewer.layers[widget.run_layers.name(WARPED)]
    fixed = viewer.layers["fixed_t1"]
    assert warped.data.shape == fixed.data.shape
    np.testing.assert_allclose(warped.scale, fixed.scale)
    assert warped.data.max() > 0
    warped_labels = viewer.layers[widget.run_layers.name(WARPED_LABELS)]
    assert set(np.unique(warped_labels.data)) >= {2, 3, 41, 42}
    # det J: a diverging colour map, white at 1 (the middle of the contrast limits).
    widget.view.set_mode("det J")
    jacobian = viewer.layers[widget.run_layers.name(JACOBIAN)]
    assert jacobian.visible and not viewer.layers[widget.run_layers.name(WARPED)].visible
    widget.view.set_mode("overlay")
    assert not jacobian.visible
    assert tuple(jacobian.contrast_limits) == (0.0, 2.0)
    low, middle, high = jacobian.colormap.map(np.array([0.0, 0.5, 1.0]))[:, :3]
    assert np.all(middle > 0.95) and low[2] > low[0] and high[0] > high[2]
    histogram = widget.plots.histogram
    assert histogram.shape == (32, 32) and np.ptp(histogram) > 1
    assert np.array_equal(widget.plots.values, widget.reporter.energies)
    low, high = widget.plots.y_limits
    assert low <= min(widget.reporter.energies) and max(widget.reporter.energies) <= high
    # The plots are painted: the histogram panel shows many colours, the curve its own.
    widget.tabs.setCurrentWidget(widget.plots)
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
    # One table, one row per label with real scores; the totals are in the summary.
    table = widget.results.table
    assert table.rowCount() == len(widget.table.rows)
    table.sortItems(3)  # by Dice after SyN
    dice = [float(table.item(row, 3).text()) for row in range(table.rowCount())]
    assert dice == sorted(dice)
    assert 0.8 < widget.table.whole_dice <= 1 and 0.5 < widget.table.mean_dice <= 1
    names = {
        table.item(row, 1).toolTip().split(" (")[0]: table.item(row, 1).text()
        for row in range(table.rowCount())
    }
    assert names["Left-Cerebral-White-Matter"] == "L cerebral WM"
    assert names["Right-Cerebral-Cortex"] == "R cortex"
    # Every column is visible at the dock's width: no horizontal scrolling.
    assert table.horizontalScrollBar().maximum() == 0
    last = table.horizontalHeader()
    assert last.sectionPosition(4) + last.sectionSize(4) <= table.viewport().width()
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == "2")
    counts = next(r for r in widget.table.rows if r["label"] == 2)
    voxels = f"voxels: {counts['fixed_voxels']} fixed, {counts['warped_voxels']} warped"
    assert voxels in table.item(row, 1).toolTip()
    assert table.horizontalHeader().sectionSize(1) > 90  # the name column stretches
    text = widget.results.text.text()
    assert "folds" in text and f"<b>{widget.table.whole_dice:.3f}</b>" in text
    assert f"{widget.result.mi_after:.3f} after" in text

    # Exports land on the fixed file's own grid, in the formats of files.py.
    results = widget.results.exports
    results.export_forward(tmp_path / "warp.nii.gz")
    results.export_affine(tmp_path / "affine.txt")
    results.export_warped_labels(tmp_path / "labels.nii.gz")
    results.export_table(tmp_path / "overlap.csv")
    fixed_file = nib.load(fixed.metadata["path"])
    warp = nib.load(tmp_path / "warp.nii.gz")
    assert warp.shape == fixed_file.shape + (1, 3)
    np.testing.assert_allclose(warp.affine, fixed_file.affine, atol=1e-4)
    assert (tmp_path / "overlap.csv").read_text() == widget.table.to_csv_text()
    assert files.load_volume(tmp_path / "labels.nii.gz", labels=True).shape == fixed_file.shape

    # Continue refines from the current map with more finest-level iterations, in the
    # same run's layers.
    before = len(widget.reporter.energies)
    widget.buttons.more_iterations.setValue(3)
    widget.start(continue_from=widget.summary)
    wait_idle(qtbot, widget)
    assert len(widget.reporter.energies) == before + 3 and widget.reporter.status.text() == "Done"
    assert widget.run_layers.name(WARPED) == "R1 warped"


def test_live_layers_take_frames_in_place(viewer_with_pair):
    """A frame is copied into the live layer's buffer and re-sliced, with no data event
    (which would rebuild napari's colour shaders); arrays the widget was given are never
    written.
    """
    viewer = viewer_with_pair
    live = LiveLayers(viewer, 1)
    fixed = viewer.layers["fixed_t1"]
    affine, shape = fixed.metadata["display_affine"], fixed.data.shape
    layer = live.prepare(WARPED, shape, np.float32, "image", affine)
    first = layer.data
    data_events = []
    layer.events.data.connect(data_events.append)
    centre = tuple(np.mean(layer.extent.world, axis=0))
    live.update(WARPED, np.full(shape, 3.0, np.float32), "image", affine)
    assert layer.data is first and np.all(first == 3.0) and not data_events
    assert layer.get_value(centre, world=True) == 3.0  # the drawn slice shows the new frame

    result = np.ones(shape, np.float32)
    live.show(WARPED, result, "image", affine)
    data_events.clear()
    later = np.full(shape, 5.0, np.float32)
    live.update(WARPED, later, "image", affine)
    assert np.all(result == 1.0) and layer.data is later and len(data_events) == 1
    live.update(WARPED, np.full(shape, 7.0, np.float32), "image", affine)
    assert np.all(later == 7.0) and len(data_events) == 1
    assert layer.get_value(centre, world=True) == 7.0


def test_cancel_stops_within_an_iteration_and_shows_no_stale_results(
    viewer_with_pair, qtbot, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    viewer = viewer_with_pair
    widget = make_widget(viewer, iterations="4", prealign="none")
    run_to_end(qtbot, widget)
    assert widget.results.table.rowCount() == 7 and "Dice" in widget.results.text.text()

    widget.options_form.control("level_iters").setText("200,200,200")
    frames = record_frames(widget)
    worker = widget.start()
    # The new run clears the last one's results at once.
    assert widget.results.table.rowCount() == 0 and "Dice" not in widget.results.text.text()
    qtbot.waitUntil(lambda: any(f.stage == "syn" for f in frames), timeout=RUN_TIMEOUT_MS)
    assert widget.buttons.run_button.text() == "Cancel"
    made = []  # every Frame as the worker makes it (frames arrive later, queued)
    worker.yielded.connect(made.append, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        widget.buttons.run_button.click()
        made_before_cancel = len(made)
    assert widget.reporter.status.text() == "Cancelled" and widget.result is None
    assert widget.results.table.rowCount() == 0
    assert "cancelled" in widget.results.text.text() and "Dice" not in widget.results.text.text()
    assert not any(button.isEnabled() for button in widget.results.exports.export_buttons)
    assert (
        widget.buttons.run_button.text() == "Run" and not widget.buttons.continue_button.isEnabled()
    )
    assert len(made) - made_before_cancel <= 1  # at most the iteration under way
    assert frames[-1].stage == "syn" and frames[-1].iteration < 199
    assert list(tmp_path.iterdir()) == []
    viewer.add_image(np.ones((4, 4)), name="still usable")
    assert "still usable" in viewer.layers


def test_pause_says_paused(viewer_with_pair, qtbot):
    widget = make_widget(viewer_with_pair, iterations="200,200", prealign="none")
    frames = record_frames(widget)
    worker = widget.start()
    qtbot.waitUntil(lambda: any(f.stage == "syn" for f in frames), timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(worker.paused, timeout=RUN_TIMEOUT_MS):
        widget.buttons.pause_button.click()
    assert (
        widget.reporter.status.text().startswith("Paused")
        and widget.buttons.pause_button.text() == "Resume"
    )
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        widget.buttons.run_button.click()  # Cancel while paused
    assert widget.reporter.status.text() == "Cancelled"


def test_bad_starts_are_refused_with_a_message(viewer_with_pair, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr(_widget, "show_error", shown.append)
    viewer = viewer_with_pair
    widget = make_widget(viewer)
    widget.inputs.moving_choice.setCurrentText("fixed_t1")
    assert widget.start() is None and not widget.runner.running
    assert "same layer" in shown[-1] and "fixed_t1" in shown[-1]
    assert (
        widget.reporter.status.text().startswith("Not started")
        and "same layer" in widget.reporter.status.text()
    )

    widget.inputs.moving_choice.setCurrentText("moving_t2")
    viewer.add_labels(np.zeros((5, 6, 7), np.int32), name="small labels")
    widget.inputs.moving_labels_choice.setCurrentText("small labels")
    assert widget.start() is None
    assert "not on the grid of the moving image" in shown[-1]

    widget.inputs.moving_labels_choice.setCurrentText("moving_synthseg")
    viewer.add_image(np.full((20, 20, 20), 3.0, np.float32), name="constant")
    widget.inputs.moving_choice.setCurrentText("constant")
    widget.inputs.moving_labels_choice.setCurrentText("(none)")
    widget.start()
    wait_idle(qtbot, widget)
    assert "Registration failed" in shown[-1] and "constant" in shown[-1]
    assert widget.buttons.run_button.text() == "Run" and widget.reporter.status.text().startswith(
        "Failed"
    )
    viewer.add_image(np.ones((30, 30), np.float32), name="flat 2D")
    widget.inputs.moving_choice.setCurrentText("flat 2D")
    assert widget.start() is None
    assert "3D but flat 2D is 2D" in shown[-1]


def test_docked_from_the_plugins_menu_the_same_layer_twice_is_refused(
    viewer_with_pair, monkeypatch
):
    """A widget docked from napari's Plugins menu gets a proxy of the viewer, whose
    lookups make a new proxy of a layer each time: the layers are compared as layers.
    """
    shown = []
    monkeypatch.setattr(_widget, "show_error", shown.append)
    viewer = viewer_with_pair
    _, widget = viewer.window.add_plugin_dock_widget("napari-mireg", "MI-SyN registration")
    assert isinstance(widget, RegistrationWidget) and widget.viewer is not viewer
    assert widget.viewer.layers["fixed_t1"] is not widget.viewer.layers["fixed_t1"]
    widget.inputs.moving_choice.setCurrentText("fixed_t1")
    for labels in ("moving_synthseg", "(none)"):  # with labels the grid was blamed
        widget.inputs.moving_labels_choice.setCurrentText(labels)
        assert widget.start() is None and not widget.runner.running
        assert shown[-1] == (
            "Cannot register: the fixed and moving images are the same layer (fixed_t1): "
            "choose two images"
        )


def test_none_label_choices_survive_a_run(viewer_with_pair, qtbot):
    widget = make_widget(viewer_with_pair, iterations="3", prealign="none")
    widget.inputs.fixed_labels_choice.setCurrentText("(none)")
    widget.inputs.moving_labels_choice.setCurrentText("(none)")
    run_to_end(qtbot, widget)
    assert widget.inputs.fixed_labels_choice.currentText() == "(none)"
    assert widget.inputs.moving_labels_choice.currentText() == "(none)"
    assert widget.job.moving_labels is None and widget.table is None
    assert widget.run_layers.name(WARPED_LABELS) not in viewer_with_pair.layers
    widget.start()  # the next run too
    assert widget.job.moving_labels is None
    wait_idle(qtbot, widget)


def test_ants_iterations_are_accepted(viewer_with_pair, qtbot):
    widget = make_widget(viewer_with_pair, iterations="5x3", prealign="none")
    assert widget.options().level_iters == (5, 3)
    run_to_end(qtbot, widget)
    assert widget.reporter.status.text() == "Done" and 2 <= len(widget.reporter.energies) <= 8


def test_a_table_row_click_selects_its_label_and_centres_the_view(viewer_with_pair, qtbot):
    viewer = viewer_with_pair
    widget = make_widget(viewer, iterations="3", prealign="none")
    run_to_end(qtbot, widget)
    table = widget.results.table
    assert widget.tabs.currentWidget() is widget.results
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == "4")
    rect = table.visualItemRect(table.item(row, 1))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    labels = viewer.layers[widget.run_layers.name(WARPED_LABELS)]
    assert labels.selected_label == 4 and labels.show_selected_label
    # The view moved to the label's centre (Left-Lateral-Ventricle): the slice shows it.
    fixed_labels = viewer.layers["fixed_synthseg"]
    voxel = np.round(fixed_labels.world_to_data(viewer.dims.point)).astype(int)
    assert np.count_nonzero(fixed_labels.data[voxel[0]] == 4) > 0
    centre = np.argwhere(fixed_labels.data == 4).mean(axis=0)
    world = fixed_labels.data_to_world(centre)
    assert np.allclose(viewer.scene.camera.center[-2:], world[-2:], atol=2 * max(labels.scale))
    # A second click shows every label again.
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert not labels.show_selected_label


def write_t1_like_uint8(path, seed=0):
    """A uint8 head-like volume (about 200 distinct values), as FreeSurfer's brain.mgz."""
    rng = np.random.default_rng(seed)
    grid = np.indices((40, 44, 36)).astype(float)
    radius = np.sqrt(sum((g - s / 2) ** 2 for g, s in zip(grid, (40, 44, 36), strict=True)))
    data = np.clip(220 - 6 * radius + rng.normal(0, 8, radius.shape), 0, 255)
    data[radius > 17] = 0
    affine = np.array([[-1.0, 0, 0, 20], [0, 0, 1, -22], [0, -1, 0, 18], [0, 0, 0, 1]])
    nib.save(nib.MGHImage(data.astype(np.uint8), affine), str(path))
    return data.astype(np.uint8), affine


def test_a_uint8_t1_opens_as_an_image_and_synthseg_values_as_labels(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data, _ = write_t1_like_uint8(tmp_path / "brain.mgz")
    assert np.unique(data).size > 100
    (layer,) = viewer.open(str(tmp_path / "brain.mgz"), plugin="napari-mireg")
    assert layer._type_string == "image" and layer.data.dtype == np.float32

    # SynthSeg ids stored as float in a file whose name says nothing: the values decide.
    labels = files.load_volume(sample_data_path("fixed_labels"), labels=True)
    neutral = tmp_path / "subject01.nii.gz"
    files.save_volume(neutral, labels.data.astype(np.float32), labels.affine)
    assert nib.load(neutral).get_data_dtype() == np.float32
    (layer,) = viewer.open(str(neutral), plugin="napari-mireg")
    assert layer._type_string == "labels" and set(np.unique(layer.data)) >= {2, 3, 41, 42}
    # The name decides for label maps with arbitrary values.
    named = tmp_path / "sub-01_dseg.nii.gz"
    files.save_volume(named, (data.astype(np.int32) // 3) + 5, np.eye(4), labels=True)
    assert get_reader(str(named))(str(named))[0][2] == "labels"

    # The user can overrule the decision, at opening or afterwards in the widget.
    widget = make_widget(viewer)
    (forced,) = widget.inputs.open_files([tmp_path / "brain.mgz"], "labels")
    assert forced._type_string == "labels"
    assert forced.name in [
        widget.tools.convert_choice.itemText(i) for i in range(widget.tools.convert_choice.count())
    ]
    image = widget.tools.convert_layer(forced.name)
    assert image._type_string == "image" and viewer.layers[forced.name] is image
    assert forced.name in [
        widget.inputs.fixed_choice.itemText(i) for i in range(widget.inputs.fixed_choice.count())
    ]
    back = widget.tools.convert_layer(image.name)
    assert back._type_string == "labels" and np.array_equal(back.data, forced.data)


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
    # Any image layer is written back on its file's grid.
    written = write_volume(str(tmp_path / "again"), layer_data, kwargs)
    again = nib.load(written[0])
    assert written[0].endswith(".nii.gz")
    np.testing.assert_allclose(again.affine, affine, atol=1e-5)
    np.testing.assert_allclose(again.get_fdata(), data, atol=1e-6)

    labels_path = tmp_path / "subject_synthseg.nii.gz"
    files.save_volume(labels_path, (data > 0.5) * 41, affine, labels=True)
    ((_, label_kwargs, kind),) = get_reader(str(labels_path))(str(labels_path))
    assert kind == "labels"
    assert np.allclose(np.array(label_kwargs["colormap"][41][:3]) * 255, LABEL_COLOURS[41])

    from napari_mireg.engine.transforms import DisplacementField, as_volume

    field = np.random.default_rng(1).normal(size=(10, 12, 14, 3)).astype(np.float32)
    meta = {"metadata": {"displacement": DisplacementField(field, as_volume(data, affine))}}
    written = write_volume(str(tmp_path / "field.nii.gz"), field[..., 0], meta)
    loaded = files.load_transform(written[0])
    np.testing.assert_allclose(loaded.field, field, rtol=1e-6)
    np.testing.assert_allclose(loaded.grid.affine, affine, atol=1e-5)


def test_the_det_j_layer_saves_on_the_fixed_files_grid(viewer_with_pair, qtbot, tmp_path):
    viewer = viewer_with_pair
    widget = make_widget(viewer, iterations="3", prealign="rigid")
    run_to_end(qtbot, widget)
    jacobian = widget.run_layers.result_layer(JACOBIAN)
    path = tmp_path / "detj.nii.gz"
    assert jacobian.save(str(path), plugin="napari-mireg")
    saved = nib.load(path)
    fixed_file = nib.load(viewer.layers["fixed_t1"].metadata["path"])
    assert saved.shape == fixed_file.shape
    np.testing.assert_allclose(saved.affine, fixed_file.affine, atol=1e-4)
    shown, _ = to_display(saved.get_fdata(), saved.affine)
    np.testing.assert_allclose(shown, jacobian.data, atol=1e-5)
    assert 0.5 < np.median(jacobian.data) < 1.5


def test_manifest_is_valid():
    npe2 = Path(sys.executable).parent / "npe2"
    done = subprocess.run([str(npe2), "validate", "napari-mireg"], capture_output=True, text=True)
    assert done.returncode == 0 and "valid" in done.stdout + done.stderr


def label_pixels(viewer, colours):
    """Canvas pixels drawn in one of `colours` (RGB, 0-255), as a boolean image."""
    pixels = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    hits = np.zeros(pixels.shape[:2], bool)
    for colour in colours:
        hits |= np.all(np.abs(pixels - colour) <= 3, axis=-1)
    return hits


def test_during_a_run_inputs_labels_are_hidden_and_warped_labels_are_contours(
    make_napari_viewer, qtbot, every_frame_heavy
):
    viewer = make_napari_viewer(show=True)
    for data, kwargs, kind in sample_pair():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = make_widget(viewer, iterations="200,200", prealign="none")
    frames = record_frames(widget)
    worker = widget.start()
    qtbot.waitUntil(
        lambda: any(f.stage == "syn" and f.warped is not None for f in frames),
        timeout=RUN_TIMEOUT_MS,
    )
    with qtbot.waitSignal(worker.paused, timeout=RUN_TIMEOUT_MS):
        worker.pause()
    # The frame's last step (the progress) is done: its images are in their layers.
    qtbot.waitUntil(lambda: "Level" in widget.reporter.status.text(), timeout=RUN_TIMEOUT_MS)
    viewer.dims.set_point(0, viewer.layers["fixed_t1"].translate[0] + 40 * 2.0)
    # The warped labels' outlines are pure magenta (the fixed ones pure green).
    colours = [WARPED_OUTLINE]
    assert not viewer.layers["fixed_synthseg"].visible
    assert not viewer.layers["moving_synthseg"].visible
    warped_labels = viewer.layers[widget.run_layers.name(WARPED_LABELS)]
    assert warped_labels.contour > 0 and warped_labels.visible
    contours = label_pixels(viewer, colours)
    warped_labels.visible = False
    without = label_pixels(viewer, colours)  # the input label layers are not drawn
    warped_labels.contour = 0
    warped_labels.visible = True
    filled = label_pixels(viewer, colours)
    assert filled.mean() > 0.02
    assert without.sum() < 0.01 * filled.sum()
    # Contours: drawn, and most of the label area shows the image under them.
    assert contours.sum() > 0.03 * filled.sum()
    assert (contours & filled).sum() < 0.5 * filled.sum()
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        widget.cancel()


def test_the_view_switches_between_overlay_checkerboard_and_flicker(viewer_with_pair, qtbot):
    viewer = viewer_with_pair
    widget = make_widget(viewer, iterations="3", prealign="none")
    run_to_end(qtbot, widget)
    warped = viewer.layers[widget.run_layers.name(WARPED)]
    assert warped.visible and warped.colormap.name == "gray" and warped.opacity == OVERLAY_OPACITY
    assert viewer.layers["fixed_t1"].colormap.name == "gray"
    buttons = {button.text(): button for button in widget.mode_buttons.buttons()}
    buttons["Checkerboard"].click()
    checker = viewer.layers[widget.run_layers.name(CHECKERBOARD)]
    assert checker.visible and not warped.visible
    fixed = viewer.layers["fixed_t1"]
    tiles = checker.data
    # Tiles alternate: some show the fixed image, the others the warped one.
    from napari_mireg.gui.inspection import _normalised

    from_fixed = np.isclose(tiles, _normalised(fixed.data, fixed.contrast_limits))
    from_warped = np.isclose(tiles, _normalised(warped.data, warped.contrast_limits))
    assert 0.3 < from_fixed.mean() and 0.3 < from_warped.mean()
    # Made while the fixed image was selected, the checkerboard leaves it selected, also
    # once hidden again.
    assert viewer.layers.selection.active is fixed
    buttons["Overlay"].click()
    assert not checker.visible and viewer.layers.selection.active is fixed
    buttons["Flicker"].click()
    assert not checker.visible
    seen = set()
    qtbot.waitUntil(lambda: seen.add(warped.visible) or len(seen) == 2, timeout=RUN_TIMEOUT_MS)
    buttons["Overlay"].click()
    assert warped.visible and warped.opacity == OVERLAY_OPACITY and not widget.view.flickering


def test_prealignment_moves_the_progress(monkeypatch, brain_pair):
    from napari_mireg.engine.transforms import as_volume

    monkeypatch.setattr(_frames, "PREALIGNING_SECONDS", 0.0)
    fixed, moving, affine = brain_pair
    run = _frames.LiveRun(
        as_volume(fixed[::2, ::2, ::2], affine @ np.diag([2, 2, 2, 1])),
        as_volume(moving[::2, ::2, ::2], affine @ np.diag([2, 2, 2, 1])),
        options=_frames.RegistrationOptions(prealign="affine", level_iters=(2,)),
    )
    frames = list(_frames.live_frames(run, _frames.Pacing(min_interval=np.inf)))
    shares = [f.prealigned for f in frames if f.stage == "prealigning"]
    assert len(shares) >= 10 and shares == sorted(shares) and 0 < shares[-1] <= 1
    stages = [f.stage for f in frames]
    assert stages.index("prealigned") > stages.index("prealigning") > stages.index("start")


def test_pacing_keeps_heavy_frames_within_their_share(monkeypatch):
    """A heavy frame is due once the last one's cost (computing + drawing) is at most
    `share` of the time since it, and never sooner than `min_interval`.
    """
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
    monkeypatch.setattr(_scheduler, "PROGRESS_SECONDS", 0.0)
    widget = make_widget(viewer_with_pair, iterations="6,3")
    widget.live_images.setChecked(False)
    curve_lengths = []
    draw = widget.plots.show_data
    monkeypatch.setattr(
        widget.plots,
        "show_data",
        lambda histogram, values, planned: (
            curve_lengths.append(len(values) if widget.result is None else None),
            draw(histogram, values, planned),
        ),
    )
    frames = run_to_end(qtbot, widget)
    syn = [f for f in frames if f.stage == "syn"]
    assert len(syn) == len(widget.reporter.energies) >= 6
    assert all(f.warped is None and f.joint_histogram is not None for f in syn)
    during_run = [n for n in curve_lengths if n is not None]
    assert len(during_run) >= 3 and during_run == sorted(during_run) and during_run[0] >= 1
    assert np.array_equal(widget.plots.values, widget.reporter.energies)
    assert widget.reporter.status.text() == "Done"
    assert viewer_with_pair.layers[widget.run_layers.name(WARPED)].data.max() > 0


def test_the_panel_fits_a_1280x800_screen(make_napari_viewer):
    """The whole panel (tabs) fits a 1280x800 screen's dock; it never scrolls sideways."""
    widget = make_widget(make_napari_viewer())
    content = widget.findChild(QScrollArea).widget()
    assert content.minimumSizeHint().height() < 650
    assert widget.minimumSizeHint().width() < 450
    assert widget.minimumSizeHint().width() >= content.minimumSizeHint().width()
    control = widget.options_form.control
    tips = [control(name) for name in ("bins", "level_iters", "step_length", "update_sigma")]
    assert all(c.toolTip() for c in tips + [control("prealign"), control("threads")])
    assert "40x20x10" in control("level_iters").toolTip() and "SyN[0.25,3,0]" in (
        control("update_sigma").toolTip()
    )


def test_clean_runs_in_the_background_and_adds_a_layer(viewer_with_pair, qtbot):
    viewer = viewer_with_pair
    widget = make_widget(viewer)
    labels = viewer.layers["moving_synthseg"]
    labels.data[40, 40:43, 40:43] = 41  # an island of right white matter
    worker = widget.tools.clean_layer("moving_synthseg")
    assert worker is not None and not widget.tools.cleanup_button.isEnabled()
    qtbot.waitUntil(lambda: widget.tools.cleaning is None, timeout=60_000)
    cleaned = viewer.layers["moving_synthseg cleaned"]
    assert cleaned.data.shape == labels.data.shape and widget.tools.cleanup_button.isEnabled()
    changed = {c.label: c for c in widget.tools.last_cleanup}
    assert changed[41].island_voxels >= 9
    assert np.array_equal(cleaned.scale, labels.scale)
    assert widget.tools.clean_layer("fixed_t1") is None  # an image is refused


def test_no_buffer_scope_outlives_a_run(viewer_with_pair, qtbot, monkeypatch):
    """Cancel, a new Run, a failed run, closing the widget and closing the viewer each
    close the engine's generator, and with it the SyN's buffer-reuse scope: one left open
    would keep up to 1 GiB of freed fields for the rest of the process.
    """
    from napari_mireg.engine.buffers import kept_bytes, open_scopes

    def nothing_kept():
        return open_scopes() == 0 and kept_bytes() == 0

    viewer = viewer_with_pair
    widget = make_widget(viewer, iterations="3", prealign="none")
    run_to_end(qtbot, widget)  # a run to its end first: later runs share its process
    assert nothing_kept()

    widget.options_form.control("level_iters").setText("200,200")
    for event in ("Cancel", "a new Run"):
        widget.start()
        qtbot.waitUntil(lambda: open_scopes() > 0, timeout=RUN_TIMEOUT_MS)
        assert open_scopes() == 1, event  # no scope of an earlier run is still open
        qtbot.waitUntil(lambda: kept_bytes() > 0, timeout=RUN_TIMEOUT_MS)
        widget.cancel()
        wait_idle(qtbot, widget)
        assert widget.reporter.status.text() == "Cancelled"
        assert nothing_kept(), event

    # A run that fails in the live view while the SyN is in its scope.
    made = _frames.Frame

    def failing_frame(stage, *args, **kwargs):
        if stage == "syn" and kwargs.get("iteration", -1) >= 2:
            raise RuntimeError("no memory left for a frame")
        return made(stage, *args, **kwargs)

    monkeypatch.setattr(_frames, "Frame", failing_frame)
    widget.start()
    wait_idle(qtbot, widget)
    assert widget.reporter.status.text() == "Failed: no memory left for a frame"
    assert nothing_kept()
    monkeypatch.setattr(_frames, "Frame", made)

    # Closing the panel mid-run: the dock's close button, and close() on a floating one.
    for close in (viewer.window.remove_dock_widget, lambda widget: widget.close()):
        widget.start()
        qtbot.waitUntil(lambda: kept_bytes() > 0, timeout=RUN_TIMEOUT_MS)
        close(widget)
        qtbot.waitUntil(nothing_kept, timeout=RUN_TIMEOUT_MS)
        wait_idle(qtbot, widget)
        widget = make_widget(viewer, iterations="200,200", prealign="none")
    # Closing the viewer: napari tells every worker to quit, which leaves its generator
    # suspended; the widget closes it once the worker has finished.
    widget.start()
    qtbot.waitUntil(lambda: kept_bytes() > 0, timeout=RUN_TIMEOUT_MS)
    viewer.close()
    qtbot.waitUntil(nothing_kept, timeout=RUN_TIMEOUT_MS)


# A marker blob that is anterior, right and superior (world mm, RAS) in an ellipsoid head.
MARKER_MM = np.array([30.0, 50.0, 30.0])


def write_head_with_marker(path, orientation):
    """A 2 mm head (a dim ellipsoid) with a bright blob at `MARKER_MM`, stored with its voxel
    axes along `orientation` (e.g. "RAS", "LIA"), centred on the world origin.
    """
    axes = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    half = np.array([70.0, 90.0, 70.0])  # half extents along x, y, z
    rotation = np.zeros((3, 3))
    shape = []
    for voxel_axis, letter in enumerate(orientation):
        world_axis, sign = axes[letter]
        rotation[world_axis, voxel_axis] = 2.0 * sign
        shape.append(int(2 * half[world_axis] / 2.0))
    affine = np.eye(4)
    affine[:3, :3] = rotation
    affine[:3, 3] = -rotation @ ((np.array(shape) - 1) / 2.0)  # voxel centre at the origin
    index = np.indices(shape, float).reshape(3, -1)
    world = (rotation @ index + affine[:3, 3:4]).T
    head = np.sum((world / (0.9 * half)) ** 2, axis=1) <= 1.0
    marker = np.sum((world - MARKER_MM) ** 2, axis=1) <= 12.0**2
    data = (100.0 * head + 900.0 * marker).reshape(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def marker_on_screen(viewer):
    """Where the marker shows on the canvas: its (row, column) as fractions of the canvas."""
    pixels = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    bright = np.all(pixels > 200, axis=-1)  # white; the yellow edge letters have no blue
    assert bright.sum() > 20, "the marker is not on the canvas"
    rows, columns = np.nonzero(bright)
    return rows.mean() / pixels.shape[0], columns.mean() / pixels.shape[1]


@pytest.mark.parametrize("orientation", ["RAS", "LIA", "PSR"])
def test_slices_show_anterior_and_superior_at_the_top_whatever_the_file_orientation(
    make_napari_viewer, tmp_path, orientation
):
    viewer = make_napari_viewer(show=True)
    widget = make_widget(viewer)
    path = write_head_with_marker(tmp_path / f"head_{orientation}.nii.gz", orientation)
    (layer,) = widget.inputs.open_files([path], "image")
    layer.contrast_limits = (0.0, 1000.0)
    # Through the marker's centre: axis 0 of the world is S, 1 is A, 2 is R (mm).
    for axis, value in enumerate(MARKER_MM[[2, 1, 0]]):
        viewer.dims.set_point(axis, float(value))
    buttons = {button.text(): button for button in widget.plane_buttons.buttons()}
    expected = {
        # plane: (marker in the upper half, marker in the left half), radiological
        "Axial": ("anterior", "right"),
        "Coronal": ("superior", "right"),
        "Sagittal": ("superior", "anterior"),
    }
    letters = {}
    for plane in expected:
        buttons[plane].click()
        row, column = marker_on_screen(viewer)
        assert row < 0.45, f"{plane}: the {expected[plane][0]} marker is not at the top"
        assert column < 0.45, f"{plane}: the {expected[plane][1]} marker is not on the left"
        letters[plane] = tuple(
            widget.planes.overlay(edge).text for edge in ("top", "bottom", "left", "right")
        )
        assert all(widget.planes.overlay(edge).visible for edge in ("top", "left"))
    assert letters == {
        "Axial": ("A", "P", "R", "L"),
        "Coronal": ("S", "I", "R", "L"),
        "Sagittal": ("S", "I", "A", "P"),
    }
    # Only the view turned: the layer's world coordinates are the file's.
    image = nib.load(path)
    voxel = np.rint(np.linalg.solve(image.affine, np.r_[MARKER_MM, 1.0])[:3]).astype(int)
    world = np.asarray(layer.data_to_world(layer.world_to_data(MARKER_MM[[2, 1, 0]])))
    np.testing.assert_allclose(world, MARKER_MM[[2, 1, 0]])
    shown = np.rint(layer.world_to_data(MARKER_MM[[2, 1, 0]])).astype(int)
    assert layer.data[tuple(shown)] == np.asarray(image.dataobj)[tuple(voxel)] == 1000.0


@pytest.fixture
def viewer_with_parcellation(make_napari_viewer):
    """The template (3 mm) and a deformed T2-like copy, each with a 96-label parcellation
    (hidden, as the sample's labels are).
    """
    import testdata

    pair = testdata.parcellated_pair(zoom=3)
    viewer = make_napari_viewer(show=True)
    for key in ("fixed", "moving", "fixed_labels", "moving_labels"):
        display, affine = to_display(pair[key], pair["affine"])
        kwargs = layer_kwargs(affine, key, affine=pair["affine"], shape=pair[key].shape)
        if key.endswith("labels"):
            viewer.add_labels(display, colormap=labels_colormap(np.unique(display)), **kwargs)
            viewer.layers[key].visible = False
        else:
            viewer.add_image(display, colormap="gray", **kwargs)
    return viewer


def test_the_outline_colours_are_in_no_label_lut_entry():
    lut = np.array(list(LABEL_COLOURS.values()))
    for colour in (FIXED_OUTLINE, WARPED_OUTLINE):
        assert np.abs(lut - np.array(colour)).sum(axis=1).min() > 100
    assert FIXED_OUTLINE != WARPED_OUTLINE


def outline_pixels(viewer):
    """Canvas pixels in the fixed (green) and the warped (magenta) outline colours."""
    return label_pixels(viewer, [FIXED_OUTLINE]), label_pixels(viewer, [WARPED_OUTLINE])


def test_a_parcellation_shows_its_worst_labels_not_all_and_no_outlines_in_checkerboard(
    viewer_with_parcellation, qtbot
):
    viewer = viewer_with_parcellation
    assert len(np.unique(viewer.layers["fixed_labels"].data)) > 80
    widget = make_widget(viewer, iterations="3", prealign="none")
    worker = widget.start()
    assert worker is not None
    # With 96 labels the default is not every outline (before a Dice: WM and ventricles).
    assert widget.view.label_display == "worst"
    assert widget.label_choice.currentText() == "Worst by Dice"
    wait_idle(qtbot, widget)
    table = widget.table
    dice = {int(row["label"]): row["dice"] for row in table.rows}
    ranked = [row["label"] for row in table.rows if row["fixed_voxels"] >= 30]
    worst = sorted(ranked, key=dice.get)[:5]
    assert min(dice, key=dice.get) not in worst  # a 1-voxel label's Dice is not ranked
    warped = viewer.layers[widget.run_layers.name(WARPED_LABELS)]
    fixed = viewer.layers[widget.run_layers.name(FIXED_CONTOURS)]
    for layer, colour in ((warped, WARPED_OUTLINE), (fixed, FIXED_OUTLINE)):
        assert layer.visible and layer.contour > 0
        drawn = [label for label in dice if layer.colormap.map(label)[3] > 0]
        assert sorted(drawn) == sorted(worst)
        np.testing.assert_allclose(layer.colormap.map(worst[0])[:3], np.array(colour) / 255)
    # On the canvas, through the centre of the largest of them: the fixed label's outline in
    # green, the warped one's in magenta.
    fixed_data = viewer.layers["fixed_labels"].data
    largest = max(worst, key=lambda label: np.count_nonzero(fixed_data == label))
    for data, colour in ((fixed_data, 0), (warped.data, 1)):
        centre = np.argwhere(data == largest).mean(axis=0)
        viewer.dims.set_point(0, float(warped.data_to_world(centre)[0]))
        assert outline_pixels(viewer)[colour].sum() > 5
    green, _ = outline_pixels(viewer)
    # "All" outlines far more; checkerboard and flicker hide the outlines.
    widget.label_choice.setCurrentText("All")
    all_green, _ = outline_pixels(viewer)
    assert all_green.sum() > 5 * green.sum()
    buttons = {button.text(): button for button in widget.mode_buttons.buttons()}
    for mode in ("Checkerboard", "Flicker"):
        buttons[mode].click()
        assert not warped.visible and not fixed.visible
        green, magenta = outline_pixels(viewer)
        assert green.sum() == 0 and magenta.sum() == 0
    buttons["Overlay"].click()
    assert warped.visible and fixed.visible
    widget.label_choice.setCurrentText("Off")
    assert not warped.visible and not fixed.visible


def test_the_dice_map_fills_the_fixed_labels_by_their_dice(viewer_with_parcellation, qtbot):
    from napari_mireg.gui.dice_map import dice_colour
    from napari_mireg.gui.live_layers import DICE_MAP

    viewer = viewer_with_parcellation
    widget = make_widget(viewer, iterations="3", prealign="none")
    run_to_end(qtbot, widget)
    dice = {int(row["label"]): row["dice"] for row in widget.table.rows}
    # Made when first shown, hidden until then.
    assert not widget.run_layers.has(DICE_MAP)
    layer = widget.run_layers.result_layer(DICE_MAP)
    assert layer is viewer.layers[widget.run_layers.name(DICE_MAP)]
    assert layer.data is viewer.layers["fixed_labels"].data  # no copy of the labels
    assert not layer.visible
    worst, best = min(dice, key=dice.get), max(dice, key=dice.get)
    assert dice[best] - dice[worst] > 0.3
    for label in (worst, best):
        np.testing.assert_allclose(layer.colormap.map(label), dice_colour(dice[label]), atol=1e-6)
    assert layer.colormap.map(0)[3] == 0
    # Red for poor overlap, blue for good.
    low, high = dice_colour(dice[worst]), dice_colour(dice[best])
    assert low[0] > low[2] and high[2] > high[0]
    buttons = {button.text(): button for button in widget.mode_buttons.buttons()}
    buttons["Dice map"].click()
    warped = viewer.layers[widget.run_layers.name(WARPED)]
    outlines = viewer.layers[widget.run_layers.name(WARPED_LABELS)]
    assert layer.visible and not warped.visible and not outlines.visible
    assert viewer.layers["fixed"].visible
    bar = widget.colour_bars.bars[DICE_MAP]
    assert not bar.isHidden() and bar.tick_texts() == ["0.5 or less", "0.75", "1"]
    # The canvas shows the map's colours over the gray image, through a poorly aligned
    # label: red there, blue elsewhere.
    fixed_labels = viewer.layers["fixed_labels"].data
    sizes = {label: np.count_nonzero(fixed_labels == label) for label in dice}
    poor = min((label for label in dice if sizes[label] > 30), key=dice.get)
    assert dice[poor] < 0.6
    centre = np.argwhere(fixed_labels == poor).mean(axis=0)
    viewer.dims.set_point(0, float(layer.data_to_world(centre)[0]))
    pixels = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    red, blue = pixels[..., 0], pixels[..., 2]
    assert (red > blue + 60).sum() > 10 and (blue > red + 60).mean() > 0.05
    buttons["Overlay"].click()
    assert not layer.visible and warped.visible and widget.colour_bars.isHidden()


def test_a_viewer_of_2d_images_keeps_naparis_orientation(make_napari_viewer):
    viewer = make_napari_viewer()
    default = tuple(viewer.scene.camera.orientation2d)
    viewer.add_image(np.zeros((20, 30), np.float32), name="photo")
    widget = make_widget(viewer)
    assert tuple(viewer.scene.camera.orientation2d) == default
    assert not widget.planes.overlay("top").visible
    viewer.add_image(np.zeros((10, 20, 30), np.float32), name="volume")  # 3D: turned
    assert tuple(viewer.scene.camera.orientation2d) == ("up", "left")
    assert widget.planes.overlay("top").visible and widget.planes.overlay("top").text == "A"
