"""Symmetric diffeomorphic registration (greedy SyN) driven by mutual information.

Two maps meet in the middle: ``phi_fixed`` carries the fixed image and ``phi_moving`` the
moving image half way (docs/maths.md, section 6). Fields are world displacements
(mm) on a grid of the fixed image, coarse to fine.
"""

from dataclasses import dataclass, field

import numpy as np

from napari_mireg import fields
from napari_mireg._validate import positive_int
from napari_mireg.pyramid import mask_volume, pyramid_level
from napari_mireg.transforms import (
    AffineMap,
    DiffeomorphicMap,
    DisplacementField,
    apply_transforms,
    as_volume,
)

# A half-map's det J below this after an update halves the step (each half-map carries
# half the deformation, so the full map stays clear of folds).
MIN_HALF_DET = 0.2


@dataclass(frozen=True)
class Snapshot:
    """What one iteration reports.

    Attributes
    ----------
    level : int
        0 is the coarsest level.
    iteration : int
        Iteration within the level, from 0.
    energy : float
        -MI between the two half-way images (lower is better).
    update : ndarray (n0, n1, n2, 3)
        The forward (moving-side) update field of this iteration, mm, on the level grid.
    joint_histogram : ndarray (bins, bins)
    warped_moving : ndarray or None
        The moving image resampled into fixed space at this level's resolution, when asked.
    level_affine : ndarray (4, 4)
        Voxel-to-world matrix of the level grid.
    """

    level: int
    iteration: int
    energy: float
    update: np.ndarray
    joint_histogram: np.ndarray
    warped_moving: np.ndarray | None
    level_affine: np.ndarray
    state: tuple = field(default=(), repr=False, compare=False)

    def warp(self, image, interpolation="linear"):
        """Resample a moving-space image by this iteration's map onto the full fixed grid.

        For live views: it costs a composition at the level's resolution and one
        resampling at full resolution, so call it only for the frames that are shown.

        Parameters
        ----------
        image : Volume
            An image or label map of the moving space (any grid).
        interpolation : {"linear", "nearest"}
        """
        inverse_fixed, forward_moving, fixed_grid, prealign = self.state
        forward = _regrid(
            [_forward(inverse_fixed, forward_moving, self.level_affine)],
            self.level_affine,
            fixed_grid.shape,
            fixed_grid.affine,
        )[0]
        return apply_transforms(
            image,
            fixed_grid,
            [DisplacementField(forward, fixed_grid), AffineMap(prealign)],
            interpolation,
        )


class SymmetricDiffeomorphicRegistration:
    """Greedy symmetric diffeomorphic registration with an MI metric.

    Parameters
    ----------
    metric : MutualInformation
    level_iters : sequence of int
        Iterations per level, coarsest first; level k of L is shrunk by ``2 ** (L - 1 - k)``
        and smoothed with sigma ``shrink / 2`` voxels (ANTs: shrink 4, 2, 1; sigma 2, 1, 0).
    step_length : float
        Largest step of an update, in voxels of the current level.
    update_sigma : float
        Gaussian sigma (voxels) applied to each update (ANTs ``SyN[step, 3, 0]``: 1.73).
    inv_iter, inv_tol : int, float
        Fixed-point iterations and tolerance (voxels) of the inversion of each map after an
        update; Newton steps finish the voxels where they fall short (see `fields.invert`).
        Started from the first-order inverse of the updated map, 2 iterations leave a last
        change of 0.01-0.03 voxel and give the same maps as 20 (measured: Dice, inverse
        consistency, det J).
    opt_tol : float
        A level stops when the energy's slope over the last `convergence_window`
        iterations, relative to its size, is above ``-opt_tol``.
    convergence_window : int
    field_sigma : float
        Gaussian sigma (voxels) applied to each half-map after an update is composed into
        it (greedy's ``-s`` second value, ANTs' total-field variance); 0: none.
    """

    def __init__(
        self,
        metric,
        level_iters=(40, 20, 10),
        step_length=0.25,
        update_sigma=1.73,
        inv_iter=2,
        inv_tol=1e-3,
        opt_tol=1e-5,
        convergence_window=10,
        field_sigma=0.0,
    ):
        self.metric = metric
        self.level_iters = tuple(
            positive_int(n, "level_iters entries", minimum=0) for n in level_iters
        )
        if not self.level_iters:
            raise ValueError("level_iters must name at least one level")
        if not step_length > 0 or not update_sigma >= 0:
            raise ValueError("step_length must be > 0 and update_sigma >= 0")
        self.step_length = float(step_length)
        self.update_sigma = float(update_sigma)
        self.inv_iter = positive_int(inv_iter, "inv_iter")
        self.inv_tol = float(inv_tol)
        self.opt_tol = float(opt_tol)
        self.convergence_window = positive_int(convergence_window, "convergence_window", minimum=2)
        if not field_sigma >= 0:
            raise ValueError("field_sigma must be >= 0")
        self.field_sigma = float(field_sigma)
        self.mapping = None
        self.energies = []

    def optimize(self, fixed, moving, **options):
        """Run :meth:`iterate` to the end and return the DiffeomorphicMap."""
        for _ in self.iterate(fixed, moving, **options):
            pass
        return self.mapping

    def iterate(
        self,
        fixed,
        moving,
        *,
        fixed_affine=None,
        moving_affine=None,
        prealign=None,
        fixed_mask=None,
        moving_mask=None,
        with_images=False,
        initial=None,
    ):
        """Register, yielding a Snapshot per iteration; the result lands in ``self.mapping``.

        Parameters
        ----------
        fixed, moving : ndarray or nibabel image
            2D or 3D images; arrays take `fixed_affine` / `moving_affine` (identity by
            default). The grids may differ in shape, voxel size and orientation.
        prealign : ndarray (4, 4), optional
            World transform from fixed points to moving points found beforehand (affine).
        fixed_mask : ndarray of bool, optional
            Voxels of the fixed grid where the metric counts.
        moving_mask : ndarray of bool, optional
            Voxels of the moving grid where the metric counts. With it, both masks are
            carried to the half-way space by their half-maps (with the images, in the
            same resampling pass) and a voxel counts where both are inside.
        with_images : bool
            Put the moving image, warped into fixed space at the level's resolution, in each
            Snapshot (costs one composition and one resampling per iteration).
        initial : DiffeomorphicMap, optional
            Continue from this map (same fixed grid): its fields seed the finest level's
            half-way maps, so only the levels that remain refine it.

        Yields
        ------
        Snapshot

        Stopping the iteration (``close()`` or leaving a for loop) stops all work: nothing
        runs between two iterations.
        """
        fixed_volume = as_volume(fixed, fixed_affine, "fixed")
        moving_volume = as_volume(moving, moving_affine, "moving")
        if fixed_volume.ndim != moving_volume.ndim:
            raise ValueError(f"fixed is {fixed_volume.ndim}D but moving is {moving_volume.ndim}D")
        prealign = _prealign_matrix(prealign, fixed_volume.ndim)
        mask = mask_volume(fixed_mask, fixed_volume)
        moving_mask = mask_volume(moving_mask, moving_volume, "moving_mask")
        for name, volume in (("fixed", fixed_volume), ("moving", moving_volume)):
            if np.ptp(volume.data) == 0:
                raise ValueError(
                    f"{name} image is constant (every voxel is {float(volume.data.flat[0]):g})"
                )

        self.energies = []
        self.mapping = None
        levels = len(self.level_iters)
        half_fixed = half_moving = None
        previous_affine = None
        for level, iterations in enumerate(self.level_iters):
            pyramid = pyramid_level(fixed_volume, moving_volume, mask, level, levels)
            shape, affine, mask_level = pyramid.shape, pyramid.affine, pyramid.mask
            fixed_level, moving_source = pyramid.fixed, pyramid.moving
            # A mask rides along as a channel, warped with its image, so it stays on the
            # anatomy it marks at the half-way point (a fixed mask alone too).
            masked = mask_level is not None or moving_mask is not None
            if masked:
                fixed_level, moving_source = _with_mask_channels(pyramid, moving_mask)
            if half_fixed is None:
                half_fixed, half_moving = _initial_half_maps(initial, shape, affine)
            else:
                half_fixed = _regrid(half_fixed, previous_affine, shape, affine)
                half_moving = _regrid(half_moving, previous_affine, shape, affine)
            previous_affine = affine
            step_mm = self.step_length * fields.voxel_sizes(affine).min()
            level_energies = []
            for iteration in range(iterations):
                # Edges are replicated, so a map reaching past the border samples the edge
                # tissue rather than a zero-filled step.
                warped_fixed = fields.resample(
                    fixed_level, affine, shape, affine, field=half_fixed[0], clamp=True
                )
                warped_moving = fields.resample(
                    moving_source,
                    moving_volume.affine,
                    shape,
                    affine,
                    field=half_moving[0],
                    prealign=prealign,
                    clamp=True,
                )
                counted = None
                if masked:
                    warped_fixed, warped_moving, counted = _split_masks(
                        warped_fixed, warped_moving, mask_level
                    )
                value, forward_update = self.metric.dense_gradient(
                    warped_fixed, warped_moving, mask=counted, grid_to_world=affine
                )
                histogram = self.metric.joint_histogram
                _, backward_update = self.metric.dense_gradient(
                    warped_moving, warped_fixed, mask=counted, grid_to_world=affine
                )
                forward_update = _regularised(forward_update, self.update_sigma, step_mm)
                backward_update = _regularised(backward_update, self.update_sigma, step_mm)
                # Adaptive step: a step that would bring a half-map near a fold (det J
                # below MIN_HALF_DET) is halved until it does not (this iteration only).
                this_step = step_mm
                while True:
                    moved = self._step(half_moving, forward_update, affine)
                    fixed_moved = self._step(half_fixed, backward_update, affine)
                    smallest = min(
                        _smallest_det(moved[0], affine), _smallest_det(fixed_moved[0], affine)
                    )
                    if smallest >= MIN_HALF_DET or this_step <= self.min_step_mm(affine):
                        break
                    this_step *= 0.5
                    forward_update *= 0.5
                    backward_update *= 0.5
                half_moving, half_fixed = moved, fixed_moved
                level_energies.append(-value)
                self.energies.append(-value)
                warped = None
                if with_images:
                    forward = _forward(half_fixed[1], half_moving[0], affine)
                    warped = fixed_volume.user_array(
                        fields.resample(
                            moving_volume.data,
                            moving_volume.affine,
                            shape,
                            affine,
                            field=forward,
                            prealign=prealign,
                        )
                    )
                yield Snapshot(
                    level,
                    iteration,
                    -value,
                    fixed_volume.user_array(forward_update),
                    histogram,
                    warped,
                    affine,
                    (half_fixed[1], half_moving[0], fixed_volume, prealign),
                )
                if self._converged(level_energies):
                    break

        shape, affine = fixed_volume.shape, fixed_volume.affine
        half_fixed = _regrid(half_fixed, previous_affine, shape, affine)
        half_moving = _regrid(half_moving, previous_affine, shape, affine)
        forward = _forward(half_fixed[1], half_moving[0], affine)
        backward = _forward(half_moving[1], half_fixed[0], affine)
        self.mapping = DiffeomorphicMap(fixed_volume, moving_volume, prealign, forward, backward)

    def _step(self, half_map, update, affine):
        """Compose an update into a half-way map (phi <- phi o (Id + u)) and re-invert it.

        The inversion starts from (Id - u) o phi^-1, the first-order inverse of the new map
        built from the previous inverse, which leaves it a tenth of the work of starting
        from the previous inverse itself. Then, as ANTs' SyN does, the map is replaced by
        the inverse of its inverse (one fixed-point step from the map itself), so the pair
        stays consistent; measured on the 2 mm known-deformation pair, this raises WM Dice
        from 0.926 to 0.943 and lowers the error from 1.02 to 0.74 mm.
        """
        field = fields.compose(update, half_map[0], affine)
        if self.field_sigma > 0:
            field = fields.smooth(field, (self.field_sigma,) * 3)
            _zero_boundary(field)
        guess = fields.resample(
            update, affine, update.shape[:3], affine, field=half_map[1], clamp=True
        )
        np.subtract(half_map[1], guess, out=guess)  # w - u(x + w): compose(w, -u)
        inverse, _ = fields.invert(
            field, affine, initial=guess, max_iterations=self.inv_iter, tolerance=self.inv_tol
        )
        field, _ = fields.invert(
            inverse,
            affine,
            initial=field,
            max_iterations=1,
            tolerance=self.inv_tol,
            polish_tolerance=0.1,
        )
        return [field, inverse]

    def min_step_mm(self, affine):
        """The smallest step the adaptive step goes down to (a sixteenth of step_length)."""
        return self.step_length / 16.0 * fields.voxel_sizes(affine).min()

    def _converged(self, energies):
        """True when the energy's slope over the window is no longer clearly negative."""
        window = self.convergence_window
        if len(energies) < window:
            return False
        recent = np.asarray(energies[-window:])
        slope = np.polyfit(np.arange(window), recent, 1)[0]
        return slope / max(abs(recent.mean()), 1e-12) > -self.opt_tol


def _with_mask_channels(pyramid, moving_mask):
    """Level images with their masks as a second channel (all ones for a side without)."""
    fixed_mask = np.ones(pyramid.shape) if pyramid.mask is None else pyramid.mask
    moving_mask = np.ones(pyramid.moving.shape) if moving_mask is None else moving_mask.data
    fixed = np.stack([pyramid.fixed, fixed_mask.astype(np.float32)], axis=-1)
    moving = np.stack([pyramid.moving, moving_mask.astype(np.float32)], axis=-1)
    return fixed, moving


def _split_masks(warped_fixed, warped_moving, fallback):
    """Images and the voxels inside both warped masks (`fallback` if they do not meet)."""
    counted = (warped_fixed[..., 1] > 0.5) & (warped_moving[..., 1] > 0.5)
    fixed = np.ascontiguousarray(warped_fixed[..., 0])
    moving = np.ascontiguousarray(warped_moving[..., 0])
    return fixed, moving, (counted if counted.any() else fallback)


def _smallest_det(field, affine):
    """The smallest Jacobian determinant of x -> x + field(x)."""
    return float(fields.jacobian_determinant(field, affine).min())


def _forward(inverse_first, second, affine):
    """The full map from two half-way maps: the inverse of one, then the other."""
    return fields.compose(inverse_first, second, affine)


def _regularised(update, sigma, step_mm):
    """Zero an update on the boundary, smooth it, and scale its largest step to `step_mm`.

    Zeroing before smoothing (edges replicated) lets the update taper to zero towards the
    border; zeroing after a hard edge would leave a jump that compounds into folds.
    """
    _zero_boundary(update)
    smoothed = fields.smooth(update, (sigma,) * 3) if sigma > 0 else update
    _zero_boundary(smoothed)
    largest = fields.largest_length(smoothed)
    if largest > 0:
        smoothed *= step_mm / largest
    return smoothed


def _zero_boundary(field):
    """Set the outermost layer of a (n0, n1, n2, 3) field to zero, in place."""
    for axis in range(3):
        if field.shape[axis] > 1:
            index = [slice(None)] * 4
            index[axis] = [0, -1]
            field[tuple(index)] = 0


def _regrid(half_map, from_affine, shape, affine):
    """A half-way map (field and inverse) on another grid; values are mm, so unchanged.

    Nothing is resampled when the grid is already the wanted one (the finest level).
    """
    if half_map[0].shape[:3] == shape and np.array_equal(from_affine, affine):
        return half_map
    return [fields.resample(f, from_affine, shape, affine, clamp=True) for f in half_map]


def _initial_half_maps(initial, shape, affine):
    """Zero half-way maps, or ones seeded from a map to continue (fixed side identity)."""
    zero = np.zeros(shape + (3,), dtype=np.float32)
    if initial is None:
        return [zero, zero.copy()], [zero.copy(), zero.copy()]
    grid = initial.fixed_grid
    forward = fields.resample(initial.forward, grid.affine, shape, affine, clamp=True)
    backward = fields.resample(initial.backward, grid.affine, shape, affine, clamp=True)
    return [zero, zero.copy()], [forward, backward]


def _prealign_matrix(prealign, ndim):
    if prealign is None:
        return np.eye(4)
    matrix = np.asarray(getattr(prealign, "matrix", prealign), dtype=np.float64)
    if ndim == 2 and matrix.shape == (3, 3):
        matrix = fields.embed_matrix(matrix, 4)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"prealign must be a finite {ndim + 1}x{ndim + 1} matrix")
    return matrix
