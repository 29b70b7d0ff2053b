"""The widget's inputs and tidiness: mask pickers, presets with their expected time, and
the layers of several runs (compact names, older runs hidden, "Clear earlier runs").
"""

import numpy as np
import pytest
import testdata

pytest.importorskip("napari")

from napari_mireg.gui import frames as _frames  # noqa: E402
from napari_mireg.gui import widget as _widget  # noqa: E402
from napari_mireg.gui.display import layer_kwargs  # noqa: E402
from napari_mireg.gui.inputs import NONE  # noqa: E402
from napari_mireg.gui.live_layers import (  # noqa: E402
    MAX_NAME_LENGTH,
    RESULT_KEY,
    WARPED,
)
from napari_mireg.gui.options_form import CUSTOM, DEFAULT  # noqa: E402

RUN_TIMEOUT_MS = 120_000
INPUTS = ["fixed_t1", "moving_t2", "fixed_synthseg", "moving_synthseg"]


def make_widget(viewer, iterations="3", prealign="none"):
    return testdata.docked_widget(viewer, iterations, prealign)


def run_to_end(qtbot, widget):
    frames = []
    widget.runner.frame_arrived.connect(frames.append)
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    assert widget.result is not None, widget.reporter.status.text()
    return frames


def test_chosen_masks_are_what_the_engine_gets(viewer_with_pair, qtbot, monkeypatch):
    viewer = viewer_with_pair
    fixed, moving = viewer.layers["fixed_t1"], viewer.layers["moving_t2"]
    # A Labels mask of the fixed image (a box) and an Image mask of the moving one (its
    # bright voxels, as floats), each on its image's grid: any non-zero voxel is inside.
    box = np.zeros(fixed.data.shape, np.uint8)
    box[10:-10, 12:-12, 8:-8] = 3
    viewer.add_labels(box, **layer_kwargs(fixed.metadata["display_affine"], "fixed box"))
    bright = np.where(moving.data > np.percentile(moving.data, 40), 0.5, 0.0).astype(np.float32)
    viewer.add_image(bright, **layer_kwargs(moving.metadata["display_affine"], "moving bright"))
    received = []
    real = _frames.register_steps

    def recording(*args, **kwargs):
        received.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(_frames, "register_steps", recording)
    widget = make_widget(viewer)
    inputs = widget.inputs
    # Masks are never chosen by default, and both kinds of layer are offered.
    assert inputs.fixed_mask_choice.currentText() == NONE
    assert inputs.moving_mask_choice.currentText() == NONE
    picker = inputs.fixed_mask_choice
    offered = [picker.itemText(i) for i in range(picker.count())]
    assert {"fixed box", "moving bright", "fixed_t1", "fixed_synthseg"} <= set(offered)

    inputs.fixed_mask_choice.setCurrentText("fixed box")
    inputs.moving_mask_choice.setCurrentText("moving bright")
    run_to_end(qtbot, widget)
    (kwargs,) = received
    assert kwargs["fixed_mask"].dtype == bool and kwargs["moving_mask"].dtype == bool
    np.testing.assert_array_equal(kwargs["fixed_mask"], box != 0)
    np.testing.assert_array_equal(kwargs["moving_mask"], bright != 0)
    assert 0 < kwargs["fixed_mask"].sum() < kwargs["fixed_mask"].size
    # The label maps still go with them (the masks win over the labels' brain in the engine).
    assert kwargs["fixed_labels"] is not None and kwargs["moving_labels"] is not None

    # No mask chosen: none is passed, and the engine makes its own from the labels.
    inputs.fixed_mask_choice.setCurrentText(NONE)
    inputs.moving_mask_choice.setCurrentText(NONE)
    run_to_end(qtbot, widget)
    assert received[-1]["fixed_mask"] is None and received[-1]["moving_mask"] is None


def test_a_mask_off_its_image_grid_is_refused_by_name(viewer_with_pair, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr(_widget, "show_error", shown.append)
    viewer = viewer_with_pair
    widget = make_widget(viewer)
    viewer.add_labels(np.ones((5, 6, 7), np.uint8), name="small mask")
    widget.inputs.moving_mask_choice.setCurrentText("small mask")
    assert widget.start() is None and not widget.runner.running
    assert (
        "moving mask small mask (5, 6, 7) is not on the grid of the moving image moving_t2"
        in shown[-1]
    )
    assert "small mask" in widget.reporter.status.text()

    # An empty mask is refused too, by name.
    fixed = viewer.layers["fixed_t1"]
    empty = np.zeros(fixed.data.shape, np.uint8)
    viewer.add_labels(empty, **layer_kwargs(fixed.metadata["display_affine"], "empty mask"))
    widget.inputs.moving_mask_choice.setCurrentText(NONE)
    widget.inputs.fixed_mask_choice.setCurrentText("empty mask")
    assert widget.start() is None
    assert "fixed mask empty mask has no voxel inside" in shown[-1]


def test_affine_only_runs_the_prealignment_without_syn(viewer_with_pair, qtbot):
    widget = make_widget(viewer_with_pair, iterations="40x20x10", prealign="rigid")
    form = widget.options_form
    presets = [form.preset_choice.itemText(i) for i in range(form.preset_choice.count())]
    assert presets == ["Default", "Quick", "Affine only", "Custom"]
    assert form.preset_choice.currentText() == CUSTOM  # rigid is not a preset's
    form.preset_choice.textActivated.emit("Affine only")
    assert form.preset_choice.currentText() == "Affine only"
    options = widget.options()
    assert options.level_iters == (0,) and options.prealign == "affine"
    assert form.control("level_iters").text() == "0"

    frames = run_to_end(qtbot, widget)
    stages = [frame.stage for frame in frames]
    assert "prealigned" in stages and "syn" not in stages
    result = widget.result
    assert result.energies == [] and result.mi_after > result.mi_before
    # The prealignment moved the image: not the identity.
    assert not np.allclose(result.prealignment.matrix, np.eye(4), atol=1e-3)


def test_quick_preset_is_faster_and_says_so_before_run(viewer_with_pair):
    widget = make_widget(viewer_with_pair, iterations="40,20,10", prealign="affine")
    form = widget.options_form
    # The form as it opens is the Default preset; its time alone is shown.
    assert form.preset_choice.currentText() == DEFAULT
    default = widget.expected_seconds()
    assert default > 0 and widget.expected_time.text() == f"expected {_widget._duration(default)}"

    form.preset_choice.textActivated.emit("Quick")
    assert widget.options().level_iters == (40, 20, 0)
    quick = widget.expected_seconds()
    assert quick < 0.6 * default and widget.expected_seconds(DEFAULT) == default
    text = widget.expected_time.text()
    assert text == f"expected {_widget._duration(quick)} (Default {_widget._duration(default)})"

    # Editing an option makes it Custom; the time follows the options.
    form.control("level_iters").setText("40x20x20")
    assert form.preset_choice.currentText() == CUSTOM
    assert widget.expected_seconds() > default
    form.control("level_iters").setText("40x20x10")
    assert form.preset_choice.currentText() == DEFAULT

    # Brain extraction is a setting of the data: a preset keeps it. It costs time only on
    # a side that has neither labels nor a mask.
    form.control("brain_extraction").setCurrentText("fixed")
    form.preset_choice.textActivated.emit("Quick")
    assert widget.options().brain_extraction == "fixed"
    assert form.preset_choice.currentText() == "Quick"
    assert widget.expected_seconds() == quick  # the fixed labels make the mask
    widget.inputs.fixed_labels_choice.setCurrentText(NONE)
    assert widget.expected_seconds() > quick + 30


def test_two_runs_hide_the_first_and_clear_removes_it(viewer_with_pair, qtbot):
    viewer = viewer_with_pair
    widget = make_widget(viewer)
    run_to_end(qtbot, widget)
    first = [layer.name for layer in viewer.layers if layer.metadata.get(RESULT_KEY) == 1]
    widget.view.set_mode("checkerboard")  # makes the run's checkerboard layer
    widget.view.set_mode("dice map")  # makes its Dice map (made when first shown)
    widget.view.set_mode("det J")  # and its det J
    widget.view.set_mode("overlay")
    assert "R1 checker" in viewer.layers and "R1 warped" in first
    assert not widget.tools.clear_button.isEnabled()  # no earlier run yet

    run_to_end(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    results = [layer for layer in viewer.layers if RESULT_KEY in layer.metadata]
    # Short names, the full description in the metadata.
    assert max(len(layer.name) for layer in results) <= MAX_NAME_LENGTH
    assert all(layer.name.startswith(f"R{layer.metadata[RESULT_KEY]} ") for layer in results)
    widget.view.set_mode("det J")  # makes run 2's det J
    widget.view.set_mode("overlay")
    det_j = viewer.layers["R2 det J"]
    assert det_j.metadata["description"].startswith("run 2: det J of the map")
    # The first run's layers are hidden; its views (checkerboard, fixed outlines, update)
    # are gone; its results stay for comparison.
    earlier = [layer for layer in results if layer.metadata[RESULT_KEY] == 1]
    assert earlier and not any(layer.visible for layer in earlier)
    assert {layer.name for layer in earlier} == {
        "R1 warped",
        "R1 labels",
        "R1 det J",
        "R1 displacement",
        "R1 Dice map",
    }
    assert viewer.layers[widget.run_layers.name(WARPED)].visible
    # Grouped: inputs at the bottom, then run 1, then run 2 on top.
    runs = [layer.metadata.get(RESULT_KEY, 0) for layer in viewer.layers]
    assert runs == sorted(runs) and names[:4] == INPUTS

    assert widget.tools.clear_button.isEnabled()
    widget.tools.clear_button.click()
    assert [layer.name for layer in viewer.layers][:4] == INPUTS
    left = {layer.metadata.get(RESULT_KEY) for layer in viewer.layers}
    assert left == {None, 2} and "R2 warped" in viewer.layers
    assert not widget.tools.clear_button.isEnabled()
    # The inputs stay usable: a third run starts from them.
    assert widget.inputs.names() == ("fixed_t1", "moving_t2")
    run_to_end(qtbot, widget)
    assert "R3 warped" in viewer.layers
