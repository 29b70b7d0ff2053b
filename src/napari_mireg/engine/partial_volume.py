"""Partial-volume mutual information: the SyN metric that samples bins, not intensities.

Each image's intensities are cut into levels once (`IntensityLevels`: from its minimum to
the 99th percentile of the voxels above it, over `LEVELS - 1` levels; level 0 for what does
not count). A voxel of the grid
adds, to its own level's histogram row, the level of each of the 8 voxels around its point
in the other image, weighted trilinearly (Maes et al. 1997; greedy's deformable MI). No
intensity is ever interpolated, so an edge between two tissues is never read as a third
one. The maths is in docs/maths.md, section 7.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from napari_mireg._typing import Matrix
from napari_mireg.engine._kernels import _pv
from napari_mireg.engine.fields import CHEAP, thread_count
from napari_mireg.engine.metric import Field, HalfwayGradient, LevelMetric, MutualInformation
from napari_mireg.engine.pyramid import Level
from napari_mireg.engine.transforms import Volume

# Intensity levels, 0 included. Greedy uses 128; 64 gave the same overlap on the calibration
# pairs (2 mm 0.579 against 0.580, 1 mm 0.664 against 0.662) and its 32 KiB table of dMI/dh
# stays in the fastest cache: the SyN took about 7 % less time at 1 mm (docs/engine.md).
LEVELS = 64
# The top level starts at this percentile of the voxels above the image's minimum: the
# brightest 1 % (vessels, fat, a bias field's hot spot) share it.
HIGH_PERCENTILE = 99.0
# The percentile is taken from at most this many voxels (a regular subsample): enough for two
# decimals of a percentile, and a fixed cost on 1 mm heads.
PERCENTILE_SAMPLES = 1_000_000


@dataclass(frozen=True)
class IntensityLevels:
    """How an image's intensities become levels 1 .. LEVELS - 1 (0: not counted).

    Attributes
    ----------
    low, high : float
        Intensities of level 1 (the minimum) and of level LEVELS - 1.
    """

    low: float
    high: float

    @classmethod
    def of(cls, image: npt.ArrayLike, mask: np.ndarray | None = None) -> "IntensityLevels":
        """The levels of an image (inside `mask`): from its minimum to a high percentile.

        The high end is the HIGH_PERCENTILE percentile of the voxels above the minimum, so
        background (at the minimum) neither moves it nor depends on the field of view;
        background keeps level 1 and counts, as in greedy.
        """
        values = np.asarray(image, dtype=np.float32)
        values = values[mask] if mask is not None else values.ravel()
        low = float(values.min())
        above = values[values > low]
        if above.size == 0:
            raise ValueError("the image is constant: mutual information is undefined")
        stride = max(1, above.size // PERCENTILE_SAMPLES)
        high = float(np.percentile(above[::stride], HIGH_PERCENTILE))
        if not high > low:
            high = float(above.max())
        return cls(low, high)

    def levels(
        self,
        image: npt.ArrayLike,
        counted: npt.ArrayLike | None = None,
        *,
        threads: int | None = None,
    ) -> npt.NDArray[np.uint8]:
        """uint8 levels of an image: below `low` and outside `counted` give 0."""
        values = np.ascontiguousarray(image, dtype=np.float32)
        use_counted = counted is not None
        flags = (
            np.ascontiguousarray(counted, dtype=np.uint8) if use_counted else np.ones(1, np.uint8)
        )
        out = np.empty(values.shape, dtype=np.uint8)
        _pv.levels(
            values.ravel(),
            flags.ravel(),
            use_counted,
            self.low,
            (LEVELS - 2) / (self.high - self.low),
            LEVELS - 1,
            out.ravel(),
            thread_count(threads, out.size // CHEAP),
        )
        return out


class PartialVolumeMutualInformation:
    """MI of two level images, one on a grid, the other sampled through a map.

    Parameters
    ----------
    threads : int or None
        Threads of the kernels (None: all cores). The result does not depend on it.
    aligned_metric : MutualInformation, optional
        The Parzen metric of the SyN's levels whose grid lands on the moving grid
        (:func:`grids_aligned`), where partial volume would pull the map towards
        whole-voxel shifts. Default: ``MutualInformation(threads=threads)`` (32 bins).
    """

    # Two images on one lattice: the symmetric SyN's coarse levels sample both twice as
    # fine as the level grid (see `SynMetric`), so that they are not aligned with it and
    # keep partial volume.
    fine_coarse_levels = True

    def __init__(
        self, *, threads: int | None = None, aligned_metric: MutualInformation | None = None
    ) -> None:
        self.threads = threads
        self.aligned_metric = aligned_metric or MutualInformation(threads=threads)
        self._probability: np.ndarray | None = None

    @property
    def joint_histogram(self) -> np.ndarray:
        """(LEVELS, LEVELS) joint probability of the last call; rows are the grid's levels."""
        if self._probability is None:
            raise RuntimeError("joint_histogram is available after a call to gradient()")
        return self._probability.copy()

    def prepare(
        self, level: Level, moving_mask: Volume | None, prealign: np.ndarray, *, symmetric: bool
    ) -> LevelMetric:
        """The level's images cut into intensity levels, for the SyN's iterations.

        Where the level grid's voxels land on the moving grid's, the level is the aligned
        metric's (Parzen) instead (see `SynMetric` in :mod:`napari_mireg.engine.metric`).
        """
        world_to_moving = np.linalg.inv(level.moving_affine) @ prealign  # fixed world to voxels
        if grids_aligned(world_to_moving @ level.affine):
            return self.aligned_metric.prepare(level, moving_mask, prealign, symmetric=symmetric)
        sources = level_sources(level, moving_mask, world_to_moving)
        return PartialVolumeLevel(self, sources, level.affine, symmetric)

    def gradient(
        self,
        grid_levels: npt.NDArray[np.uint8],
        grid_affine: Matrix,
        other_levels: npt.NDArray[np.uint8],
        to_other: Matrix,
        field: npt.ArrayLike,
    ) -> tuple[float, Field]:
        """MI and its gradient with respect to the displacement field.

        Parameters
        ----------
        grid_levels : ndarray of uint8 (n0, n1, n2)
            Levels of the image on the grid (0: the voxel does not count).
        grid_affine : ndarray (4, 4)
            Voxel-to-world matrix of the grid.
        other_levels : ndarray of uint8 (s0, s1, s2)
            Levels of the other image on its own voxels.
        to_other : ndarray (4, 4)
            World (of the grid) to the other image's voxel coordinates.
        field : ndarray of float32 (n0, n1, n2, 3)
            World displacement: grid voxel x samples the other image at
            ``to_other (world(x) + field(x))``.

        Returns
        -------
        value : float
            Mutual information of the partial-volume histogram.
        gradient : ndarray of float32 (n0, n1, n2, 3)
            dMI/d field(x), world components: adding a small multiple of it to the field
            raises MI.
        """
        shape = grid_levels.shape
        flat_field, grid, linear = _mapping(grid_affine, to_other, field)
        common = (
            np.ascontiguousarray(grid_levels).ravel(),
            np.ascontiguousarray(other_levels, dtype=np.uint8),
            flat_field,
            shape,
            grid,
            linear,
        )
        threads = thread_count(self.threads, flat_field.shape[0])
        counts = _pv.histogram(*common, LEVELS, threads)
        # Column 0 (corners outside) comes back empty, so its dMI/dh is 0: the gradient
        # kernel reads bin 0 from the table without testing the corner.
        value, weights = mutual_information_weights(counts)
        out = np.empty((flat_field.shape[0], 3), dtype=np.float32)
        _pv.gradient(*common, weights, out, threads)
        self._probability = counts / max(counts.sum(), 1e-300)
        return value, out.reshape(shape + (3,))


@dataclass(frozen=True)
class PartialVolumeLevel:
    """:class:`PartialVolumeMutualInformation` prepared for one level of the SyN.

    Attributes
    ----------
    metric : PartialVolumeMutualInformation
    sources : Sources
        The level's images cut into levels.
    affine : ndarray (4, 4)
        Voxel-to-world matrix of the level grid.
    symmetric : bool
    """

    metric: PartialVolumeMutualInformation
    sources: "Sources"
    affine: np.ndarray
    symmetric: bool

    def value_and_gradient(self, half_fixed: Field, half_moving: Field) -> HalfwayGradient:
        """MI and its gradients with partial-volume sampling (a `LevelMetric`).

        Not symmetric: the fixed levels on the grid against the moving levels sampled
        through the map. Symmetric: the fixed level nearest each half-way point against
        the moving levels sampled through the moving half-map, and the other way round for
        the fixed side. No intensity is interpolated in either mode (docs/maths.md,
        section 7).
        """
        metric, sources, affine = self.metric, self.sources, self.affine
        if not self.symmetric:
            value, forward = metric.gradient(
                sources.fixed_levels,
                affine,
                sources.moving_levels,
                sources.to_moving,
                half_moving,
            )
            return HalfwayGradient(value, metric.joint_histogram, forward, None)
        threads = metric.threads
        forward_rows = np.empty(half_moving.shape[:3], dtype=np.uint8)
        backward_rows = np.empty_like(forward_rows)
        value, forward_weights, backward_weights = self._histograms(
            half_fixed, half_moving, forward_rows, backward_rows
        )
        histogram = metric.joint_histogram
        forward = _gradient_pass(
            forward_rows,
            affine,
            sources.moving_levels,
            sources.to_moving,
            half_moving,
            forward_weights,
            threads,
        )
        backward = _gradient_pass(
            backward_rows,
            affine,
            sources.fixed_levels,
            sources.to_fixed,
            half_fixed,
            backward_weights,
            threads,
        )
        return HalfwayGradient(value, histogram, forward, backward)

    def value(self, half_fixed: Field, half_moving: Field) -> float:
        """MI where the half-way maps bring the two images, without its gradients."""
        if not self.symmetric:
            return self.value_and_gradient(half_fixed, half_moving).value
        rows = np.empty(half_moving.shape[:3], dtype=np.uint8)
        return self._histograms(half_fixed, half_moving, rows, None)[0]

    def _histograms(self, half_fixed, half_moving, forward_rows, backward_rows):
        """The symmetric mode's two histograms in one pass (`_pv.halfway_histograms`).

        Returns the MI and dMI/dh of the forward histogram and dMI/dh of the backward one
        (None without `backward_rows`); each voxel's rows are written for the gradient
        passes, 0 where its gradient is zero.
        """
        metric, sources, affine = self.metric, self.sources, self.affine
        fixed_field, fixed_grid, fixed_linear = _mapping(affine, sources.to_fixed, half_fixed)
        moving_field, moving_grid, moving_linear = _mapping(affine, sources.to_moving, half_moving)
        backward = backward_rows is not None
        forward_counts, backward_counts = _pv.halfway_histograms(
            np.ascontiguousarray(sources.fixed_levels, dtype=np.uint8),
            np.ascontiguousarray(sources.moving_levels, dtype=np.uint8),
            fixed_field,
            moving_field,
            forward_rows.shape,
            fixed_grid,
            fixed_linear,
            moving_grid,
            moving_linear,
            LEVELS,
            forward_rows.ravel(),
            (backward_rows if backward else forward_rows).ravel(),
            backward,
            thread_count(metric.threads, fixed_field.shape[0] * (2 if backward else 1)),
        )
        metric._probability = forward_counts / max(forward_counts.sum(), 1e-300)
        value, forward_weights = mutual_information_weights(forward_counts)
        backward_weights = None
        if backward:
            _, backward_weights = mutual_information_weights(backward_counts)
        return value, forward_weights, backward_weights


def _gradient_pass(rows, grid_affine, other_levels, to_other, field, weights, threads):
    """dMI/d field from each voxel's histogram row (0: zero gradient) and dMI/dh."""
    flat_field, grid, linear = _mapping(grid_affine, to_other, field)
    out = np.empty((flat_field.shape[0], 3), dtype=np.float32)
    _pv.gradient(
        rows.ravel(),
        np.ascontiguousarray(other_levels, dtype=np.uint8),
        flat_field,
        rows.shape,
        grid,
        linear,
        weights,
        out,
        thread_count(threads, flat_field.shape[0]),
    )
    return out.reshape(rows.shape + (3,))


def nearest_levels(
    other_levels: npt.NDArray[np.uint8],
    grid_affine: Matrix,
    to_other: Matrix,
    field: npt.ArrayLike,
    *,
    threads: int | None = None,
) -> npt.NDArray[np.uint8]:
    """The other image's levels carried onto a grid through a map, by nearest neighbour.

    Grid voxel x takes the level of the other image's voxel nearest to
    ``to_other (world(x) + field(x))``; 0 outside the other image. The arguments are those
    of `PartialVolumeMutualInformation.gradient`; the grid's shape is the field's.
    """
    shape = np.shape(field)[:3]
    flat_field, grid, linear = _mapping(grid_affine, to_other, field)
    out = np.empty(shape, dtype=np.uint8)
    _pv.nearest_levels(
        np.ascontiguousarray(other_levels, dtype=np.uint8),
        flat_field,
        shape,
        grid,
        linear,
        out.ravel(),
        thread_count(threads, out.size),
    )
    return out


def _mapping(grid_affine, to_other, field):
    """The field flat (n, 3) float32, and the kernels' (3, 4) and (3, 3) matrices, raveled."""
    to_other = np.asarray(to_other, dtype=np.float64)
    grid = np.ascontiguousarray((to_other @ np.asarray(grid_affine, dtype=np.float64))[:3])
    linear = np.ascontiguousarray(to_other[:3, :3])
    flat_field = np.ascontiguousarray(field, dtype=np.float32).reshape(-1, 3)
    return flat_field, grid.ravel(), linear.ravel()


def mutual_information_weights(counts: np.ndarray) -> tuple[float, npt.NDArray[np.float64]]:
    """MI of a joint histogram of weights, and dMI/d counts (zero for empty cells).

    With P = h / S: ``dMI/dh(i, b) = (log(P(i, b) / (P_i P_b)) - MI) / S``.
    """
    mass = counts.sum()
    if not mass > 0:
        raise ValueError("no voxel counts: the images do not overlap")
    probability = counts / mass
    rows = probability.sum(axis=1, keepdims=True)
    columns = probability.sum(axis=0, keepdims=True)
    filled = probability > 0
    log_ratio = np.zeros_like(probability)
    log_ratio[filled] = np.log(probability[filled] / (rows * columns)[filled])
    value = float(np.sum(probability[filled] * log_ratio[filled]))
    weights = np.where(filled, (log_ratio - value) / mass, 0.0)
    return value, np.ascontiguousarray(weights)


@dataclass(frozen=True)
class Sources:
    """One pyramid level's images cut into levels, for the SyN iterations.

    Attributes
    ----------
    fixed_levels : ndarray of uint8
        The fixed image on the level grid (0 outside its mask).
    moving_levels : ndarray of uint8
        The moving image on its own grid (0 outside its mask).
    to_moving : ndarray (4, 4)
        Fixed world to moving voxel coordinates (the prealignment, then the moving grid).
    to_fixed : ndarray (4, 4)
        Fixed world to the voxel coordinates of `fixed_levels`' grid.
    """

    fixed_levels: np.ndarray
    moving_levels: np.ndarray
    to_moving: np.ndarray
    to_fixed: np.ndarray


def level_sources(level: Level, moving_mask: Volume | None, to_moving: np.ndarray) -> Sources:
    """The `Sources` of a pyramid level.

    `level` is a `pyramid.Level`, `moving_mask` a Volume or None, `to_moving` the fixed
    world to moving voxel matrix. The fixed image is the level's finer one where it has
    one (`Level.fine_fixed`).
    """
    moving_counted = None if moving_mask is None else moving_mask.data.astype(bool)
    fixed, mask, affine = level.fixed, level.mask, level.affine
    if level.fine_fixed is not None and level.fine_affine is not None:
        fixed, mask, affine = level.fine_fixed, level.fine_mask, level.fine_affine
    fixed_scale = IntensityLevels.of(fixed, mask)
    moving_scale = IntensityLevels.of(level.moving, moving_counted)
    return Sources(
        fixed_scale.levels(fixed, mask),
        moving_scale.levels(level.moving, moving_counted),
        to_moving,
        np.linalg.inv(affine),
    )


def grids_aligned(grid_to_other: Matrix, tolerance: float = 0.05) -> bool:
    """True when a grid's voxels land on the other grid's voxels (up to a shift).

    `grid_to_other` maps grid indices to the other image's voxel coordinates. Its linear
    part within `tolerance` of a signed permutation means same voxel size and axes, up to
    their order and direction. Then every voxel of the grid has the same offset from the
    other grid, and the partial-volume histogram is sharpest where that offset is zero:
    its gradient pulls the whole map towards whole-voxel shifts (the interpolation
    artefact of partial volume, Pluim et al. 2000). On such grids the SyN uses the Parzen
    histogram instead.
    """
    linear = np.asarray(grid_to_other, dtype=np.float64)[:3, :3]
    nearest = np.rint(linear)
    permutation = (np.abs(nearest).sum(axis=0) == 1).all() and (
        np.abs(nearest).sum(axis=1) == 1
    ).all()
    return bool(permutation and np.abs(linear - nearest).max() < tolerance)
