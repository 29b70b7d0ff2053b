"""Mattes mutual information: one metric object for dense and affine registration.

The maths follows ITK's ``MattesMutualInformationImageToImageMetricv4`` (derived in
docs/maths.md, sections 1-4): a Parzen joint histogram with a box kernel on the fixed image
and a cubic B-spline kernel on the moving image, 2 padding bins on each side, and a
two-pass gradient (pass 1: histogram and per-bin weights; pass 2: per-voxel update).

It also names what the SyN asks of its metric (`SynMetric`), which this metric and the
partial-volume one (:mod:`napari_mireg.engine.partial_volume`) both provide.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from napari_mireg._typing import Matrix
from napari_mireg.engine._kernels import _mi
from napari_mireg.engine._validate import (
    image_pair,
    intensity_bounds,
    mask_array,
    positive_int,
    spacing_vector,
)
from napari_mireg.engine.fields import (
    CHEAP,
    embed_matrix,
    image_gradient,
    resample,
    thread_count,
)
from napari_mireg.engine.pyramid import Level
from napari_mireg.engine.transforms import Volume
from napari_mireg.options import BINS_RANGE

# A world displacement field on a level grid: (n0, n1, n2, 3) float32, mm.
Field = npt.NDArray[np.float32]

# Probabilities at or below this count as empty bins (ITK uses the double epsilon too).
EMPTY_BIN = np.finfo(np.float64).eps

# A moving sample at t = k0 + f (0 <= f <= 1) adds b3(k - t) to bins k = k0-1 .. k0+2.
# Row j holds the coefficients of that weight as a polynomial in f (powers 0..3).
BSPLINE_WEIGHTS = (
    np.array(
        [[1.0, -3.0, 3.0, -1.0], [4.0, 0.0, -6.0, 3.0], [1.0, 3.0, 3.0, -3.0], [0.0, 0.0, 0.0, 1.0]]
    )
    / 6.0
)
# Row j: d(weight j)/dt = -b3'(k - t) as a polynomial in f (powers 0..2).
BSPLINE_SLOPES = BSPLINE_WEIGHTS[:, 1:] * np.array([1.0, 2.0, 3.0])


@dataclass(frozen=True)
class _Samples:
    """A validated image pair, flattened for the kernels, with intensity ranges."""

    fixed: np.ndarray
    moving: np.ndarray
    mask: np.ndarray
    use_mask: bool
    shape3: tuple
    ndim: int
    fixed_range: tuple
    moving_range: tuple


@dataclass(frozen=True)
class _Histogram:
    """What pass 1 gives pass 2: MI, the tabulated bin weights W(i, k), and p(i, k)."""

    value: float
    slope_table: np.ndarray
    probability: np.ndarray


@dataclass(frozen=True)
class HalfwayGradient:
    """MI at one SyN iteration and its gradients with respect to the two half-way maps.

    Attributes
    ----------
    value : float
        Mutual information of the two images where the maps bring them.
    joint_histogram : ndarray (bins, bins)
        Its joint probability; rows are the fixed image's bins.
    forward : ndarray of float32 (n0, n1, n2, 3)
        dMI/d(moving half-map), world components (mm) on the level grid: adding a small
        multiple of it to the moving image's map raises MI.
    backward : ndarray of float32 (n0, n1, n2, 3) or None
        dMI/d(fixed half-map), the roles swapped; None when only the moving image moves.
    """

    value: float
    joint_histogram: np.ndarray
    forward: Field
    backward: Field | None


class LevelMetric(Protocol):
    """A metric prepared for one pyramid level (see :meth:`SynMetric.prepare`)."""

    def value_and_gradient(self, half_fixed: Field, half_moving: Field) -> HalfwayGradient:
        """MI and its gradients where the half-way maps bring the two images.

        Parameters
        ----------
        half_fixed, half_moving : ndarray of float32 (n0, n1, n2, 3)
            World displacements (mm) on the level grid carrying the fixed and the moving
            image half way (the fixed one stays zero when only the moving image moves).
        """
        ...

    def value(self, half_fixed: Field, half_moving: Field) -> float:
        """The MI of :meth:`value_and_gradient` alone (a level's last evaluation)."""
        ...


class SynMetric(Protocol):
    """What the SyN asks of its metric: prepare a level's images, then at each iteration
    the value, joint histogram and gradients through :class:`LevelMetric`.

    :class:`MutualInformation` (the Parzen histogram of images resampled half way) and
    :class:`~napari_mireg.engine.partial_volume.PartialVolumeMutualInformation` (the
    partial-volume histogram, no intensity resampled) provide it.
    """

    threads: int | None
    # True: on the symmetric SyN's coarse levels where the two images lie on one lattice,
    # the level holds both images twice as fine as its grid (`pyramid.pyramid_level`'s
    # `carried_finer`); False: the moving image on the level grid carried over.
    fine_coarse_levels: bool

    def prepare(
        self, level: Level, moving_mask: Volume | None, prealign: np.ndarray, *, symmetric: bool
    ) -> LevelMetric:
        """The level's images as this metric samples them, for its iterations.

        Parameters
        ----------
        level : pyramid.Level
            The level grid with the fixed image (and mask) on it and the moving image on
            its own grid.
        moving_mask : Volume or None
            Voxels of the moving grid where the metric counts.
        prealign : ndarray (4, 4)
            World transform from fixed points to moving points, applied after the maps.
        symmetric : bool
            Both images move half way (a backward gradient too), or only the moving one.
        """
        ...


class MutualInformation:
    """Parzen-window mutual information of two images on one grid (ITK Mattes convention).

    Parameters
    ----------
    bins : int, optional
        Number of histogram bins per image, padding included (ANTs' default: 32); 5 to
        1024 (four are padding).
    threads : int or None, optional
        Threads of the Cython kernels; None uses OpenMP's default (all cores, or
        ``OMP_NUM_THREADS``). Results do not depend on it.

    Notes
    -----
    Intensity ranges are recomputed from the (masked) samples at every call. With
    ``dF = (F_max - F_min) / (bins - 4)``, a fixed value falls in bin
    ``floor((F - F_min) / dF) + 2``; a moving value has the continuous position
    ``t = (M - M_min) / dM + 2`` and adds ``b3(k - t)`` to the 4 bins around it. Then
    ``MI = sum p log(p / (pF pM))`` and the gradient with respect to a displacement u(x) of
    the moving image is ``dMI/du(x) = -sum_k b3'(k - t(x)) W(i(x), k) grad M(x)`` with
    ``W(i, k) = log(p(i, k) / pM(k)) / (dM S)``, S the histogram mass.
    """

    fine_coarse_levels = False  # see SynMetric; resampled half way, the coarse grid suffices

    def __init__(self, bins: int = 32, *, threads: int | None = None) -> None:
        self.bins = positive_int(bins, "bins", minimum=BINS_RANGE[0])
        if self.bins > BINS_RANGE[1]:  # the (bins x bins) tables would outgrow memory
            raise ValueError(f"bins must be at most {BINS_RANGE[1]}, got {self.bins}")
        self.threads = None if threads is None else positive_int(threads, "threads")
        self._probability = None

    @property
    def joint_histogram(self) -> np.ndarray:
        """Ndarray (bins, bins): joint probability p of the last call; rows are fixed bins."""
        if self._probability is None:
            raise RuntimeError("joint_histogram is available after a call to value() or a gradient")
        return self._probability.copy()

    def _thread_count(self, voxels):
        return thread_count(self.threads, voxels)

    def value(
        self, fixed: npt.ArrayLike, moving: npt.ArrayLike, mask: npt.ArrayLike | None = None
    ) -> float:
        """Mutual information of two images on the same grid.

        Parameters
        ----------
        fixed, moving : ndarray
            2D or 3D images of one shape, any numeric dtype, finite values.
        mask : ndarray of bool, optional
            Voxels that count; ranges and histogram use only these.

        Returns
        -------
        float
            MI >= 0 (ITK's metric value is its negative).
        """
        samples = self._samples(fixed, moving, mask)
        return self._histogram(samples).value

    def dense_gradient(
        self,
        fixed: npt.ArrayLike,
        moving: npt.ArrayLike,
        spacing: Sequence[float] | None = None,
        mask: npt.ArrayLike | None = None,
        moving_gradient: npt.ArrayLike | None = None,
        out: np.ndarray | None = None,
        grid_to_world: Matrix | None = None,
    ) -> tuple[float, npt.NDArray[np.float32]]:
        """MI and its gradient with respect to a displacement of the moving image.

        Parameters
        ----------
        fixed, moving : ndarray
            2D or 3D images of one shape.
        spacing : sequence of float, optional
            Voxel size along each array axis (default 1); the gradient is per physical unit.
        mask : ndarray of bool, optional
            Voxels that count; the gradient is zero outside.
        moving_gradient : ndarray, optional
            Precomputed gradient of `moving`, shape ``moving.shape + (ndim,)``, in physical
            units along the array axes. When given, `spacing` is not used.
        out : ndarray of float32, optional
            C-contiguous array of shape ``fixed.shape + (ndim,)`` to write the gradient into
            (saves an allocation per call in an optimisation loop).
        grid_to_world : ndarray, shape (ndim + 1, ndim + 1), optional
            Voxel-to-world matrix of the grid. When given, the gradient is per mm along the
            world axes (``L^-T`` times the index differences) and `spacing` is not used.

        Returns
        -------
        value : float
            Mutual information.
        gradient : ndarray of float32, shape ``fixed.shape + (fixed.ndim,)``
            +dMI/du per voxel, components in array-axis order: adding a small multiple of it
            to the displacement increases MI. The same field as ITK's Mattes v4 derivative.
        """
        samples = self._samples(fixed, moving, mask)
        histogram = self._histogram(samples)
        gradient = _output_array(out, np.shape(fixed) + (samples.ndim,))
        common = (samples.fixed, samples.moving, samples.mask, samples.use_mask)
        ranges = samples.fixed_range + samples.moving_range
        if moving_gradient is None:
            if grid_to_world is None:
                to_physical = np.diag(1.0 / spacing_vector(spacing, samples.ndim))
            else:
                linear = _square_matrix(grid_to_world, samples.ndim, "grid_to_world")
                to_physical = np.linalg.inv(linear[: samples.ndim, : samples.ndim]).T
            _mi.dense_gradient(
                *common,
                samples.shape3,
                histogram.slope_table,
                *ranges,
                embed_matrix(to_physical, 3).ravel(),
                gradient,
                3 - samples.ndim,
                self._thread_count(samples.fixed.size),
            )
        else:
            given = _gradient_array(moving_gradient, np.shape(fixed), samples.fixed.dtype)
            _mi.dense_gradient_given(
                *common,
                histogram.slope_table,
                *ranges,
                given,
                gradient,
                self._thread_count(samples.fixed.size),
            )
        return histogram.value, gradient.reshape(np.shape(fixed) + (samples.ndim,))

    def affine_gradient(
        self,
        fixed: npt.ArrayLike,
        moving: npt.ArrayLike,
        grid_to_world: Matrix | None = None,
        transform: Matrix | None = None,
        mask: npt.ArrayLike | None = None,
        moving_gradient: npt.ArrayLike | None = None,
    ) -> tuple[float, npt.NDArray[np.float64]]:
        """MI and its gradient with respect to the entries of an affine transform.

        The moving image is given already resampled on the fixed grid through the current
        world-to-world transform ``y = A x + b``; the result is the derivative of MI with
        respect to A and b there. The per-voxel coefficient is the one of
        :meth:`dense_gradient`, contracted with ``[x; 1]`` instead of being stored.

        Parameters
        ----------
        fixed, moving : ndarray
            2D or 3D images of one shape (moving already resampled through the transform).
        grid_to_world : ndarray, shape (ndim + 1, ndim + 1), optional
            Voxel-index to world matrix of the grid (default identity).
        transform : ndarray, shape (ndim + 1, ndim + 1), optional
            The current transform from fixed world points to moving world points (default
            identity). Used only when `moving_gradient` is not given.
        mask : ndarray of bool, optional
            Voxels that count.
        moving_gradient : ndarray, shape ``fixed.shape + (ndim,)``, optional
            grad M at the transformed points, in world units: the gradient of the moving
            image on its own grid, resampled like the image. This is exact for any
            transform. Without it, the gradient of the resampled image is taken and
            mapped back through the transform's linear part, which is exact at the
            identity and an approximation (a few percent) elsewhere.

        Returns
        -------
        value : float
            Mutual information.
        gradient : ndarray of float64, shape (ndim, ndim + 1)
            ``gradient[a, b] = dMI/dA[a, b]``; the last column is dMI/db.
        """
        samples = self._samples(fixed, moving, mask)
        ndim = samples.ndim
        grid = _square_matrix(grid_to_world, ndim, "grid_to_world")
        if moving_gradient is None:
            current = _square_matrix(transform, ndim, "transform")
            # grad M(Ax + b) = A^-T L^-T d(index): L the grid's linear part, A the transform's.
            to_world = np.linalg.inv(current[:ndim, :ndim] @ grid[:ndim, :ndim]).T
            given = image_gradient(moving, to_world, threads=self.threads)
        else:
            given = moving_gradient
        given = _gradient_array(given, np.shape(fixed), np.float32)
        histogram = self._histogram(samples)
        sums = _mi.affine_gradient(
            samples.fixed,
            samples.moving,
            samples.mask,
            samples.use_mask,
            samples.shape3,
            histogram.slope_table,
            *samples.fixed_range,
            *samples.moving_range,
            given,
            embed_matrix(grid, 4),
            self._thread_count(samples.fixed.size),
        )
        kept = slice(3 - ndim, 3)
        return histogram.value, np.ascontiguousarray(sums[kept, list(range(3 - ndim, 4))])

    def prepare(
        self, level: Level, moving_mask: Volume | None, prealign: np.ndarray, *, symmetric: bool
    ) -> "ParzenLevel":
        """The level's images for the SyN's iterations (see :class:`SynMetric`).

        With a mask on either side, each image carries its mask as a second channel,
        warped with it, so that the mask stays on the anatomy it marks at the half-way
        point (a fixed mask alone too).
        """
        fixed, moving = level.fixed, level.moving
        masked = level.mask is not None or moving_mask is not None
        if masked:
            fixed, moving = _with_mask_channels(level, moving_mask)
        return ParzenLevel(self, level, fixed, moving, masked, prealign, symmetric)

    def _samples(self, fixed, moving, mask):
        fixed, moving = image_pair(fixed, moving)
        selected = mask_array(mask, fixed.shape)
        use_mask = selected is not None
        flat_mask = selected.ravel() if use_mask else np.ones(1, dtype=np.uint8)
        threads = self._thread_count(fixed.size // CHEAP)
        ranges = []
        for name, image in (("fixed", fixed), ("moving", moving)):
            low, high, _, nonfinite = _mi.intensity_range(
                image.ravel(), flat_mask, use_mask, threads
            )
            if nonfinite:
                raise ValueError(f"{name} image has {nonfinite} NaN or infinite voxel(s)")
            intensity_bounds(low, high, f"{name} image")  # finite, yet beyond float32 sums
            if not high > low:
                where = " inside the mask" if use_mask else ""
                raise ValueError(
                    f"{name} image is constant{where} (every voxel is {low:g}): "
                    f"mutual information is undefined"
                )
            ranges.append((low, high))
        shape3 = (1,) * (3 - fixed.ndim) + fixed.shape
        return _Samples(
            fixed.ravel(),
            moving.ravel(),
            flat_mask,
            use_mask,
            shape3,
            fixed.ndim,
            ranges[0],
            ranges[1],
        )

    def _histogram(self, samples):
        moments = _mi.histogram_moments(
            samples.fixed,
            samples.moving,
            samples.mask,
            samples.use_mask,
            self.bins,
            *samples.fixed_range,
            *samples.moving_range,
            self._thread_count(samples.fixed.size),
        )
        counts = _counts_from_moments(moments)
        mass = counts.sum()
        probability = counts / mass
        fixed_marginal = np.broadcast_to(probability.sum(axis=1)[:, None], probability.shape)
        moving_marginal = np.broadcast_to(probability.sum(axis=0)[None, :], probability.shape)
        # A filled bin has filled marginals too (they are sums of it).
        filled = probability > EMPTY_BIN
        log_ratio = np.zeros_like(probability)
        log_ratio[filled] = np.log(probability[filled] / moving_marginal[filled])
        value = float(
            np.sum(probability[filled] * (log_ratio[filled] - np.log(fixed_marginal[filled])))
        )
        moving_bin_width = (samples.moving_range[1] - samples.moving_range[0]) / (self.bins - 4)
        weights = log_ratio / (moving_bin_width * mass)
        self._probability = probability
        return _Histogram(value, _slope_table(weights), probability)


@dataclass(frozen=True)
class ParzenLevel:
    """:class:`MutualInformation` prepared for one level of the SyN (a `LevelMetric`).

    Attributes
    ----------
    metric : MutualInformation
    level : pyramid.Level
    fixed, moving : ndarray
        The level's images, with their masks as a last channel when `masked`.
    masked : bool
    prealign : ndarray (4, 4)
    symmetric : bool
    """

    metric: MutualInformation
    level: Level
    fixed: np.ndarray
    moving: np.ndarray
    masked: bool
    prealign: np.ndarray
    symmetric: bool

    def value_and_gradient(self, half_fixed: Field, half_moving: Field) -> HalfwayGradient:
        """MI and its gradients with the Parzen histogram (see :class:`LevelMetric`).

        Both images are resampled at the half-way point (not symmetric: the fixed image
        stays on the level grid) and the dense gradient (ITK's Mattes) is taken there,
        with the roles swapped for the fixed side.
        """
        metric, affine = self.metric, self.level.affine
        warped_fixed, warped_moving, counted = self._warped(half_fixed, half_moving)
        value, forward = metric.dense_gradient(
            warped_fixed, warped_moving, mask=counted, grid_to_world=affine
        )
        histogram = metric.joint_histogram
        backward = None
        if self.symmetric:
            _, backward = metric.dense_gradient(
                warped_moving, warped_fixed, mask=counted, grid_to_world=affine
            )
        return HalfwayGradient(value, histogram, forward, backward)

    def value(self, half_fixed: Field, half_moving: Field) -> float:
        """The MI of :meth:`value_and_gradient` (the same computation)."""
        return self.value_and_gradient(half_fixed, half_moving).value

    def _warped(self, half_fixed, half_moving):
        """Both images at the half-way point, and the voxels that count there (None: all)."""
        # Edges are replicated, so a map reaching past the border samples the edge tissue
        # rather than a zero-filled step.
        shape, affine = self.level.shape, self.level.affine
        warped_fixed = self.fixed
        if self.symmetric:
            warped_fixed = resample(self.fixed, affine, shape, affine, field=half_fixed, clamp=True)
        warped_moving = resample(
            self.moving,
            self.level.moving_affine,
            shape,
            affine,
            field=half_moving,
            prealign=self.prealign,
            clamp=True,
        )
        if self.masked:
            return _split_masks(warped_fixed, warped_moving, self.level.mask)
        return warped_fixed, warped_moving, None


def _with_mask_channels(level, moving_mask):
    """Level images with their masks as a second channel (all ones for a side without)."""
    fixed_mask = np.ones(level.shape) if level.mask is None else level.mask
    moving_mask = np.ones(level.moving.shape) if moving_mask is None else moving_mask.data
    fixed = np.stack([level.fixed, fixed_mask.astype(np.float32)], axis=-1)
    moving = np.stack([level.moving, moving_mask.astype(np.float32)], axis=-1)
    return fixed, moving


def _split_masks(warped_fixed, warped_moving, fallback):
    """Images and the voxels inside both warped masks (`fallback` if they do not meet)."""
    counted = (warped_fixed[..., 1] > 0.5) & (warped_moving[..., 1] > 0.5)
    fixed = np.ascontiguousarray(warped_fixed[..., 0])
    moving = np.ascontiguousarray(warped_moving[..., 0])
    return fixed, moving, (counted if counted.any() else fallback)


def _counts_from_moments(moments):
    """Parzen joint histogram h(i, k) from the per-(i, k0) sums of 1, f, f^2, f^3."""
    bins = moments.shape[0]
    spread = moments @ BSPLINE_WEIGHTS.T  # [i, k0, j]: mass that k0 sends to bin k0 - 1 + j
    counts = np.zeros((bins, bins))
    for j in range(4):
        counts[:, 1 + j : bins - 3 + j] += spread[:, 2 : bins - 2, j]
    return counts


def _slope_table(weights):
    """table[i, k0] = coefficients in f of sum_j d(weight j)/dt * W(i, k0 - 1 + j)."""
    bins = weights.shape[0]
    table = np.zeros((bins, bins, 3))
    for j in range(4):
        table[:, 2 : bins - 2, :] += weights[:, 1 + j : bins - 3 + j, None] * BSPLINE_SLOPES[j]
    return table


def _square_matrix(matrix, ndim, name):
    """A (ndim + 1)-square homogeneous matrix, identity by default."""
    if matrix is None:
        return np.eye(ndim + 1)
    array = np.asarray(matrix, dtype=np.float64)
    if array.shape != (ndim + 1, ndim + 1) or not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} must be a finite {ndim + 1}x{ndim + 1} matrix, got shape {array.shape}"
        )
    if abs(np.linalg.det(array[:ndim, :ndim])) < 1e-12:
        raise ValueError(f"{name} is singular")
    return array


def _output_array(out, shape):
    """A (voxels, ndim) float32 view of `out`, or a new array when out is None."""
    if out is None:
        return np.empty((int(np.prod(shape[:-1])), shape[-1]), dtype=np.float32)
    if (
        not isinstance(out, np.ndarray)
        or out.shape != shape
        or out.dtype != np.float32
        or not out.flags.c_contiguous
    ):
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    return out.reshape(-1, shape[-1])


def _gradient_array(gradient, shape, dtype):
    """Validate a precomputed moving gradient and flatten it to (voxels, ndim)."""
    array = np.asarray(gradient)
    expected = tuple(shape) + (len(shape),)
    if array.shape != expected:
        raise ValueError(f"moving_gradient must have shape {expected}, got {array.shape}")
    if array.dtype.kind not in "biuf" or not np.all(np.isfinite(array)):
        raise ValueError("moving_gradient must be finite numbers")
    return np.ascontiguousarray(array.reshape(-1, len(shape)), dtype=dtype)
