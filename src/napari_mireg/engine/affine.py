"""Rigid and affine prealignment driven by the MI metric's affine gradient (docs/maths.md, 4-5)."""

from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.spatial.transform import Rotation

from napari_mireg._typing import Image, Matrix
from napari_mireg.engine import fields
from napari_mireg.engine._validate import positive_int
from napari_mireg.engine.metric import MutualInformation
from napari_mireg.engine.pyramid import (
    anatomy_box,
    crop,
    foreground,
    mask_volume,
    pyramid_level,
    within_mask,
)
from napari_mireg.engine.steps import run_to_end
from napari_mireg.engine.transforms import AffineMap, Volume, as_volume

# Without a fixed mask the metric counts the fixed image's anatomy and this many level
# voxels around it. Over the whole grid the background, most of a brain image's voxels,
# rules the histogram: a zoom changes its share of the moving samples, and with it the
# moving entropy, to first order, so MI peaked about 1e-3 in scale away from an image's
# own pose (docs/engine.md, Prealignment).
FOREGROUND_MARGIN = 2
# A stage on a finer level starts at this many times the step it ended with on the coarser
# one (at most `step`): it starts near its optimum, where a whole voxel only overshoots.
RESUME_FACTOR = 8.0
# A step that gains MI along about the same direction as the last one grows by this much
# (up to `step`): a step halved early would otherwise crawl the rest of the way (100
# iterations of a rigid stage on a calibration pair).
GROWTH = 1.5


def centre_of_mass(volume: Volume, mask: Volume | None = None) -> npt.NDArray[np.float64]:
    """World coordinates of the intensity centre of mass of a Volume (positive part).

    Parameters
    ----------
    volume : Volume
    mask : Volume of uint8, optional
        Only its voxels count.

    Returns
    -------
    ndarray (3,)
    """
    weights = np.maximum(volume.data, 0, dtype=np.float32)
    if mask is not None:
        weights *= mask.data > 0
    # One pass over the volume for the plane sums; the three marginals come from those.
    # (A float64 copy of a 256^3 head and three full reductions took half a second.)
    planes = weights.sum(axis=2, dtype=np.float64)
    marginals = [planes.sum(axis=1), planes.sum(axis=0), weights.sum(axis=(0, 1), dtype=np.float64)]
    total = marginals[0].sum()
    if total <= 0:
        index = (np.array(volume.shape, dtype=np.float64) - 1) / 2
    else:
        index = np.array([marginal @ np.arange(marginal.size) / total for marginal in marginals])
    return volume.affine[:3, :3] @ index + volume.affine[:3, 3]


@dataclass(frozen=True)
class AffineStep:
    """What one prealignment iteration reports (for progress displays).

    Attributes
    ----------
    phase : "prealignment"
        What :func:`napari_mireg.engine.registration.register_steps` is doing (a class
        attribute: the SyN's Snapshots say "syn").
    level : int
        0 is the coarsest level.
    levels : int
    stage : {"rigid", "affine"}
    iteration : int
        Iteration within the stage and level, from 0.
    value : float
        MI at the start of the iteration.
    """

    level: int
    levels: int
    stage: str
    iteration: int
    value: float
    phase: ClassVar[str] = "prealignment"


class AffineRegistration:
    """MI prealignment: centre of mass, then rigid, then (optionally) affine, coarse to fine.

    Each iteration composes a small transform on the fixed side, about the fixed image's
    centre c: ``x -> (I + D)(x - c) + c + t`` (D skew-symmetric for rigid), its direction
    the metric's gradient scaled like displacements (the linear part divided by the mean
    squared radius of the image), its length a step in mm that halves when MI drops or
    the direction turns back, and grows while it does neither. Without a fixed mask the
    metric counts the fixed image's anatomy (`FOREGROUND_MARGIN`).

    Parameters
    ----------
    metric : MutualInformation
    transform : {"rigid", "affine"}
        "affine" runs a rigid stage first.
    level_iters : sequence of int
        Iterations per level and stage, coarsest first (shrink 2 ** (L - 1 - k)); a level
        with 0 is skipped. By default the full-resolution level is: on the real pairs of
        docs/engine.md its 7-10 iterations take 0.5-1 s of a 1-1.8 s prealignment at 2 mm
        and leave the overlap after SyN unchanged (mean Dice 0.5594 against 0.5595).
    step : float
        First step, in voxels of the level.
    min_step : float
        A stage stops when the step falls below this (voxels of the level): 0.003 of a
        4 mm voxel puts a copy of an image within 0.04 mm of its pose.
    tolerance : float
        A stage stops when MI gained less than ``tolerance`` (relative) over the last
        `convergence_window` iterations: past that, full-resolution iterations only
        polish digits that move no voxel (the MI of a real pair stalls at about 1e-4).
        A stage that gained less than this over its start is undone: such a gain is the
        metric's own bias (a coarse level's sampling), not the images'.
    convergence_window : int
    rigid_levels : int
        The rigid stage runs on this many coarsest levels only (then affine alone): a
        rigid start matters where the pose is far off, not on the fine levels.
    """

    def __init__(
        self,
        metric: MutualInformation,
        transform: str = "affine",
        level_iters: Sequence[int] = (100, 50, 0),
        step: float = 1.0,
        min_step: float = 0.003,
        tolerance: float = 1e-3,
        convergence_window: int = 6,
        rigid_levels: int = 1,
    ) -> None:
        if transform not in ("rigid", "affine"):
            raise ValueError(f"transform must be 'rigid' or 'affine', got {transform!r}")
        self.metric = metric
        self.transform = transform
        self.level_iters = tuple(
            positive_int(n, "level_iters entries", minimum=0) for n in level_iters
        )
        self.step = float(step)
        self.min_step = float(min_step)
        self.tolerance = float(tolerance)
        self.convergence_window = positive_int(convergence_window, "convergence_window", minimum=2)
        self.rigid_levels = positive_int(rigid_levels, "rigid_levels", minimum=0)
        self.values: list[float] = []
        self._final_steps: dict[str, float] = {}

    def optimize(
        self, fixed: "Image | Volume", moving: "Image | Volume", **options: Any
    ) -> AffineMap:
        """Run :meth:`iterate` to the end and return its AffineMap (same parameters)."""
        return run_to_end(self.iterate(fixed, moving, **options))

    def iterate(
        self,
        fixed: "Image | Volume",
        moving: "Image | Volume",
        *,
        fixed_affine: Matrix | None = None,
        moving_affine: Matrix | None = None,
        fixed_mask: npt.ArrayLike | None = None,
        moving_mask: npt.ArrayLike | None = None,
        initial: "Matrix | AffineMap | None" = None,
    ) -> Generator[AffineStep, None, AffineMap]:
        """Find the world transform from fixed points to moving points, yielding AffineSteps.

        Parameters
        ----------
        fixed, moving : ndarray or nibabel image
        fixed_affine, moving_affine : ndarray, optional
            Voxel-to-world matrices of arrays (identity by default).
        fixed_mask : ndarray of bool, optional
            Voxels of the fixed grid where the metric counts.
        moving_mask : ndarray of bool, optional
            Voxels of the moving grid where the metric counts: a fixed voxel counts only
            when it maps inside it (and inside `fixed_mask`). Masks also restrict the
            centres of mass of the starting translation.
        initial : ndarray (4, 4), optional
            Starting transform (default: the centre-of-mass translation).

        Yields
        ------
        AffineStep

        Returns
        -------
        AffineMap
            As the generator's return value.
        """
        fixed_volume = as_volume(fixed, fixed_affine, "fixed")
        moving_volume = as_volume(moving, moving_affine, "moving")
        if fixed_volume.ndim != moving_volume.ndim:
            raise ValueError(f"fixed is {fixed_volume.ndim}D but moving is {moving_volume.ndim}D")
        mask = mask_volume(fixed_mask, fixed_volume)
        moving_weights = mask_volume(moving_mask, moving_volume, "moving_mask")
        fixed_centre = centre_of_mass(fixed_volume, mask)
        matrix = np.eye(4)
        if initial is None:
            matrix[:3, 3] = centre_of_mass(moving_volume, moving_weights) - fixed_centre
        else:
            matrix = np.asarray(getattr(initial, "matrix", initial), dtype=np.float64)
        centre = fixed_centre
        levels = len(self.level_iters)
        # The moving image only around its anatomy (its mask, or its bright voxels): a
        # head's field of view holds neck and air the metric reads as background anyway.
        # The margin keeps the coarsest level's smoothing and the interpolation
        # stencil away from the cut: 3 sigma plus one coarse voxel.
        coarsest = 2 ** (levels - 1)
        margin_mm = 2.5 * coarsest * fixed_volume.spacing.min()
        box = anatomy_box(moving_volume, moving_weights, margin_mm)
        moving_volume = crop(moving_volume, box)
        if moving_weights is not None:
            moving_weights = crop(moving_weights, box)
        stages = ["rigid"] if self.transform == "rigid" else ["rigid", "affine"]
        self.values = []
        self._final_steps = {}
        for level, iterations in enumerate(self.level_iters):
            if iterations == 0:
                continue
            pyramid = pyramid_level(
                fixed_volume,
                moving_volume,
                mask,
                level,
                levels,
                shrink_moving=True,
                prealign=matrix,
                threads=self.metric.threads,
            )
            # Steps are scaled to the whole level grid (its corners), with or without a mask.
            corners = _corners(pyramid.shape, pyramid.affine)
            if pyramid.mask is None:
                pyramid = replace(pyramid, mask=foreground(pyramid.fixed, FOREGROUND_MARGIN))
            pyramid = within_mask(pyramid)
            moving_affine = pyramid.moving_affine
            # The moving image, its world gradient and (with a moving mask) its weight: 1
            # inside, 0 outside (on a coarser moving grid the share of a voxel's block
            # inside), resampled together in one pass each iteration.
            weights = None
            if moving_weights is not None:
                weights = moving_weights.data
                if pyramid.moving.shape != weights.shape:
                    weights = fields.resample(
                        weights.astype(np.float32),
                        moving_weights.affine,
                        pyramid.moving.shape,
                        moving_affine,
                        clamp=True,
                        threads=self.metric.threads,
                    )
            channels = fields.image_and_gradient(
                pyramid.moving,
                np.linalg.inv(moving_affine[:3, :3]).T,
                extra=weights,
                threads=self.metric.threads,
            )
            for stage in stages:
                if stage == "rigid" and self.transform == "affine" and level >= self.rigid_levels:
                    continue
                matrix = yield from self._level(
                    pyramid,
                    channels,
                    moving_affine,
                    matrix,
                    centre,
                    corners,
                    stage,
                    iterations,
                    (level, levels),
                )
        return AffineMap(matrix)

    def _level(
        self, pyramid, channels, moving_affine, matrix, centre, corners, stage, iterations, where
    ):
        """Regular-step ascent of one stage on one level, yielding an AffineStep per
        iteration (one MI evaluation each); returns the best matrix. `corners` (world,
        (8, 3)) scale the steps.

        The step (the largest move of a corner) halves when MI drops, the ascent going on
        from the best point along its own gradient (kept, not evaluated again), and when
        the ascent direction turns back on the previous one: near the optimum a constant
        step zigzags across it, gaining less and less, and stops only far from it. The
        stage ends when the step falls below `min_step` voxels, or on the gain test.
        """
        shape, affine = pyramid.shape, pyramid.affine
        voxel_mm = fields.voxel_sizes(affine).min()
        radius2 = max(np.mean(((corners - centre) ** 2).sum(axis=1)) / 3.0, voxel_mm**2)
        step_mm = largest_mm = self.step * voxel_mm
        if stage in self._final_steps:
            # A stage that ran on the coarser level starts near its optimum: a step of a
            # whole voxel would only overshoot and halve, an evaluation each time.
            step_mm = min(step_mm, RESUME_FACTOR * self._final_steps[stage])
        best_value, best_matrix, best_direction = -np.inf, matrix, None
        start = matrix
        stage_values = []
        for iteration in range(iterations):
            sampled = fields.resample(
                channels,
                moving_affine,
                shape,
                affine,
                prealign=matrix,
                clamp=True,
                threads=self.metric.threads,
            )
            value, gradient = self.metric.affine_gradient(
                pyramid.fixed,
                sampled[..., 0],
                grid_to_world=affine,
                mask=_both_masks(pyramid.mask, sampled),
                moving_gradient=sampled[..., 1:4],
            )
            self.values.append(value)
            stage_values.append(value)
            yield AffineStep(*where, stage, iteration, value)
            if self._converged(stage_values):
                break
            if value < best_value:
                step_mm *= 0.5
            else:
                direction = _Direction.of(gradient, matrix, centre, radius2, stage, corners)
                if direction is None:
                    return matrix
                if best_direction is not None:
                    if direction.turns_back_on(best_direction):
                        step_mm *= 0.5
                    else:
                        step_mm = min(step_mm * GROWTH, largest_mm)
                best_value, best_matrix, best_direction = value, matrix, direction
            if step_mm < self.min_step * voxel_mm:
                break
            matrix = best_matrix @ best_direction.change(step_mm, centre, stage)
        self._final_steps[stage] = step_mm
        if stage_values and best_value - stage_values[0] < self.tolerance * abs(stage_values[0]):
            return start
        return best_matrix

    def _converged(self, values):
        return _gain_below(values, self.convergence_window, self.tolerance)


def _gain_below(values, window, tolerance):
    """True when the best value of the last `window` beats the one before by < tolerance."""
    if len(values) <= window:
        return False
    before = max(values[:-window])
    return max(values[-window:]) - before < tolerance * max(abs(before), 1e-12)


@dataclass(frozen=True)
class _Direction:
    """An ascent direction ``x -> x + D(x - c) + t`` and the corner moves it makes."""

    linear: np.ndarray
    translation: np.ndarray
    largest: float
    moves: np.ndarray

    @classmethod
    def of(cls, gradient, matrix, centre, radius2, stage, corners):
        """The direction of a gradient at `matrix`, or None when it moves no corner."""
        linear, translation = _ascent_direction(gradient, matrix, centre, radius2, stage)
        first_order = _change_matrix(linear, translation, centre, 1.0, "affine")
        moves = _apply(first_order, corners) - corners
        largest = float(np.sqrt((moves**2).sum(axis=1)).max())
        if largest == 0:
            return None
        return cls(linear, translation, largest, moves / largest)

    def turns_back_on(self, other: "_Direction") -> bool:
        """True when the corners' moves point backwards on the whole against `other`'s."""
        return float(np.sum(self.moves * other.moves)) < 0

    def change(self, step_mm, centre, stage):
        """The 4x4 change whose largest corner move is about `step_mm`."""
        return _change_matrix(self.linear, self.translation, centre, step_mm / self.largest, stage)


def _both_masks(fixed_mask, sampled):
    """Fixed voxels in the fixed mask that map inside the moving mask (its channel 4).

    Falls back to the fixed mask alone when the two do not meet (a start far off).
    """
    if sampled.shape[-1] < 5:
        return fixed_mask
    inside = sampled[..., 4] > 0.5
    if fixed_mask is not None:
        inside &= fixed_mask
    return inside if inside.any() else fixed_mask


def _ascent_direction(gradient, matrix, centre, radius2, stage):
    """Fixed-side change ``x -> x + D(x - c) + t`` along which MI grows: (D, t).

    With y = P(x + D(x - c) + t): dMI/dt = P_lin^T sum g and dMI/dD = P_lin^T sum g (x - c)^T;
    D is divided by the mean squared radius so both parts move voxels alike.
    """
    h = matrix[:3, :3].T @ gradient
    linear = h[:, :3] - np.outer(h[:, 3], centre)
    if stage == "rigid":
        linear = (linear - linear.T) / 2.0
    return linear / radius2, h[:, 3]


def _change_matrix(linear, translation, centre, scale, stage):
    """4x4 of ``x -> M (x - c) + c + scale t``: M = I + scale D, or the exact rotation."""
    result = np.eye(4)
    if stage == "rigid":
        rotation_vector = scale * np.array([linear[2, 1], linear[0, 2], linear[1, 0]])
        result[:3, :3] = Rotation.from_rotvec(rotation_vector).as_matrix()
    else:
        result[:3, :3] += scale * linear
    result[:3, 3] = centre - result[:3, :3] @ centre + scale * translation
    return result


def _apply(matrix, points):
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _corners(shape, affine):
    """World coordinates of the 8 corner voxels of a grid."""
    index = np.array(
        [
            [i, j, k]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ],
        dtype=np.float64,
    )
    return index @ affine[:3, :3].T + affine[:3, 3]
