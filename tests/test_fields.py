"""fields.py kernels against scipy and numpy references."""

import os

import numpy as np
import pytest
from conftest import smooth_field
from scipy import ndimage

from napari_mireg.engine import fields


@pytest.fixture(scope="module")
def grid():
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.random((20, 24, 28)), 2).astype(np.float32)
    affine = np.array(
        [[0.0, 1.5, 0.0, 3.0], [-1.0, 0.0, 0.0, -2.0], [0.0, 0.0, 2.0, 5.0], [0.0, 0.0, 0.0, 1.0]]
    )
    field = (smooth_field(image.shape, 3.0, seed=1, sigma=3.0)).astype(np.float32)
    return image, affine, field


def test_resample_matches_map_coordinates(grid):
    image, affine, field = grid
    prealign = np.eye(4)
    prealign[:3, 3] = [0.5, -0.7, 0.2]
    result = fields.resample(image, affine, image.shape, affine, field=field, prealign=prealign)
    index = np.indices(image.shape).reshape(3, -1).T
    world = index @ affine[:3, :3].T + affine[:3, 3] + field.reshape(-1, 3) + prealign[:3, 3]
    source = (world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    expected = ndimage.map_coordinates(image, source.T, order=1, mode="constant")
    inside = np.all((source >= 0) & (source <= np.array(image.shape) - 1), axis=1)
    assert inside.mean() > 0.7
    np.testing.assert_allclose(result.reshape(-1)[inside], expected[inside], atol=1e-5)
    assert np.all(result.reshape(-1)[np.any(source < -0.5, axis=1)] == 0)


def test_resample_onto_another_grid_matches_map_coordinates_per_channel(grid):
    # An oblique output grid of another shape, a rotating prealignment and a field: every
    # term of the source position (grid, field, prealign) differs from the identity.
    image, affine, _ = grid
    channels = np.stack([image, image**2, -image], axis=-1)
    angle = 0.3
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1]]
    )
    output_affine = np.eye(4)
    output_affine[:3, :3] = rotation @ np.diag([1.6, 1.3, 2.6])
    output_shape = (17, 21, 15)
    prealign = np.eye(4)
    prealign[:3, :3] = rotation.T
    prealign[:3, 3] = [1.0, -2.0, 3.0]
    # Centre the output grid on the image (through the prealignment), so that most of it,
    # not all, samples inside.
    image_centre = affine[:3, :3] @ ((np.array(image.shape) - 1) / 2) + affine[:3, 3]
    centre = np.linalg.solve(prealign[:3, :3], image_centre - prealign[:3, 3])
    output_affine[:3, 3] = centre - output_affine[:3, :3] @ ((np.array(output_shape) - 1) / 2)
    field = smooth_field(output_shape, 2.0, seed=4, sigma=2.0).astype(np.float32)
    index = np.indices(output_shape).reshape(3, -1).T
    world = index @ output_affine[:3, :3].T + output_affine[:3, 3] + field.reshape(-1, 3)
    world = world @ prealign[:3, :3].T + prealign[:3, 3]
    source = (world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    inside = np.all((source >= 0) & (source <= np.array(image.shape) - 1), axis=1)
    assert 0.3 < inside.mean() < 0.95
    for threads in (1, 2):
        result = fields.resample(
            channels,
            affine,
            output_shape,
            output_affine,
            field=field,
            prealign=prealign,
            clamp=True,
            threads=threads,
        ).reshape(-1, 3)
        for c in range(3):
            expected = ndimage.map_coordinates(channels[..., c], source.T, order=1, mode="nearest")
            np.testing.assert_allclose(result[:, c], expected, atol=1e-5)


def test_thread_count_gives_small_work_one_thread():
    assert fields.thread_count(2) == 2
    assert fields.thread_count(2, fields.VOXELS_PER_THREAD - 1) == 1
    assert fields.thread_count(2, 2 * fields.VOXELS_PER_THREAD) == 2
    assert fields.thread_count(2, 100 * fields.VOXELS_PER_THREAD) == 2
    assert fields.thread_count(4, 3 * fields.VOXELS_PER_THREAD) == 3
    assert fields.thread_count(None, 0) == 1


def test_openmp_threads_counts_the_threads_of_a_parallel_region(monkeypatch):
    # The wheel workflow sets MIREG_EXPECT_OPENMP: a wheel that lost OpenMP fails here.
    if os.environ.get("MIREG_EXPECT_OPENMP"):
        assert fields._mi.openmp_enabled()
    if fields._mi.openmp_enabled():
        assert fields.openmp_threads(3) == 3
        assert fields.openmp_threads(1) == 1
        assert fields.openmp_threads() == fields._mi.max_threads()
    monkeypatch.setattr(fields._mi, "openmp_enabled", lambda: False)
    assert fields.openmp_threads(3) == 0


def test_nearest_keeps_labels_and_dtype(grid):
    image, affine, field = grid
    labels = (image * 40).astype(np.int16)
    result = fields.resample(
        labels, affine, image.shape, affine, field=field, interpolation="nearest"
    )
    assert result.dtype == np.int16
    assert set(np.unique(result)) <= set(np.unique(labels)) | {0}
    identity = fields.resample(labels, affine, image.shape, affine, interpolation="nearest")
    np.testing.assert_array_equal(identity, labels)


def test_smooth_matches_gaussian_filter_and_leaves_input_alone(grid):
    image, _, _ = grid
    original = image.copy()
    result = fields.smooth(image, (1.5, 0.0, 2.0))
    expected = ndimage.gaussian_filter(
        image.astype(np.float64), (1.5, 0.0, 2.0), mode="nearest", truncate=3.0
    )
    np.testing.assert_allclose(result, expected, atol=1e-6)
    np.testing.assert_array_equal(image, original)


def test_smooth_vector_fields_per_component_even_past_short_axes():
    # A kernel wider than an axis (radius 15 on 4 voxels) replicates the edge, like
    # scipy's mode="nearest"; the three components are smoothed independently.
    field = np.random.default_rng(3).normal(size=(9, 4, 30, 3)).astype(np.float32)
    sigmas = (1.73, 5.0, 0.7)
    result = fields.smooth(field, sigmas)
    for component in range(3):
        expected = ndimage.gaussian_filter(
            field[..., component].astype(np.float64), sigmas, mode="nearest", radius=(6, 15, 3)
        )  # ceil(3 sigma)
        np.testing.assert_allclose(result[..., component], expected, atol=1e-6)


def test_largest_length_is_the_longest_vector():
    field = np.random.default_rng(4).normal(size=(7, 8, 9, 3)).astype(np.float32)
    field[2, 3, 4] = (3.0, -4.0, 12.0)
    assert fields.largest_length(field) == pytest.approx(13.0, rel=1e-6)


def numpy_determinant(field, affine):
    """det(I + d field / d world) from numpy's differences (one-sided at the ends)."""
    inverse_linear = np.linalg.inv(affine[:3, :3])
    index_gradient = np.stack([np.stack(np.gradient(field[..., a]), -1) for a in range(3)], -2)
    return np.linalg.det(np.eye(3) + index_gradient @ inverse_linear)


def test_jacobian_determinant_matches_numpy(grid):
    _, affine, field = grid
    determinant = fields.jacobian_determinant(field, affine)
    # The kernel works in double precision: measured 7e-16 apart.
    reference = numpy_determinant(field.astype(np.float64), affine)
    np.testing.assert_allclose(determinant, reference, atol=1e-12)


def test_jacobian_determinant_range_is_the_smallest_and_largest(grid):
    # Against numpy, not against jacobian_determinant (the two kernels share their
    # per-voxel determinant). Measured: equal (double precision).
    _, affine, field = grid
    reference = numpy_determinant(field.astype(np.float64), affine)
    smallest, largest = fields.jacobian_determinant_range(field, affine, threads=2)
    assert smallest == pytest.approx(reference.min(), abs=1e-12)
    assert largest == pytest.approx(reference.max(), abs=1e-12)
    assert smallest < 1 < largest  # the field squeezes and stretches


def test_jacobian_determinant_range_on_a_grid_along_the_world_axes(grid):
    # A diagonal grid matrix (with a flip) takes the kernel's shorter path: the same
    # extremes as numpy and, exactly, as the full per-voxel determinant's.
    _, _, field = grid
    affine = np.diag([1.5, -1.0, 2.0, 1.0])
    affine[:3, 3] = [3.0, -2.0, 5.0]
    reference = numpy_determinant(field.astype(np.float64), affine)
    smallest, largest = fields.jacobian_determinant_range(field, affine, threads=2)
    assert smallest == pytest.approx(reference.min(), abs=1e-12)
    assert largest == pytest.approx(reference.max(), abs=1e-12)
    full = fields.jacobian_determinant(field, affine)
    assert (smallest, largest) == (full.min(), full.max())
    assert smallest < 1 < largest


def test_invert_where_the_fixed_point_iteration_runs_away():
    # x -> x + h(x) along axis 2 with dh/dx from -0.81 to 1.6: invertible (1 + h' > 0), but
    # the fixed-point iteration w <- -h(x + w) diverges where the map stretches (|h'| > 1);
    # Newton steps must bring every voxel within the polish tolerance.
    shape = (3, 4, 96)
    x = np.arange(shape[2], dtype=np.float64)
    k = 2 * np.pi / 24.0
    h = (np.sin(k * x) + 0.3 * np.sin(2 * k * x)) / k
    h_prime = np.cos(k * x) + 0.6 * np.cos(2 * k * x)
    assert (1 + h_prime).min() > 0.15 and h_prime.max() > 1.5
    field = np.zeros(shape + (3,), dtype=np.float32)
    field[..., 2] = h
    affine = np.eye(4)
    inverse, _ = fields.invert(field, affine, max_iterations=10, polish_tolerance=0.05)
    # The residual |w + h(x + w)| with an independent interpolation (scipy, linear),
    # away from the ends of the line where the clamped field is not the periodic one.
    points = x + inverse[1, 1, :, 2]
    h_there = ndimage.map_coordinates(h, points[None], order=1, mode="nearest")
    residual = np.abs(inverse[1, 1, :, 2] + h_there)[12:-12]
    assert residual.max() < 0.05


def test_invert_where_the_fixed_point_iteration_runs_away_over_a_patch():
    # A swirl: each plane turns about a centre by up to 3 rad, fading with the distance. It
    # keeps volumes (det J ~ 1) but the fixed-point iteration runs away over thousands of
    # voxels, ten voxels off; Newton steps from there do not come back, the restarts from
    # the solved neighbours (rim inwards) do.
    shape = (40, 40, 12)
    index = np.stack(
        np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1
    )
    offset = index[..., :2] - 19.5
    angle = 3.0 * np.exp(-(offset**2).sum(-1) / (2 * 8.0**2))
    cos, sin = np.cos(angle), np.sin(angle)
    field = np.zeros(shape + (3,), dtype=np.float32)
    field[..., 0] = (cos - 1) * offset[..., 0] - sin * offset[..., 1]
    field[..., 1] = sin * offset[..., 0] + (cos - 1) * offset[..., 1]
    field *= 1.5  # mm on a 1.5 mm grid
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    assert fields.jacobian_determinant(field, affine).min() > 0.9
    start, _ = fields.invert(field, affine, max_iterations=10, polish_tolerance=np.inf)
    off_before = np.sqrt((fields.compose(start, field, affine) ** 2).sum(-1)) / 1.5
    assert (off_before > 1).sum() > 1000  # the fixed-point iteration alone fails here
    inverse, _ = fields.invert(field, affine, max_iterations=10, polish_tolerance=0.05)
    # The residual |w + h(x + w)| with an independent interpolation (scipy, linear).
    points = index + inverse / 1.5
    h_there = np.stack(
        [
            ndimage.map_coordinates(field[..., c], points.reshape(-1, 3).T, order=1, mode="nearest")
            for c in range(3)
        ],
        axis=-1,
    ).reshape(field.shape)
    residual = np.sqrt(((inverse + h_there) ** 2).sum(-1)) / 1.5
    assert residual[4:-4, 4:-4, 2:-2].max() < 0.051


def test_inversion_residual_matches_scipy_at_the_listed_voxels(grid):
    # r = w + h(x + w) at some voxels, h sampled trilinearly with edges replicated.
    from napari_mireg.engine._kernels import _fields

    _, affine, field = grid
    rng = np.random.default_rng(3)
    voxels = rng.choice(field[..., 0].size, 500, replace=False).astype(np.intp)
    values = rng.normal(0, 3.0, (voxels.size, 3)).astype(np.float32)
    to_index = np.linalg.inv(affine[:3, :3])
    out = np.empty((voxels.size, 3))
    _fields.inversion_residual(
        field.reshape(-1, 3), field.shape[:3], to_index.ravel(), values, voxels, out, 2
    )
    index = np.stack(np.unravel_index(voxels, field.shape[:3]), axis=1)
    points = index + values.astype(np.float64) @ to_index.T
    sampled = np.stack(
        [
            ndimage.map_coordinates(field[..., c], points.T, order=1, mode="nearest")
            for c in range(3)
        ],
        axis=-1,
    )
    assert (
        np.any(points < 0, axis=1) | np.any(points > np.array(field.shape[:3]) - 1, axis=1)
    ).any()
    np.testing.assert_allclose(out, values + sampled, atol=1e-5)


def test_invert_restarts_where_newton_is_stuck(monkeypatch):
    # 16^3 voxels of a real map (the non-symmetric SyN of mni<-s1 at 1 mm, det J down to
    # 0.13 at the centre): after 5 fixed-point steps Newton stalls at the centre voxel
    # (0.45 voxel); more fixed-point steps from there, then Newton, solve it.
    from pathlib import Path

    data = np.load(Path(__file__).parent / "data" / "squeezed_field.npz")
    field, affine = data["field"], data["affine"]

    def largest_residual():
        inverse, _ = fields.invert(field, affine, max_iterations=5, tolerance=0.01)
        return np.sqrt((fields.compose(inverse, field, affine) ** 2).sum(-1)).max()

    assert largest_residual() <= 0.0501  # voxels of 1 mm
    monkeypatch.setattr(fields, "RESTARTS", 0)
    assert largest_residual() > 0.2  # the stall the restarts are for


def test_compose_is_first_then_second(grid):
    image, affine, field = grid
    other = np.roll(field, 3, axis=0) * 0.5
    composed = fields.compose(field, other, affine)
    once = fields.resample(image, affine, image.shape, affine, field=composed)
    # sampling through `composed` = sampling `other` then `field` pulls the image twice
    second = fields.resample(image, affine, image.shape, affine, field=other)
    twice = fields.resample(second, affine, image.shape, affine, field=field)
    inner = (slice(4, -4),) * 3
    assert np.abs(once[inner] - twice[inner]).max() < 0.05 * np.abs(image).max()


def test_compose_adds_the_first_field_to_the_second_sampled_through_it(grid):
    # compose() adds `first` inside the resampling pass; the reference samples `second`
    # with scipy (edges replicated, as compose clamps) and adds `first` afterwards.
    _, affine, field = grid
    other = np.roll(field, 3, axis=0) * 0.5
    composed = fields.compose(field, other, affine)
    index = np.indices(field.shape[:3]).reshape(3, -1).T.astype(np.float64)
    source = index + field.reshape(-1, 3) @ np.linalg.inv(affine[:3, :3]).T
    sampled = np.stack(
        [
            ndimage.map_coordinates(other[..., c], source.T, order=1, mode="nearest")
            for c in range(3)
        ],
        axis=-1,
    )
    expected = field.reshape(-1, 3) + sampled
    np.testing.assert_allclose(composed.reshape(-1, 3), expected, atol=1e-5)
    with pytest.raises(ValueError, match="add_field"):
        fields.resample(field[..., 0], affine, field.shape[:3], affine, field=field, add_field=True)


def test_invert_gives_an_inverse_to_a_tenth_of_a_voxel(grid):
    _, affine, field = grid
    field = field * 0.4
    assert fields.jacobian_determinant(field, affine).min() > 0  # a diffeomorphism
    inverse, change = fields.invert(field, affine, tolerance=1e-4)
    residual = fields.compose(inverse, field, affine)
    inner = (slice(3, -3),) * 3
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).min()
    assert change < 1e-3
    assert np.sqrt((residual[inner] ** 2).sum(-1)).max() / spacing < 0.1


def test_image_gradient_matches_numpy(grid):
    image, _, _ = grid
    spacing = np.array([1.0, 2.0, 0.5])
    result = fields.image_gradient(image, np.diag(1 / spacing))
    expected = np.stack(np.gradient(image.astype(np.float64), *spacing), -1)
    np.testing.assert_allclose(result, expected, atol=1e-6)


@pytest.mark.parametrize("planar", [False, True])
def test_image_and_gradient_holds_the_image_its_numpy_gradient_and_the_extra_plane(grid, planar):
    image, _, _ = grid
    spacing = np.array([1.0, 2.0, 0.5])
    if planar:
        image, spacing = image[0], spacing[1:]
    extra = np.arange(image.size, dtype=np.float32).reshape(image.shape)
    result = fields.image_and_gradient(image, np.diag(1 / spacing), extra=extra)
    assert result.shape == image.shape + (image.ndim + 2,) and result.dtype == np.float32
    np.testing.assert_array_equal(result[..., 0], image)
    expected = np.stack(np.gradient(image.astype(np.float64), *spacing), -1)
    np.testing.assert_allclose(result[..., 1:-1], expected, atol=1e-6)
    np.testing.assert_array_equal(result[..., -1], extra)
    assert fields.image_and_gradient(image).shape == image.shape + (image.ndim + 1,)
    with pytest.raises(ValueError, match="extra"):
        fields.image_and_gradient(image, extra=extra[..., :-1])


def test_fixed_point_step_is_the_field_sampled_through_the_inverse_and_negated(grid):
    # One step w <- -field(x + w) of the inversion, and its largest change, against scipy's
    # trilinear sampling (edges replicated) and numpy.
    from napari_mireg.engine._kernels import _fields

    _, affine, field = grid
    shape = field.shape[:3]
    inverse = (-0.8 * field[::-1]).copy()  # any displacement, some of it past the edges
    out = np.empty((field[..., 0].size, 3), dtype=np.float32)
    change = _fields.fixed_point_step(
        field.reshape(-1, 3),
        shape,
        inverse.reshape(-1, 3),
        np.ascontiguousarray(affine),
        np.ascontiguousarray(np.linalg.inv(affine)),
        out,
        2,
    )
    index = np.indices(shape).reshape(3, -1).astype(np.float64)
    world = affine[:3, :3] @ index + affine[:3, 3:] + inverse.reshape(-1, 3).T
    points = np.linalg.inv(affine)[:3, :3] @ world + np.linalg.inv(affine)[:3, 3:]
    expected = -np.stack(
        [
            ndimage.map_coordinates(
                field[..., c].astype(np.float64), points, order=1, mode="nearest"
            )
            for c in range(3)
        ],
        axis=1,
    )
    # float32 result of a double computation: measured within 1e-6 mm
    np.testing.assert_allclose(out, expected, atol=1e-5)
    largest = np.sqrt(((out.astype(np.float64) - inverse.reshape(-1, 3)) ** 2).sum(axis=1)).max()
    assert change == pytest.approx(largest, rel=1e-12)
    assert change > 1.0
