"""What keeps the window's event loop free at the end of a run: the layers it makes on the
window's thread, and the garbage collections it leaves out.
"""

import gc
from types import SimpleNamespace

import numpy as np
import pytest
import testdata

pytest.importorskip("napari")

from napari_mireg.gui import turns as _turns  # noqa: E402
from napari_mireg.gui.dice_map import dice_colour  # noqa: E402
from napari_mireg.gui.live_layers import (  # noqa: E402
    DICE_MAP,
    DISPLACEMENT,
    JACOBIAN,
    UPDATE,
)

RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def widget_on_sample(make_napari_viewer):
    viewer = testdata.add_sample_layers(make_napari_viewer(show=True))
    return viewer, testdata.docked_widget(viewer)


def test_the_end_of_a_run_makes_no_layer_and_the_maps_are_made_when_shown(widget_on_sample, qtbot):
    viewer, widget = widget_on_sample
    made, at_result = [], {}
    viewer.layers.events.inserted.connect(lambda event: made.append(event.value.name))
    # Connected after the widget's own handler: the result's steps are queued by then.
    widget.runner.result_ready.connect(
        lambda _: at_result.update(update=widget.run_layers.live.get(UPDATE), made_before=len(made))
    )
    widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    # Making a layer holds napari's thread 0.1-0.4 s at 1 mm: none is made.
    assert made[at_result["made_before"] :] == []
    # The update magnitude layer became the displacement's, with its values and range.
    summary = widget.summary
    displacement = viewer.layers[widget.run_layers.name(DISPLACEMENT)]
    assert displacement is at_result["update"] is not None
    np.testing.assert_array_equal(displacement.data, summary.displacement)
    assert tuple(displacement.contrast_limits) == pytest.approx(summary.displacement_limits)
    assert displacement.colormap.name == "viridis" and not displacement.visible
    assert "displacement" in displacement.metadata  # the forward field its export writes
    # The Dice map is made the first time it is shown, once.
    assert not widget.run_layers.has(DICE_MAP)
    buttons = {button.text(): button for button in widget.mode_buttons.buttons()}
    buttons["Dice map"].click()
    dice_map = viewer.layers[widget.run_layers.name(DICE_MAP)]
    assert dice_map.visible and dice_map.data is viewer.layers["fixed_synthseg"].data
    worst = min(widget.table.rows, key=lambda row: row["dice"])
    np.testing.assert_allclose(
        dice_map.colormap.map(int(worst["label"])), dice_colour(worst["dice"]), atol=1e-6
    )
    count = len(viewer.layers)
    buttons["Overlay"].click()
    buttons["Dice map"].click()
    assert len(viewer.layers) == count and dice_map.visible
    # det J too, with its range and the summary's values.
    buttons["Det J"].click()
    jacobian = viewer.layers[widget.run_layers.name(JACOBIAN)]
    assert jacobian.visible and not dice_map.visible
    assert tuple(jacobian.contrast_limits) == (0.0, 2.0)
    np.testing.assert_array_equal(jacobian.data, summary.determinant)
    assert len(viewer.layers) == count + 1


def test_a_run_freezes_the_objects_it_starts_with_until_a_layer_is_removed(widget_on_sample, qtbot):
    viewer, widget = widget_on_sample
    gc.unfreeze()
    widget.start()
    # napari's objects, the inputs' and the run's layers: skipped by the collections that
    # Python starts during the run and at its end.
    assert gc.get_freeze_count() > 10_000
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    assert gc.get_freeze_count() > 10_000
    # A removed layer is collected again (its arrays are freed).
    viewer.layers.remove(viewer.layers[widget.run_layers.name(DISPLACEMENT)])
    assert gc.get_freeze_count() == 0
    widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    widget.close()
    assert gc.get_freeze_count() == 0


def test_cheap_steps_share_a_turn_and_the_step_past_its_time_ends_it(qtbot, monkeypatch):
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(_turns, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    done = []

    def step(name, seconds):
        def run():
            clock.now += seconds
            done.append(name)

        return run

    turns = _turns.Turns()
    turns.add(step("a", 0.002), step("b", 0.002), step("layer", 0.2), step("c", 0.002))
    turns._timer.stop()  # the turns are run by hand below
    turns._next()  # one turn: each turn is followed by a repaint (50-100 ms at 1 mm)
    assert done == ["a", "b", "layer"]
    turns._next()
    assert done == ["a", "b", "layer", "c"] and turns.pending == 0
