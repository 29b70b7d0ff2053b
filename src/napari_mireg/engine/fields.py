"""Array operations on images and vector fields, over the Cython kernels of _fields.pyx."""

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from napari_mireg._typing import Interpolation, Matrix

# Idle OpenMP threads sleep instead of spinning (read by libgomp when the kernels load).
# The kernels run many short parallel regions; on a shared machine (a GUI, other jobs) a
# spinning thread holds a core the thread it waits for needs. Measured on 2 cores with
# other jobs running: a short 2 mm SyN took 28-31 s spinning against 8-15 s sleeping.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from napari_mireg.engine._kernels import _fields, _mi  # noqa: E402
from napari_mireg.engine._validate import image_array


def embed_matrix(matrix: Matrix, size: int) -> npt.NDArray[np.float64]:
    """Place a 2D-grid matrix in the lower-right block of a size x size identity.

    Kernels see a 2D image as (1, n1, n2), axis 0 the singleton axis; a 3D matrix of the
    right size is returned unchanged.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    embedded = np.eye(size)
    embedded[size - matrix.shape[0] :, size - matrix.shape[1] :] = matrix
    return embedded


def voxel_sizes(affine: Matrix) -> npt.NDArray[np.float64]:
    """Voxel sizes (mm) along the array axes of a grid with voxel-to-world `affine`."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


# Work of a parallel region, in voxels of a trilinear warp (a few tens of ns each), below
# which one more thread does not pay: each region wakes the sleeping threads (PASSIVE), and
# on a virtual machine a wake-up can cost as much as warping tens of thousands of voxels.
# Small regions run on fewer threads, which also spares them from a core that another
# process keeps busy (docs/engine.md, "Threads and OpenMP").
VOXELS_PER_THREAD = 65536
# A pass that only reads and compares (a largest length, intensity levels) costs about an
# eighth of a warped voxel per voxel.
CHEAP = 8


def thread_count(threads: int | None, voxels: int | None = None) -> int:
    """Threads for a kernel call: `threads`, or OpenMP's default when None.

    With `voxels` (the work, in voxels of a trilinear warp), no more threads than there
    are `VOXELS_PER_THREAD` voxels of work.
    """
    count = _mi.max_threads() if threads is None else int(threads)
    if voxels is not None:
        count = max(1, min(count, int(voxels) // max(VOXELS_PER_THREAD, 1)))
    return count


def openmp_threads(threads: int | None = None) -> int:
    """Threads the Cython kernels run a parallel region on; 0 when built without OpenMP.

    One small parallel region is asked for `threads` threads and the threads that took part
    are counted, so the answer is what the kernels get (``OMP_NUM_THREADS``, the cores, a
    thread limit), not only what was asked for. A build without OpenMP (a compiler without
    it, ``MIREG_NO_OPENMP``) runs the kernels serially and returns 0.

    Parameters
    ----------
    threads : int, optional
        Threads to ask for; default OpenMP's default (all cores, or ``OMP_NUM_THREADS``).

    Returns
    -------
    int
    """
    if not _mi.openmp_enabled():
        return 0
    return _mi.parallel_threads(thread_count(threads))


def image_gradient(
    image: npt.ArrayLike,
    index_to_physical: npt.ArrayLike | None = None,
    *,
    threads: int | None = None,
) -> npt.NDArray[np.float32]:
    """Gradient of a 2D or 3D image, central differences inside and one-sided at the ends.

    Parameters
    ----------
    image : ndarray
        2D or 3D image.
    index_to_physical : ndarray, shape (ndim, ndim), optional
        Maps the index-space differences to the wanted frame: ``diag(1 / spacing)`` for
        physical units along the array axes, ``L^-T`` (L the linear part of the grid's
        voxel-to-world matrix) for world coordinates. Default: identity (per voxel).
    threads : int, optional

    Returns
    -------
    ndarray of float32, shape ``image.shape + (ndim,)``
    """
    image = image_array(image, "image")
    return _gradient_into(image, index_to_physical, image.ndim, False, threads)


def image_and_gradient(
    image: npt.ArrayLike,
    index_to_physical: npt.ArrayLike | None = None,
    *,
    extra: npt.ArrayLike | None = None,
    threads: int | None = None,
) -> npt.NDArray[np.float32]:
    """The image and its gradient (see :func:`image_gradient`) as channels of one array.

    Channel 0 is the image, 1..ndim its gradient, and the last one `extra` when given: a
    volume to resample with them in the same pass. Written in one sweep; a concatenation
    of the planes cost three times the gradient itself on a 256^3 head.

    Parameters
    ----------
    image : ndarray
        2D or 3D image.
    index_to_physical : ndarray, shape (ndim, ndim), optional
    extra : ndarray, optional
        Same shape as `image`.
    threads : int, optional

    Returns
    -------
    ndarray of float32, shape ``image.shape + (ndim + 1,)`` (``+ 2`` with `extra`)
    """
    image = image_array(image, "image")
    channels = image.ndim + 1 + (extra is not None)
    result = _gradient_into(image, index_to_physical, channels, True, threads)
    if extra is not None:
        if np.shape(extra) != image.shape:
            raise ValueError(f"extra must have the image's shape {image.shape}")
        result[..., -1] = extra
    return result


def _gradient_into(image, index_to_physical, channels, with_value, threads):
    """The gradient kernel's output, ``image.shape + (channels,)`` float32."""
    ndim = image.ndim
    matrix = np.eye(ndim) if index_to_physical is None else np.asarray(index_to_physical, float)
    if matrix.shape != (ndim, ndim):
        raise ValueError(f"index_to_physical must be {ndim}x{ndim}, got {matrix.shape}")
    out = np.empty((image.size, channels), dtype=np.float32)
    shape3 = (1,) * (3 - ndim) + image.shape
    _fields.gradient(
        image.ravel(),
        shape3,
        embed_matrix(matrix, 3).ravel(),
        out,
        3 - ndim,
        with_value,
        thread_count(threads, image.size),
    )
    return out.reshape(image.shape + (channels,))


def _flat_channels(volume):
    """(n0, n1, n2[, C]) float32 volume as a C-contiguous (voxels, C) array."""
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    channels = volume.shape[3] if volume.ndim == 4 else 1
    return volume.reshape(-1, channels)


def _field_argument(field, output_shape):
    if field is None:
        return np.zeros((1, 3), dtype=np.float32), False
    field = np.ascontiguousarray(field, dtype=np.float32)
    if field.shape != tuple(output_shape) + (3,):
        raise ValueError(f"field must have shape {tuple(output_shape) + (3,)}, got {field.shape}")
    return field.reshape(-1, 3), True


def resample(
    volume: npt.ArrayLike,
    volume_affine: npt.NDArray[np.floating],
    output_shape: Sequence[int],
    output_affine: Matrix,
    *,
    field: npt.ArrayLike | None = None,
    prealign: Matrix | None = None,
    interpolation: Interpolation = "linear",
    clamp: bool = False,
    add_field: bool = False,
    threads: int | None = None,
) -> npt.NDArray[Any]:
    """Sample a 3D volume on another grid, through a displacement field and an affine.

    Output voxel i takes the volume's value at world point ``prealign @ (A i + field[i])``,
    with A the output grid's voxel-to-world matrix: the composite order of ITK and ANTs
    (displacement first, then the affine).

    Parameters
    ----------
    volume : ndarray, shape (m0, m1, m2) or (m0, m1, m2, C)
        Scalar or multi-channel volume (channels are interpolated alike).
    volume_affine, output_affine : ndarray (4, 4)
        Voxel-to-world matrices of the volume and of the output grid.
    output_shape : tuple of 3 int
    field : ndarray, shape ``output_shape + (3,)``, optional
        World displacement (mm) on the output grid.
    prealign : ndarray (4, 4), optional
        World-to-world transform from the output space to the volume's space.
    interpolation : {"linear", "nearest"}
        Trilinear (float32 result) or nearest neighbour (the volume's dtype, labels kept).
    clamp : bool
        Outside the volume, take the nearest edge value instead of 0.
    add_field : bool
        Add `field` to the (3-channel, linear) result: `compose` in one pass.
    threads : int, optional

    Returns
    -------
    ndarray, shape ``output_shape`` (+ (C,) for a multi-channel volume)
    """
    output_shape = tuple(int(n) for n in output_shape)
    flat_field, use_field = _field_argument(field, output_shape)
    prealign = np.eye(4) if prealign is None else np.asarray(prealign, dtype=np.float64)
    index_matrix = np.ascontiguousarray(np.linalg.inv(volume_affine) @ prealign)
    point_matrix = np.ascontiguousarray(output_affine, dtype=np.float64)
    source_shape = np.shape(volume)[:3]
    voxels = int(np.prod(output_shape))
    if add_field and (not use_field or interpolation != "linear" or np.shape(volume)[3:] != (3,)):
        raise ValueError("add_field needs a field, linear interpolation and a 3-channel volume")
    if interpolation == "nearest":
        index = np.empty(voxels, dtype=np.intp)
        _fields.warp_nearest_index(
            source_shape,
            flat_field,
            use_field,
            output_shape,
            point_matrix,
            index_matrix,
            index,
            thread_count(threads, voxels),
        )
        values = np.asarray(volume).reshape(int(np.prod(source_shape)), -1)
        outside = index < 0
        np.maximum(index, 0, out=index)  # in place: an index array is 8 bytes a voxel
        result = values[index]
        result[outside] = 0
    elif interpolation == "linear":
        source = _flat_channels(volume)
        result = np.empty((voxels, source.shape[1]), dtype=np.float32)
        _fields.warp_linear(
            source,
            source_shape,
            flat_field,
            use_field,
            output_shape,
            point_matrix,
            index_matrix,
            clamp,
            result,
            thread_count(threads, voxels),
            add_field,
        )
    else:
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    tail = (result.shape[1],) if np.ndim(volume) == 4 else ()
    return result.reshape(output_shape + tail)


def compose(
    first: npt.NDArray[np.floating],
    second: npt.ArrayLike,
    affine: npt.NDArray[np.floating],
    *,
    threads: int | None = None,
) -> npt.NDArray[np.float32]:
    """Displacement of "apply `first`, then `second`": c(x) = first(x) + second(x + first(x)).

    Both are world displacement fields (mm) on one grid with voxel-to-world `affine`;
    `second` is sampled trilinearly, edges replicated.
    """
    shape = first.shape[:3]
    return resample(
        second, affine, shape, affine, field=first, clamp=True, add_field=True, threads=threads
    )


# Rounds of more fixed-point steps and Newton when voxels are left above the tolerance.
RESTARTS = 3


def invert(
    field: npt.NDArray[np.floating],
    affine: Matrix,
    *,
    initial: npt.ArrayLike | None = None,
    max_iterations: int = 20,
    tolerance: float = 1e-3,
    polish_tolerance: float = 0.05,
    threads: int | None = None,
) -> tuple[npt.NDArray[np.float32], float]:
    """Inverse of x -> x + field(x): fixed-point iteration, then Newton steps where needed.

    The fixed-point iteration w(x) = -field(x + w(x)) converges where the map is a mild
    deformation; where it compresses strongly (det J well below 1) it crawls, and a few
    voxels may be left far from the inverse. There, Newton steps on r(w) = w + field(x + w),
    ``w <- w - (I + grad field(x + w))^-1 r``, finish the job.

    Parameters
    ----------
    field : ndarray (n0, n1, n2, 3)
        World displacement (mm) on a grid with voxel-to-world `affine`.
    initial : ndarray, optional
        Starting guess (the previous inverse, when the field changed a little).
    max_iterations : int
    tolerance : float
        Stop the fixed-point iteration when its largest change is below this, in voxels.
    polish_tolerance : float
        Voxels whose residual |r| is above this (in voxels) get Newton steps.

    Returns
    -------
    inverse : ndarray of float32 (n0, n1, n2, 3)
    change : float
        The largest change of the last fixed-point iteration, in voxels.
    """
    smallest_voxel = float(voxel_sizes(affine).min())
    inverse = -np.asarray(field, dtype=np.float32) if initial is None else initial
    inverse = np.ascontiguousarray(inverse, dtype=np.float32)
    inverse, change = _fixed_point(field, affine, inverse, max_iterations, tolerance, threads)
    for restart in range(RESTARTS + 1):
        if change <= polish_tolerance:
            break
        left = _newton_polish(field, affine, inverse, polish_tolerance * smallest_voxel, threads)
        if not left or restart == RESTARTS:
            break
        # Voxels Newton could not bring down (a strong squeeze, where the trilinear map
        # barely covers the point; one voxel at 0.45 voxel on a 1 mm pair): more
        # fixed-point steps from there move them into another basin, and the Newton pass
        # after them finishes what they leave.
        inverse, change = _fixed_point(field, affine, inverse, max_iterations, tolerance, threads)
    return inverse, change


def _fixed_point(field, affine, inverse, max_iterations, tolerance, threads):
    """Steps w <- -field(x + w) until the largest change is below `tolerance` (voxels)."""
    smallest_voxel = float(voxel_sizes(affine).min())
    change = np.inf
    shape = field.shape[:3]
    flat_field = _flat_channels(field)
    # the matrices `resample` would use on this grid
    index_matrix = np.ascontiguousarray(np.linalg.inv(affine) @ np.eye(4))
    point_matrix = np.ascontiguousarray(affine, dtype=np.float64)
    for _ in range(max_iterations):
        # w <- -field(x + w) and the largest change, in one pass
        updated = np.empty_like(flat_field)
        largest = _fields.fixed_point_step(
            flat_field,
            shape,
            _flat_channels(inverse),
            point_matrix,
            index_matrix,
            updated,
            thread_count(threads, len(updated)),
        )
        change = largest / smallest_voxel
        inverse = updated.reshape(field.shape)
        if change < tolerance:
            break
    return inverse, change


def _newton_polish(field, affine, inverse, tolerance_mm, threads, steps=12, rounds=8):
    """Newton steps, in place, on the voxels whose inversion residual exceeds the tolerance.

    Returns how many voxels are still above it.

    After one full residual pass, everything runs on those voxels only (the kernel
    `_fields.newton_steps`, one voxel a task): the field and its Jacobian are sampled at
    their points (central differences of the trilinear field, half a voxel each way), not
    on the whole grid. Where the fixed-point iteration ran away over a patch of voxels (its
    values many voxels off), Newton steps from there do not come back; so each round
    restarts the voxels still off from the mean of their solved neighbours, where that is
    closer, and the patch is solved from its rim inwards.
    """
    shape = field.shape[:3]
    to_index = np.ascontiguousarray(np.linalg.inv(np.asarray(affine, dtype=np.float64)[:3, :3]))
    residual = compose(inverse, field, affine, threads=threads).reshape(-1, 3)  # w + h(x + w)
    bad = np.flatnonzero((residual**2).sum(axis=1) > tolerance_mm**2)
    if bad.size == 0:
        return 0
    flat_field = np.ascontiguousarray(field, dtype=np.float32).reshape(-1, 3)
    flat = inverse.reshape(-1, 3)
    remaining = residual[bad].astype(np.float64)
    largest_step = float(voxel_sizes(affine).min())
    for round_ in range(rounds):
        # A voxel's Newton steps (up to 12, each 7 to 12 trilinear samples of the field)
        # weigh about as much as warping 64 voxels.
        count = thread_count(threads, bad.size * 64)
        if round_ > 0:
            guess = _neighbour_mean(inverse, bad)
            guess_remaining = np.empty((bad.size, 3))
            _fields.inversion_residual(
                flat_field, shape, to_index.ravel(), guess, bad, guess_remaining, count
            )
            closer = (guess_remaining**2).sum(axis=1) < (remaining**2).sum(axis=1)
            flat[bad[closer]] = guess[closer]
            remaining[closer] = guess_remaining[closer]
        left = np.empty(bad.size, dtype=np.uint8)
        _fields.newton_steps(
            flat_field,
            shape,
            to_index.ravel(),
            largest_step,
            flat,
            bad,
            remaining,
            tolerance_mm,
            steps,
            left,
            count,
        )
        left = left.view(bool)
        if not left.any() or left.all() and round_ > 0:
            return int(left.sum())
        bad, remaining = bad[left], remaining[left]
    return int(left.sum())


def _neighbour_mean(inverse, bad, width=3):
    """Mean of `inverse` over the voxels not in `bad` in a width-cube around each bad one.

    Computed on the bounding box of the bad voxels only; a voxel with no good neighbour
    keeps its own value.
    """
    where = np.stack(np.unravel_index(bad, inverse.shape[:3]))  # (3, bad)
    low = np.maximum(where.min(axis=1) - width, 0)
    high = np.minimum(where.max(axis=1) + width + 1, inverse.shape[:3])
    box = tuple(slice(a, b) for a, b in np.stack([low, high], axis=1))
    good = np.ones(high - low, dtype=np.float32)
    local = tuple(where - low[:, None])
    good[local] = 0.0
    weight = ndimage.uniform_filter(good, width, mode="nearest")[local]
    mean = np.empty((bad.size, 3), dtype=np.float32)
    for c in range(3):
        total = ndimage.uniform_filter(inverse[box + (c,)] * good, width, mode="nearest")
        mean[:, c] = total[local] / np.maximum(weight, 1e-6)
    alone = weight <= 1e-6
    mean[alone] = inverse.reshape(-1, 3)[bad[alone]]
    return mean


def largest_length(field: npt.ArrayLike, *, threads: int | None = None) -> float:
    """The largest vector length of a (..., 3) float32 field."""
    flat = np.ascontiguousarray(field, dtype=np.float32).reshape(-1, 3)
    return _fields.max_norm(flat, thread_count(threads, len(flat) // CHEAP))


def gaussian_weights(sigma: float) -> npt.NDArray[np.float64]:
    """Normalised Gaussian taps for a sigma in voxels, truncated at 3 sigma."""
    return _gaussian_taps(float(sigma)).copy()


@functools.lru_cache(maxsize=32)
def _gaussian_taps(sigma):
    """`gaussian_weights`, made once per sigma (read-only).

    The SyN smooths with the same two sigmas four times an iteration.
    """
    radius = max(1, int(np.ceil(3.0 * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    weights.flags.writeable = False
    return weights


def smooth(
    volume: npt.ArrayLike,
    sigma: npt.ArrayLike,
    *,
    overwrite_input: bool = False,
    threads: int | None = None,
) -> npt.NDArray[np.float32]:
    """Separable Gaussian smoothing of a (n0, n1, n2[, C]) volume, edges replicated.

    Parameters
    ----------
    sigma : float or sequence of 3 float
        Standard deviation in voxels along each axis; 0 leaves that axis alone.
    overwrite_input : bool
        Let the passes along the axes use a C-contiguous float32 `volume` as one of their
        two buffers (its values are then lost; the result may be `volume` itself): one
        array of the volume's size is made instead of two.
    threads : int, optional

    Returns
    -------
    ndarray of float32, same shape
    """
    sigmas = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (3,))
    shape = np.shape(volume)[:3]
    current = _flat_channels(volume)
    axes = [axis for axis in range(3) if sigmas[axis] > 0 and shape[axis] > 1]
    buffers = [np.empty_like(current) for _ in axes[:1]]
    if len(axes) > 1:
        # Pass k reads what pass k - 1 wrote: the input is free from the second pass on.
        buffers.append(current if overwrite_input else np.empty_like(current))
    for step, axis in enumerate(axes):
        target = buffers[step % 2]
        _fields.gaussian_axis(
            current,
            target,
            shape,
            axis,
            _gaussian_taps(float(sigmas[axis])),
            thread_count(threads, len(current)),
        )
        current = target
    result = current.reshape(np.shape(volume))
    return result.copy() if not axes and not overwrite_input else result


def jacobian_determinant(
    field: npt.ArrayLike, affine: Matrix, *, threads: int | None = None
) -> npt.NDArray[np.float64]:
    """det(I + grad d) of a world displacement field (n0, n1, n2, 3) on a grid (float64)."""
    field = np.ascontiguousarray(field, dtype=np.float32)
    shape = field.shape[:3]
    out = np.empty(int(np.prod(shape)))
    inverse_linear = np.ascontiguousarray(np.linalg.inv(np.asarray(affine)[:3, :3]))
    _fields.jacobian_determinant(
        field.reshape(-1, 3), shape, inverse_linear.ravel(), out, thread_count(threads, out.size)
    )
    return out.reshape(shape)


def jacobian_determinant_range(
    field: npt.ArrayLike, affine: Matrix, *, threads: int | None = None
) -> tuple[float, float]:
    """(smallest, largest) det(I + grad d) of a world displacement field on a grid."""
    field = np.ascontiguousarray(field, dtype=np.float32)
    inverse_linear = np.ascontiguousarray(np.linalg.inv(np.asarray(affine)[:3, :3]))
    return _fields.jacobian_determinant_range(
        field.reshape(-1, 3),
        field.shape[:3],
        inverse_linear.ravel(),
        thread_count(threads, field.size // 3),
    )
