"""The SyN loop's parts one by one, each against a small reference written in numpy.

The iterations are observed through the public Snapshots (the update of each iteration and
the half-way maps it was composed into) and `pyramid.pyramid_level`, so the references do
not depend on how the loop calls its metric.
"""

import numpy as np
import pytest
from scipy import ndimage
from testdata import blobs

from napari_mireg import MutualInformation, SymmetricDiffeomorphicRegistration
from napari_mireg.engine.pyramid import pyramid_level
from napari_mireg.engine.transforms import as_volume

SHAPE = (20, 22, 24)
# Anisotropic voxels (mm): a step or a sigma given in the wrong unit changes size.
SPACING = (1.5, 2.0, 2.5)


@pytest.fixture(scope="module")
def pair():
    """Smooth images filling the grid (so the registration box is the whole grid)."""
    fixed = blobs(SHAPE, seed=1) + 0.5
    shifted = ndimage.shift(fixed, (1.0, -1.0, 1.5), order=3, mode="nearest")
    moving = np.sin(3.0 * shifted) + 0.3 * shifted + 1.0
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-10.0, 4.0, 7.0)
    return fixed.astype(np.float32), moving.astype(np.float32), affine


def snapshots(pair, count, **options):
    """The first `count` Snapshots, with copies of the update and the half-way maps."""
    fixed, moving, affine = pair
    syn = SymmetricDiffeomorphicRegistration(MutualInformation(16, threads=1), **options)
    steps = syn.iterate(fixed, moving, fixed_affine=affine, moving_affine=affine)
    seen = []
    for snapshot in steps:
        half_fixed, half_moving, *_ = snapshot.state
        seen.append(
            (
                snapshot,
                np.array(snapshot.update),
                np.array(half_fixed),
                np.array(half_moving),
            )
        )
        if len(seen) == count:
            break
    steps.close()
    return seen


def numpy_compose(first, second, affine):
    """first(x) + second(x + first(x)) with trilinear sampling, edges replicated."""
    index = np.indices(first.shape[:3], dtype=np.float64)
    moved = index + np.einsum("ij,...j->i...", np.linalg.inv(affine[:3, :3]), first)
    sampled = [
        ndimage.map_coordinates(component, moved, order=1, mode="nearest")
        for component in np.moveaxis(second.astype(np.float64), -1, 0)
    ]
    return first + np.stack(sampled, axis=-1)


@pytest.mark.parametrize("symmetric", [False, True])
def test_updates_are_composed_first_then_the_map(pair, symmetric):
    # phi <- phi o (Id + u): the update moves the sampling point first, then the map so far.
    # Reference: trilinear sampling in scipy. Measured: 1.1e-7 mm apart (float32); the
    # other order is 0.005 to 0.09 mm away.
    seen = snapshots(pair, 4, level_iters=(6,), symmetric=symmetric, field_sigma=0.0)
    affine = seen[0][0].level_affine
    for (_, _, _, before), (_, update, _, after) in zip(seen, seen[1:], strict=False):
        expected = numpy_compose(update, before, affine)
        assert np.abs(after).max() > 0.5  # the maps have moved by now (mm)
        np.testing.assert_allclose(after, expected, atol=5e-7)
        # the other order, for scale: what a swapped composition would give
        assert np.abs(numpy_compose(before, update, affine) - after).max() > 1e-3


def regularised_reference(raw, sigma_voxels, step_mm):
    """Zero the boundary, smooth (sigma in voxels, edges replicated), zero the boundary, and
    scale the longest vector to `step_mm`: SyN's update, in scipy.
    """
    field = raw.astype(np.float64).copy()
    inner = np.zeros(field.shape[:3], bool)
    inner[1:-1, 1:-1, 1:-1] = True
    field[~inner] = 0
    field = np.stack(
        [ndimage.gaussian_filter(field[..., c], sigma_voxels, mode="nearest") for c in range(3)],
        axis=-1,
    )
    field[~inner] = 0
    return field * (step_mm / np.sqrt((field**2).sum(-1)).max())


@pytest.mark.parametrize("update_sigma", [1.0, 2.5])
def test_the_first_update_is_the_gradient_smoothed_in_voxels_and_scaled_to_the_step(
    pair, update_sigma
):
    # One level, not symmetric, no map yet: the raw update is the dense MI gradient of the
    # fixed image against the moving one, both on the grid as they are.
    fixed, moving, affine = pair
    step_length = 0.4
    ((snapshot, update, _, _),) = snapshots(
        pair,
        1,
        level_iters=(3,),
        symmetric=False,
        update_sigma=update_sigma,
        step_length=step_length,
    )
    np.testing.assert_array_equal(snapshot.level_affine, affine)
    _, raw = MutualInformation(16, threads=1).dense_gradient(fixed, moving, grid_to_world=affine)
    # The one map of the non-symmetric mode takes both halves' step: 2 x 0.4 x 1.5 mm.
    expected = regularised_reference(raw, update_sigma, 2 * step_length * min(SPACING))
    # Measured: 4.6e-4 (sigma 1) and 8.7e-4 mm (sigma 2.5) apart, of 1.2 mm: the Gaussians'
    # truncation and float32.
    np.testing.assert_allclose(update, expected, atol=1.5e-3)
    # The sigma taken as mm would give another field: 0.64 mm or more away.
    in_mm = regularised_reference(raw, update_sigma / np.array(SPACING), 1.2)
    assert np.abs(in_mm - expected).max() > 0.1


@pytest.mark.parametrize("symmetric, factor", [(True, 1.0), (False, 2.0)])
def test_the_longest_step_is_step_length_voxels_of_the_level(pair, symmetric, factor):
    # Two levels: the coarse one has voxels twice as large (3 x 4 x 5 mm).
    step_length = 0.3
    seen = snapshots(pair, 5, level_iters=(2, 3), symmetric=symmetric, step_length=step_length)
    for snapshot, update, _, _ in seen:
        voxel = min(SPACING) * (2 if snapshot.level == 0 else 1)
        longest = np.sqrt((update.astype(np.float64) ** 2).sum(-1)).max()
        # These first steps are far from any fold, so no step is halved: measured 3e-8
        # relative (float32).
        assert longest == pytest.approx(factor * step_length * voxel, rel=1e-6)
    assert [s.level for s, *_ in seen] == [0, 0, 1, 1, 1]


def test_the_half_maps_swap_when_the_images_swap(pair):
    # Symmetric SyN treats the two images alike: with fixed and moving exchanged (one grid),
    # the moving side's half-map of one run is the fixed side's of the other, iteration by
    # iteration, bit for bit (measured).
    fixed, moving, affine = pair
    options = {"level_iters": (4,), "symmetric": True}
    forward = snapshots(pair, 4, **options)
    backward = snapshots((moving, fixed, affine), 4, **options)
    for (_, _, fixed_a, moving_a), (_, _, fixed_b, moving_b) in zip(forward, backward, strict=True):
        assert np.abs(moving_a).max() > 0.1
        np.testing.assert_array_equal(moving_a, fixed_b)
        np.testing.assert_array_equal(fixed_a, moving_b)
        # and the two halves are different maps (the images differ)
        assert np.abs(moving_a - fixed_a).max() > 0.05


def second_moments(image, affine):
    """Variance (mm^2) of an image's mass along each world axis of a diagonal grid."""
    mass = image / image.sum()
    moments = []
    for axis in range(3):
        position = np.arange(image.shape[axis]) * affine[axis, axis]
        profile = mass.sum(axis=tuple(a for a in range(3) if a != axis))
        mean = (profile * position).sum()
        moments.append(float((profile * (position - mean) ** 2).sum()))
    return np.array(moments)


def test_pyramid_levels_smooth_with_sigma_half_the_shrink_in_fixed_voxels():
    # Level 0 of 3 shrinks by 4: sigma 2 fixed voxels = 4 mm (fixed voxels of 2 mm) on
    # every axis of both images, whatever their own voxel sizes.
    fixed_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    moving_affine = np.diag([1.0, 1.5, 2.5, 1.0])
    fixed = np.zeros((33, 33, 33), np.float32)
    fixed[16, 16, 16] = 1
    moving = np.zeros((61, 45, 29), np.float32)
    moving[30, 22, 14] = 1
    fixed_volume = as_volume(fixed, fixed_affine, "fixed")
    moving_volume = as_volume(moving, moving_affine, "moving")
    level = pyramid_level(fixed_volume, moving_volume, None, 0, 3)
    # The moving image stays on its grid: its variance is sigma^2 = 16 mm^2 on each axis.
    # Measured: 15.70, 15.76, 15.90 (the Gaussian's truncation); sigma taken as voxels of
    # the moving grid would give 16, 36 and 100.
    np.testing.assert_allclose(second_moments(level.moving, moving_affine), 16.0, rtol=0.03)
    # The fixed one is sampled on the 8 mm level grid (centred blocks, half a fine voxel
    # off the delta): 16 mm^2 plus the linear interpolation's spread; measured 18.17 on
    # each axis. Sigma taken as fixed voxels (4 of them, 8 mm) would give 64 and more.
    assert level.affine[0, 0] == 8.0
    np.testing.assert_allclose(second_moments(level.fixed, level.affine), 18.17, rtol=0.02)
