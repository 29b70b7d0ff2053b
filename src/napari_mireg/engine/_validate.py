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


def affine_matrix(matrix, name="prealign"):
    """Return a world matrix as float64, refusing one with NaN or one that folds space flat.

    The one check for every affine a user gives: a file read by
    :func:`napari_mireg.files.load_transform` and a matrix given to the API.

    Raises
    ------
    ValueError
        ``"{name}: ..."``: not a square matrix, NaN or infinite entries, or a singular
        linear part (it maps space onto a plane or a point).
    """
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] not in (3, 4):
        raise ValueError(f"{name}: an affine is a (4, 4) matrix, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: affine transform has NaN or infinite parameters")
    linear = array[:-1, :-1]
    scale = np.abs(linear).max()
    size = linear.shape[0]
    if scale == 0 or abs(np.linalg.det(linear)) <= 1e-9 * scale**size:
        raise ValueError(
            f"{name}: affine matrix is singular (it maps space onto a plane or a point)"
        )
    return array


def label_map(labels, volume, name):
    """A label map checked as a label file is: integer values, on its image's grid.

    Parameters
    ----------
    labels : array_like or None
    volume : Volume
        Its image.
    name : str
        How the argument is called in error messages (e.g. "fixed_labels").

    Returns
    -------
    ndarray of int or None

    Raises
    ------
    ValueError
        Non-integer, NaN or negative values (as
        :func:`napari_mireg.labels.label_values`), a shape other than the image's, or no
        labelled voxel: the message starts with `name`.
    """
    if labels is None:
        return None
    from napari_mireg.labels import label_values

    array = label_values(labels, name)
    grid = tuple(volume.shape)
    user = grid[-volume.ndim :]
    if array.shape not in (grid, user):
        raise ValueError(
            f"{name}: label map of shape {array.shape} is not on the grid of its image "
            f"(shape {user})"
        )
    if not array.any():
        raise ValueError(f"{name}: the label map has no labelled voxel: no brain mask can be made")
    return array
