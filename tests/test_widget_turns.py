"""The window's work at the end of a run, spread over turns of the event loop, and the
tab pages that scroll when the dock is short.
"""

import pytest
import testdata

pytest.importorskip("napari")

from qtpy.QtWidgets import QScrollArea  # noqa: E402

from napari_mireg.gui.live_layers import (  # noqa: E402
    DICE_MAP,
    DISPLACEMENT,
    JACOBIAN,
    UPDATE,
)
from napari_mireg.gui.turns import Turns  # noqa: E402
from napari_mireg.gui.widget import RegistrationWidget  # noqa: E402

RUN_TIMEOUT_MS = 120_000
RESULT_LAYERS = (JACOBIAN, DISPLACEMENT, DICE_MAP)


def test_turns_run_their_steps_later_in_order_and_clear_drops_the_rest(qtbot):
    turns, done = Turns(), []
    turns.add(lambda: done.append(1), lambda: done.append(2))
    turns.add(lambda: done.append(3))
    assert done == [] and turns.pending == 3  # nothing runs in the caller's turn
    qtbot.waitUntil(lambda: turns.pending == 0)
    assert done == [1, 2, 3]
    turns.add(lambda: done.append(4), lambda: done.append(5))
    turns.clear()
    turns.add(lambda: done.append(6))
    qtbot.waitUntil(lambda: turns.pending == 0)
    assert done == [1, 2, 3, 6]


@pytest.fixture
def widget_on_sample(make_napari_viewer):
    viewer = testdata.add_sample_layers(make_napari_viewer(show=True))
    return viewer, testdata.docked_widget(viewer)


def test_the_run_ends_once_its_result_is_shown_over_several_turns(widget_on_sample, qtbot):
    viewer, widget = widget_on_sample
    at_result, at_end = {}, {}

    def made():
        return {base: widget.run_layers.has(base) for base in RESULT_LAYERS}

    # Connected after the widget's own handlers: they have run when these are called.
    widget.runner.result_ready.connect(
        lambda _: at_result.update(made(), running=widget.runner.running)
    )
    widget.runner.ended.connect(
        lambda outcome: at_end.update(
            made(),
            outcome=outcome,
            rows=widget.results.table.rowCount(),
            status=widget.reporter.status.text(),
            page=widget.tabs.currentWidget(),
        )
    )
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    # The result arrived with none of its layers made, the run still under way ...
    assert at_result == {JACOBIAN: False, DISPLACEMENT: False, DICE_MAP: False, "running": True}
    # ... and it ended with its displacement and the table shown (det J and the Dice map
    # are made when first shown).
    made_at_end = {base: at_end[base] for base in RESULT_LAYERS}
    assert made_at_end == {JACOBIAN: False, DISPLACEMENT: True, DICE_MAP: False}
    assert at_end["outcome"] == "done" and at_end["status"] == "Done"
    assert at_end["rows"] == len(widget.table.rows) > 5
    assert at_end["page"] is widget.results
    displacement = viewer.layers[widget.run_layers.name(DISPLACEMENT)]
    assert displacement.contrast_limits[1] == pytest.approx(float(displacement.data.max()))
    # The update magnitude layer, made at Run with the other live layers, became the
    # displacement's.
    assert not widget.run_layers.has(UPDATE)
    assert displacement.metadata["description"].startswith("run 1: length of the map's")


def test_cancel_leaves_a_result_that_has_arrived_to_be_shown(widget_on_sample, qtbot):
    _, widget = widget_on_sample
    cancels = []
    widget.runner.result_ready.connect(lambda _: cancels.append(widget.runner.cancel()))
    widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    assert cancels == [False]
    assert widget.reporter.status.text() == "Done" and widget.run_layers.has(DISPLACEMENT)


def test_every_tab_page_scrolls_when_the_dock_is_short(make_napari_viewer):
    widget = RegistrationWidget(make_napari_viewer())
    tabs = widget.tabs
    pages = [tabs.widget(index) for index in range(tabs.count())]
    assert pages == [widget.options_form, widget.plots, widget.results, widget.tools]
    for page in pages:
        assert isinstance(page.parentWidget().parentWidget(), QScrollArea)
    # The tallest page no longer sets the tabs' minimum height.
    tallest = max(page.minimumSizeHint().height() for page in pages)
    assert tabs.minimumSizeHint().height() < tallest - 50
    tabs.setCurrentWidget(widget.tools)
    assert tabs.currentWidget() is widget.tools and tabs.currentIndex() == 3
