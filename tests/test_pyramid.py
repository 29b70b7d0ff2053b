"""Coarse-to-fine levels: grid geometry, smoothing, mask handling."""

import numpy as np
import pytest
from testdata import blobs

from napari_mireg.pyramid import level_grid, mask_volume, pyramid_level
from napari_mireg.transforms import as_volume


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
    # white noise keeps its variance at the finest level; sigma 2 fixed voxels (4 mm) cuts it
    np.testing.assert_array_equal(finest.moving, noise)
    assert coarsest.moving[4:-4, 4:-4, 3:-3].std() < 0.1 * noise.std()


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
