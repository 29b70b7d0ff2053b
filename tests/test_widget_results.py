"""The results panel after a real run on a 96-label SynthSeg-like parcellation, under Xvfb:
names shown whole, worst labels first, Dice after the affine stage and after SyN with the
gain, cells coloured on the Dice scale, the per-label plot, the run's wall-clock time; and
no table without label maps.
"""

import gc
import math
import re
import time
import weakref

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from matplotlib import colormaps  # noqa: E402
from qtpy.QtCore import QPoint, Qt  # noqa: E402
from qtpy.QtTest import QTest  # noqa: E402
from qtpy.QtWidgets import QApplication, QStyle, QWidget  # noqa: E402
from testdata import parcellated_pair  # noqa: E402

from napari_mireg.gui.dice_map import DICE_COLORMAP, DICE_RANGE  # noqa: E402
from napari_mireg.gui.display import labels_colormap, layer_kwargs, to_display  # noqa: E402
from napari_mireg.gui.label_table import AFFINE, GAIN, ID, NAME, SYN  # noqa: E402
from napari_mireg.gui.live_layers import WARPED_LABELS  # noqa: E402
from napari_mireg.gui.sample import sample_pair  # noqa: E402
from napari_mireg.gui.widget import RegistrationWidget  # noqa: E402

RUN_TIMEOUT_S = 300


def run_and_wait(widget):
    """Press Run and spin the event loop until the run has ended."""
    assert widget.start() is not None
    deadline = time.perf_counter() + RUN_TIMEOUT_S
    while widget.runner.running and time.perf_counter() < deadline:
        QTest.qWait(20)
    assert not widget.runner.running and widget.summary is not None


def new_viewer(state):
    """Put a napari viewer in a 1600x1000 window into the dict `state`, without the
    status checker's thread and the console, as napari's own fixture makes it (both would
    keep the viewer alive after it is closed).
    """
    patches = state["patches"] = pytest.MonkeyPatch()
    patches.setattr("napari._qt.threads.status_checker.StatusChecker.start", lambda *_: None)
    patches.setattr("napari._qt.qt_viewer.QtViewer._get_console", lambda *_: QWidget())
    viewer = state["viewer"] = napari.Viewer(show=True, show_welcome_screen=False)
    viewer.window._qt_window.resize(1600, 1000)
    return viewer


def dock(viewer, widget):
    """Dock `widget` in the shown window, let the window lay it out, then hide the window:
    the dock keeps its default width, and the canvas draws nothing (drawing under Xvfb
    sometimes fails in OpenGL, outside this plugin). Returns the dock's width.
    """
    viewer.window.add_dock_widget(widget)
    QTest.qWait(200)
    width = widget.width()
    viewer.window._qt_window.hide()
    return width


def close_viewer(state):
    """Close the viewer of `state` and forget everything in it: napari's fixture of a
    later test requires every viewer to be gone (this module makes its own, to run the
    registration once for several tests).
    """
    viewer = state.pop("viewer")
    patches = state.pop("patches")
    state.clear()
    qt_viewer = weakref.ref(viewer.window._qt_viewer)
    viewer.close()
    del viewer
    for _ in range(20):  # Qt deletes the window's widgets in later events
        QTest.qWait(50)
        gc.collect()
        if qt_viewer() is None:
            break
    patches.undo()
    assert qt_viewer() is None


@pytest.fixture(scope="module")
def parcellated(qapp):
    """One run (rigid prealignment, then SyN) of the 2 mm parcellated pair in a widget
    docked in a 1600x1000 window: {"widget", "shown": what the panel showed at its end}.
    """
    state = {}
    state["widget"], state["shown"] = _parcellated_run(new_viewer(state), parcellated_pair(zoom=2))
    yield state
    close_viewer(state)


@pytest.fixture
def viewer_state(qapp):
    """{"viewer": a new viewer}; whatever the test adds is forgotten with it."""
    state = {}
    new_viewer(state)
    yield state
    close_viewer(state)


def _parcellated_run(viewer, pair):
    for key, name in (
        ("fixed", "fixed_t1"),
        ("moving", "moving_t2"),
        ("fixed_labels", "fixed_synthseg"),
        ("moving_labels", "moving_synthseg"),
    ):
        display, affine = to_display(pair[key], pair["affine"])
        kwargs = layer_kwargs(affine, name, affine=pair["affine"], shape=pair[key].shape)
        if key.endswith("labels"):
            viewer.add_labels(display, colormap=labels_colormap(np.unique(display)), **kwargs)
        else:
            viewer.add_image(display, **kwargs)
    widget = RegistrationWidget(viewer)
    widget.options_form.control("level_iters").setText("6,3")
    widget.options_form.control("prealign").setCurrentText("rigid")
    dock_width = dock(viewer, widget)
    pressed = time.perf_counter()
    run_and_wait(widget)
    outside = time.perf_counter() - pressed
    table = widget.results.table
    shown = {
        "order": [table.item(row, ID).value for row in range(table.rowCount())],
        "scroll": table.verticalScrollBar().value(),
        "outside_seconds": outside,
        "dock_width": dock_width,
    }
    return widget, shown


def scores_by_label(summary):
    return {score.label: score for score in summary.scores}


def test_every_label_name_shows_whole_at_the_dock_width(parcellated):
    widget, shown = parcellated["widget"], parcellated["shown"]
    table = widget.results.table
    assert table.rowCount() >= 90 and table.isVisibleTo(widget)
    # The width the window laid the dock out at, or a little more: showing the per-label
    # plot, which another test of this module may have done first, can widen the dock.
    assert shown["dock_width"] <= widget.width() < 600
    # The delegate draws a cell's text inside the cell less a margin on each side, and
    # elides what is wider.
    margin = table.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, table) + 1
    room = table.horizontalHeader().sectionSize(NAME) - 2 * margin
    metrics = table.fontMetrics()
    names = [table.item(row, NAME).text() for row in range(table.rowCount())]
    assert "L rostralanteriorcingulate" in names  # among the longest
    widest = max(names, key=metrics.horizontalAdvance)
    assert metrics.horizontalAdvance(widest) <= room, (widest, room)
    # Every column is within the viewport: nothing is cut on the right.
    header = table.horizontalHeader()
    assert header.sectionPosition(GAIN) + header.sectionSize(GAIN) <= table.viewport().width()
    # The full FreeSurfer name and the voxel counts are the name's tooltip.
    row = next(r for r in range(table.rowCount()) if table.item(r, ID).value == 1026)
    score = scores_by_label(widget.summary)[1026]
    tip = table.item(row, NAME).toolTip()
    assert tip.startswith("ctx-lh-rostralanteriorcingulate (id 1026)")
    assert f"{score.fixed_voxels} fixed, {score.warped_voxels} warped" in tip


def test_rows_come_worst_first_and_every_sort_starts_at_the_top(parcellated):
    widget, shown = parcellated["widget"], parcellated["shown"]
    table, summary = widget.results.table, widget.summary
    dice = {score.label: score.syn for score in summary.scores}
    # As the run ended: by Dice after SyN, lowest first, at the top.
    assert shown["order"] == sorted(dice, key=lambda label: (dice[label], label))
    assert shown["scroll"] == 0
    # A header click sorts, and the view goes back to the first row.
    bar = table.verticalScrollBar()
    bar.setValue(bar.maximum())
    assert bar.value() > 0
    header = table.horizontalHeader()
    centre = QPoint(header.sectionPosition(NAME) + header.sectionSize(NAME) // 2, 5)
    QTest.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    names = [table.item(row, NAME).text() for row in range(table.rowCount())]
    assert names in (sorted(names), sorted(names, reverse=True))
    assert bar.value() == 0
    # A new result: worst first again, at the top.
    bar.setValue(bar.maximum())
    widget.results.show_summary(summary, widget.job.fixed.affine, "again")
    shown_dice = [table.item(row, SYN).value for row in range(table.rowCount())]
    assert shown_dice == sorted(dice.values()) and bar.value() == 0


def test_each_label_shows_its_dice_after_the_affine_and_after_syn_with_the_gain(parcellated):
    widget = parcellated["widget"]
    table, quality = widget.results.table, widget.summary.quality
    affine = {row["label"]: row["dice"] for row in quality.overlap_affine.rows}
    after = {row["label"]: row["dice"] for row in quality.overlap.rows}
    assert affine.keys() == after.keys() and table.rowCount() == len(after)
    for row in range(table.rowCount()):
        label = table.item(row, ID).value
        before_syn = table.item(row, AFFINE).value
        after_syn = table.item(row, SYN).value
        assert (before_syn, after_syn) == (affine[label], after[label])
        assert table.item(row, AFFINE).text() == f"{affine[label]:.3f}"
        assert table.item(row, SYN).text() == f"{after[label]:.3f}"
        assert table.item(row, GAIN).value == after_syn - before_syn
        assert table.item(row, GAIN).text() == f"{after_syn - before_syn:+.3f}"
    # SyN improves on the affine stage on this deformed pair, on average and overall.
    gain = quality.overlap.mean_dice - quality.overlap_affine.mean_dice
    assert gain > 0.05
    text = widget.results.text.text()
    for before_syn, after_syn in (
        (quality.overlap_affine.whole_dice, quality.overlap.whole_dice),
        (quality.overlap_affine.mean_dice, quality.overlap.mean_dice),
    ):
        figures = ".*".join(
            re.escape(figure)
            for figure in (
                f">{before_syn:.3f}</td>",
                f"<b>{after_syn:.3f}</b></td>",
                f">{after_syn - before_syn:+.3f}</td>",
            )
        )
        assert re.search(figures, text), figures
    assert f"mean of {table.rowCount()} labels" in text


def scale_position(rgb):
    """Where an RGB colour (0-1) lies on the Dice map's scale, by its nearest sample."""
    samples = colormaps[DICE_COLORMAP](np.linspace(0.0, 1.0, 1001))[:, :3]
    return int(np.argmin(((samples - np.asarray(rgb)) ** 2).sum(axis=1))) / 1000


def contrast_ratio(first, second):
    """WCAG contrast ratio of two QColors (4.5 or more: body text reads)."""

    def luminance(colour):
        channels = [colour.redF(), colour.greenF(), colour.blueF()]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_dice_cells_are_coloured_in_the_order_of_their_dice_and_stay_legible(parcellated):
    widget = parcellated["widget"]
    table = widget.results.table
    low, high = DICE_RANGE
    cells = []
    for row in range(table.rowCount()):
        for column in (AFFINE, SYN):
            item = table.item(row, column)
            background = item.background().color()
            rgb = (background.redF(), background.greenF(), background.blueF())
            cells.append((item.value, scale_position(rgb)))
            assert contrast_ratio(background, item.foreground().color()) >= 4.5
    cells.sort()
    dice = np.array([value for value, _ in cells])
    positions = np.array([position for _, position in cells])
    assert np.all(np.diff(positions) >= 0)  # a higher Dice is never drawn lower on the scale
    expected = np.clip((dice - low) / (high - low), 0.0, 1.0)
    np.testing.assert_allclose(positions, expected, atol=0.01)
    assert positions.min() < 0.2 and positions.max() > 0.6  # the scale is used, not one hue


def test_the_plot_draws_each_label_at_its_dice_and_a_click_shows_it(parcellated):
    widget = parcellated["widget"]
    results = widget.results
    plot = results.plot
    results.scores_buttons.button(1).click()
    assert results.scores_stack.currentWidget() is plot and plot.isVisibleTo(widget)
    scores = widget.summary.scores
    assert [s.label for s in plot.scores] == [
        s.label for s in sorted(scores, key=lambda s: (s.syn, s.label))
    ]
    QApplication.processEvents()  # the switch's layout settles before the plot is read
    image = plot.grab().toImage()
    ratio = image.devicePixelRatio()
    assert image.width() == round(plot.width() * ratio)
    for index in (0, len(scores) // 2, len(scores) - 1):
        score = plot.scores[index]
        x, y = plot.column_centre(index), plot.dice_y(score.syn)
        painted = image.pixelColor(round(x * ratio), round(y * ratio))
        expected = next(
            results.table.item(r, SYN).background().color()
            for r in range(results.table.rowCount())
            if results.table.item(r, ID).value == score.label
        )
        assert abs(painted.red() - expected.red()) <= 3
        assert abs(painted.blue() - expected.blue()) <= 3
    # The axis spans Dice 0 to 1; the worst label sits lowest.
    assert plot.dice_y(0.0) >= plot.dice_y(plot.scores[0].syn) > plot.dice_y(1.0)
    # A click on a column shows that label, as a table row click does.
    index = len(scores) // 3
    label = plot.scores[index].label
    point = QPoint(round(plot.column_centre(index)), round(plot.dice_y(0.5)))
    QTest.mouseClick(plot, Qt.MouseButton.LeftButton, pos=point)
    labels_layer = widget.viewer.layers[widget.run_layers.name(WARPED_LABELS)]
    assert labels_layer.selected_label == label and labels_layer.show_selected_label
    selected = results.table.selectedItems()
    assert selected and selected[0].row() == next(
        r for r in range(results.table.rowCount()) if results.table.item(r, ID).value == label
    )
    assert plot.describe(index).startswith(results.table.item(selected[0].row(), NAME).text())
    QTest.mouseClick(plot, Qt.MouseButton.LeftButton, pos=point)  # again: every label
    assert not labels_layer.show_selected_label
    results.scores_buttons.button(0).click()


def test_the_summary_gives_the_wall_time_from_run_to_result(parcellated):
    widget, shown = parcellated["widget"], parcellated["shown"]
    text = widget.results.text.text()
    found = re.search(r"([\d.]+) s from Run to result \(registration ([\d.]+) s\)", text)
    assert found, text
    wall, registration = float(found.group(1)), float(found.group(2))
    timings = widget.summary.result.timings
    assert registration == round(timings["total"], 1)
    # The whole run: the engine's time and the scoring after it, no more than the test saw.
    assert wall >= registration and wall > timings["total"]
    assert wall <= shown["outside_seconds"] + 0.05


def test_without_label_maps_there_is_no_table_but_a_word_on_labels(viewer_state):
    viewer = viewer_state["viewer"]
    for data, kwargs, kind in sample_pair():
        if kind == "image":
            viewer.add_image(data, **kwargs)
    widget = RegistrationWidget(viewer)
    widget.options_form.control("level_iters").setText("3")
    widget.options_form.control("prealign").setCurrentText("none")
    dock(viewer, widget)
    run_and_wait(widget)
    results = widget.results
    assert widget.summary.table is None and results.table.rowCount() == 0
    assert not results.table.isVisibleTo(results) and not results.plot.isVisibleTo(results)
    assert not results.scores_view.isVisibleTo(results)
    text = results.text.text()
    assert "Label maps of both images" in text and "Dice" in text
    assert "folds" in text and "s from Run to result" in text
    assert not math.isnan(widget.summary.result.mi_after)
