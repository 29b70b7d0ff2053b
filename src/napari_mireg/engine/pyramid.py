"""Coarse-to-fine levels shared by the affine and the SyN stages."""

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from napari_mireg.engine import fields
from napari_mireg.engine.transforms import Volume, as_volume

# Room (mm) around the anatomies for the dense fields: every update is zeroed on the box's
# boundary and smoothed, so this is where the displacement tapers to zero. 24 mm gave the
# same overlap on the calibration pairs as 8 mm and took a quarter longer at 1 mm, where
# the margin was a third of the box's voxels (docs/engine.md).
BOX_MARGIN_MM = 8.0


@dataclass(frozen=True)
class Level:
    """One resolution level.

    Attributes
    ----------
    shape, affine : tuple, ndarray (4, 4)
        The level grid (a coarser grid over the fixed image).
    fixed : ndarray
        The fixed image, smoothed and resampled on the level grid.
    moving : ndarray
        The moving image smoothed alike, on its own grid (or a coarser grid over it, see
        :func:`pyramid_level`).
    mask : ndarray of bool or None
        The fixed mask on the level grid.
    moving_affine : ndarray (4, 4)
        Voxel-to-world matrix of `moving`.
    fine_fixed, fine_mask, fine_affine : ndarray or None
        With ``carried_finer`` (:func:`pyramid_level`), where the two images lie on one
        lattice: the smoothed fixed image and its mask on a grid that many times finer
        than the level grid, through its points, and its voxel-to-world matrix; else None.
    """

    shape: tuple
    affine: np.ndarray
    fixed: np.ndarray
    moving: np.ndarray
    mask: np.ndarray | None
    moving_affine: np.ndarray
    fine_fixed: np.ndarray | None = None
    fine_mask: np.ndarray | None = None
    fine_affine: np.ndarray | None = None


def level_grid(
    shape: Sequence[int], affine: npt.NDArray[np.floating], factor: int | npt.ArrayLike
) -> tuple[tuple[int, ...], npt.NDArray[np.float64]]:
    """Shape and voxel-to-world matrix of a grid `factor` times coarser (centred blocks);
    `factor` is one integer or one per axis.
    """
    factors = np.where(np.array(shape) > 1, np.broadcast_to(factor, (len(shape),)), 1)
    coarse_shape = tuple(int(n) for n in np.ceil(np.array(shape) / factors))
    index_scale = np.diag(np.append(factors.astype(float), 1.0))
    index_scale[:3, 3] = (factors - 1) / 2.0
    return coarse_shape, affine @ index_scale


def mask_volume(
    mask: npt.ArrayLike | None, volume: Volume, name: str = "fixed_mask"
) -> Volume | None:
    """A mask on `volume`'s grid as a uint8 Volume, or None; it must select a voxel."""
    if mask is None:
        return None
    masked = as_volume(np.asarray(mask).astype(np.uint8), volume.affine, name, dtype=np.uint8)
    side = name.split("_")[0]
    if masked.shape != volume.shape or not masked.data.any():
        raise ValueError(f"{name} must have the {side} shape and select a voxel")
    return masked


def pyramid_level(
    fixed_volume: Volume,
    moving_volume: Volume,
    mask: Volume | None,
    level: int,
    levels: int,
    *,
    shrink_moving: bool = False,
    moving_finer: int = 2,
    prealign: npt.NDArray[np.floating] | None = None,
    carried_finer: int = 1,
    carry_unshrunk: bool = False,
    threads: int | None = None,
) -> Level:
    """Level `level` of `levels` (0 coarsest): shrink 2 ** (levels - 1 - level), smoothing
    sigma half the shrink in fixed voxels (ANTs: shrink 4, 2, 1 with sigma 2, 1, 0).

    With `shrink_moving`, the smoothed moving image is also resampled on a coarser grid
    over its own, as many of its voxels to a block as fit in half the fixed level's voxel
    (at least 1), so that it stays twice as fine as the level grid (docs/maths.md,
    section 5). The affine stage samples the moving image and its gradient a hundred times
    a level: on a 256^3 head the full-resolution copies cost more than the iterations.
    `moving_finer` sets how many times finer than the level grid the moving grid stays:
    2 for the affine stage and the non-symmetric SyN, 1 for the symmetric SyN, whose
    coarse levels then compare two images smoothed and sampled alike. With `prealign`
    (fixed world to moving world), a coarse moving grid whose axes the prealignment carries
    onto the level grid's (up to order and direction) is that level grid carried over
    (:func:`carried_grid`), so that an image and a copy of it on another grid are sampled
    at the same points.

    With `carried_finer` (> 1, a coarse level), when the level grid carried over
    `carried_finer` times finer exists (two images on one lattice, up to order, direction
    and shift), the moving image is on that grid and the fixed image on the same lattice
    over the fixed grid (`Level.fine_fixed`): both sides sampled alike, finer than the
    level grid. Otherwise `moving_finer` applies and there is no `fine_fixed`.

    `threads` limits the smoothing and resampling kernels (None: all cores).

    With `carry_unshrunk` (the SyN), a coarse level's moving grid is carried over even when
    no moving voxels are merged (a block of 1): partial volume counts the moving voxels
    around each point, and on the image's own grid the level grid's points would sit half
    a voxel off them.
    """
    shrink = 2 ** (levels - 1 - level)
    shape, affine = level_grid(fixed_volume.shape, fixed_volume.affine, shrink)
    sigma_mm = shrink / 2.0 * fixed_volume.spacing.min() if shrink > 1 else 0.0
    smoothed = fields.smooth(fixed_volume.data, sigma_mm / fixed_volume.spacing, threads=threads)
    fixed = fields.resample(smoothed, fixed_volume.affine, shape, affine, threads=threads)
    moving = fields.smooth(moving_volume.data, sigma_mm / moving_volume.spacing, threads=threads)
    level_mask = _mask_on(mask, shape, affine, threads)
    finer = min(carried_finer, shrink)
    if shrink_moving and finer > 1 and prealign is not None:
        factors = _moving_factors(shrink, finer, fixed_volume, moving_volume)
        carried = None
        if (factors == factors[0]).all():
            carried = carried_grid(
                moving.shape, moving_volume.affine, prealign, affine, factors[0], finer
            )
        # The level grid is the fixed grid shrunk, so it carries over onto that grid too.
        fine = carried_grid(
            fixed_volume.shape, fixed_volume.affine, np.eye(4), affine, shrink // finer, finer
        )
        if carried is not None and fine is not None:
            moving_shape, moving_affine = carried
            moving = _resampled(moving, moving_volume.affine, moving_shape, moving_affine, threads)
            fine_shape, fine_affine = fine
            fine_fixed = _resampled(smoothed, fixed_volume.affine, fine_shape, fine_affine, threads)
            fine_mask = _mask_on(mask, fine_shape, fine_affine, threads)
            return Level(
                shape,
                affine,
                fixed,
                moving,
                level_mask,
                moving_affine,
                fine_fixed,
                fine_mask,
                fine_affine,
            )
    moving_affine = moving_volume.affine
    if shrink_moving and shrink > 1:
        factors = _moving_factors(shrink, moving_finer, fixed_volume, moving_volume)
        moving_shape, moving_affine = moving.shape, moving_volume.affine
        if factors.max() > 1:
            moving_shape, moving_affine = level_grid(moving.shape, moving_volume.affine, factors)
        # With `carry_unshrunk` also where the moving grid is already as fine as asked
        # (factor 1): its voxels sit half a voxel off the level grid's points, and partial
        # volume would pull an image registered to itself that half voxel onto them.
        carry = factors.max() > 1 or carry_unshrunk
        if carry and prealign is not None and (factors == factors[0]).all():
            carried = carried_grid(
                moving.shape, moving_volume.affine, prealign, affine, factors[0], moving_finer
            )
            if carried is not None:
                moving_shape, moving_affine = carried
        if moving_affine is not moving_volume.affine:
            moving = _resampled(moving, moving_volume.affine, moving_shape, moving_affine, threads)
    return Level(shape, affine, fixed, moving, level_mask, moving_affine)


def _resampled(image, image_affine, shape, affine, threads):
    """A smoothed image on another grid over its own, edges clamped (a level's image)."""
    return fields.resample(image, image_affine, shape, affine, clamp=True, threads=threads)


def _moving_factors(shrink, finer, fixed_volume, moving_volume):
    """Moving voxels to a block, per axis: as many as fit in a `finer`-th of the level's voxel.

    Per axis, so that a thick-slice axis is not shrunk past the level's voxel. The
    tolerance keeps an exact ratio (4 x 1.5 mm / 1 mm / 2 = 3) from rounding down.
    """
    level_mm = shrink * fixed_volume.spacing.min() / finer
    return np.maximum(1, np.floor(level_mm / moving_volume.spacing + 1e-6)).astype(int)


def _mask_on(mask, shape, affine, threads=None):
    """A mask Volume (or None) on a grid, by nearest neighbour, as bool."""
    if mask is None:
        return None
    on_grid = fields.resample(
        mask.data, mask.affine, shape, affine, interpolation="nearest", threads=threads
    )
    return on_grid.astype(bool)


def carried_grid(
    moving_shape: Sequence[int],
    moving_affine: npt.NDArray[np.floating],
    prealign: npt.NDArray[np.floating],
    level_affine: npt.NDArray[np.floating],
    factor: int,
    finer: int = 1,
) -> tuple[tuple[int, ...], npt.NDArray[np.float64]] | None:
    """The level grid carried onto the moving image by the prealignment, or None.

    When the prealignment takes the level grid's axes onto the moving grid's,
    ``factor * finer`` moving voxels to a level voxel (within 5 %, up to their order and
    direction), the coarse moving grid is a lattice through the level grid's points in
    moving space, `finer` of its voxels to a level voxel: its voxel ``m`` lies at moving
    index ``factor * P m + o``, with ``P`` the signed permutation and ``o`` where the
    level grid's first voxel lands, extended to cover the whole moving grid. Blocks taken
    from the moving grid's own first voxel would sit up to half a level voxel off the
    level grid's points whenever an axis is flipped or the images' extents differ.

    Returns
    -------
    (shape, affine) or None
        The grid's shape and voxel-to-world matrix; None when the axes do not correspond.
    """
    to_moving = np.linalg.inv(moving_affine) @ prealign @ level_affine
    linear = to_moving[:3, :3] / (factor * finer)
    permutation = np.rint(linear)
    if not (
        (np.abs(permutation).sum(axis=0) == 1).all()
        and (np.abs(permutation).sum(axis=1) == 1).all()
        and np.abs(linear - permutation).max() < 0.05
    ):
        return None
    step = factor * permutation
    origin = to_moving[:3, 3]
    extent = np.array(moving_shape, dtype=float) - 1
    corners = np.array(np.meshgrid(*[(0.0, n) for n in extent])).reshape(3, -1).T
    levels = (corners - origin) @ np.linalg.inv(step).T
    low = np.floor(levels.min(axis=0) + 1e-6)
    high = np.ceil(levels.max(axis=0) - 1e-6)
    index = np.eye(4)
    index[:3, :3] = step
    index[:3, 3] = origin + step @ low
    return tuple(int(n) for n in high - low + 1), moving_affine @ index


def foreground(image: npt.NDArray[np.floating], margin: int = 2) -> npt.NDArray[np.bool_]:
    """The voxels of an image's anatomy, widened by `margin` voxels.

    The anatomy is as in :func:`anatomy_extent`: more than 2 % of the robust range (0.5th
    to 99.5th percentile) above its low end.
    """
    sample = image.ravel()[:: max(1, image.size // 1_000_000)]
    low, high = np.percentile(sample, [0.5, 99.5])
    inside = image > low + 0.02 * (high - low)
    if margin > 0 and inside.any():
        inside = ndimage.binary_dilation(inside, iterations=margin)
    return inside


def anatomy_extent(
    volume: Volume, mask: Volume | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Lowest and highest voxel index (float, per axis) of a volume's anatomy.

    The anatomy is the mask (a Volume on the same grid), or the voxels more than 2 % of the
    robust range (0.5th to 99.5th percentile) above its low end; slices with only specks
    of it (noise far out in the background) do not count.
    """
    data = volume.data
    if mask is not None:
        inside = mask.data.astype(bool)
    else:
        sample = data.ravel()[:: max(1, data.size // 1_000_000)]
        low, high = np.percentile(sample, [0.5, 99.5])
        inside = data > low + 0.02 * (high - low)
    first, last = np.zeros(3), np.array(data.shape, dtype=float) - 1
    if not inside.any():
        return first, last
    for axis, size in enumerate(data.shape):
        counts = inside.sum(axis=tuple(a for a in range(3) if a != axis))
        kept = np.flatnonzero(counts >= max(1, int(1e-3 * data.size / size)))
        if kept.size == 0:
            kept = np.flatnonzero(counts)
        first[axis], last[axis] = kept[0], kept[-1]
    return first, last


def registration_box(
    fixed: Volume,
    moving: Volume,
    prealign: npt.NDArray[np.floating],
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
    margin_mm: float = BOX_MARGIN_MM,
) -> tuple[slice, ...]:
    """Slices of the fixed grid that hold both anatomies (the moving one placed by
    `prealign`), widened by `margin_mm` on each side and kept inside the grid.

    The dense fields only need to live there: away from the anatomy the displacement is
    zero anyway (every update is zeroed on the grid's boundary and smoothed), and brain
    images often carry half their field of view as background. Both anatomies count: the
    room to move one onto the other is what keeps the fields clear of folds near the box's
    edge.
    """
    low, high = anatomy_extent(fixed, fixed_mask)
    moving_low, moving_high = anatomy_extent(moving, moving_mask)
    corners = np.ones((8, 4))
    corners[:, :3] = (
        np.array(np.meshgrid(*np.stack([moving_low, moving_high], axis=1))).reshape(3, -1).T
    )
    to_fixed_index = np.linalg.inv(fixed.affine) @ np.linalg.inv(prealign) @ moving.affine
    placed = (corners @ to_fixed_index.T)[:, :3]
    low = np.minimum(low, placed.min(axis=0))
    high = np.maximum(high, placed.max(axis=0))
    return _widened(low, high, fixed, margin_mm)


def anatomy_box(
    volume: Volume, mask: Volume | None = None, margin_mm: float = BOX_MARGIN_MM
) -> tuple[slice, ...]:
    """Slices of a Volume's grid around its anatomy (:func:`anatomy_extent`), widened by
    `margin_mm` on each side and kept inside the grid.
    """
    return _widened(*anatomy_extent(volume, mask), volume, margin_mm)


def _widened(low, high, volume, margin_mm):
    """Slices from voxel indices `low` to `high` (float, per axis), `margin_mm` wider."""
    margin = margin_mm / volume.spacing
    box = []
    for axis, size in enumerate(volume.shape):
        start = int(np.clip(np.floor(low[axis] - margin[axis]), 0, size - 1))
        stop = int(np.clip(np.ceil(high[axis] + margin[axis]) + 1, start + 1, size))
        box.append(slice(0, size) if size == 1 else slice(start, stop))
    return tuple(box)


def crop(volume: Volume, box: tuple[slice, ...]) -> Volume:
    """The part `box` (slices of the grid) of a Volume, with its voxel-to-world matrix."""
    start = np.array([s.start for s in box] + [1.0])
    affine = volume.affine.copy()
    affine[:, 3] = volume.affine @ start
    return Volume(np.ascontiguousarray(volume.data[box]), affine, volume.ndim)


def within_mask(level: Level) -> Level:
    """The Level cut down to the bounding box of its fixed mask (as it is without one).

    A metric that counts only masked voxels gives the same value and gradient on it; what
    it saves is the resampling of the voxels around, most of the grid for a brain mask in
    a head's field of view.
    """
    if level.mask is None:
        return level
    box = []
    for axis in range(3):
        counts = level.mask.any(axis=tuple(a for a in range(3) if a != axis))
        kept = np.flatnonzero(counts)
        box.append(slice(int(kept[0]), int(kept[-1]) + 1))
    fixed = crop(Volume(level.fixed, level.affine, 3), tuple(box))
    mask = np.ascontiguousarray(level.mask[tuple(box)])
    return replace(level, shape=fixed.shape, affine=fixed.affine, fixed=fixed.data, mask=mask)
