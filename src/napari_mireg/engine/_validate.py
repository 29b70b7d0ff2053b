"""Input checks shared by the engine: every message names the argument and the problem."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


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


class InputProblem(ValueError):
    """A bad input the engine refuses before any work, naming the argument and the option.

    Parameters
    ----------
    argument : str
        The input at fault, as the API calls it ("fixed", "moving").
    problem : str
        What is wrong; ``{option}`` in it stands for the option to change, written as the
        caller knows it (the API's ``level_iters``, the command line's ``--iterations``).
    option : str or None
        The option's API name.
    """

    def __init__(self, argument: str, problem: str, option: str | None = None) -> None:
        self.argument = argument
        self.problem = problem
        self.option = option
        super().__init__(f"{argument}: {self.describe()}")

    def describe(self, option_name: str | None = None) -> str:
        """The problem with the option written as `option_name` (default: its API name)."""
        return self.problem.format(option=option_name or self.option)


# Above this, differences of intensities overflow float32 in the metric (MRI never comes
# near: 1e9 would already be unusual).
LARGEST_INTENSITY = 1e30
# Voxel sizes of any MRI in mm (a 20 mm voxel is already coarser than any scan): outside,
# the header is in another unit (metres, micrometres) and every size in mm would be wrong.
VOXEL_MM_RANGE = (0.01, 20.0)


def intensities(data: npt.NDArray[Any], name: str) -> None:
    """Refuse NaN, infinite or huge intensities, before any cast to float32.

    Checked before the cast because float32 turns a finite 1e39 into infinity, which would
    then be reported as the wrong cause.

    Parameters
    ----------
    data : ndarray
        Any numeric array (integer arrays always pass).
    name : str

    Raises
    ------
    ValueError
        ``"{name} has NaN or infinite values"`` or ``"{name}: intensities reach ..., too
        large to register"``.
    """
    if data.dtype.kind != "f" or not data.size:
        return
    low, high = float(data.min()), float(data.max())  # NaN and inf carry through both
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} has NaN or infinite values")
    intensity_bounds(low, high, name)


def intensity_bounds(low: float, high: float, name: str) -> None:
    """Refuse finite intensities from `low` to `high` too large for float32 arithmetic.

    Raises
    ------
    ValueError
        ``"{name}: intensities reach ..., too large to register"``.
    """
    largest = max(abs(low), abs(high))
    if largest > LARGEST_INTENSITY:
        raise ValueError(
            f"{name}: intensities reach {largest:.3g}, too large to register (above "
            f"{LARGEST_INTENSITY:.0e}); rescale the image"
        )


def voxel_sizes(spacing: npt.ArrayLike, ndim: int, name: str) -> None:
    """Refuse voxel sizes outside :data:`VOXEL_MM_RANGE` (a header in another unit).

    Parameters
    ----------
    spacing : sequence of float
        Voxel sizes (mm), one per axis of the 3D grid (a 2D image's first one is ignored).
    ndim : int
        2 or 3.
    name : str

    Raises
    ------
    InputProblem
    """
    sizes = np.asarray(spacing, dtype=np.float64)[-ndim:]
    low, high = VOXEL_MM_RANGE
    if np.any(sizes < low) or np.any(sizes > high):
        shown = " x ".join(f"{size:.3g}" for size in sizes)
        raise InputProblem(
            name,
            f"voxel size {shown} mm is outside {low:g} to {high:g} mm; is the header in "
            "another unit (metres, micrometres)?",
        )


def _coarse_voxels(volume, factors):
    """Voxels of `volume`'s grid shrunk `factors` times per axis (axes of one voxel stay)."""
    shape = np.array(volume.shape)
    factors = np.where(shape > 1, factors, 1)
    return int(np.prod(np.ceil(shape / factors)))


def _shown_shape(volume):
    return " x ".join(str(n) for n in volume.shape[-volume.ndim :])


def level_sizes(
    fixed: Any,
    moving: Any,
    level_iters: Sequence[int],
    prealign_levels: Sequence[int] = (),
) -> None:
    """Refuse images that a level of the pyramid would shrink to a single voxel.

    On such a level every image is constant and mutual information is undefined; the
    cause is the number of levels (or the prealignment's fixed levels), not the image.

    Parameters
    ----------
    fixed, moving : Volume
    level_iters : sequence of int
        The SyN's iterations per level, coarsest first (levels of 0 do not run).
    prealign_levels : sequence of int
        The MI prealignment's, when it runs (empty otherwise).

    Raises
    ------
    InputProblem
        Naming the image, its shape, and the option (``level_iters`` or ``prealign``).
    """
    fixed_mm = float(np.min(fixed.spacing))

    def single_voxel(levels, moving_finer):
        """(name, volume, level, shrink) of the first running level of one voxel, or None."""
        count = len(levels)
        for level, iterations in enumerate(levels):
            shrink = 2 ** (count - 1 - level)
            if iterations == 0:
                continue
            if _coarse_voxels(fixed, shrink) <= 1:
                return "fixed", fixed, level, shrink
            # As pyramid_level shrinks the moving image: as many of its voxels to a block
            # as fit in the level's voxel (divided by `moving_finer`), per axis.
            level_mm = shrink * fixed_mm / moving_finer
            factors = np.maximum(1, np.floor(level_mm / moving.spacing + 1e-6))
            if _coarse_voxels(moving, factors) <= 1:
                return "moving", moving, level, shrink
        return None

    found = single_voxel(tuple(level_iters), 1)
    if found is not None:
        name, volume, level, shrink = found
        count = len(level_iters)
        fewer = next((n for n in range(count - 1, 0, -1) if single_voxel((1,) * n, 1) is None), 1)
        raise InputProblem(
            name,
            f"{_shown_shape(volume)} voxels is too small for {count} levels of {{option}}: "
            f"level {level + 1} shrinks it {shrink} times to a single voxel; give at most "
            f"{fewer} level{'s' if fewer > 1 else ''}",
            "level_iters",
        )
    found = single_voxel(tuple(prealign_levels), 2)
    if found is not None:
        name, volume, _, shrink = found
        raise InputProblem(
            name,
            f"{_shown_shape(volume)} voxels is too small for the MI prealignment, whose "
            f"levels shrink it {shrink} times to a single voxel: use {{option}} none or give "
            f"a prealignment matrix",
            "prealign",
        )


def winsorize_range(low: float, high: float, quantiles: tuple[float, float], name: str) -> None:
    """Refuse winsorising quantiles that clip every voxel of an image to one value.

    Parameters
    ----------
    low, high : float
        The image's intensities at the two quantiles.
    quantiles : (float, float)
    name : str

    Raises
    ------
    InputProblem
    """
    if high > low:
        return
    raise InputProblem(
        name,
        f"{{option}} {quantiles[0]:g},{quantiles[1]:g} clips every voxel to {low:g} (the "
        f"image has that value from its {quantiles[0]:g} to its {quantiles[1]:g} quantile); "
        "give a wider range, e.g. 0.005,0.995, or none",
        "winsorize",
    )


def varies_in_mask(
    volume: Any, mask: npt.NDArray[np.bool_] | None, name: str, source: str | None = None
) -> None:
    """Refuse an image that is constant inside its metric mask (it is not constant outside).

    Parameters
    ----------
    volume : Volume
    mask : ndarray of bool or None
        On the volume's 3D grid.
    name : str
        The image ("fixed", "moving").
    source : str, optional
        Where the mask came from, the argument named in the message ("fixed_mask",
        "fixed_labels"); default: the image.

    Raises
    ------
    InputProblem
    """
    if mask is None:
        return
    inside = volume.data[np.asarray(mask, dtype=bool)]
    if inside.size and inside.min() == inside.max():
        where = "this mask" if source and source.endswith("mask") else "its metric mask"
        if source and source.endswith("labels"):
            where = "the brain of these labels"
        raise InputProblem(
            source or name,
            f"every voxel of the {name} image inside {where} is {float(inside.flat[0]):g}: "
            "the mask does not lie on the image's anatomy",
        )
