"""Coarse-to-fine levels: grid geometry, smoothing, mask handling."""

import numpy as np
import pytest
from scipy import ndimage
from testdata import blobs

from napari_mireg import MutualInformation
from napari_mireg.engine import fields
from napari_mireg.engine.pyramid import (
    anatomy_box,
    crop,
    level_grid,
    mask_volume,
    pyramid_level,
    within_mask,
)
from napari_mireg.engine.transforms import as_volume


def world(affine, index):
    return affine[:3, :3] @ np.asarray(index, float) + affine[:3, 3]


def test_a_coarse_voxel_sits_at_the_centre_of_its_fine_block():
    affine = np.array([[0, 0, 2.0, -10], [1.5, 0, 0, 4], [0, -1, 0, 7], [0, 0, 0, 1]])
    shape, coarse = level_grid((9, 8, 1), affine, 2)
    assert shape == (5, 4, 1)  # partial blocks kept, a singleton axis not shrunk
    block = [world(affine, (i, j, 0)) for i in (2, 3) for j in (4, 5)]
    np.testing.assert_allclose(world(coarse, (1, 2, 0)), np.mean(block, axis=0))
    np.testing.assert_allclose(np.abs(coarse[:3, :3]).sum(axis=0), [3.0, 2.0, 2.0])  # mm


def test_levels_smooth_the_coarse_ones_and_leave_the_finest_untouched():
    data = blobs((24, 20, 16), seed=3).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 1, data.shape).astype(np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    fixed = as_volume(data, affine, "fixed")
    moving = as_volume(noise, affine, "moving")
    finest = pyramid_level(fixed, moving, None, 2, 3)
    np.testing.assert_allclose(finest.fixed, data, atol=1e-5)
    np.testing.assert_array_equal(finest.affine, affine)
    coarsest = pyramid_level(fixed, moving, None, 0, 3)
    assert coarsest.shape == (6, 5, 4)
    assert coarsest.moving.shape == data.shape  # the moving image stays on its own grid
    # White noise keeps its variance at the finest level; sigma 2 fixed voxels (4 mm) cuts
    # its standard deviation to 1 / sqrt(prod(2 sqrt(pi) sigma_i)) = 0.065 in theory,
    # measured 0.056 inside; sigma 4 voxels on every axis (mm taken as voxels) gives less
    # than half that.
    np.testing.assert_array_equal(finest.moving, noise)
    assert 0.045 < coarsest.moving[4:-4, 4:-4, 3:-3].std() / noise.std() < 0.07


def test_masks_follow_the_level_grid_and_must_select_a_voxel():
    data = blobs((16, 16, 16), seed=2).astype(np.float32)
    fixed = as_volume(data, np.eye(4), "fixed")
    mask = np.zeros(data.shape, bool)
    mask[4:12, 4:12, 4:12] = True
    level = pyramid_level(fixed, fixed, mask_volume(mask, fixed), 0, 2)
    assert level.mask.dtype == bool and level.mask.shape == level.shape == (8, 8, 8)
    assert level.mask[2:6, 2:6, 2:6].all() and level.mask.sum() == 64
    assert mask_volume(None, fixed) is None
    with pytest.raises(ValueError, match="select a voxel"):
        mask_volume(np.zeros(data.shape, bool), fixed)
    with pytest.raises(ValueError, match="fixed shape"):
        mask_volume(np.ones((4, 4, 4), bool), fixed)


def test_a_shrunk_moving_image_is_its_smoothed_copy_at_coarser_block_centres():
    data = blobs((26, 20, 18), seed=5).astype(np.float32)
    moving_affine = np.array([[0, 1.0, 0, 3], [1.0, 0, 0, -2], [0, 0, 1.0, 5], [0, 0, 0, 1]])
    fixed = as_volume(np.ones((12, 11, 10), np.float32), np.diag([2.0, 2.0, 2.0, 1]), "fixed")
    moving = as_volume(data, moving_affine, "moving")
    # Level 0 of 2: shrink 2 of 2 mm fixed voxels = 4 mm; half that in 1 mm moving voxels.
    level = pyramid_level(fixed, moving, None, 0, 2, shrink_moving=True)
    shape, coarse = level_grid(data.shape, moving_affine, 2)
    assert level.moving.shape == shape == (13, 10, 9)
    np.testing.assert_array_equal(level.moving_affine, coarse)
    smoothed = ndimage.gaussian_filter(data.astype(np.float64), 2.0, mode="nearest", truncate=3.0)
    centres = np.indices(shape).reshape(3, -1) * 2 + 0.5
    expected = ndimage.map_coordinates(smoothed, centres, order=1, mode="nearest")
    np.testing.assert_allclose(level.moving, expected.reshape(shape), atol=1e-5)
    # The finer level keeps it on its own grid: half a 2 mm voxel is one moving voxel.
    finer = pyramid_level(fixed, moving, None, 1, 2, shrink_moving=True)
    assert finer.moving.shape == data.shape
    np.testing.assert_array_equal(finer.moving_affine, moving_affine)


def test_a_level_within_its_mask_gives_the_same_metric_value_and_affine_gradient():
    data = blobs((24, 22, 20), seed=7).astype(np.float32)
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    affine[:3, 3] = (4.0, -3.0, 1.0)
    fixed = as_volume(data, affine, "fixed")
    moving = ndimage.shift(data, (1.0, -0.5, 0.5), order=1).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[5:19, 3:15, 6:17] = True
    level = pyramid_level(fixed, fixed, mask_volume(mask, fixed), 1, 2)
    cut = within_mask(level)
    assert cut.shape == (14, 12, 11) and cut.mask.all()
    metric = MutualInformation(24)
    gradient = fields.image_gradient(moving)  # the moving image's, not the cut's
    full = metric.affine_gradient(
        level.fixed, moving, level.affine, mask=level.mask, moving_gradient=gradient
    )
    box = (slice(5, 19), slice(3, 15), slice(6, 17))
    part = metric.affine_gradient(
        cut.fixed, moving[box], cut.affine, mask=cut.mask, moving_gradient=gradient[box]
    )
    assert part[0] == pytest.approx(full[0], rel=1e-12)
    np.testing.assert_allclose(part[1], full[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fields.resample(data, affine, cut.shape, cut.affine), data[box])
    assert within_mask(pyramid_level(fixed, fixed, None, 1, 2)).shape == data.shape


def test_an_anatomy_box_is_the_bright_part_widened_and_kept_inside_the_grid():
    data = np.zeros((30, 20, 16), np.float32)
    data[10:18, 2:9, 5:11] = 100.0
    volume = as_volume(data, np.diag([2.0, 1.0, 0.5, 1.0]), "moving")
    box = anatomy_box(volume, margin_mm=4.0)  # 2, 4 and 8 voxels
    assert box == (slice(8, 20), slice(0, 13), slice(0, 16))
    mask = np.zeros(data.shape, np.uint8)
    mask[12:14, 5:6, 7:9] = 1
    assert anatomy_box(volume, mask_volume(mask, volume, "moving_mask"), 0.0) == (
        slice(12, 14),
        slice(5, 6),
        slice(7, 9),
    )
    part = crop(volume, box)
    np.testing.assert_allclose(part.affine[:3, 3], [16.0, 0.0, 0.0])
    assert part.shape == (12, 13, 16)


def test_an_image_and_its_reordered_copy_are_sampled_alike_twice_as_fine():
    # The copy holds the same voxels in another order (axes swapped, one flipped): with
    # `carried_finer`, both sides of a coarse level lie on one lattice through the level
    # grid's points, twice as fine as it, and hold the same values there.
    data = blobs((20, 18, 16), seed=4).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fixed = as_volume(data, affine, "fixed")
    copy = np.ascontiguousarray(np.flip(data, 0).transpose(2, 1, 0))
    index = np.array([[0, 0, -1, data.shape[0] - 1], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    moving = as_volume(copy, affine @ index, "moving")
    mask = mask_volume(data > np.median(data), fixed)
    level = pyramid_level(
        fixed,
        moving,
        mask,
        0,
        3,
        shrink_moving=True,
        moving_finer=1,
        prealign=np.eye(4),
        carried_finer=2,
    )
    # Level voxel i is fine voxel 2 i + o, o a whole number of voxels.
    level_to_fine = np.linalg.inv(level.fine_affine) @ level.affine
    np.testing.assert_allclose(level_to_fine[:3, :3], 2 * np.eye(3), atol=1e-12)
    offset = level_to_fine[:3, 3]
    np.testing.assert_allclose(offset, np.rint(offset), atol=1e-9)
    fine = level.fine_fixed
    assert level.fine_mask.shape == fine.shape and fine.size >= 8 * np.prod(level.shape)
    o0, o1, o2 = np.rint(offset).astype(int)
    picked = fine[o0::2, o1::2, o2::2][: level.shape[0], : level.shape[1], : level.shape[2]]
    np.testing.assert_allclose(picked, level.fixed, atol=1e-5)
    # The moving image, brought back to the fixed order, is the same image.
    to_moving = np.linalg.inv(level.moving_affine) @ level.fine_affine
    points = to_moving[:3, :3] @ np.indices(fine.shape).reshape(3, -1) + to_moving[:3, 3:]
    same = ndimage.map_coordinates(level.moving, points, order=1).reshape(fine.shape)
    np.testing.assert_allclose(same, fine, atol=1e-4)
    # Another subject's pose (not on the lattice): no finer fixed image.
    oblique = np.eye(4)
    oblique[:3, :3] = [[0.98, 0.1, 0], [-0.1, 0.98, 0], [0, 0, 1]]
    other = pyramid_level(
        fixed,
        moving,
        None,
        0,
        3,
        shrink_moving=True,
        moving_finer=1,
        prealign=oblique,
        carried_finer=2,
    )
    assert other.fine_fixed is None and other.fine_affine is None
