# Kernels on images and vector fields: image gradient (warping, composition, inversion and
# Jacobians join here). Every loop runs without the GIL, split over rows.

cimport cython
from cython.parallel cimport prange

from libc.math cimport fabs, floor, sqrt

import numpy as np

cdef extern from "mireg_blend.h" nogil:
    void mireg_blend3(const float* c, Py_ssize_t s0, Py_ssize_t s1, Py_ssize_t s2, double f2,
                      double w00, double w01, double w10, double w11, double* out)

from napari_mireg.engine._kernels.shared cimport (AxisStep, Matrix3, Vector3, axis_step, difference, matrix3,
                                    physical_gradient, store_components)


def gradient(const cython.floating[::1] image, shape, const double[::1] index_to_physical,
             float[:, ::1] out, int first_axis, bint with_value, int threads):
    """Gradient of a flat (n0, n1, n2) image into the rows of `out` (voxels, columns).

    Index-space central differences (one-sided at the ends) are mapped by the row-major
    3x3 `index_to_physical` matrix; components `first_axis`.. are stored, so a 2D image
    seen as (1, n1, n2) gets its two components. With `with_value` the image value goes
    first in each row and the components after it; columns past them are left alone.
    """
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Py_ssize_t components = 3 - first_axis
    cdef Py_ssize_t columns = out.shape[1]
    cdef Matrix3 k = matrix3(index_to_physical)
    cdef const cython.floating* data = &image[0]
    cdef float* out_data = &out[0, 0]
    cdef Py_ssize_t row, i2, v
    cdef Vector3 g
    cdef float* target
    cdef AxisStep step0, step1
    if columns < components + with_value:
        raise ValueError("out has too few columns")
    for row in prange(n0 * n1, nogil=True, num_threads=threads, schedule="guided"):
        step0 = axis_step(row // n1, n0, n1 * n2)
        step1 = axis_step(row % n1, n1, n2)
        for i2 in range(n2):
            v = row * n2 + i2
            target = out_data + v * columns
            if with_value:
                target[0] = <float>data[v]
                target = target + 1
            g = physical_gradient(data, v, step0, step1, axis_step(i2, n2, 1), &k)
            store_components(target, components, 1.0, g)
    return out


cdef inline Vector3 source_index(Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t i2,
                                 const double[:, ::1] point_matrix,
                                 const double[:, ::1] index_matrix, const float[:, ::1] field,
                                 bint use_field, Py_ssize_t v) noexcept nogil:
    """index_matrix @ (point_matrix @ i + field[v]): where output voxel i samples its source."""
    cdef double q0 = (point_matrix[0, 0] * i0 + point_matrix[0, 1] * i1
                      + point_matrix[0, 2] * i2 + point_matrix[0, 3])
    cdef double q1 = (point_matrix[1, 0] * i0 + point_matrix[1, 1] * i1
                      + point_matrix[1, 2] * i2 + point_matrix[1, 3])
    cdef double q2 = (point_matrix[2, 0] * i0 + point_matrix[2, 1] * i1
                      + point_matrix[2, 2] * i2 + point_matrix[2, 3])
    cdef Vector3 j
    if use_field:
        q0 = q0 + field[v, 0]
        q1 = q1 + field[v, 1]
        q2 = q2 + field[v, 2]
    j.x0 = index_matrix[0, 0] * q0 + index_matrix[0, 1] * q1 + index_matrix[0, 2] * q2 + index_matrix[0, 3]
    j.x1 = index_matrix[1, 0] * q0 + index_matrix[1, 1] * q1 + index_matrix[1, 2] * q2 + index_matrix[1, 3]
    j.x2 = index_matrix[2, 0] * q0 + index_matrix[2, 1] * q1 + index_matrix[2, 2] * q2 + index_matrix[2, 3]
    return j


cdef inline double map_coordinate(double position, Py_ssize_t size, bint clamp,
                                  bint* outside) noexcept nogil:
    """Keep a sampling position within [0, size - 1]; half a voxel beyond the edge still
    counts as inside. Further out: clamped to the edge if `clamp`, else flagged outside."""
    if position < 0.0:
        if position < -0.5 and not clamp:
            outside[0] = True
        return 0.0
    if position > size - 1:
        if position > size - 0.5 and not clamp:
            outside[0] = True
        return <double>(size - 1)
    return position


cdef inline Py_ssize_t cell_start(double position, Py_ssize_t size) noexcept nogil:
    """Lower corner of the interpolation cell: 0 .. size - 2 (0 on an axis of size 1)."""
    cdef Py_ssize_t start = <Py_ssize_t>position
    if start > size - 2:
        start = size - 2
    if start < 0:
        start = 0
    return start


cdef struct Cell:
    # A trilinear cell: its first corner (flat voxel index), the weights of its four corner
    # lines along axis 2 (w<a0><a1>: 1 = the far side on axes 0 and 1), and the fraction f2
    # along axis 2.
    Py_ssize_t first
    double f2
    double w00
    double w01
    double w10
    double w11


cdef inline Cell trilinear_cell(double x0, double x1, double x2, Py_ssize_t m0, Py_ssize_t m1,
                                Py_ssize_t m2) noexcept nogil:
    """The cell around index point x, already within [0, size - 1] on each axis."""
    cdef Cell cell
    cdef Py_ssize_t c0 = cell_start(x0, m0), c1 = cell_start(x1, m1), c2 = cell_start(x2, m2)
    cdef double f0 = x0 - c0, f1 = x1 - c1
    cell.first = (c0 * m1 + c1) * m2 + c2
    cell.f2 = x2 - c2
    cell.w00 = (1 - f0) * (1 - f1)
    cell.w01 = (1 - f0) * f1
    cell.w10 = f0 * (1 - f1)
    cell.w11 = f0 * f1
    return cell


cdef inline double cell_value(const float* corner, Cell cell, Py_ssize_t s0, Py_ssize_t s1,
                              Py_ssize_t s2) noexcept nogil:
    """The trilinear value from a cell's first corner; s0, s1, s2 step to the far corners."""
    return ((1 - cell.f2) * (cell.w00 * corner[0] + cell.w01 * corner[s1]
                             + cell.w10 * corner[s0] + cell.w11 * corner[s0 + s1])
            + cell.f2 * (cell.w00 * corner[s2] + cell.w01 * corner[s1 + s2]
                         + cell.w10 * corner[s0 + s2] + cell.w11 * corner[s0 + s1 + s2]))


cdef inline void index_grid(const double[:, ::1] point_matrix,
                            const double[:, ::1] index_matrix, double* grid,
                            double* linear) noexcept:
    """grid (3, 4) = index_matrix @ point_matrix (an output voxel to its source index,
    without the field) and linear (3, 3) = the linear part of index_matrix (a world
    displacement to indices)."""
    cdef int a, b, k
    for a in range(3):
        for b in range(4):
            grid[a * 4 + b] = index_matrix[a, 3] if b == 3 else 0.0
            for k in range(3):
                grid[a * 4 + b] += index_matrix[a, k] * point_matrix[k, b]
        for b in range(3):
            linear[a * 3 + b] = index_matrix[a, b]


def warp_linear(const float[:, ::1] image, image_shape, const float[:, ::1] field,
                bint use_field, output_shape, const double[:, ::1] point_matrix,
                const double[:, ::1] index_matrix, bint clamp, float[:, ::1] out,
                int threads, bint add_field=False):
    """Trilinear resampling: out[i] = image at index_matrix @ (point_matrix @ i + field[i]).

    `image` is (voxels, channels) on an (m0, m1, m2) grid; `field` (voxels, 3) lives on the
    output grid. Outside the image: 0, or the nearest edge value if `clamp`. With
    `add_field` (a 3-channel image) field[i] is added to out[i]: the composition of two
    displacement fields in one pass instead of a second sweep over both arrays.
    """
    cdef Py_ssize_t m0 = image_shape[0], m1 = image_shape[1], m2 = image_shape[2]
    cdef Py_ssize_t n1 = output_shape[1], n2 = output_shape[2]
    cdef Py_ssize_t rows = output_shape[0] * n1
    cdef Py_ssize_t channels = image.shape[1]
    cdef const float* source = &image[0, 0]
    cdef const float* displacement = &field[0, 0]
    cdef float* target_data = &out[0, 0]
    # Output voxel to source index in one (3, 4) matrix, so that along a line the grid
    # part of the position only grows by a constant step; the field's world displacement
    # goes through the linear part of index_matrix alone.
    cdef double grid[12]
    cdef double linear[9]
    index_grid(point_matrix, index_matrix, grid, linear)
    # Corner strides, zero on an axis of size 1.
    cdef Py_ssize_t s0 = (m1 * m2 if m0 > 1 else 0) * channels
    cdef Py_ssize_t s1 = (m2 if m1 > 1 else 0) * channels
    cdef Py_ssize_t s2 = (1 if m2 > 1 else 0) * channels
    cdef double x0, x1, x2, r0, r1, r2, d0, d1, d2, value
    cdef Cell cell
    cdef Py_ssize_t row, i0, i1, i2, v, c
    cdef bint outside
    cdef float* target
    if use_field and clamp and channels == 3:
        # A displacement field through another (the SyN's compositions, the inversion's
        # fixed-point steps): its own loop, the three channels unrolled, the same
        # arithmetic in the same order
        for row in prange(rows, nogil=True, num_threads=threads, schedule="guided"):
            _field_row(source, displacement, target_data, row, n1, n2, grid, linear, m0, m1,
                       m2, s0, s1, s2, add_field, False)
        return out
    for row in prange(rows, nogil=True, num_threads=threads, schedule="guided"):
        i0 = row // n1
        i1 = row % n1
        r0 = grid[0] * i0 + grid[1] * i1 + grid[3]
        r1 = grid[4] * i0 + grid[5] * i1 + grid[7]
        r2 = grid[8] * i0 + grid[9] * i1 + grid[11]
        for i2 in range(n2):
            v = row * n2 + i2
            x0 = r0 + grid[2] * i2
            x1 = r1 + grid[6] * i2
            x2 = r2 + grid[10] * i2
            if use_field:
                d0 = displacement[3 * v]
                d1 = displacement[3 * v + 1]
                d2 = displacement[3 * v + 2]
                x0 = x0 + linear[0] * d0 + linear[1] * d1 + linear[2] * d2
                x1 = x1 + linear[3] * d0 + linear[4] * d1 + linear[5] * d2
                x2 = x2 + linear[6] * d0 + linear[7] * d1 + linear[8] * d2
            outside = False
            x0 = map_coordinate(x0, m0, clamp, &outside)
            x1 = map_coordinate(x1, m1, clamp, &outside)
            x2 = map_coordinate(x2, m2, clamp, &outside)
            target = target_data + v * channels
            if outside:
                for c in range(channels):
                    target[c] = 0
                continue
            cell = trilinear_cell(x0, x1, x2, m0, m1, m2)
            for c in range(channels):
                value = cell_value(source + cell.first * channels + c, cell, s0, s1, s2)
                if add_field:
                    value = value + displacement[3 * v + c]
                target[c] = <float>value
    return out


cdef inline void _field_row(const float* source, const float* displacement, float* out,
                            Py_ssize_t row, Py_ssize_t n1, Py_ssize_t n2, const double* grid,
                            const double* linear, Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t m2,
                            Py_ssize_t s0, Py_ssize_t s1, Py_ssize_t s2, bint add_field,
                            bint negate) noexcept nogil:
    """One output row of `warp_linear` for a 3-channel field through a displacement,
    clamped, with the displacement added when `add_field`, negated when `negate`."""
    cdef Py_ssize_t i0 = row // n1, i1 = row % n1, i2, v, c0, c1, c2
    cdef double r0 = grid[0] * i0 + grid[1] * i1 + grid[3]
    cdef double r1 = grid[4] * i0 + grid[5] * i1 + grid[7]
    cdef double r2 = grid[8] * i0 + grid[9] * i1 + grid[11]
    cdef double x0, x1, x2, d0, d1, d2, f0, f1, f2, w00, w01, w10, w11
    cdef const float* corner
    cdef const float* d
    cdef float* target
    cdef double value[3]
    for i2 in range(n2):
        v = row * n2 + i2
        d = displacement + 3 * v
        d0 = d[0]
        d1 = d[1]
        d2 = d[2]
        x0 = clamped(r0 + grid[2] * i2 + linear[0] * d0 + linear[1] * d1 + linear[2] * d2, m0)
        x1 = clamped(r1 + grid[6] * i2 + linear[3] * d0 + linear[4] * d1 + linear[5] * d2, m1)
        x2 = clamped(r2 + grid[10] * i2 + linear[6] * d0 + linear[7] * d1 + linear[8] * d2, m2)
        c0 = cell_start(x0, m0)
        c1 = cell_start(x1, m1)
        c2 = cell_start(x2, m2)
        f0 = x0 - c0
        f1 = x1 - c1
        f2 = x2 - c2
        w00 = (1 - f0) * (1 - f1)
        w01 = (1 - f0) * f1
        w10 = f0 * (1 - f1)
        w11 = f0 * f1
        corner = source + ((c0 * m1 + c1) * m2 + c2) * 3
        target = out + 3 * v
        mireg_blend3(corner, s0, s1, s2, f2, w00, w01, w10, w11, value)
        if add_field:
            value[0] = value[0] + d0
            value[1] = value[1] + d1
            value[2] = value[2] + d2
        target[0] = <float>value[0]
        target[1] = <float>value[1]
        target[2] = <float>value[2]
        if negate:
            target[0] = -target[0]
            target[1] = -target[1]
            target[2] = -target[2]


def fixed_point_step(const float[:, ::1] field, shape, const float[:, ::1] inverse,
                     const double[:, ::1] point_matrix, const double[:, ::1] index_matrix,
                     float[:, ::1] out, int threads):
    """One step of the inversion's fixed-point iteration, w <- -field(x + w), and its change.

    `field` and `inverse` (voxels, 3) are world displacements on one grid of `shape`;
    `point_matrix` and `index_matrix` as for `warp_linear` (the grid's voxel-to-world
    matrix and its inverse). out[x] = -field(x + inverse[x]), sampled as `warp_linear`
    does (clamped); returns the largest |out - inverse| (mm). `warp_linear`, a negation
    and `max_distance` in one pass, with the same numbers.
    """
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Py_ssize_t rows = n0 * n1
    cdef double grid[12]
    cdef double linear[9]
    index_grid(point_matrix, index_matrix, grid, linear)
    if field.shape[0] != rows * n2 or inverse.shape[0] != rows * n2 or out.shape[0] != rows * n2:
        raise ValueError("field, inverse and out need one row per voxel of the grid")
    cdef Py_ssize_t s0 = (n1 * n2 if n0 > 1 else 0) * 3
    cdef Py_ssize_t s1 = (n2 if n1 > 1 else 0) * 3
    cdef Py_ssize_t s2 = (1 if n2 > 1 else 0) * 3
    cdef double[::1] largest = np.zeros(rows)
    cdef const float* w = &inverse[0, 0]
    cdef float* target = &out[0, 0]
    cdef Py_ssize_t row, v
    cdef double d0, d1, d2, squared, row_largest
    for row in prange(rows, nogil=True, num_threads=threads, schedule="guided"):
        _field_row(&field[0, 0], w, target, row, n1, n2, grid, linear, n0, n1, n2, s0, s1, s2,
                   False, True)
        row_largest = 0.0
        for v in range(row * n2, (row + 1) * n2):
            d0 = target[3 * v]
            d1 = target[3 * v + 1]
            d2 = target[3 * v + 2]
            d0 = d0 - w[3 * v]
            d1 = d1 - w[3 * v + 1]
            d2 = d2 - w[3 * v + 2]
            squared = d0 * d0 + d1 * d1 + d2 * d2
            if squared > row_largest:
                row_largest = squared
        largest[row] = row_largest
    return sqrt(np.max(largest))


cdef inline double clamped(double position, Py_ssize_t size) noexcept nogil:
    """`map_coordinate` with clamp: the position within [0, size - 1]."""
    if position < 0.0:
        return 0.0
    if position > size - 1:
        return <double>(size - 1)
    return position


def warp_nearest_index(image_shape, const float[:, ::1] field, bint use_field, output_shape,
                       const double[:, ::1] point_matrix, const double[:, ::1] index_matrix,
                       Py_ssize_t[::1] out, int threads):
    """Nearest-neighbour resampling as flat source indices (-1 outside the image)."""
    cdef Py_ssize_t m0 = image_shape[0], m1 = image_shape[1], m2 = image_shape[2]
    cdef Py_ssize_t n1 = output_shape[1], n2 = output_shape[2]
    cdef Py_ssize_t rows = output_shape[0] * n1
    cdef Vector3 j
    cdef Py_ssize_t row, i0, i1, i2, v, j0, j1, j2
    for row in prange(rows, nogil=True, num_threads=threads, schedule="guided"):
        i0 = row // n1
        i1 = row % n1
        for i2 in range(n2):
            v = row * n2 + i2
            j = source_index(i0, i1, i2, point_matrix, index_matrix, field, use_field, v)
            j0 = <Py_ssize_t>floor(j.x0 + 0.5)
            j1 = <Py_ssize_t>floor(j.x1 + 0.5)
            j2 = <Py_ssize_t>floor(j.x2 + 0.5)
            if j0 < 0 or j0 >= m0 or j1 < 0 or j1 >= m1 or j2 < 0 or j2 >= m2:
                out[v] = -1
            else:
                out[v] = (j0 * m1 + j1) * m2 + j2
    return out


def gaussian_axis(const float[:, ::1] source, float[:, ::1] target, shape, int axis,
                  const double[::1] weights, int threads):
    """1D convolution of a (voxels, channels) volume along one axis, edges replicated.

    `weights` has odd length 2r + 1, centred and symmetric (a Gaussian's taps), so the two
    neighbours k voxels either side share one multiplication. Each output row (fixed
    i0, i1: n2 * channels contiguous floats) is a weighted sum of shifted input rows, so
    the inner loops run over contiguous memory.
    """
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Py_ssize_t channels = source.shape[1]
    cdef Py_ssize_t radius = (weights.shape[0] - 1) // 2
    cdef Py_ssize_t length = n2 * channels
    cdef Py_ssize_t size = (n0, n1, n2)[axis]
    cdef Py_ssize_t row_stride = (n1, 1, 0)[axis]
    cdef const float* src = &source[0, 0]
    cdef float* dst = &target[0, 0]
    cdef float[::1] taps = np.asarray(weights, dtype=np.float32)
    cdef Py_ssize_t row, position, k
    if weights.shape[0] % 2 != 1:
        raise ValueError("gaussian_axis needs an odd number of symmetric weights")
    for k in range(1, radius + 1):  # np.allclose's test, without its cost on every call
        if (fabs(weights[radius + k] - weights[radius - k])
                > 1e-8 + 1e-5 * fabs(weights[radius - k])):
            raise ValueError("gaussian_axis needs an odd number of symmetric weights")
    for row in prange(n0 * n1, nogil=True, num_threads=threads, schedule="guided"):
        if axis == 2:
            _convolve_along_row(src + row * length, dst + row * length, n2, channels,
                                &taps[radius], radius)
        else:
            position = row // n1 if axis == 0 else row % n1
            _convolve_across_rows(src + (row - position * row_stride) * length,
                                  dst + row * length, length, position, size,
                                  row_stride * length, &taps[radius], radius)
    return target


cdef inline void _convolve_across_rows(const float* first_row, float* out, Py_ssize_t length,
                                       Py_ssize_t position, Py_ssize_t size, Py_ssize_t stride,
                                       const float* centre_tap,
                                       Py_ssize_t radius) noexcept nogil:
    """out = sum_k centre_tap[k] * row(clamp(position + k)), k = -radius .. radius.

    Rows are `stride` floats apart; the taps are symmetric about `centre_tap`.
    """
    cdef Py_ssize_t k, j
    cdef const float* centre = first_row + position * stride
    cdef const float* below
    cdef const float* above
    cdef float weight = centre_tap[0]
    for j in range(length):
        out[j] = weight * centre[j]
    for k in range(1, radius + 1):
        below = first_row + max(position - k, 0) * stride
        above = first_row + min(position + k, size - 1) * stride
        weight = centre_tap[k]
        for j in range(length):
            out[j] += weight * (below[j] + above[j])


cdef inline void _convolve_along_row(const float* row, float* out, Py_ssize_t n,
                                     Py_ssize_t channels, const float* centre_tap,
                                     Py_ssize_t radius) noexcept nogil:
    """Convolve one row of n points (channels interleaved) along itself, edges replicated.

    The taps are symmetric about `centre_tap`. Points with both neighbours inside the row
    take a plain contiguous loop; only the few near the ends clamp their neighbours.
    """
    cdef Py_ssize_t k, j, i, c, low, high, shift
    cdef float weight = centre_tap[0]
    for j in range(n * channels):
        out[j] = weight * row[j]
    for k in range(1, radius + 1):
        weight = centre_tap[k]
        shift = k * channels
        low = min(k, n)                          # points [low, high) have both inside
        high = max(low, n - k)
        for j in range(low * channels, high * channels):
            out[j] += weight * (row[j - shift] + row[j + shift])
        for i in range(low):
            _add_clamped_pair(row, out, i, k, n, channels, weight)
        for i in range(high, n):
            _add_clamped_pair(row, out, i, k, n, channels, weight)


cdef inline void _add_clamped_pair(const float* row, float* out, Py_ssize_t i, Py_ssize_t k,
                                   Py_ssize_t n, Py_ssize_t channels,
                                   float weight) noexcept nogil:
    """out[i] += weight * (row[clamp(i - k)] + row[clamp(i + k)]) for each channel."""
    cdef Py_ssize_t c
    cdef Py_ssize_t below = max(i - k, 0) * channels
    cdef Py_ssize_t above = min(i + k, n - 1) * channels
    for c in range(channels):
        out[i * channels + c] += weight * (row[below + c] + row[above + c])


def jacobian_determinant(const float[:, ::1] field, shape, const double[::1] index_to_world_inverse,
                         double[::1] out, int threads):
    """det(I + grad d) of a world displacement field d (voxels, 3) on a grid.

    grad d is taken by central differences in index space and mapped to world units with
    the row-major inverse of the grid's linear part (d/dx = d/di L^-1).
    """
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Matrix3 k = matrix3(index_to_world_inverse)
    cdef const float* data = &field[0, 0]
    cdef Py_ssize_t row, i2
    cdef AxisStep step0, step1
    for row in prange(n0 * n1, nogil=True, num_threads=threads, schedule="guided"):
        step0 = axis_step(row // n1, n0, n1 * n2 * 3)
        step1 = axis_step(row % n1, n1, n2 * 3)
        for i2 in range(n2):
            out[row * n2 + i2] = _determinant_at(data, row * n2 + i2, step0, step1,
                                                 axis_step(i2, n2, 3), &k)
    return out


def jacobian_determinant_range(const float[:, ::1] field, shape,
                               const double[::1] index_to_world_inverse, int threads):
    """(smallest, largest) det(I + grad d) over the grid, without storing the field of it."""
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Matrix3 k = matrix3(index_to_world_inverse)
    cdef const float* data = &field[0, 0]
    cdef double[::1] smallest = np.full(n0 * n1, np.inf)
    cdef double[::1] largest = np.full(n0 * n1, -np.inf)
    cdef Py_ssize_t row, i2
    cdef double det, low, high
    cdef AxisStep step0, step1
    cdef AxisStep inner = axis_step(1, 3, 3)
    cdef AxisStep step2
    # A grid along the world axes (the usual case): L^-1 is diagonal, and each Jacobian
    # entry is one difference times one factor; the zero terms added otherwise change
    # nothing (x + 0 * y is x)
    cdef bint diagonal = (k.m[1] == 0 and k.m[2] == 0 and k.m[3] == 0 and k.m[5] == 0
                          and k.m[6] == 0 and k.m[7] == 0)
    for row in prange(n0 * n1, nogil=True, num_threads=threads, schedule="guided"):
        step0 = axis_step(row // n1, n0, n1 * n2 * 3)
        step1 = axis_step(row % n1, n1, n2 * 3)
        # the row's extremes in registers, stored once (not a store per voxel)
        low = smallest[row]
        high = largest[row]
        for i2 in range(n2):
            if 0 < i2 < n2 - 1:
                # inside the row: central differences, without the ends' tests
                step2 = inner
            else:
                step2 = axis_step(i2, n2, 3)
            if diagonal:
                det = _diagonal_determinant_at(data, row * n2 + i2, step0, step1, step2, &k)
            else:
                det = _determinant_at(data, row * n2 + i2, step0, step1, step2, &k)
            if det < low:
                low = det
            if det > high:
                high = det
        smallest[row] = low
        largest[row] = high
    return float(np.min(smallest)), float(np.max(largest))


cdef inline double _determinant_at(const float* data, Py_ssize_t v, AxisStep step0,
                                   AxisStep step1, AxisStep step2,
                                   const Matrix3* k) noexcept nogil:
    """det(I + grad d) at voxel v: row a of the index-space Jacobian of component a,
    mapped to world units by L^-1."""
    cdef double d0, d1, d2
    cdef double j00, j01, j02, j10, j11, j12, j20, j21, j22
    d0 = difference(data, 3 * v, step0)
    d1 = difference(data, 3 * v, step1)
    d2 = difference(data, 3 * v, step2)
    j00 = 1.0 + d0 * k.m[0] + d1 * k.m[3] + d2 * k.m[6]
    j01 = d0 * k.m[1] + d1 * k.m[4] + d2 * k.m[7]
    j02 = d0 * k.m[2] + d1 * k.m[5] + d2 * k.m[8]
    d0 = difference(data, 3 * v + 1, step0)
    d1 = difference(data, 3 * v + 1, step1)
    d2 = difference(data, 3 * v + 1, step2)
    j10 = d0 * k.m[0] + d1 * k.m[3] + d2 * k.m[6]
    j11 = 1.0 + d0 * k.m[1] + d1 * k.m[4] + d2 * k.m[7]
    j12 = d0 * k.m[2] + d1 * k.m[5] + d2 * k.m[8]
    d0 = difference(data, 3 * v + 2, step0)
    d1 = difference(data, 3 * v + 2, step1)
    d2 = difference(data, 3 * v + 2, step2)
    j20 = d0 * k.m[0] + d1 * k.m[3] + d2 * k.m[6]
    j21 = d0 * k.m[1] + d1 * k.m[4] + d2 * k.m[7]
    j22 = 1.0 + d0 * k.m[2] + d1 * k.m[5] + d2 * k.m[8]
    return (j00 * (j11 * j22 - j12 * j21) - j01 * (j10 * j22 - j12 * j20)
            + j02 * (j10 * j21 - j11 * j20))


cdef inline double _diagonal_determinant_at(const float* data, Py_ssize_t v, AxisStep step0,
                                            AxisStep step1, AxisStep step2,
                                            const Matrix3* k) noexcept nogil:
    """`_determinant_at` for a diagonal L^-1."""
    cdef double j00, j01, j02, j10, j11, j12, j20, j21, j22
    j00 = 1.0 + difference(data, 3 * v, step0) * k.m[0]
    j01 = difference(data, 3 * v, step1) * k.m[4]
    j02 = difference(data, 3 * v, step2) * k.m[8]
    j10 = difference(data, 3 * v + 1, step0) * k.m[0]
    j11 = 1.0 + difference(data, 3 * v + 1, step1) * k.m[4]
    j12 = difference(data, 3 * v + 1, step2) * k.m[8]
    j20 = difference(data, 3 * v + 2, step0) * k.m[0]
    j21 = difference(data, 3 * v + 2, step1) * k.m[4]
    j22 = 1.0 + difference(data, 3 * v + 2, step2) * k.m[8]
    return (j00 * (j11 * j22 - j12 * j21) - j01 * (j10 * j22 - j12 * j20)
            + j02 * (j10 * j21 - j11 * j20))


def max_distance(const float[:, ::1] a, const float[:, ::1] b, int threads):
    """Largest Euclidean distance between matching rows of two (voxels, 3) fields."""
    return _largest_length(&a[0, 0], &b[0, 0], a.shape[0], threads)


def max_norm(const float[:, ::1] a, int threads):
    """Largest Euclidean length of the rows of a (voxels, 3) field."""
    return _largest_length(&a[0, 0], NULL, a.shape[0], threads)


cdef double _largest_length(const float* a, const float* b, Py_ssize_t n, int threads):
    """max_v |a[v] - b[v]| over (n, 3) rows; b NULL stands for zero."""
    cdef Py_ssize_t chunks = max(1, min(n, 256))
    cdef double[::1] largest = np.zeros(chunks)
    cdef Py_ssize_t c, v
    cdef double d0, d1, d2, squared
    for c in prange(chunks, nogil=True, num_threads=threads, schedule="guided"):
        for v in range(c * n // chunks, (c + 1) * n // chunks):
            d0 = a[3 * v]
            d1 = a[3 * v + 1]
            d2 = a[3 * v + 2]
            if b != NULL:
                d0 = d0 - b[3 * v]
                d1 = d1 - b[3 * v + 1]
                d2 = d2 - b[3 * v + 2]
            squared = d0 * d0 + d1 * d1 + d2 * d2
            if squared > largest[c]:
                largest[c] = squared
    return sqrt(np.max(largest))


cdef inline void _sample_vector(const float* field, Py_ssize_t n0, Py_ssize_t n1,
                                Py_ssize_t n2, double x0, double x1, double x2,
                                double* out) noexcept nogil:
    """A (voxels, 3) field at index point x, trilinear, the edge value beyond the grid."""
    cdef bint unused = False
    cdef Py_ssize_t c
    cdef Cell cell = trilinear_cell(map_coordinate(x0, n0, True, &unused),
                                    map_coordinate(x1, n1, True, &unused),
                                    map_coordinate(x2, n2, True, &unused), n0, n1, n2)
    cdef Py_ssize_t s0 = (n1 * n2 if n0 > 1 else 0) * 3
    cdef Py_ssize_t s1 = (n2 if n1 > 1 else 0) * 3
    cdef Py_ssize_t s2 = (1 if n2 > 1 else 0) * 3
    for c in range(3):
        out[c] = cell_value(field + 3 * cell.first + c, cell, s0, s1, s2)


cdef inline double _residual_at(const float* field, Py_ssize_t n0, Py_ssize_t n1,
                                Py_ssize_t n2, const double* to_index, double i0, double i1,
                                double i2, const cython.floating* w,
                                double* r) noexcept nogil:
    """r = w + field(i + to_index w), the inversion residual at voxel i; returns |r|^2."""
    _sample_vector(field, n0, n1, n2,
                   i0 + to_index[0] * w[0] + to_index[1] * w[1] + to_index[2] * w[2],
                   i1 + to_index[3] * w[0] + to_index[4] * w[1] + to_index[5] * w[2],
                   i2 + to_index[6] * w[0] + to_index[7] * w[1] + to_index[8] * w[2], r)
    r[0] += w[0]
    r[1] += w[1]
    r[2] += w[2]
    return r[0] * r[0] + r[1] * r[1] + r[2] * r[2]


def newton_steps(const float[:, ::1] field, shape, const double[::1] to_index,
                 double largest_step, float[:, ::1] inverse, const Py_ssize_t[::1] voxels,
                 double[:, ::1] remaining, double tolerance, int steps,
                 unsigned char[::1] left, int threads):
    """Newton steps on the inversion residual r(w) = w + field(x + w) at some voxels.

    `field` and `inverse` are (voxels, 3) world displacements on a grid of `shape`;
    `to_index` the row-major 3x3 world-to-index linear map. For each listed voxel (its
    current residual in `remaining`): J = I + d field / dw by central differences of the
    trilinear field half a voxel each way, the step J^-1 r at most `largest_step` long,
    halved up to 5 times until it lowers |r|. At most `steps` steps, fewer once |r| is
    below `tolerance` or a step cannot lower it. Updates `inverse` and `remaining`;
    `left[k]` is 1 where voxel k is still above the tolerance.
    """
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef const float* data = &field[0, 0]
    cdef float* flat = &inverse[0, 0]
    cdef double* residuals = &remaining[0, 0]
    cdef Py_ssize_t b, v
    for b in prange(voxels.shape[0], nogil=True, num_threads=threads, schedule="dynamic",
                    chunksize=64):
        v = voxels[b]
        left[b] = _newton_voxel(data, n0, n1, n2, &to_index[0], largest_step, flat + 3 * v,
                                residuals + 3 * b, v // (n1 * n2), (v // n2) % n1, v % n2,
                                tolerance, steps)
    return left


cdef inline bint _newton_voxel(const float* field, Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t n2,
                               const double* k, double largest_step, float* inverse,
                               double* remaining, double i0, double i1, double i2,
                               double tolerance, int steps) noexcept nogil:
    """Newton steps at one voxel (see `newton_steps`); True if it stays above tolerance."""
    cdef double w[3]
    cdef double r[3]
    cdef double p[3]
    cdef double trial[3]
    cdef double trial_r[3]
    cdef double plus[3]
    cdef double minus[3]
    cdef double m[9]
    cdef double s[3]
    cdef double norm, trial_norm, det, length, scale
    cdef int step, h, a, j
    cdef bint moved
    for a in range(3):
        w[a] = inverse[a]
        r[a] = remaining[a]
    norm = r[0] * r[0] + r[1] * r[1] + r[2] * r[2]
    for step in range(steps):
        if norm <= tolerance * tolerance:
            break
        p[0] = i0 + k[0] * w[0] + k[1] * w[1] + k[2] * w[2]
        p[1] = i1 + k[3] * w[0] + k[4] * w[1] + k[5] * w[2]
        p[2] = i2 + k[6] * w[0] + k[7] * w[1] + k[8] * w[2]
        # m[a, j] = d field_a / d index_j over one voxel, then m <- I + m @ to_index.
        for j in range(3):
            _sample_vector(field, n0, n1, n2, p[0] + 0.5 * (j == 0), p[1] + 0.5 * (j == 1),
                           p[2] + 0.5 * (j == 2), plus)
            _sample_vector(field, n0, n1, n2, p[0] - 0.5 * (j == 0), p[1] - 0.5 * (j == 1),
                           p[2] - 0.5 * (j == 2), minus)
            for a in range(3):
                m[3 * a + j] = plus[a] - minus[a]
        _times_plus_identity(m, k)
        det = (m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
               + m[2] * (m[3] * m[7] - m[4] * m[6]))
        if fabs(det) <= 1e-6:
            break  # the field itself folds here: no Newton direction
        # s = m^-1 r by the adjugate.
        s[0] = ((m[4] * m[8] - m[5] * m[7]) * r[0] - (m[1] * m[8] - m[2] * m[7]) * r[1]
                + (m[1] * m[5] - m[2] * m[4]) * r[2]) / det
        s[1] = (-(m[3] * m[8] - m[5] * m[6]) * r[0] + (m[0] * m[8] - m[2] * m[6]) * r[1]
                - (m[0] * m[5] - m[2] * m[3]) * r[2]) / det
        s[2] = ((m[3] * m[7] - m[4] * m[6]) * r[0] - (m[0] * m[7] - m[1] * m[6]) * r[1]
                + (m[0] * m[4] - m[1] * m[3]) * r[2]) / det
        length = sqrt(s[0] * s[0] + s[1] * s[1] + s[2] * s[2])
        scale = 1.0
        if length > largest_step:
            scale = largest_step / length
        moved = False
        for h in range(6):
            for a in range(3):
                # The inverse is stored in float32: try the point it will hold.
                trial[a] = <float>(w[a] - <float>(scale * s[a]))
            trial_norm = _residual_at(field, n0, n1, n2, k, i0, i1, i2, trial, trial_r)
            if trial_norm < norm:
                for a in range(3):
                    w[a] = trial[a]
                    r[a] = trial_r[a]
                norm = trial_norm
                moved = True
                break
            scale = scale * 0.5
        if not moved:
            break
    for a in range(3):
        inverse[a] = <float>w[a]
        remaining[a] = r[a]
    return norm > tolerance * tolerance


cdef inline void _times_plus_identity(double* m, const double* k) noexcept nogil:
    """m <- I + m @ k for row-major 3x3 matrices."""
    cdef double product[9]
    cdef int a, j
    for a in range(3):
        for j in range(3):
            product[3 * a + j] = (m[3 * a] * k[j] + m[3 * a + 1] * k[3 + j]
                                  + m[3 * a + 2] * k[6 + j] + (a == j))
    for a in range(9):
        m[a] = product[a]


def inversion_residual(const float[:, ::1] field, shape, const double[::1] to_index,
                       const float[:, ::1] values, const Py_ssize_t[::1] voxels,
                       double[:, ::1] out, int threads):
    """out[k] = values[k] + field(x_k + values[k]) for the listed voxels x_k.

    The residual of `values` as the inverse's displacements there (see `newton_steps`).
    """
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef const float* data = &field[0, 0]
    cdef Py_ssize_t b, v
    for b in prange(voxels.shape[0], nogil=True, num_threads=threads, schedule="static"):
        v = voxels[b]
        _residual_at(data, n0, n1, n2, &to_index[0], v // (n1 * n2), (v // n2) % n1, v % n2,
                     &values[b, 0], &out[b, 0])
    return out

