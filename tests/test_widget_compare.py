"""The comparison modes of the inspection view (composite, checkerboard, flicker, swipe,
overlay opacity) and the colour bars of the det J and Dice maps.
"""

import numpy as np
import pytest
import testdata

pytest.importorskip("napari")

from napari_mireg.gui.colour_bar import ColourBar  # noqa: E402
from napari_mireg.gui.display import layer_kwargs  # noqa: E402
from napari_mireg.gui.inspection import (  # noqa: E402
    OVERLAY_OPACITY,
    SWIPE,
    InspectionView,
    _normalised,
)
from napari_mireg.gui.live_layers import (  # noqa: E402
    CHECKERBOARD,
    DICE_MAP,
    FIXED_CONTOURS,
    JACOBIAN,
    WARPED,
    WARPED_LABELS,
    LiveLayers,
)

RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def ran(make_napari_viewer, qtbot):
    """A viewer of the sample pair and a docked widget after a 3-iteration run."""
    viewer = testdata.add_sample_layers(make_napari_viewer(show=True))
    widget = testdata.docked_widget(viewer)
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=RUN_TIMEOUT_MS)
    assert widget.summary is not None
    return viewer, widget


def click(widget, text):
    next(b for b in widget.mode_buttons.buttons() if b.text() == text).click()


def test_the_composite_is_gray_where_fixed_and_warped_agree(make_napari_viewer):
    # Three bands: equal, fixed brighter, warped brighter. The warped image is on another
    # scale (x5) with the same histogram: the robust ranges make its bands comparable.
    fixed = np.zeros((5, 60, 90), np.float32)
    fixed[:, 10:50, 0:30] = 100.0
    fixed[:, 10:50, 30:60] = 100.0
    fixed[:, 10:50, 60:90] = 30.0
    warped = fixed.copy()
    warped[:, 10:50, 30:60], warped[:, 10:50, 60:90] = 30.0, 100.0
    warped *= 5.0
    viewer = make_napari_viewer(show=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    fixed_layer = viewer.add_image(fixed, colormap="gray", **layer_kwargs(affine, "fixed"))
    original_limits = tuple(fixed_layer.contrast_limits)
    live = LiveLayers(viewer, 1)
    live.show(WARPED, warped, "image", affine)
    view = InspectionView(viewer)
    view.begin(live, fixed_layer)
    view.set_mode("composite")
    viewer.dims.set_point(0, 2.0)
    viewer.reset_view()
    pixels = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    brain = pixels.max(axis=-1) > 60
    gray = brain & (np.abs(red - green) < 12) & (np.abs(blue - green) < 12) & (green > 200)
    green_first = brain & (green > red + 100) & (green > blue + 100)
    magenta_first = brain & (red > green + 100) & (blue > green + 100)
    # Each band is a third of the image: a third of the brain's pixels each, nothing else.
    for part in (gray, green_first, magenta_first):
        assert 0.3 < part.sum() / brain.sum() < 0.37
    assert (gray | green_first | magenta_first).sum() > 0.98 * brain.sum()
    # Along a canvas row the bands are where the data has them: the equal band is the
    # first third of the last axis (0 to 30), on the left of the canvas (no anatomical
    # plane is set here: napari's columns grow rightwards).
    row = np.flatnonzero(brain.any(axis=1))[len(np.flatnonzero(brain.any(axis=1))) // 2]
    columns = np.flatnonzero(brain[row])
    thirds = np.array_split(columns, 3)
    assert gray[row, thirds[0]].mean() > 0.9
    assert green_first[row, thirds[1]].mean() > 0.9
    assert magenta_first[row, thirds[2]].mean() > 0.9
    # Back to the overlay: the fixed image's own colours and range.
    view.set_mode("overlay")
    assert fixed_layer.colormap.name == "gray"
    assert tuple(fixed_layer.contrast_limits) == original_limits
    assert live.get(WARPED).blending == "translucent"
    view.stop()


def distinguishable_row(widget, viewer):
    """A line of voxels along the last axis through the middle of the volume, and where
    the normalised fixed and warped images differ enough to tell which one a tile shows.
    """
    fixed = viewer.layers["fixed_t1"]
    warped = viewer.layers[widget.run_layers.name(WARPED)]
    index = tuple(n // 2 for n in fixed.data.shape[:2])
    norm_fixed = _normalised(fixed.data, fixed.contrast_limits)[index]
    norm_warped = _normalised(warped.data, warped.contrast_limits)[index]
    return index, norm_fixed, np.abs(norm_fixed - norm_warped) > 0.05


def tile_pattern(widget, viewer):
    """Along the middle line: True where the checkerboard shows the fixed image (only the
    distinguishable voxels), and their indices.
    """
    index, norm_fixed, usable = distinguishable_row(widget, viewer)
    tiles = viewer.layers[widget.run_layers.name(CHECKERBOARD)].data[index]
    columns = np.flatnonzero(usable)
    return columns, np.isclose(tiles, norm_fixed)[columns]


def matches_tiles(columns, from_fixed, side):
    """True if the fixed/warped pattern alternates every `side` voxels."""
    parity = (columns // side) % 2 == 1
    return bool(np.all(from_fixed == parity) or np.all(from_fixed == ~parity))


def test_the_tile_side_control_sets_the_checkerboard_period(ran):
    viewer, widget = ran
    controls = widget.mode_controls
    assert controls.currentWidget() is controls.pages["overlay"]
    click(widget, "Checkerboard")
    assert controls.currentWidget() is controls.pages["checkerboard"]
    voxel = float(viewer.layers["fixed_t1"].scale[-1])
    assert controls.tile.value() == 16
    columns, from_fixed = tile_pattern(widget, viewer)
    assert columns.size > 20
    assert matches_tiles(columns, from_fixed, round(16 / voxel))
    controls.tile.setValue(6)
    columns, from_fixed = tile_pattern(widget, viewer)
    assert matches_tiles(columns, from_fixed, round(6 / voxel))
    assert not matches_tiles(columns, from_fixed, round(16 / voxel))
    # Both images are still there, in tiles of the new side.
    assert 0.2 < from_fixed.mean() < 0.8


def test_the_warped_opacity_control_sets_the_overlay(ran):
    viewer, widget = ran
    warped = viewer.layers[widget.run_layers.name(WARPED)]
    assert warped.opacity == OVERLAY_OPACITY and warped.colormap.name == "gray"
    widget.mode_controls.opacity.setValue(20)
    assert warped.opacity == pytest.approx(0.2)
    click(widget, "Flicker")  # the images in turns: each opaque
    assert warped.opacity == 1.0
    click(widget, "Overlay")
    assert warped.opacity == pytest.approx(0.2) and warped.visible


def test_outlines_are_hidden_in_checkerboard_flicker_and_swipe(ran):
    viewer, widget = ran
    outlines = [
        viewer.layers[widget.run_layers.name(base)] for base in (WARPED_LABELS, FIXED_CONTOURS)
    ]
    assert widget.view.label_display == "all" and all(layer.visible for layer in outlines)
    for mode in ("Checkerboard", "Flicker", "Swipe"):
        click(widget, mode)
        assert not any(layer.visible for layer in outlines), mode
    # Composite: only a label selected in the results table is outlined.
    click(widget, "Composite")
    assert not any(layer.visible for layer in outlines)
    label = int(widget.table.rows[0]["label"])
    widget.select_label(label)
    assert all(layer.visible for layer in outlines)
    widget.select_label(-1)
    assert not any(layer.visible for layer in outlines)
    click(widget, "Overlay")
    assert all(layer.visible for layer in outlines)


def test_flicker_runs_at_the_chosen_interval_and_stops_cleanly(ran, qtbot):
    viewer, widget = ran
    warped = viewer.layers[widget.run_layers.name(WARPED)]
    click(widget, "Flicker")
    assert widget.mode_controls.currentWidget() is widget.mode_controls.pages["flicker"]
    widget.mode_controls.interval.setValue(200)
    assert widget.view.flicker_ms == 200 and widget.view.flickering
    seen = []
    warped.events.visible.connect(lambda event: seen.append(warped.visible))
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=5_000)
    assert True in seen and False in seen
    click(widget, "Overlay")
    assert not widget.view.flickering and warped.visible
    count = len(seen)
    qtbot.wait(500)  # more than two intervals: nothing flips any more
    assert warped.visible and len(seen) == count


def swipe_layer(viewer, widget):
    return viewer.layers[widget.run_layers.name(SWIPE)]


def test_the_swipe_boundary_follows_its_slider_and_the_plane(ran):
    viewer, widget = ran
    warped = viewer.layers[widget.run_layers.name(WARPED)]
    fixed = viewer.layers["fixed_t1"]
    click(widget, "Swipe")
    controls = widget.mode_controls
    assert controls.currentWidget() is controls.pages["swipe"]
    layer = swipe_layer(viewer, widget)
    assert layer.visible and not warped.visible and fixed.visible
    # A view of the warped image (no copy), drawn with its contrast.
    assert np.shares_memory(layer.data, warped.data)
    assert tuple(layer.contrast_limits) == tuple(warped.contrast_limits)
    size = warped.data.shape[2]
    controls.swipe.setValue(25)
    # Axial: the R axis runs leftwards on the screen, so the left quarter of the canvas is
    # the quarter of highest R index; in world mm it sits where the warped voxels do.
    assert layer.data.shape[2] == round(0.25 * size)
    start = size - layer.data.shape[2]
    np.testing.assert_array_equal(layer.data, warped.data[:, :, start:])
    np.testing.assert_allclose(
        layer.data_to_world((0, 0, 0)), warped.data_to_world((0, 0, start)), atol=1e-6
    )
    # On the canvas: left of the boundary the warped image, right of it the fixed one.
    viewer.dims.set_point(0, float(warped.data_to_world((warped.data.shape[0] // 2, 0, 0))[0]))
    shown = viewer.screenshot(canvas_only=True, flash=False)[..., 0].astype(float)
    layer.visible = False
    only_fixed = viewer.screenshot(canvas_only=True, flash=False)[..., 0].astype(float)
    layer.visible = True
    differs = np.abs(shown - only_fixed) > 20
    columns = np.flatnonzero(differs.any(axis=0))
    brain = np.flatnonzero((only_fixed > 20).any(axis=0))
    assert columns.size > 0
    # The changed columns are in the brain's left part only (a quarter of the volume).
    assert columns.max() < brain.min() + 0.4 * (brain.max() - brain.min())
    controls.swipe.setValue(0)
    assert not layer.visible
    controls.swipe.setValue(100)
    assert layer.visible and layer.data.shape == warped.data.shape
    # Sagittal slices show the A axis across the canvas: the boundary cuts that axis.
    controls.swipe.setValue(50)
    next(b for b in widget.plane_buttons.buttons() if b.text() == "Sagittal").click()
    layer = swipe_layer(viewer, widget)
    assert layer.data.shape[1] == round(0.5 * warped.data.shape[1])
    assert layer.data.shape[2] == warped.data.shape[2]
    click(widget, "Overlay")
    assert not layer.visible and warped.visible


def test_the_det_j_colour_bar_shows_with_its_layer_and_its_range(ran):
    viewer, widget = ran
    bars = widget.colour_bars
    # The det J layer is made the first time its view is chosen.
    assert not widget.run_layers.has(JACOBIAN) and bars.isHidden()
    click(widget, "Det J")
    jacobian = viewer.layers[widget.run_layers.name(JACOBIAN)]
    assert jacobian.visible and not viewer.layers[widget.run_layers.name(WARPED)].visible
    bar = bars.bars[JACOBIAN]
    assert not bars.isHidden() and not bar.isHidden() and bars.bars[DICE_MAP].isHidden()
    assert bar.tick_texts() == ["0", "1", "2"] and bar.limits == (0.0, 2.0)
    assert "det J" in bar.title
    jacobian.contrast_limits = (0.5, 1.75)
    assert bar.tick_texts() == ["0.5", "1", "1.75"]
    # Painted: blue at the low end, red at the high end, white-ish at 1.
    image = bar.grab().toImage()
    rect = bar._bar_rect()
    y = int(rect.center().y())
    colour = [image.pixelColor(int(rect.left() + f * rect.width()), y) for f in (0.03, 0.97)]
    low, high = colour
    assert low.blue() > low.red() + 60 and high.red() > high.blue() + 60
    click(widget, "Overlay")
    assert not jacobian.visible and bars.isHidden()
    jacobian.visible = True  # shown from the layer list: its bar too
    assert not bars.bars[JACOBIAN].isHidden()
    jacobian.visible = False
    assert bars.isHidden()


def test_a_colour_bar_paints_its_colours_and_ticks(qtbot):
    bar = ColourBar()
    qtbot.addWidget(bar)
    bar.resize(300, bar.minimumHeight())
    bar.set_scale("test", [(0, 1, 0, 1), (1, 0, 1, 1)], (0.0, 10.0), [(0, "0"), (10, "10")])
    image = bar.grab().toImage()
    rect = bar._bar_rect()
    y = int(rect.center().y())
    left = image.pixelColor(int(rect.left() + 3), y)
    right = image.pixelColor(int(rect.right() - 3), y)
    assert left.green() > 200 and left.red() < 50
    assert right.red() > 200 and right.green() < 50
    assert bar.tick_texts() == ["0", "10"]
