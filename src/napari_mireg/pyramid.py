"""Coarse-to-fine levels shared by the affine and the SyN stages."""

from dataclasses import dataclass

import numpy as np

from napari_mireg import fields
from napari_mireg.transforms import as_volume


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
        The moving image smoothed alike, on its own grid.
    mask : ndarray of bool or None
        The fixed mask on the level grid.
    """

    shape: tuple
    affine: np.ndarray
    fixed: np.ndarray
    moving: np.ndarray
    mask: np.ndarray | None


def level_grid(shape, affine, factor):
    """Shape and voxel-to-world matrix of a grid `factor` times coarser (centred blocks)."""
    factors = np.array([factor if n > 1 else 1 for n in shape])
    coarse_shape = tuple(int(n) for n in np.ceil(np.array(shape) / factors))
    index_scale = np.diag(np.append(factors.astype(float), 1.0))
    index_scale[:3, 3] = (factors - 1) / 2.0
    return coarse_shape, affine @ index_scale


def mask_volume(mask, volume, name="fixed_mask"):
    """A mask on `volume`'s grid as a uint8 Volume, or None; it must select a voxel."""
    if mask is None:
        return None
    masked = as_volume(np.asarray(mask).astype(np.uint8), volume.affine, name, dtype=np.uint8)
    side = name.split("_")[0]
    if masked.shape != volume.shape or not masked.data.any():
        raise ValueError(f"{name} must have the {side} shape and select a voxel")
    return masked


def pyramid_level(fixed_volume, moving_volume, mask, level, levels):
    """Level `level` of `levels` (0 coarsest): shrink 2 ** (levels - 1 - level), smoothing
    sigma half the shrink in fixed voxels (ANTs: shrink 4, 2, 1 with sigma 2, 1, 0).
    """
    shrink = 2 ** (levels - 1 - level)
    shape, affine = level_grid(fixed_volume.shape, fixed_volume.affine, shrink)
    sigma_mm = shrink / 2.0 * fixed_volume.spacing.min() if shrink > 1 else 0.0
    fixed = fields.resample(
        fields.smooth(fixed_volume.data, sigma_mm / fixed_volume.spacing),
        fixed_volume.affine,
        shape,
        affine,
    )
    moving = fields.smooth(moving_volume.data, sigma_mm / moving_volume.spacing)
    mask_level = (
        None
        if mask is None
        else fields.resample(mask.data, mask.affine, shape, affine, interpolation="nearest").astype(
            bool
        )
    )
    return Level(shape, affine, fixed, moving, mask_level)
