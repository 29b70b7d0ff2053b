"""MutualInformation: against a direct transcription, ITK, finite differences; bad input."""

import numpy as np
import pytest
from conftest import blobs, smooth_field
from peers import cosine_similarity, itk_mattes_derivative
from scipy import ndimage
from testdata import warp_linear

from napari_mireg import MutualInformation

INNER3 = (slice(1, -1),) * 3


def cubic_bspline(u):
    a = np.abs(u)
    return np.where(a < 1, (4 - 6 * a**2 + 3 * a**3) / 6, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def cubic_bspline_slope(u):
    a = np.abs(u)
    return np.where(
        a < 1,
        np.sign(u) * (-2 * a + 1.5 * a**2),
        np.where(a < 2, -np.sign(u) * 0.5 * (2 - a) ** 2, 0.0),
    )


def transcription(fixed, moving, bins=32, spacing=None, mask=None):
    """mi-syn.md sections 1-2 written out in numpy, term by term."""
    fixed = np.asarray(fixed, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    mask = np.ones(fixed.shape, bool) if mask is None else mask
    f_min, f_max = fixed[mask].min(), fixed[mask].max()
    m_min, m_max = moving[mask].min(), moving[mask].max()
    d_f, d_m = (f_max - f_min) / (bins - 4), (m_max - m_min) / (bins - 4)
    i = np.clip(np.floor(fixed / d_f - (f_min / d_f - 2)), 2, bins - 3).astype(int)
    t = moving / d_m - (m_min / d_m - 2)
    k0 = np.clip(np.floor(t), 2, bins - 3).astype(int)
    h = np.zeros((bins, bins))
    for k in range(-1, 3):
        np.add.at(h, (i[mask], k0[mask] + k), cubic_bspline(k0[mask] + k - t[mask]))
    s = h.sum()
    p = h / s
    p_f, p_m = p.sum(axis=1), p.sum(axis=0)
    filled = p > 1e-16
    outer = p_f[:, None] * p_m[None, :]
    mi = np.sum(p[filled] * np.log(p[filled] / outer[filled]))
    w = np.zeros_like(p)
    w[filled] = np.log(p[filled] / np.broadcast_to(p_m, p.shape)[filled]) / (d_m * s)
    coefficient = np.zeros(fixed.shape)
    for k in range(-1, 3):
        coefficient -= cubic_bspline_slope(k0 + k - t) * w[i, k0 + k]
    coefficient[~mask] = 0
    spacing = np.ones(fixed.ndim) if spacing is None else spacing
    gradient = np.stack(np.gradient(moving, *spacing), axis=-1)
    return mi, p, coefficient[..., None] * gradient


# --- agreement with an independent transcription of the formulas -----------------------


# 6 bins: the fewest with information (two usable fixed bins; 5 has one, MI 0 there).
@pytest.mark.parametrize("bins", [6, 32, 64])
def test_value_gradient_and_histogram_match_transcription(blob_pair, bins):
    fixed, moving = blob_pair
    metric = MutualInformation(bins)
    value, gradient = metric.dense_gradient(fixed, moving, spacing=(1.0, 1.2, 2.5))
    expected_value, expected_p, expected_gradient = transcription(
        fixed, moving, bins, spacing=(1.0, 1.2, 2.5)
    )
    assert expected_value > 0.01  # measured 0.012 with 6 bins
    assert value == pytest.approx(expected_value, rel=1e-9)
    np.testing.assert_allclose(metric.joint_histogram, expected_p, atol=1e-12)
    scale = np.abs(expected_gradient).max()
    np.testing.assert_allclose(gradient, expected_gradient, atol=1e-5 * scale)
    assert gradient.dtype == np.float32 and gradient.shape == fixed.shape + (3,)


def test_masked_metric_matches_transcription(blob_pair):
    fixed, moving = blob_pair
    mask = blobs(fixed.shape, seed=7) > 0.6
    assert 0.1 < mask.mean() < 0.9
    value, gradient = MutualInformation(32).dense_gradient(fixed, moving, mask=mask)
    expected_value, _, expected_gradient = transcription(fixed, moving, 32, mask=mask)
    assert value == pytest.approx(expected_value, rel=1e-9)
    np.testing.assert_allclose(
        gradient, expected_gradient, atol=1e-5 * np.abs(expected_gradient).max()
    )
    assert np.all(gradient[~mask] == 0)


def test_joint_histogram_rows_are_fixed_bins():
    fixed = np.zeros((20, 30))
    fixed[:, 15:] = 1.0  # two fixed intensities: the lowest and the highest bin
    moving = np.tile(np.linspace(0.0, 1.0, 30), (20, 1))
    metric = MutualInformation(16)
    metric.value(fixed, moving)
    p = metric.joint_histogram
    assert p.shape == (16, 16)
    assert p.sum() == pytest.approx(1.0)
    # every fixed sample falls in bin 2 (lowest value) or bin 13 (highest)
    assert p.sum(axis=1)[[2, 13]] == pytest.approx([0.5, 0.5])
    # the left half of the moving ramp sits with fixed row 2
    assert p[2, :8].sum() > 0.45 and p[13, :8].sum() < 0.05


def test_precomputed_moving_gradient_gives_the_same_field(blob_pair):
    fixed, moving = blob_pair
    spacing = (1.0, 2.0, 0.5)
    metric = MutualInformation(32)
    _, computed = metric.dense_gradient(fixed, moving, spacing=spacing)
    given = np.stack(np.gradient(moving, *spacing), axis=-1)
    _, from_given = metric.dense_gradient(fixed, moving, moving_gradient=given)
    np.testing.assert_allclose(from_given, computed, atol=1e-6 * np.abs(computed).max())


def test_out_buffer_is_filled_and_returned(blob_pair):
    fixed, moving = blob_pair
    out = np.full(fixed.shape + (3,), np.nan, dtype=np.float32)
    _, gradient = MutualInformation(32).dense_gradient(fixed, moving, out=out)
    assert np.shares_memory(gradient, out) and np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="out must be"):
        MutualInformation(32).dense_gradient(fixed, moving, out=out.astype(np.float64))


# --- ITK -------------------------------------------------------------------------------


def _itk_check(fixed, moving, spacing, bins=32):
    pytest.importorskip("itk", reason="ITK is the reference here (test extra)")
    value, gradient = MutualInformation(bins).dense_gradient(fixed, moving, spacing=spacing)
    itk_value, itk_gradient, _ = itk_mattes_derivative(fixed, moving, spacing, bins=bins)
    inner = (slice(1, -1),) * fixed.ndim
    cosine = cosine_similarity(gradient[inner], itk_gradient[inner])
    return value, -itk_value, cosine


@pytest.mark.parametrize("bins", [32, 50])
def test_matches_itk_on_brain_pair(brain_pair, bins):
    fixed, moving, _ = brain_pair
    value, itk_value, cosine = _itk_check(fixed, moving, (2.0, 2.0, 2.0), bins)
    print(f"ITK brain pair, {bins} bins: 1 - cosine {1 - cosine:.1e}, MI {value:.6f}")
    # Measured: 1 - cosine 4e-15 and MI 1e-11 apart (the same formulas, double precision).
    assert cosine >= 1 - 1e-12
    assert value == pytest.approx(itk_value, rel=1e-9)


def test_matches_itk_on_2d_slice(brain_pair):
    fixed, moving, _ = brain_pair
    middle = fixed.shape[2] // 2
    value, itk_value, cosine = _itk_check(fixed[:, :, middle], moving[:, :, middle], (2.0, 2.0))
    # Measured: 1 - cosine 4e-16, MI 1e-14 apart.
    assert cosine >= 1 - 1e-12
    assert value == pytest.approx(itk_value, rel=1e-9)


def test_matches_itk_with_anisotropic_spacing(brain_pair):
    fixed, moving, _ = brain_pair
    value, itk_value, cosine = _itk_check(fixed, moving, (1.0, 1.0, 2.5))
    # Measured: 1 - cosine 4e-15, MI 1e-11 apart.
    assert cosine >= 1 - 1e-12
    assert value == pytest.approx(itk_value, rel=1e-9)


# --- finite differences ----------------------------------------------------------------


def directional_derivative_error(fixed, moving, field, step=0.05):
    """Relative gap between <grad, v> and the central difference of MI along v."""
    metric = MutualInformation(32)
    _, gradient = metric.dense_gradient(fixed, moving)
    analytic = float(np.sum(gradient.astype(np.float64) * field))
    plus = metric.value(fixed, warp_linear(moving, step * field))
    minus = metric.value(fixed, warp_linear(moving, -step * field))
    numeric = (plus - minus) / (2 * step)
    return abs(analytic - numeric) / abs(numeric), analytic, numeric


def test_gradient_matches_finite_differences_on_smooth_volumes(blob_pair):
    fixed, moving = blob_pair
    errors = []
    for seed in range(3):
        field = smooth_field(fixed.shape, 1.0, seed=seed)
        error, analytic, numeric = directional_derivative_error(fixed, moving, field)
        assert np.sign(analytic) == np.sign(numeric)
        errors.append(error)
    print("finite-difference relative errors, smooth volumes:", np.round(errors, 4))
    assert max(errors) < 0.05  # measured 0.0007, 0.015, 0.0004


def test_gradient_matches_finite_differences_on_brain_pair(brain_pair):
    fixed, moving, _ = brain_pair
    field = smooth_field(fixed.shape, 1.0, seed=3)
    error, analytic, numeric = directional_derivative_error(fixed, moving, field)
    print(f"finite-difference relative error, brain pair: {error:.4f}")
    assert np.sign(analytic) == np.sign(numeric)
    assert error < 0.05  # measured 0.024


def test_gradient_ascent_increases_mi(blob_pair):
    fixed, moving = blob_pair
    metric = MutualInformation(32)
    value, gradient = metric.dense_gradient(fixed, moving)
    smooth = np.stack([ndimage.gaussian_filter(gradient[..., a], 2.0) for a in range(3)], -1)
    step = smooth * (0.3 / np.abs(smooth).max())
    assert metric.value(fixed, warp_linear(moving, step)) > value


# --- affine gradient -------------------------------------------------------------------


def test_affine_gradient_is_the_contracted_dense_gradient(blob_pair):
    fixed, moving = blob_pair
    spacing = np.array([1.0, 1.5, 2.0])
    grid_to_world = np.diag(np.append(spacing, 1.0))
    grid_to_world[:3, 3] = [-10.0, 4.0, 7.0]
    metric = MutualInformation(32)
    value, affine = metric.affine_gradient(fixed, moving, grid_to_world=grid_to_world)
    # The reference is the numpy transcription's dense gradient, not the dense kernel (which
    # shares its per-voxel coefficient with the affine kernel).
    dense_value, _, dense = transcription(fixed, moving, 32, spacing=spacing)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in fixed.shape], indexing="ij"), -1)
    points = np.concatenate(
        [index * spacing + grid_to_world[:3, 3], np.ones(fixed.shape + (1,))], axis=-1
    )
    expected = dense.reshape(-1, 3).astype(np.float64).T @ points.reshape(-1, 4)
    assert value == pytest.approx(dense_value, rel=1e-9)
    np.testing.assert_allclose(affine, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_affine_gradient_matches_finite_differences(blob_pair):
    fixed, moving = blob_pair
    metric = MutualInformation(32)
    centre = (np.array(fixed.shape) - 1) / 2.0
    # An interior mask keeps voxels that the perturbations pull across the image edge out.
    mask = np.zeros(fixed.shape, bool)
    mask[6:-6, 6:-6, 6:-6] = True

    def resampled(image, matrix):
        # world = voxel index here; sample at matrix @ [x; 1]
        return ndimage.affine_transform(
            image, matrix[:3, :3], offset=matrix[:3, 3], order=1, mode="nearest"
        )

    current = np.eye(4)
    current[:3, :3] = [[1.0, 0.03, 0.0], [-0.02, 0.98, 0.01], [0.0, 0.02, 1.03]]
    current[:3, 3] = centre - current[:3, :3] @ centre + [0.5, -0.3, 0.2]
    moving_gradient = np.stack(
        [resampled(component, current) for component in np.gradient(moving)], axis=-1
    )
    _, gradient = metric.affine_gradient(
        fixed, resampled(moving, current), mask=mask, moving_gradient=moving_gradient
    )
    # Exact: the kernel contracts the dense update field with [x; 1].
    _, dense = metric.dense_gradient(
        fixed, resampled(moving, current), mask=mask, moving_gradient=moving_gradient
    )
    index = np.stack(np.meshgrid(*[np.arange(n) for n in fixed.shape], indexing="ij"), -1)
    points = np.concatenate([index.reshape(-1, 3), np.ones((fixed.size, 1))], axis=1)
    contracted = dense.reshape(-1, 3).astype(np.float64).T @ points
    np.testing.assert_allclose(gradient, contracted, atol=1e-6 * np.abs(contracted).max())
    # Against finite differences of translations (the masked intensity range
    # moves with the image, which the Mattes gradient, like ITK's, does not model).
    for axis in range(3):
        direction = np.zeros((4, 4))
        direction[axis, 3] = 1.0
        step = 0.25
        numeric = metric.value(
            fixed, resampled(moving, current + step * direction), mask
        ) - metric.value(fixed, resampled(moving, current - step * direction), mask)
        numeric /= 2 * step
        # measured: 10 %, 13 % and 6 % below the finite differences (x, y, z)
        assert gradient[axis, 3] == pytest.approx(numeric, rel=0.15), axis


def test_affine_gradient_in_2d_has_ndim_by_ndim_plus_one_entries(blob_pair):
    fixed, moving = blob_pair
    value, gradient = MutualInformation(32).affine_gradient(fixed[10], moving[10])
    assert gradient.shape == (2, 3) and value > 0 and np.all(np.isfinite(gradient))


# --- determinism and dtypes ------------------------------------------------------------


def test_one_thread_and_all_threads_agree(brain_pair):
    fixed, moving, _ = brain_pair
    one_value, one = MutualInformation(32, threads=1).dense_gradient(fixed, moving)
    all_value, every = MutualInformation(32, threads=None).dense_gradient(fixed, moving)
    two_value, two = MutualInformation(32, threads=2).dense_gradient(fixed, moving)
    for value, gradient in ((all_value, every), (two_value, two)):
        assert value == pytest.approx(one_value, rel=1e-5)
        np.testing.assert_allclose(gradient, one, rtol=1e-5, atol=1e-5 * np.abs(one).max())
    _, a1 = MutualInformation(32, threads=1).affine_gradient(fixed, moving)
    _, a2 = MutualInformation(32, threads=2).affine_gradient(fixed, moving)
    np.testing.assert_allclose(a2, a1, rtol=1e-5)


def test_float32_and_float64_inputs_agree(blob_pair):
    fixed, moving = blob_pair
    fixed32, moving32 = fixed.astype(np.float32), moving.astype(np.float32)
    value32, gradient32 = MutualInformation(32).dense_gradient(fixed32, moving32)
    value64, gradient64 = MutualInformation(32).dense_gradient(
        fixed32.astype(np.float64), moving32.astype(np.float64)
    )
    assert value32 == pytest.approx(value64, rel=1e-6)
    np.testing.assert_allclose(gradient32, gradient64, atol=1e-5 * np.abs(gradient64).max())


def test_integer_images_are_accepted(blob_pair):
    fixed, moving = blob_pair

    def as_int(image):
        return np.round(image * 1000).astype(np.int16)

    value = MutualInformation(32).value(as_int(fixed), as_int(moving))
    # Measured 1.4e-4 apart: the rounding to 1/1000 moves a few samples across bins.
    assert value == pytest.approx(MutualInformation(32).value(fixed, moving), rel=1e-3)


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda f, m: (np.full_like(f, 3.0), m, None), "fixed image is constant"),
        (lambda f, m: (f, np.zeros_like(m), None), "moving image is constant"),
        (
            lambda f, m: (f, np.where(f > 0.5, np.nan, m), None),
            "moving image has .* NaN or infinite",
        ),
        (
            lambda f, m: (np.where(f > 0.5, np.inf, f), m, None),
            "fixed image has .* NaN or infinite",
        ),
        (lambda f, m: (f, m[:-1], None), "same shape"),
        (lambda f, m: (f, m, np.zeros(f.shape, bool)), "mask selects no voxel"),
        (lambda f, m: (f, m, np.ones(f.shape[:-1], bool)), "mask must have the image shape"),
        (lambda f, m: (f.astype(str), m, None), "fixed must be a numeric array"),
        (lambda f, m: (f, m.astype(object), None), "moving must be a numeric array"),
        (lambda f, m: (f[None], m[None], None), "2D or 3D"),
        (lambda f, m: (f, m, np.where(f > 0.5, f, 1.0)), "mask must hold only 0 and 1"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(blob_pair, make_input, message):
    fixed, moving, mask = make_input(*blob_pair)
    with pytest.raises(ValueError, match=message):
        MutualInformation(32).dense_gradient(fixed, moving, mask=mask)
    with pytest.raises(ValueError, match=message):
        MutualInformation(32).value(fixed, moving, mask=mask)


def test_constant_inside_mask_is_an_error(blob_pair):
    fixed, moving = blob_pair
    flat = moving.copy()
    mask = np.zeros(fixed.shape, bool)
    mask[:10] = True
    flat[:10] = 2.0
    with pytest.raises(ValueError, match="moving image is constant inside the mask"):
        MutualInformation(32).value(fixed, flat, mask=mask)


@pytest.mark.parametrize("bins", [4, 0, -3, 2.5, "32", True])
def test_bins_below_five_or_not_integer_is_an_error(bins):
    with pytest.raises(ValueError, match="bins must be an integer >= 5"):
        MutualInformation(bins)


def test_joint_histogram_before_any_call_is_an_error():
    with pytest.raises(RuntimeError, match="after a call"):
        _ = MutualInformation(32).joint_histogram


def test_bad_spacing_and_matrices_are_errors(blob_pair):
    fixed, moving = blob_pair
    metric = MutualInformation(32)
    with pytest.raises(ValueError, match="spacing must be 3 positive"):
        metric.dense_gradient(fixed, moving, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="grid_to_world must be a finite 4x4"):
        metric.affine_gradient(fixed, moving, grid_to_world=np.eye(3))
    with pytest.raises(ValueError, match="transform is singular"):
        metric.affine_gradient(fixed, moving, transform=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="moving_gradient must have shape"):
        metric.dense_gradient(fixed, moving, moving_gradient=np.zeros(fixed.shape + (2,)))


def test_the_syn_level_takes_the_dense_gradient_of_both_images_half_way(blob_pair):
    from napari_mireg.engine.metric import ParzenLevel
    from napari_mireg.engine.pyramid import Level
    from napari_mireg.engine.transforms import as_volume

    fixed, moving = (np.asarray(image, np.float32) for image in blob_pair)
    grid = np.diag([1.2, 1.0, 0.9, 1.0])
    level = Level(fixed.shape, grid, fixed, moving, None, grid)
    metric = MutualInformation(24)
    prepared = metric.prepare(level, None, np.eye(4), symmetric=True)
    assert isinstance(prepared, ParzenLevel) and not prepared.masked
    zero = np.zeros(fixed.shape + (3,), np.float32)
    step = prepared.value_and_gradient(zero, zero)  # zero maps: the images as they are
    value, forward = metric.dense_gradient(fixed, moving, grid_to_world=grid)
    histogram = metric.joint_histogram
    _, backward = metric.dense_gradient(moving, fixed, grid_to_world=grid)
    assert step.value == value
    np.testing.assert_array_equal(step.joint_histogram, histogram)  # the forward pass's
    np.testing.assert_array_equal(step.forward, forward)
    np.testing.assert_array_equal(step.backward, backward)
    assert (
        metric.prepare(level, None, np.eye(4), symmetric=False)
        .value_and_gradient(zero, zero)
        .backward
        is None
    )
    # A moving mask rides along as a channel: outside it nothing counts.
    half = np.zeros(moving.shape, np.uint8)
    half[: moving.shape[0] // 2] = 1
    masked = metric.prepare(level, as_volume(half, grid, dtype=np.uint8), np.eye(4), symmetric=True)
    assert masked.masked and masked.moving.shape == moving.shape + (2,)
    step = masked.value_and_gradient(zero, zero)
    assert not step.forward[moving.shape[0] // 2 + 1 :].any()
