# Kernels on images and vector fields: image gradient (warping, composition, inversion and
# Jacobians join here). Every loop runs without the GIL, split over rows.

cimport cython
from cython.parallel cimport prange

from napari_mireg._kernels cimport AxisStep, Matrix3, Vector3, axis_step, matrix3, physical_gradient


def gradient(const cython.floating[::1] image, shape, const double[::1] index_to_physical,
             float[:, ::1] out, int first_axis, int threads):
    """Gradient of a flat (n0, n1, n2) image into `out` (voxels, 3 - first_axis).

    Index-space central differences (one-sided at the ends) are mapped by the row-major
    3x3 `index_to_physical` matrix; components `first_axis`.. are stored, so a 2D image
    seen as (1, n1, n2) gets its two components.
    """
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Py_ssize_t components = 3 - first_axis
    cdef Matrix3 k = matrix3(index_to_physical)
    cdef const cython.floating* data = &image[0]
    cdef float* out_data = &out[0, 0]
    cdef Py_ssize_t row, i2, v
    cdef Vector3 g
    cdef float* target
    cdef AxisStep step0, step1
    for row in prange(n0 * n1, nogil=True, num_threads=threads, schedule="static"):
        step0 = axis_step(row // n1, n0, n1 * n2)
        step1 = axis_step(row % n1, n1, n2)
        for i2 in range(n2):
            v = row * n2 + i2
            target = out_data + v * components
            g = physical_gradient(data, v, step0, step1, axis_step(i2, n2, 1), &k)
            if components == 3:
                target[0] = <float>g.x0
            target[components - 2] = <float>g.x1
            target[components - 1] = <float>g.x2
    return out
