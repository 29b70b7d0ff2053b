"""Input checks shared by the engine: every message names the argument and the problem."""

import numpy as np


def image_array(image, name):
    """Return `image` as a C-contiguous float32 or float64 array of 2 or 3 dimensions.

    Parameters
    ----------
    image : array_like
        Numeric 2D or 3D array. float64 stays float64; every other numeric type becomes
        float32.
    name : str
        How the argument is called in error messages.

    Raises
    ------
    ValueError
        If the array is not numeric or not 2D/3D.
    """
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric array, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a 2D or 3D array, got {array.ndim} dimensions (shape {array.shape})"
        )
    if min(array.shape) < 1:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    dtype = np.float64 if array.dtype == np.float64 else np.float32
    return np.ascontiguousarray(array, dtype=dtype)


def image_pair(fixed, moving):
    """Validate two images that live on one grid and give them one floating dtype."""
    fixed = image_array(fixed, "fixed")
    moving = image_array(moving, "moving")
    if fixed.shape != moving.shape:
        raise ValueError(
            f"fixed and moving must have the same shape, got {fixed.shape} and {moving.shape}"
        )
    if fixed.dtype != moving.dtype:
        fixed = fixed.astype(np.float64)
        moving = moving.astype(np.float64)
    return fixed, moving


def mask_array(mask, shape, name="mask"):
    """Return a boolean-like mask as C-contiguous uint8 of `shape`, or None.

    Raises
    ------
    ValueError
        If the shape differs, the values are not 0/1 or booleans, or no voxel is selected.
    """
    if mask is None:
        return None
    array = np.asarray(mask)
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have the image shape {tuple(shape)}, got {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be boolean, got dtype {array.dtype}")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1 (or booleans)")
    selected = np.ascontiguousarray(array != 0, dtype=np.uint8)
    if not selected.any():
        raise ValueError(f"{name} selects no voxel")
    return selected


def positive_int(value, name, minimum=1):
    """Return `value` as an int, or raise ValueError if it is not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def spacing_vector(spacing, ndim, name="spacing"):
    """Return voxel sizes as a float64 vector of length ndim (default: ones)."""
    if spacing is None:
        return np.ones(ndim)
    vector = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if vector.size != ndim or not np.all(np.isfinite(vector)) or np.any(vector <= 0):
        raise ValueError(f"{name} must be {ndim} positive finite numbers, got {spacing!r}")
    return vector
