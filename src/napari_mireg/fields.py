"""Array operations on images and vector fields, over the Cython kernels of _fields.pyx."""

import numpy as np

from napari_mireg import _fields, _mi
from napari_mireg._validate import image_array


def embed_matrix(matrix, size):
    """Place a 2D-grid matrix in the lower-right block of a size x size identity.

    Kernels see a 2D image as (1, n1, n2), axis 0 the singleton axis; a 3D matrix of the
    right size is returned unchanged.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    embedded = np.eye(size)
    embedded[size - matrix.shape[0]:, size - matrix.shape[1]:] = matrix
    return embedded


def thread_count(threads):
    """Threads for a kernel call: `threads`, or OpenMP's default when None."""
    return _mi.max_threads() if threads is None else int(threads)


def image_gradient(image, index_to_physical=None, *, threads=None):
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
    ndim = image.ndim
    matrix = np.eye(ndim) if index_to_physical is None else np.asarray(index_to_physical, float)
    if matrix.shape != (ndim, ndim):
        raise ValueError(f"index_to_physical must be {ndim}x{ndim}, got {matrix.shape}")
    out = np.empty((image.size, ndim), dtype=np.float32)
    shape3 = (1,) * (3 - ndim) + image.shape
    _fields.gradient(image.ravel(), shape3, embed_matrix(matrix, 3).ravel(), out, 3 - ndim,
                     thread_count(threads))
    return out.reshape(image.shape + (ndim,))
