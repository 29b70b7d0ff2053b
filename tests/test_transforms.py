"""Volumes, affine maps and diffeomorphic maps: conventions checked with exact shifts."""

import nibabel as nib
import numpy as np
import pytest
from testdata import blobs

from napari_mireg.engine.transforms import (
    AffineMap,
    DiffeomorphicMap,
    DisplacementField,
    Volume,
    apply_transforms,
    as_volume,
    chain_displacement,
)


def shifted_copy_map(grid, shift_mm):
    """A map whose fields are constant: forward +shift, backward -shift (exact inverses)."""
    forward = np.broadcast_to(np.float32(shift_mm), grid.shape + (3,)).copy()
    return DiffeomorphicMap(grid, grid, np.eye(4), forward, -forward)


@pytest.fixture(scope="module")
def image():
    return blobs((20, 18, 16), seed=7).astype(np.float32)


def test_volumes_keep_2d_inputs_their_dimensionality():
    volume = as_volume(np.ones((5, 6)), np.diag([2.0, 3.0, 1.0]))
    assert volume.shape == (1, 5, 6) and volume.ndim == 2
    np.testing.assert_allclose(volume.spacing, [1.0, 2.0, 3.0])
    assert volume.user_array(volume.data).shape == (5, 6)
    assert as_volume(volume) is volume


def test_nibabel_images_and_single_volume_4d_arrays_are_accepted(image):
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    volume = as_volume(nib.Nifti1Image(image[..., None], affine))
    assert volume.shape == image.shape
    np.testing.assert_array_equal(volume.affine, affine)


@pytest.mark.parametrize(
    "data, affine, message",
    [
        (np.ones(5), None, "2D or 3D"),
        (np.full((4, 4, 4), np.nan), None, "NaN"),
        (np.ones((4, 4, 4)), np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
        (np.ones((4, 4, 4)), np.eye(3), "4x4"),
        (np.array([["a"]]), None, "numeric"),
    ],
)
def test_bad_volumes_are_refused(data, affine, message):
    with pytest.raises(ValueError, match=message):
        as_volume(data, affine)


def test_an_affine_map_samples_the_moving_image_at_the_mapped_points(image):
    grid = as_volume(image, np.eye(4))
    translation = np.eye(4)
    translation[0, 3] = 2.0  # fixed point x -> moving point x + 2 mm along axis 0
    for interpolation in ("linear", "nearest"):
        moved = AffineMap(translation).transform(image, grid, interpolation, np.eye(4))
        np.testing.assert_allclose(moved[:-2], image[2:], atol=1e-5)
        assert np.all(moved[-2:] == 0)  # outside the moving image
    np.testing.assert_allclose(AffineMap(translation).inverse().matrix[0, 3], -2.0)


def test_a_constant_field_shifts_and_its_inverse_brings_back(image):
    grid = as_volume(image, np.diag([2.0, 2.0, 2.0, 1.0]))
    mapping = shifted_copy_map(grid, (0.0, 4.0, 0.0))  # 2 voxels along axis 1
    moved = mapping.transform(image)
    np.testing.assert_allclose(moved[:, :-2], image[:, 2:], atol=1e-5)
    back = mapping.transform_inverse(moved)
    np.testing.assert_allclose(back[:, 2:-2], image[:, 2:-2], atol=1e-5)
    np.testing.assert_allclose(mapping.displacement(), mapping.forward)
    np.testing.assert_allclose(mapping.jacobian_determinant(), 1.0, atol=1e-5)
    assert mapping.inversion_error() == pytest.approx((0.0, 0.0), abs=1e-6)


def test_the_inverse_map_carries_the_prealignment_back(image):
    grid = as_volume(image, np.eye(4))
    mapping = shifted_copy_map(grid, (1.0, 0.0, 0.0))
    mapping.prealign = np.eye(4)
    mapping.prealign[2, 3] = 3.0
    point = np.array([5.0, 6.0, 4.0])
    moving_point = mapping.prealign[:3, :3] @ (point + 1.0 * np.eye(3)[0]) + [0, 0, 3.0]
    inverse = mapping.inverse()
    index = tuple(np.round(moving_point).astype(int))
    back = (
        inverse.prealign[:3, :3] @ (moving_point + inverse.forward[index]) + inverse.prealign[:3, 3]
    )
    np.testing.assert_allclose(back, point, atol=1e-5)


def test_chains_reduce_in_ants_order(image):
    grid = Volume(np.zeros((6, 5, 4), np.float32), np.eye(4), 3)
    first, second = np.eye(4), np.eye(4)
    first[0, 3], second[:3, :3] = 1.0, np.diag([2.0, 1.0, 1.0])
    displacement, matrix = chain_displacement([AffineMap(first), AffineMap(second)], grid)
    assert displacement is None
    np.testing.assert_allclose(matrix, second @ first)  # the first one applied first
    field = np.zeros((6, 5, 4, 3), np.float32)
    field[..., 1] = 1.0
    displacement, matrix = chain_displacement(
        [DisplacementField(field, grid), AffineMap(second)], grid
    )
    np.testing.assert_array_equal(displacement, field)
    np.testing.assert_allclose(matrix, second)
    with pytest.raises(TypeError):
        chain_displacement([np.eye(4)], grid)


def test_apply_transforms_keeps_label_values(image):
    labels = (image > image.mean()).astype(np.int16) * 17
    grid = as_volume(image, np.eye(4))
    warped = apply_transforms(labels, grid, [AffineMap(np.eye(4))], "nearest", np.eye(4))
    assert warped.dtype == np.int16
    np.testing.assert_array_equal(warped, labels)
