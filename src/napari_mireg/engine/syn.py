"""Symmetric diffeomorphic registration (greedy SyN) driven by mutual information.

Two maps meet in the middle: ``phi_fixed`` carries the fixed image and ``phi_moving`` the
moving image half way (docs/maths.md, section 6); with ``symmetric=False`` the fixed image
stays put and ``phi_moving`` goes all the way. Fields are world displacements (mm) on the
box of the fixed grid around the anatomy, coarse to fine; the inverses are solved once, at
the end (docs/engine.md).
"""

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from napari_mireg._typing import Image, Interpolation, Matrix
from napari_mireg.engine import fields
from napari_mireg.engine._validate import positive_int
from napari_mireg.engine.buffers import release_kept_buffers, reused_buffers
from napari_mireg.engine.metric import SynMetric
from napari_mireg.engine.partial_volume import grids_aligned
from napari_mireg.engine.pyramid import (
    BOX_MARGIN_MM,
    Level,
    crop,
    mask_volume,
    pyramid_level,
    registration_box,
)
from napari_mireg.engine.steps import run_to_end
from napari_mireg.engine.transforms import (
    AffineMap,
    DiffeomorphicMap,
    DisplacementField,
    Volume,
    apply_transforms,
    as_volume,
)

# A half-map's det J below this, or above its reciprocal, after an update halves the step:
# each half-map carries half the deformation, so the full map stays clear of folds, and
# neither a half-map nor its inverse squeezes a voxel below a tenth of its volume (the
# inversion at the end still converges there). The one map of the non-symmetric mode
# carries both halves, so its bound is the square: the full map's range is the same in
# both modes. Tighter bounds held the maps back where ventricles or sulci must grow or
# shrink several-fold: 0.2 cost 0.019 (symmetric) and 0.010 (non-symmetric) mean Dice on
# the 1 mm calibration pairs, and nothing at 2 mm, where the bound never binds
# (docs/engine.md).
MIN_HALF_DET = 0.1
# The inverse maps are solved to this residual (voxels): the result's inverse consistency.
INVERSE_TOLERANCE = 0.05


@dataclass(frozen=True)
class Snapshot:
    """What one iteration reports.

    Attributes
    ----------
    phase : "syn"
        What :func:`napari_mireg.engine.registration.register_steps` is doing (a class
        attribute: the prealignment's steps say "prealignment").
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
    phase: ClassVar[str] = "syn"

    def warp(self, image: "Image | Volume", interpolation: Interpolation = "linear") -> np.ndarray:
        """Resample a moving-space image by this iteration's map onto the full fixed grid.

        For live views: it costs a composition at the level's resolution and one
        resampling at full resolution, so call it only for the frames that are shown.

        Parameters
        ----------
        image : Volume
            An image or label map of the moving space (any grid).
        interpolation : {"linear", "nearest"}
        """
        half_fixed, half_moving, fixed_grid, prealign = self.state
        forward = _regrid(
            _forward(_live_inverse(half_fixed, self.level_affine), half_moving, self.level_affine),
            self.level_affine,
            fixed_grid.shape,
            fixed_grid.affine,
        )
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
    metric : SynMetric
        The MI whose gradient drives the maps (:class:`~napari_mireg.engine.metric.SynMetric`):
        :class:`~napari_mireg.engine.metric.MutualInformation`, ITK's Mattes histogram of
        the images resampled half way, or :class:`~napari_mireg.engine.partial_volume.
        PartialVolumeMutualInformation`, the partial-volume histogram (docs/maths.md,
        section 7).
    level_iters : sequence of int
        Iterations per level, coarsest first; level k of L is shrunk by ``2 ** (L - 1 - k)``
        and smoothed with sigma ``shrink / 2`` voxels (ANTs: shrink 4, 2, 1; sigma 2, 1, 0).
    step_length : float
        Largest step of an update, in voxels of the current level.
    update_sigma : float
        Gaussian sigma (voxels) applied to each update (ANTs ``SyN[step, 3, 0]``: 1.73).
    inv_iter, inv_tol : int, float
        Fixed-point iterations and their tolerance (voxels) of the inversions at the end
        (`fields.invert`); Newton steps finish the voxels left above 0.05 voxel. Where a
        map stretches strongly the fixed-point iteration stalls or drifts, so more
        iterations buy little: 5 or 10 then Newton gave the same residuals as 50, in a
        third of the time, and 5 takes 40 % less time than 10 at 1 mm.
    opt_tol : float
        A level stops when the energy's slope over the last `convergence_window`
        iterations, relative to its size, is above ``-opt_tol``.
    convergence_window : int
    field_sigma : float
        Gaussian sigma (voxels) applied to each half-map after an update is composed into
        it (greedy's ``-s`` second value, ANTs' total-field variance); 0: none.
    margin_mm : float
        The fields are computed on the box of the fixed grid that holds both anatomies
        (masks, or the bright voxels: `pyramid.anatomy_extent`), the moving one placed by
        the prealignment, widened by this much; zero displacement outside it.
    symmetric : bool
        True: both images move half way (SyN). False: the fixed image stays on its grid
        and one map carries the moving image all the way (greedy's and demons' scheme:
        one image resampled and one gradient an iteration, and a crisp fixed image); the
        map's inverse is still solved at the end.
    """

    def __init__(
        self,
        metric: SynMetric,
        level_iters: Sequence[int] = (40, 20, 10),
        step_length: float = 0.25,
        update_sigma: float = 1.73,
        inv_iter: int = 5,
        inv_tol: float = 0.01,
        opt_tol: float = 1e-5,
        convergence_window: int = 10,
        field_sigma: float = 0.0,
        margin_mm: float = BOX_MARGIN_MM,
        symmetric: bool = True,
    ) -> None:
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
        if not margin_mm >= 0:
            raise ValueError("margin_mm must be >= 0")
        self.margin_mm = float(margin_mm)
        self.symmetric = bool(symmetric)
        self.mapping: DiffeomorphicMap | None = None
        self.energies: list[float] = []

    def optimize(
        self, fixed: "Image | Volume", moving: "Image | Volume", **options: Any
    ) -> DiffeomorphicMap:
        """Run :meth:`iterate` to the end and return the DiffeomorphicMap."""
        return run_to_end(self.iterate(fixed, moving, **options))

    def iterate(
        self,
        fixed: "Image | Volume",
        moving: "Image | Volume",
        *,
        fixed_affine: Matrix | None = None,
        moving_affine: Matrix | None = None,
        prealign: "Matrix | AffineMap | None" = None,
        fixed_mask: npt.ArrayLike | None = None,
        moving_mask: npt.ArrayLike | None = None,
        with_images: bool = False,
        initial: DiffeomorphicMap | None = None,
    ) -> Generator[Snapshot, None, DiffeomorphicMap]:
        """Register, yielding a Snapshot per iteration; returns the DiffeomorphicMap.

        The map is also kept in ``self.mapping`` (None until the last iteration).

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

        Returns
        -------
        DiffeomorphicMap
            As the generator's return value.

        Stopping the iteration (``close()`` or leaving a for loop) stops all work: nothing
        runs between two iterations.
        """
        fixed_volume = as_volume(fixed, fixed_affine, "fixed")
        moving_volume = as_volume(moving, moving_affine, "moving")
        check_images(fixed_volume, moving_volume)
        prealign = _prealign_matrix(prealign, fixed_volume.ndim)
        mask = mask_volume(fixed_mask, fixed_volume)
        moving_mask = mask_volume(moving_mask, moving_volume, "moving_mask")

        self.energies = []
        self.mapping = None
        # The fields live on the part of the fixed grid around the anatomy only.
        box = registration_box(
            fixed_volume, moving_volume, prealign, mask, moving_mask, self.margin_mm
        )
        domain = crop(fixed_volume, box)
        if mask is not None:
            mask = crop(mask, box)
        # Every iteration makes and drops the same large temporaries: their memory is
        # reused, and given back before the end's fields on the whole grid.
        with reused_buffers():
            half_fixed, half_moving, previous_affine = yield from self._levels(
                fixed_volume,
                domain,
                mask,
                moving_volume,
                moving_mask,
                prealign,
                with_images,
                initial,
            )

        shape, affine = domain.shape, domain.affine
        # Each map is dropped once the next is made from it: the inversions hold at most
        # four fields of the box at once, the padding two of the whole grid and one of the
        # box, below the iterations' seven.
        domain = mask = None
        threads = self.metric.threads
        half_fixed = _regrid(half_fixed, previous_affine, shape, affine, threads)
        half_moving = _regrid(half_moving, previous_affine, shape, affine, threads)
        forward = half_moving
        if self.symmetric:
            forward = _forward(
                self._final_inverse(half_fixed, affine), half_moving, affine, threads
            )
        del half_fixed, half_moving
        # The backward map is the inverse of the forward one, solved to `inv_tol`, rather
        # than phi_fixed o phi_moving^-1: composing two sampled fields leaves up to 0.15
        # voxel of inverse inconsistency where the maps bend most.
        backward = self._final_inverse(forward, affine)
        forward = _pad(forward, box, fixed_volume.shape)
        backward = _pad(backward, box, fixed_volume.shape)
        self.mapping = DiffeomorphicMap(fixed_volume, moving_volume, prealign, forward, backward)
        return self.mapping

    def _levels(
        self, fixed_volume, domain, mask, moving_volume, moving_mask, prealign, with_images, initial
    ):
        """The iterations of every level, coarse to fine (a generator of Snapshots).

        Returns the two half-way maps and the voxel-to-world matrix of the finest level.
        """
        levels = len(self.level_iters)
        threads = self.metric.threads
        half_fixed = half_moving = None
        previous_affine = None
        for level, iterations in enumerate(self.level_iters):
            # The moving image is smoothed like the fixed one and shrunk on the level grid
            # carried over by the prealignment where the axes correspond: an image and a
            # copy of it then meet at the same points, and their MI is highest where they
            # coincide (docs/maths.md, section 5). The one map of the non-symmetric mode
            # samples a moving grid twice as fine on the coarse levels (through the level
            # grid's points, so the identity still samples alike): not aligned with the
            # level grid, they keep the partial-volume histogram, which recovers a known
            # deformation on a shared grid better than Parzen's (0.99 against 1.24 mm).
            # The symmetric mode with partial volume does the same where the two images
            # lie on one lattice (the level grid carried over exists), with the fixed image
            # twice as fine too, so that its two sides still sample an image and a copy of
            # it alike; elsewhere its fixed side would still sample the level grid, and the
            # two half-maps would see the pair differently (0.59 mm at identity).
            coarse = level < levels - 1
            lattice_pv = self.symmetric and self.metric.fine_coarse_levels
            pyramid = pyramid_level(
                domain,
                moving_volume,
                mask,
                level,
                levels,
                shrink_moving=True,
                moving_finer=1 if self.symmetric or not coarse else 2,
                prealign=prealign,
                carried_finer=2 if coarse and lattice_pv else 1,
                carry_unshrunk=True,
                threads=threads,
            )
            shape, affine = pyramid.shape, pyramid.affine
            # Where the level starts, to go back to (the coarser maps are an eighth the size)
            start = None if half_fixed is None else (half_fixed, half_moving, previous_affine)
            half_fixed, half_moving = _level_start(start, initial, shape, affine, threads)
            previous_affine = affine
            step_mm = self.step_length * fields.voxel_sizes(affine).min()
            level_energies = []
            metric = self.metric.prepare(
                pyramid,
                _on_grid(moving_mask, pyramid.moving.shape, pyramid.moving_affine, threads),
                prealign,
                symmetric=self.symmetric,
            )
            # On one lattice the histogram is sharpest at whole-voxel offsets, so the maps
            # swing from step to step as they cross them: such a level ends half way
            # through its last step, at the mean of its last two maps.
            before_last = [] if lattice_pv and one_lattice(pyramid, prealign) else None
            pyramid = None  # the metric keeps what it needs of the level's images
            # Blocks kept from the coarser levels and from making this level's images fit
            # none of the arrays of this level's iterations.
            release_kept_buffers()
            for iteration in range(iterations):
                gradient = metric.value_and_gradient(half_fixed, half_moving)
                value, histogram = gradient.value, gradient.joint_histogram
                forward_update, backward_update = gradient.forward, gradient.backward
                # The raw gradients become the updates' smoothing buffers (_regularised).
                del gradient
                # Each half-map moves up to step_length a step; the one map of the
                # non-symmetric mode moves the two halves' worth.
                forward_update = _regularised(
                    forward_update,
                    self.update_sigma,
                    step_mm * (1 if self.symmetric else 2),
                    threads,
                )
                if backward_update is not None:
                    backward_update = _regularised(
                        backward_update, self.update_sigma, step_mm, threads
                    )
                # Adaptive step: a step that would bring a half-map or its inverse near a
                # fold (det J outside [floor, 1 / floor]) is halved until it does not (this
                # iteration only).
                this_step = step_mm
                floor = MIN_HALF_DET if self.symmetric else MIN_HALF_DET**2
                while True:
                    moved = self._step(half_moving, forward_update, affine)
                    smallest = _volume_change_bound(moved, affine, threads)
                    fixed_moved = half_fixed
                    if backward_update is not None:
                        fixed_moved = self._step(half_fixed, backward_update, affine)
                        smallest = min(smallest, _volume_change_bound(fixed_moved, affine, threads))
                    if smallest >= floor or this_step <= self.min_step_mm(affine):
                        break
                    del moved, fixed_moved  # before the next candidates are made
                    this_step *= 0.5
                    forward_update *= 0.5
                    if backward_update is not None:
                        backward_update *= 0.5
                if before_last is not None:
                    before_last[:] = (half_fixed, half_moving)
                half_moving, half_fixed = moved, fixed_moved
                level_energies.append(-value)
                self.energies.append(-value)
                warped = None
                if with_images:
                    forward = _forward(
                        _live_inverse(half_fixed, affine, threads),
                        half_moving,
                        affine,
                        threads,
                    )
                    warped = fixed_volume.user_array(
                        fields.resample(
                            moving_volume.data,
                            moving_volume.affine,
                            shape,
                            affine,
                            field=forward,
                            prealign=prealign,
                            threads=threads,
                        )
                    )
                    del forward
                yield Snapshot(
                    level,
                    iteration,
                    -value,
                    fixed_volume.user_array(forward_update),
                    histogram,
                    warped,
                    affine,
                    (half_fixed, half_moving, fixed_volume, prealign),
                )
                # The next gradient is taken without this iteration's updates alive.
                del forward_update, backward_update, warped
                if self._converged(level_energies):
                    break
            if level_energies:
                # Every step is scaled to step_length, whatever the gradient's size, so a
                # level that only follows noise (an image and itself) still moves the maps;
                # one that leaves the MI no higher than it found it is undone.
                if before_last:
                    half_fixed, half_moving = self._midway(
                        before_last, half_fixed, half_moving, affine
                    )
                    before_last = None
                value = metric.value(half_fixed, half_moving)
                if value <= -level_energies[0] * (1 + self.opt_tol):
                    half_fixed, half_moving = _level_start(start, initial, shape, affine, threads)
        return half_fixed, half_moving, previous_affine

    def _step(self, half_map, update, affine):
        """Compose an update into a half-way map (phi <- phi o (Id + u)) and smooth it.

        No inverse is kept up to date: the iterations only sample the images through the
        half-maps themselves, so a half-map is inverted once, at the end
        (:meth:`_final_inverse`), or when a live view asks for a frame.
        """
        threads = self.metric.threads
        field = fields.compose(update, half_map, affine, threads=threads)
        if self.field_sigma > 0:
            field = fields.smooth(
                field, (self.field_sigma,) * 3, overwrite_input=True, threads=threads
            )
            _zero_boundary(field)
        return field

    def _midway(self, before_last, half_fixed, half_moving, affine):
        """The mean of the last two maps of a level, unless it comes nearer a fold.

        Each map passed the det J bound of the adaptive step; their mean usually does too
        (they are one step apart), but the determinant is not convex, so it is checked.
        """
        fixed_mean = _mean(before_last[0], half_fixed)
        moving_mean = _mean(before_last[1], half_moving)
        threads = self.metric.threads
        smallest = min(
            _volume_change_bound(fixed_mean, affine, threads),
            _volume_change_bound(moving_mean, affine, threads),
        )
        if smallest < MIN_HALF_DET:
            return half_fixed, half_moving
        return fixed_mean, moving_mean

    def _final_inverse(self, field, affine):
        """The inverse of a map, solved to the tolerance the result is judged by."""
        inverse, _ = fields.invert(
            field,
            affine,
            max_iterations=self.inv_iter,
            tolerance=self.inv_tol,
            polish_tolerance=INVERSE_TOLERANCE,
            threads=self.metric.threads,
        )
        return inverse

    def min_step_mm(self, affine: np.ndarray) -> float:
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


def check_images(fixed: Volume, moving: Volume) -> None:
    """Refuse a pair the SyN cannot register: 2D against 3D, or a constant image.

    Raises
    ------
    ValueError
        Naming the image at fault.
    """
    if fixed.ndim != moving.ndim:
        raise ValueError(f"fixed is {fixed.ndim}D but moving is {moving.ndim}D")
    for name, volume in (("fixed", fixed), ("moving", moving)):
        if np.ptp(volume.data) == 0:
            raise ValueError(
                f"{name} image is constant (every voxel is {float(volume.data.flat[0]):g})"
            )


def one_lattice(level: Level, prealign: npt.ArrayLike) -> bool:
    """True when a pyramid level's two images lie on one lattice (up to a shift, the axes'
    order and direction): its sampling grids carried over each other (`Level.fine_fixed`),
    or the level grid landing on the moving grid's voxels (`partial_volume.grids_aligned`).
    """
    if level.fine_fixed is not None:
        return True
    return grids_aligned(np.linalg.inv(level.moving_affine) @ prealign @ level.affine)


def _mean(first, second):
    """(first + second) / 2 of two fields, in a new array."""
    mean = first + second
    mean *= 0.5
    return mean


def _volume_change_bound(field, affine, threads=None):
    """min(det J, 1 / det J) over the grid for x -> x + field(x).

    The strongest squeeze of the map or of its inverse: 1 for a rigid map, <= 0 where it
    folds.
    """
    smallest, largest = fields.jacobian_determinant_range(field, affine, threads=threads)
    return min(smallest, 1.0 / largest) if smallest > 0 else smallest


def _forward(inverse_first, second, affine, threads=None):
    """The full map from two half-way maps: the inverse of one, then the other."""
    return fields.compose(inverse_first, second, affine, threads=threads)


def _regularised(update, sigma, step_mm, threads=None):
    """Zero an update on the boundary, smooth it, and scale its largest step to `step_mm`.

    Zeroing before smoothing (edges replicated) lets the update taper to zero towards the
    border; zeroing after a hard edge would leave a jump that compounds into folds.
    `update` is overwritten (it serves as a buffer of the smoothing).
    """
    _zero_boundary(update)
    smoothed = (
        fields.smooth(update, (sigma,) * 3, overwrite_input=True, threads=threads)
        if sigma > 0
        else update
    )
    _zero_boundary(smoothed)
    largest = fields.largest_length(smoothed, threads=threads)
    if largest > 0:
        smoothed *= step_mm / largest
    return smoothed


def _zero_boundary(field):
    """Set the outermost layer of a (n0, n1, n2, 3) field to zero, in place."""
    for axis in range(3):
        if field.shape[axis] > 1:
            # two plain slices: a list index would gather a copy of both faces first
            for end in (0, -1):
                index = [slice(None)] * 4
                index[axis] = end
                field[tuple(index)] = 0


def _level_start(start, initial, shape, affine, threads=None):
    """The half-maps a level starts from: the previous level's `start` (maps and their
    grid's matrix) on this level's grid, or the initial maps at the first level.
    """
    if start is None:
        return _initial_half_maps(initial, shape, affine, threads)
    half_fixed, half_moving, from_affine = start
    return (
        _regrid(half_fixed, from_affine, shape, affine, threads),
        _regrid(half_moving, from_affine, shape, affine, threads),
    )


def _on_grid(mask, shape, affine, threads=None):
    """A moving mask (Volume or None) on the grid (`shape`, `affine`) of a level's moving
    image, by nearest neighbour; itself when it is on that grid already.
    """
    if mask is None or (mask.shape == tuple(shape) and np.array_equal(mask.affine, affine)):
        return mask
    resampled = fields.resample(
        mask.data, mask.affine, shape, affine, interpolation="nearest", threads=threads
    )
    return Volume(resampled, affine, mask.ndim)


def _regrid(field, from_affine, shape, affine, threads=None):
    """A displacement field on another grid; values are mm, so unchanged.

    Nothing is resampled when the grid is already the wanted one (the finest level).
    """
    if field.shape[:3] == shape and np.array_equal(from_affine, affine):
        return field
    return fields.resample(field, from_affine, shape, affine, clamp=True, threads=threads)


def _live_inverse(half_map, affine, threads=None):
    """A quick inverse of a half-map for a live frame.

    A few fixed-point steps, then Newton where they fall short of a tenth of a voxel.
    """
    if not half_map.any():
        return half_map
    inverse, _ = fields.invert(
        half_map, affine, max_iterations=4, polish_tolerance=0.1, threads=threads
    )
    return inverse


def _pad(field, box, shape):
    """A field of the cropped grid placed in a zero field of the whole grid."""
    if field.shape[:3] == tuple(shape):
        return field
    whole = np.zeros(tuple(shape) + (3,), dtype=np.float32)
    whole[box] = field
    return whole


def _initial_half_maps(initial, shape, affine, threads=None):
    """Zero half-way maps, or the moving one seeded from a map to continue."""
    zero = np.zeros(shape + (3,), dtype=np.float32)
    if initial is None:
        return zero, zero.copy()
    grid = initial.fixed_grid
    return zero, fields.resample(
        initial.forward, grid.affine, shape, affine, clamp=True, threads=threads
    )


def _prealign_matrix(prealign, ndim):
    if prealign is None:
        return np.eye(4)
    matrix = np.asarray(getattr(prealign, "matrix", prealign), dtype=np.float64)
    if ndim == 2 and matrix.shape == (3, 3):
        matrix = fields.embed_matrix(matrix, 4)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"prealign must be a finite {ndim + 1}x{ndim + 1} matrix")
    return matrix
