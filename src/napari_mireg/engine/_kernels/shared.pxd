# Inline helpers shared by the Cython kernels (_mi.pyx, _fields.pyx).
# Volumes are C-contiguous (n0, n1, n2) arrays seen flat; a 2D image is (1, n1, n2).

cimport cython

cdef extern from "mireg_omp.h" nogil:
    int mireg_max_threads()
    int mireg_have_openmp()


cdef struct AxisStep:
    # d(image)/d(index) at v along one axis = factor * (image[v + plus] - image[v - minus]):
    # central differences inside, one-sided at the two ends, zero on an axis of size 1.
    Py_ssize_t plus
    Py_ssize_t minus
    double factor


cdef inline AxisStep axis_step(Py_ssize_t position, Py_ssize_t size,
                               Py_ssize_t stride) noexcept nogil:
    cdef AxisStep step
    step.plus = stride
    step.minus = stride
    step.factor = 0.5
    if size < 2:
        step.plus = 0
        step.minus = 0
        step.factor = 0.0
    elif position == 0:
        step.minus = 0
        step.factor = 1.0
    elif position == size - 1:
        step.plus = 0
        step.factor = 1.0
    return step


cdef inline double difference(const cython.floating* image, Py_ssize_t v,
                              AxisStep step) noexcept nogil:
    return step.factor * (<double>image[v + step.plus] - <double>image[v - step.minus])


cdef struct Vector3:
    double x0
    double x1
    double x2


cdef struct Matrix3:
    # Row-major 3x3 matrix.
    double m[9]


cdef inline Matrix3 matrix3(const double[::1] entries) noexcept nogil:
    cdef Matrix3 k
    cdef int a
    for a in range(9):
        k.m[a] = entries[a]
    return k


cdef inline Vector3 physical_gradient(const cython.floating* image, Py_ssize_t v,
                                      AxisStep step0, AxisStep step1, AxisStep step2,
                                      const Matrix3* index_to_physical) noexcept nogil:
    """Gradient at voxel v: index-space differences mapped by a 3x3 matrix."""
    cdef double d0 = difference(image, v, step0)
    cdef double d1 = difference(image, v, step1)
    cdef double d2 = difference(image, v, step2)
    cdef const double* k = index_to_physical.m
    cdef Vector3 g
    g.x0 = k[0] * d0 + k[1] * d1 + k[2] * d2
    g.x1 = k[3] * d0 + k[4] * d1 + k[5] * d2
    g.x2 = k[6] * d0 + k[7] * d1 + k[8] * d2
    return g


cdef inline void store_components(float* target, Py_ssize_t components, double scale,
                                  Vector3 g) noexcept nogil:
    """Write scale * g into `components` floats: all 3, or the last 2 for a 2D image."""
    if components == 3:
        target[0] = <float>(scale * g.x0)
    target[components - 2] = <float>(scale * g.x1)
    target[components - 1] = <float>(scale * g.x2)
