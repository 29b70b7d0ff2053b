"""The partial-volume MI: histogram, value and gradient against plain references."""

import itertools

import numpy as np
import pytest

from napari_mireg.engine.partial_volume import (
    LEVELS,
    IntensityLevels,
    PartialVolumeMutualInformation,
    grids_aligned,
    mutual_information_weights,
    nearest_levels,
)


@pytest.fixture(scope="module")
def pair():
    """Two smooth random images (levels), an oblique mapping and a displacement field."""
    rng = np.random.default_rng(3)
    shape, other_shape = (7, 8, 6), (9, 7, 8)
    grid_image = rng.normal(size=shape).cumsum(axis=0).cumsum(axis=2)
    other_image = rng.normal(size=other_shape).cumsum(axis=1).cumsum(axis=2)
    grid_levels = IntensityLevels.of(grid_image).levels(grid_image)
    other_levels = IntensityLevels.of(other_image).levels(other_image)
    grid_affine = np.diag([1.5, 1.2, 1.0, 1.0])
    grid_affine[:3, 3] = [0.3, -0.2, 0.5]
    angle = 0.2
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    to_other = np.eye(4)
    to_other[:3, :3] = rotation / 1.1
    to_other[:3, 3] = [0.8, 0.4, 0.9]
    field = rng.normal(scale=0.4, size=shape + (3,)).astype(np.float32)
    return grid_levels, grid_affine, other_levels, to_other, field


def counted_corners(grid_levels, grid_affine, other_levels, to_other, field):
    """Each counted grid voxel with its row level, its cell's fractions and inside corners.

    Yields (index, row, fraction, corners), corners a list of (offset, level) for the cell's
    corners inside the other image (plain Python, voxel by voxel).
    """
    for index in itertools.product(*[range(n) for n in grid_levels.shape]):
        row = grid_levels[index]
        if row == 0:
            continue
        world = grid_affine[:3, :3] @ np.array(index) + grid_affine[:3, 3] + field[index]
        point = to_other[:3, :3] @ world + to_other[:3, 3]
        base = np.floor(point).astype(int)
        corners = []
        for offset in itertools.product((0, 1), repeat=3):
            corner = base + offset
            if np.all(corner >= 0) and np.all(corner < other_levels.shape):
                corners.append((offset, other_levels[tuple(corner)]))
        yield index, row, point - base, corners


def reference_histogram(*pair):
    """The partial-volume histogram voxel by voxel, corner by corner (plain Python)."""
    counts = np.zeros((LEVELS, LEVELS))
    for _, row, fraction, corners in counted_corners(*pair):
        for offset, level in corners:
            if level != 0:
                weight = np.prod(np.where(np.array(offset) == 1, fraction, 1 - fraction))
                counts[row, level] += weight
    return counts


def mi_derivative_by_cell(counts):
    """dMI/dh(i, b) of MI = sum p log(p / (p_i p_b)), p = h / S, worked out by hand:
    (log(p_ib / (p_i p_b)) - MI) / S; 0 on empty cells (no sample to move there).
    """
    total = counts.sum()
    p = counts / total
    outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
    filled = p > 0
    mi = np.sum(p[filled] * np.log(p[filled] / outer[filled]))
    derivative = np.zeros_like(p)
    derivative[filled] = (np.log(p[filled] / outer[filled]) - mi) / total
    return derivative


def test_histogram_and_value_match_the_voxel_by_voxel_reference(pair):
    metric = PartialVolumeMutualInformation(threads=2)
    value, _ = metric.gradient(*pair)
    counts = reference_histogram(*pair)
    np.testing.assert_allclose(metric.joint_histogram, counts / counts.sum(), atol=1e-12)
    p = counts / counts.sum()
    outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
    filled = p > 0
    assert value == pytest.approx(np.sum(p[filled] * np.log(p[filled] / outer[filled])), rel=1e-10)


def test_gradient_matches_finite_differences_of_the_value(pair):
    # MI is smooth in the field while no point crosses a voxel face of the other image;
    # steps of 1e-4 mm do not, at these random points.
    grid_levels, grid_affine, other_levels, to_other, field = pair
    metric = PartialVolumeMutualInformation(threads=1)
    _, gradient = metric.gradient(*pair)
    step = 1e-4
    index = np.stack(np.indices(grid_levels.shape), axis=-1)
    world = index @ grid_affine[:3, :3].T + grid_affine[:3, 3] + field
    point = world @ to_other[:3, :3].T + to_other[:3, 3]
    inside = np.all((point > 0) & (point < np.array(other_levels.shape) - 1), axis=-1)
    voxels = [tuple(v) for v in np.argwhere(inside & (grid_levels > 0))[::7][:5]]
    assert len(voxels) == 5
    for voxel in voxels:
        assert np.abs(gradient[voxel]).max() > 1e-5  # a voxel that moves MI
        for axis in range(3):
            values = []
            for sign in (1, -1):
                moved = field.astype(np.float64).copy()
                moved[voxel + (axis,)] += sign * step
                value, _ = PartialVolumeMutualInformation(threads=1).gradient(
                    grid_levels, grid_affine, other_levels, to_other, moved.astype(np.float32)
                )
                values.append(value)
            # float32 fields: the perturbation is what float32 holds of it
            held = np.float32(field[voxel + (axis,)] + step) - field[voxel + (axis,)]
            numeric = (values[0] - values[1]) / (2 * float(held))
            assert gradient[voxel + (axis,)] == pytest.approx(numeric, rel=2e-2, abs=1e-7)


def test_gradient_matches_the_corner_by_corner_formula_at_every_voxel(pair):
    # Every voxel, also those whose cell sticks out of the other image (corners outside
    # count for nothing) and those whose point is outside altogether (zero), against
    # linear^T sum_c dw_c/dy dMI/dh(row, b(c)) summed corner by corner in plain Python.
    grid_levels, grid_affine, other_levels, to_other, field = pair
    metric = PartialVolumeMutualInformation(threads=2)
    _, gradient = metric.gradient(*pair)
    table = mi_derivative_by_cell(reference_histogram(*pair))
    expected = np.zeros(grid_levels.shape + (3,))
    straddling = 0
    for index, row, fraction, corners in counted_corners(*pair):
        factors = np.stack([1 - fraction, fraction])  # factors[o, axis]
        total = np.zeros(3)
        for offset, level in corners:
            for axis in range(3):
                slope = 2 * offset[axis] - 1
                for other_axis in range(3):
                    if other_axis != axis:
                        slope *= factors[offset[other_axis], other_axis]
                total[axis] += table[row, level] * slope
        straddling += 0 < len(corners) < 8
        expected[index] = to_other[:3, :3].T @ total
    assert straddling > 10
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_result_does_not_depend_on_the_thread_count(pair):
    one = PartialVolumeMutualInformation(threads=1)
    two = PartialVolumeMutualInformation(threads=2)
    value_one, gradient_one = one.gradient(*pair)
    value_two, gradient_two = two.gradient(*pair)
    assert value_one == value_two
    np.testing.assert_array_equal(gradient_one, gradient_two)
    np.testing.assert_array_equal(one.joint_histogram, two.joint_histogram)


def test_nearest_levels_take_the_voxel_nearest_each_point(pair):
    # The symmetric step's row levels: a plain gather at the rounded point, 0 outside.
    grid_levels, grid_affine, other_levels, to_other, field = pair
    expected = np.zeros(grid_levels.shape, dtype=np.uint8)
    for index in itertools.product(*[range(n) for n in grid_levels.shape]):
        world = grid_affine[:3, :3] @ np.array(index) + grid_affine[:3, 3] + field[index]
        nearest = np.floor(to_other[:3, :3] @ world + to_other[:3, 3] + 0.5).astype(int)
        if np.all(nearest >= 0) and np.all(nearest < other_levels.shape):
            expected[index] = other_levels[tuple(nearest)]
    result = nearest_levels(other_levels, grid_affine, to_other, field, threads=2)
    assert 0 < (expected == 0).sum() < expected.size  # the map leaves the image in places
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(
        nearest_levels(other_levels, grid_affine, to_other, field, threads=1), result
    )


def test_levels_span_minimum_to_percentile_and_zero_what_does_not_count():
    image = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    mask = np.ones(image.shape, dtype=bool)
    mask[0] = False
    scale = IntensityLevels.of(image, mask)
    assert scale.low == 100.0  # the smallest counted voxel
    assert scale.high == pytest.approx(np.percentile(np.arange(101, 1000), 99))
    levels = scale.levels(image, mask)
    assert levels.dtype == np.uint8
    assert levels[0].max() == 0  # outside the mask
    assert levels[1, 0, 0] == 1  # the minimum counts, at the first level
    assert levels[image >= scale.high].min() == LEVELS - 1  # the brightest share the top
    # equal steps of intensity give equal steps of level
    inside = mask & (image < scale.high - 10)
    slope = np.polyfit(image[inside], levels[inside].astype(float), 1)[0]
    assert slope == pytest.approx((LEVELS - 2) / (scale.high - scale.low), rel=1e-2)


def test_levels_do_not_depend_on_the_background_around_the_anatomy():
    rng = np.random.default_rng(2)
    anatomy = rng.gamma(4.0, 50.0, size=(12, 12, 12)).astype(np.float32)
    padded = np.pad(anatomy, 20)  # the same head in a larger field of view
    assert IntensityLevels.of(padded) == IntensityLevels.of(np.pad(anatomy, 2))


def test_weights_are_the_derivative_of_mi_by_a_cell():
    rng = np.random.default_rng(0)
    counts = rng.random((6, 6)) * (rng.random((6, 6)) > 0.3)
    value, weights = mutual_information_weights(counts)
    filled = np.argwhere(counts > 0)
    for i, b in filled[:8]:
        step = 1e-6
        up, down = counts.copy(), counts.copy()
        up[i, b] += step
        down[i, b] -= step
        numeric = (mutual_information_weights(up)[0] - mutual_information_weights(down)[0]) / (
            2 * step
        )
        assert weights[i, b] == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    assert (weights[counts == 0] == 0).all()
    with pytest.raises(ValueError, match="overlap"):
        mutual_information_weights(np.zeros((4, 4)))


def test_grids_are_aligned_when_voxels_land_on_voxels_up_to_a_shift():
    shifted = np.eye(4)
    shifted[:3, 3] = [0.3, -2.7, 11.5]
    flipped = np.array([[0, -1, 0, 40], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    assert grids_aligned(shifted) and grids_aligned(flipped)
    angle = np.radians(10)
    turned = np.eye(4)
    turned[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert not grids_aligned(turned)
    assert not grids_aligned(np.diag([2.0, 2.0, 2.0, 1.0]))  # a coarser level
    assert not grids_aligned(np.diag([1.1, 1.0, 1.0, 1.0]))  # another head's size


def test_a_prepared_level_samples_levels_or_hands_over_to_parzen_on_aligned_grids():
    from napari_mireg.engine.metric import MutualInformation, ParzenLevel
    from napari_mireg.engine.partial_volume import PartialVolumeLevel, level_sources
    from napari_mireg.engine.pyramid import Level

    rng = np.random.default_rng(4)
    fixed, moving = rng.random((8, 9, 7)).cumsum(0), rng.random((9, 7, 8)).cumsum(1)
    grid = np.diag([1.5, 1.2, 1.0, 1.0])
    level = Level(fixed.shape, grid, fixed, moving, None, np.eye(4))
    aligned = MutualInformation(16)
    metric = PartialVolumeMutualInformation(threads=1, aligned_metric=aligned)
    prepared = metric.prepare(level, None, np.eye(4), symmetric=False)
    assert isinstance(prepared, PartialVolumeLevel)
    field = rng.normal(scale=0.4, size=fixed.shape + (3,)).astype(np.float32)
    step = prepared.value_and_gradient(np.zeros_like(field), field)
    sources = level_sources(level, None, np.eye(4))
    value, gradient = PartialVolumeMutualInformation(threads=1).gradient(
        sources.fixed_levels, grid, sources.moving_levels, sources.to_moving, field
    )
    assert step.value == value and step.backward is None
    np.testing.assert_array_equal(step.forward, gradient)
    assert step.joint_histogram.shape == (LEVELS, LEVELS)
    # The moving grid with the level grid's voxel size, shifted: the Parzen metric given.
    shifted = grid.copy()
    shifted[:3, 3] = [0.5, 2.4, -1.0]
    on_voxels = Level(fixed.shape, grid, fixed, fixed, None, shifted)
    handed = metric.prepare(on_voxels, None, np.eye(4), symmetric=True)
    assert isinstance(handed, ParzenLevel) and handed.metric is aligned
    step = handed.value_and_gradient(np.zeros_like(field), np.zeros_like(field))
    assert step.joint_histogram.shape == (16, 16) and step.backward.shape == field.shape


def test_the_syn_uses_partial_volume_only_where_the_grids_are_not_aligned():
    # On a shared grid the finest level falls back to the Parzen histogram (32 bins); the
    # coarser ones sample both images twice as fine as the level grid, on the same
    # lattice, and keep partial volume.
    from napari_mireg import register_steps

    rng = np.random.default_rng(1)
    image = rng.random((24, 24, 24)).cumsum(axis=0).cumsum(axis=1)
    sizes = {}
    steps = register_steps(image, image**2, prealign="none", level_iters=(2, 2, 2), threads=1)
    for snapshot in (step for step in steps if step.phase == "syn"):
        sizes[snapshot.level] = snapshot.joint_histogram.shape[0]
    assert sizes == {0: LEVELS, 1: LEVELS, 2: 32}
    shifted = np.eye(4)
    shifted[:3, :3] *= 1.2  # another voxel size: partial volume on every level
    sizes = {}
    steps = register_steps(
        image, image**2, prealign="none", level_iters=(2, 2, 2), moving_affine=shifted, threads=1
    )
    for snapshot in (step for step in steps if step.phase == "syn"):
        sizes[snapshot.level] = snapshot.joint_histogram.shape[0]
    assert sizes == {0: LEVELS, 1: LEVELS, 2: LEVELS}


@pytest.mark.parametrize("threads", [1, 2])
def test_the_symmetric_step_equals_nearest_levels_then_the_two_passes(threads):
    # The symmetric level makes both histograms in one pass and skips the voxels whose
    # gradient is zero; the reference is each side's nearest levels, histogram and gradient
    # on their own (checked above against plain Python), bit for bit.
    from napari_mireg.engine.partial_volume import PartialVolumeLevel, level_sources
    from napari_mireg.engine.pyramid import Level

    rng = np.random.default_rng(5)
    fixed = rng.random((9, 10, 8)).cumsum(0).cumsum(2)
    moving = rng.random((10, 8, 9)).cumsum(1)
    moving[:3] = 0  # a flat region: cells of one level, whose gradient is zero
    grid = np.diag([1.5, 1.2, 1.0, 1.0])
    moving_grid = np.diag([1.1, 1.3, 0.9, 1.0])
    moving_grid[:3, 3] = [-0.4, 0.3, 0.2]
    level = Level(fixed.shape, grid, fixed, moving, None, moving_grid)
    metric = PartialVolumeMutualInformation(threads=threads)
    prepared = metric.prepare(level, None, np.eye(4), symmetric=True)
    assert isinstance(prepared, PartialVolumeLevel)
    half_fixed = rng.normal(scale=0.5, size=fixed.shape + (3,)).astype(np.float32)
    half_moving = rng.normal(scale=0.5, size=fixed.shape + (3,)).astype(np.float32)
    step = prepared.value_and_gradient(half_fixed, half_moving)

    sources = level_sources(level, None, np.linalg.inv(moving_grid))
    to_fixed = np.linalg.inv(grid)
    reference = PartialVolumeMutualInformation(threads=1)
    fixed_here = nearest_levels(sources.fixed_levels, grid, to_fixed, half_fixed)
    value, forward = reference.gradient(
        fixed_here, grid, sources.moving_levels, sources.to_moving, half_moving
    )
    histogram = reference.joint_histogram
    moving_here = nearest_levels(sources.moving_levels, grid, sources.to_moving, half_moving)
    _, backward = reference.gradient(moving_here, grid, sources.fixed_levels, to_fixed, half_fixed)
    assert step.value == value and prepared.value(half_fixed, half_moving) == value
    np.testing.assert_array_equal(step.joint_histogram, histogram)
    np.testing.assert_array_equal(step.forward, forward)
    np.testing.assert_array_equal(step.backward, backward)
    assert (forward == 0).all(axis=-1).sum() > 20  # skipped voxels were among them
    assert np.abs(backward).max() > 0 and np.abs(forward).max() > 0


def test_the_symmetric_step_does_not_depend_on_the_thread_count():
    # A grid large enough for the one-pass histograms to run on two threads: the same
    # value, histogram and gradients as on one.
    from napari_mireg.engine.pyramid import Level

    rng = np.random.default_rng(6)
    shape = (48, 50, 40)  # 96,000 voxels: two threads for the two histograms
    fixed = rng.random(shape).cumsum(0).cumsum(2)
    moving = rng.random((44, 52, 42)).cumsum(1).cumsum(2)
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    moving_grid = np.diag([1.1, 0.95, 1.05, 1.0])
    half_fixed = rng.normal(scale=0.6, size=shape + (3,)).astype(np.float32)
    half_moving = rng.normal(scale=0.6, size=shape + (3,)).astype(np.float32)
    level = Level(shape, grid, fixed, moving, None, moving_grid)
    one = (
        PartialVolumeMutualInformation(threads=1)
        .prepare(level, None, np.eye(4), symmetric=True)
        .value_and_gradient(half_fixed, half_moving)
    )
    prepared = PartialVolumeMutualInformation(threads=2).prepare(
        level, None, np.eye(4), symmetric=True
    )
    for _ in range(3):  # a race shows in some runs only
        two = prepared.value_and_gradient(half_fixed, half_moving)
        assert one.value == two.value
        np.testing.assert_array_equal(one.joint_histogram, two.joint_histogram)
        np.testing.assert_array_equal(one.forward, two.forward)
        np.testing.assert_array_equal(one.backward, two.backward)
