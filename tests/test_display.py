"""Layer layout (no Qt): display arrays keep world positions; layers turn back into Volumes."""

from types import SimpleNamespace

import numpy as np
import pytest

from napari_mireg.engine.transforms import as_volume
from napari_mireg.gui.display import (
    display_affine,
    labels_colormap,
    layer_kwargs,
    layer_volume,
    on_grid,
    original_grid,
    to_display,
)
from napari_mireg.labels import label_colour

# An LPS-like, permuted grid: axis 0 runs towards the left-right, axis 1 up, axis 2 back.
OBLIQUE = np.array([[-2.0, 0, 0, 90], [0, 0, -3.0, 120], [0, 1.5, 0, -70], [0, 0, 0, 1]])


def world(affine, index):
    return affine[:3, :3] @ np.asarray(index, float) + affine[:3, 3]


def test_every_voxel_keeps_its_world_position_and_axes_are_s_a_r():
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    display, affine = to_display(data, OBLIQUE)
    assert display.shape == (5, 6, 4)  # (S, A, R): axis 2 -> A, axis 1 -> S
    for index in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        point = world(OBLIQUE, index)
        shown = np.rint(np.linalg.solve(affine[:3, :3], point - affine[:3, 3])).astype(int)
        assert display[tuple(shown)] == data[index]
    # display axes point to +S, +A, +R
    assert np.all(np.argmax(np.abs(affine[:3, :3]), axis=0) == [2, 1, 0])
    assert np.all(np.diag(affine[[2, 1, 0]][:, :3]) > 0)


def test_layer_keywords_place_the_layer_in_millimetres():
    _, affine = to_display(np.zeros((4, 5, 6)), OBLIQUE)
    kwargs = layer_kwargs(affine, "fixed", affine=OBLIQUE, shape=(4, 5, 6), path="f.nii")
    assert kwargs["scale"] == (1.5, 3.0, 2.0)
    np.testing.assert_allclose(kwargs["translate"], affine[[2, 1, 0], 3])
    assert kwargs["metadata"]["shape"] == (4, 5, 6) and kwargs["metadata"]["path"] == "f.nii"


def test_layers_become_volumes_with_their_display_grid_and_their_file_grid():
    display, affine = to_display(np.ones((4, 5, 6), np.float32), OBLIQUE)
    metadata = layer_kwargs(affine, "x", affine=OBLIQUE, shape=(4, 5, 6))["metadata"]
    layer = SimpleNamespace(data=display, name="x", metadata=metadata, scale=(), translate=())
    np.testing.assert_array_equal(layer_volume(layer).affine, affine)
    grid = original_grid(layer)
    assert grid.shape == (4, 5, 6)
    np.testing.assert_array_equal(grid.affine, OBLIQUE)


def test_foreign_layers_read_their_grid_from_scale_and_translate():
    layer = SimpleNamespace(
        data=np.zeros((3, 4, 5)), metadata={}, scale=(3.0, 2.0, 1.0), translate=(30, 20, 10)
    )
    expected = np.array([[0, 0, 1.0, 10], [0, 2.0, 0, 20], [3.0, 0, 0, 30], [0, 0, 0, 1]])
    np.testing.assert_array_equal(display_affine(layer), expected)


def test_label_colours_are_the_freesurfer_ones_and_background_is_clear():
    colours = labels_colormap([0, 2, 41])
    assert colours[0][3] == 0 and colours[None][3] == 0
    assert colours[2] == pytest.approx(tuple(c / 255 for c in label_colour(2)) + (1.0,))


def test_on_grid_returns_the_array_itself_on_the_same_grid_and_resamples_otherwise():
    array = np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)
    grid = as_volume(array, np.eye(4))
    assert on_grid(array, np.eye(4), grid) is array
    flipped = np.eye(4)
    flipped[0, 0], flipped[0, 3] = -1.0, 5.0  # the same voxel centres, axis 0 reversed
    np.testing.assert_allclose(on_grid(array, flipped, grid), array[::-1], atol=1e-6)


def test_many_labels_default_to_the_worst_by_dice_and_the_worst_come_first():
    from napari_mireg.gui.label_display import (
        count_labels,
        default_display,
        outline_colormap,
        ranked_dice,
        shown_labels,
    )

    labels = np.zeros((8, 8, 8), np.int16)
    labels.reshape(-1)[: 84 * 4 : 4] = np.arange(1001, 1085)  # 84 labels, one voxel each
    assert count_labels(labels, sample=1) == 84
    assert default_display(84) == "worst" and default_display(7) == "all"
    dice = {2: 0.9, 17: 0.3, 1030: 0.1, 41: 0.8}
    assert shown_labels("worst", dice=dice, count=2) == [1030, 17]
    assert shown_labels("worst") == [4, 43, 17, 53]  # before a Dice: ventricles, hippocampi
    assert shown_labels("off", 17, dice) == []
    assert shown_labels("selected", 17) == [17] and shown_labels("all") is None
    rows = [
        {"label": 14, "dice": 0.0, "fixed_voxels": 2},
        {"label": 2, "dice": 0.9, "fixed_voxels": 500},
    ]
    assert ranked_dice(rows) == {2: 0.9}  # the Dice of 2 voxels is not ranked
    with pytest.raises(ValueError, match="label display"):
        shown_labels("some")
    colours = outline_colormap((0, 255, 0), [17])
    assert colours[17] == (0.0, 1.0, 0.0, 1.0) and colours[None][3] == 0 and colours[0][3] == 0


def test_edge_letters_name_the_direction_each_canvas_edge_faces():
    pytest.importorskip("napari")
    from napari_mireg.gui.planes import edge_letters

    assert edge_letters("axial") == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert edge_letters("coronal") == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert edge_letters("sagittal") == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    with pytest.raises(ValueError, match="plane"):
        edge_letters("oblique")
