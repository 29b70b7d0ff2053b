# Kernels of the partial-volume joint histogram (docs/maths.md, section 7).
#
# A voxel x of the grid has an intensity bin i(x) (0: not counted) and a point y(x) in the
# other image's voxel space. The 8 voxels c around y(x) each add their own bin b(c), with
# the trilinear weight w_c(y), to the histogram row i(x): intensities are never
# interpolated. The gradient is that of the weights with respect to y. As in _mi.pyx, the
# loops run without the GIL over chunks that depend only on the problem, so the result is
# the same with one thread or many.

cimport cython
from cython.parallel cimport prange
from libc.math cimport nearbyint

import numpy as np

from napari_mireg.engine._kernels._mi import chunk_count


cdef struct Mapping:
    # y = grid[:, :3] * index + grid[:, 3] + linear * u(index): grid index and the world
    # displacement u (mm) at it, to the other image's voxel coordinates.
    double grid[12]
    double linear[9]


cdef Mapping make_mapping(const double[::1] grid, const double[::1] linear):
    cdef Mapping m
    cdef int a
    for a in range(12):
        m.grid[a] = grid[a]
    for a in range(9):
        m.linear[a] = linear[a]
    return m


cdef inline void point_of(const Mapping* m, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t i2,
                          const float* u, double* y) noexcept nogil:
    cdef int a
    for a in range(3):
        y[a] = (m.grid[4 * a] * i0 + m.grid[4 * a + 1] * i1 + m.grid[4 * a + 2] * i2
                + m.grid[4 * a + 3] + m.linear[3 * a] * u[0] + m.linear[3 * a + 1] * u[1]
                + m.linear[3 * a + 2] * u[2])


cdef inline Py_ssize_t floor_index(double x) noexcept nogil:
    """floor(x) as an index: a truncation corrected below zero. libm's floor is a function
    call on x86-64 without SSE4.1 (the baseline the wheels are built for), three a voxel."""
    cdef Py_ssize_t k = <Py_ssize_t>x
    if x < k:
        k = k - 1
    return k


cdef inline void cell_of(const double* y, Py_ssize_t s0, Py_ssize_t s1, Py_ssize_t s2,
                         const unsigned char* bins_data, int* corner_bins, double* g0,
                         double* g1, double* g2) noexcept nogil:
    """Bins of the 8 corners of the cell around y, and the 1D trilinear factors.

    Corner c has offsets (c >> 2 & 1, c >> 1 & 1, c & 1) and weight
    g0[o0] g1[o1] g2[o2]. A corner outside the image gets bin 0, which does not count:
    the histogram's column 0 is emptied after the pass and dMI/dh is zero there, so
    neither pass needs to test the corners one by one.
    """
    cdef Py_ssize_t k0 = floor_index(y[0]), k1 = floor_index(y[1]), k2 = floor_index(y[2])
    cdef double b0 = <double>k0, b1 = <double>k1, b2 = <double>k2
    cdef Py_ssize_t plane = s1 * s2, first
    cdef int c, o0, o1, o2
    g0[1] = y[0] - b0
    g0[0] = 1.0 - g0[1]
    g1[1] = y[1] - b1
    g1[0] = 1.0 - g1[1]
    g2[1] = y[2] - b2
    g2[0] = 1.0 - g2[1]
    if 0 <= k0 and k0 + 1 < s0 and 0 <= k1 and k1 + 1 < s1 and 0 <= k2 and k2 + 1 < s2:
        # the whole cell inside: almost every voxel
        first = (k0 * s1 + k1) * s2 + k2
        corner_bins[0] = bins_data[first]
        corner_bins[1] = bins_data[first + 1]
        corner_bins[2] = bins_data[first + s2]
        corner_bins[3] = bins_data[first + s2 + 1]
        corner_bins[4] = bins_data[first + plane]
        corner_bins[5] = bins_data[first + plane + 1]
        corner_bins[6] = bins_data[first + plane + s2]
        corner_bins[7] = bins_data[first + plane + s2 + 1]
        return
    for c in range(8):
        o0 = (c >> 2) & 1
        o1 = (c >> 1) & 1
        o2 = c & 1
        if 0 <= k0 + o0 < s0 and 0 <= k1 + o1 < s1 and 0 <= k2 + o2 < s2:
            corner_bins[c] = bins_data[((k0 + o0) * s1 + k1 + o1) * s2 + k2 + o2]
        else:
            corner_bins[c] = 0


cdef inline bint same_corners(const int* corner_bins) noexcept nogil:
    """True when the 8 corners of a cell are of one level."""
    cdef int first = corner_bins[0]
    return (corner_bins[1] == first and corner_bins[2] == first and corner_bins[3] == first
            and corner_bins[4] == first and corner_bins[5] == first
            and corner_bins[6] == first and corner_bins[7] == first)




cdef inline void voxel_gradient(const Mapping* m, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t i2,
                                Py_ssize_t v, Py_ssize_t s0, Py_ssize_t s1, Py_ssize_t s2,
                                const unsigned char* other, const float* u, int row,
                                Py_ssize_t bins, const double* table,
                                float* out) noexcept nogil:
    """out[0:3] = linear^T sum_c dw_c/dy W(row, b(c)) at voxel v (zero if it does not count).

    With t_c = W(row, b(c)), the sum along axis 0 is sum over (o1, o2) of
    g1[o1] g2[o2] (t(1, o1, o2) - t(0, o1, o2)), and alike along axes 1 and 2.
    """
    cdef double y[3]
    cdef double g0[2]
    cdef double g1[2]
    cdef double g2[2]
    cdef int corner_bins[8]
    cdef double t[8]
    cdef double d0 = 0.0, d1 = 0.0, d2 = 0.0
    cdef const double* table_row
    cdef int k
    if row != 0:
        point_of(m, i0, i1, i2, u + 3 * v, y)
        cell_of(y, s0, s1, s2, other, corner_bins, g0, g1, g2)
        if same_corners(corner_bins):
            # one level all round the point: every weight difference is zero
            out[0] = 0.0
            out[1] = 0.0
            out[2] = 0.0
            return
        table_row = table + row * bins
        for k in range(8):
            t[k] = table_row[corner_bins[k]]
        d0 = (g1[0] * (g2[0] * (t[4] - t[0]) + g2[1] * (t[5] - t[1]))
              + g1[1] * (g2[0] * (t[6] - t[2]) + g2[1] * (t[7] - t[3])))
        d1 = (g0[0] * (g2[0] * (t[2] - t[0]) + g2[1] * (t[3] - t[1]))
              + g0[1] * (g2[0] * (t[6] - t[4]) + g2[1] * (t[7] - t[5])))
        d2 = (g0[0] * (g1[0] * (t[1] - t[0]) + g1[1] * (t[3] - t[2]))
              + g0[1] * (g1[0] * (t[5] - t[4]) + g1[1] * (t[7] - t[6])))
    if s0 == 1:
        d0 = 0.0  # a 2D image: no neighbour along the first axis
    out[0] = <float>(m.linear[0] * d0 + m.linear[3] * d1 + m.linear[6] * d2)
    out[1] = <float>(m.linear[1] * d0 + m.linear[4] * d1 + m.linear[7] * d2)
    out[2] = <float>(m.linear[2] * d0 + m.linear[5] * d1 + m.linear[8] * d2)


def histogram(const unsigned char[::1] grid_bins, const unsigned char[:, :, ::1] other_bins,
              const float[:, ::1] field, shape, const double[::1] grid, const double[::1] linear,
              int bins, int threads):
    """Pass 1: the partial-volume joint histogram (rows: the grid's bins; columns: the other's).

    Parameters
    ----------
    grid_bins : (n,) uint8
        Bin of each grid voxel, 0 where it does not count.
    other_bins : (s0, s1, s2) uint8
        Bin of each voxel of the other image, 0 where it does not count.
    field : (n, 3) float32
        World displacement at each grid voxel.
    shape : the grid's (n0, n1, n2)
    grid, linear : row-major (3, 4) and (3, 3) matrices of the Mapping.

    Returns
    -------
    ndarray of float64 (bins, bins): weights summed, row and column 0 left empty.
    """
    cdef Mapping m = make_mapping(grid, linear)
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Py_ssize_t s0 = other_bins.shape[0], s1 = other_bins.shape[1], s2 = other_bins.shape[2]
    cdef Py_ssize_t n = n0 * n1 * n2
    cdef Py_ssize_t cells = <Py_ssize_t>bins * bins
    cdef Py_ssize_t lines = n0 * n1
    # chunks of whole grid lines (i0, i1 fixed): no index division per voxel
    cdef Py_ssize_t chunks = chunk_count(lines, n, cells)
    cdef double[:, ::1] partial = np.zeros((chunks, cells))
    cdef const unsigned char* other = &other_bins[0, 0, 0]
    cdef const float* u = &field[0, 0]
    cdef Py_ssize_t c, line, i2, v, start, stop
    for c in prange(chunks, nogil=True, num_threads=threads, schedule="guided"):
        start = c * lines // chunks
        stop = (c + 1) * lines // chunks
        for line in range(start, stop):
            for i2 in range(n2):
                v = line * n2 + i2
                if grid_bins[v] != 0:
                    add_voxel(&m, line // n1, line % n1, i2, v, s0, s1, s2, other, u,
                              grid_bins[v], bins, &partial[c, 0])
    counts = np.asarray(partial).sum(axis=0).reshape(bins, bins)
    counts[:, 0] = 0  # the weights of corners outside the other image or its mask
    return counts


def gradient(const unsigned char[::1] grid_bins, const unsigned char[:, :, ::1] other_bins,
             const float[:, ::1] field, shape, const double[::1] grid, const double[::1] linear,
             const double[:, ::1] weights_table, float[:, ::1] out, int threads):
    """Pass 2: dMI/du(x) = linear^T sum_c dw_c/dy W(i(x), b(c)), written into `out` (n, 3).

    `weights_table[i, b]` is dMI/dh(i, b), the derivative of MI by one histogram cell's
    weight (metric.py), and must be zero in column 0 (bin 0 does not count); a voxel that
    does not count gets zero.
    """
    cdef Mapping m = make_mapping(grid, linear)
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Py_ssize_t s0 = other_bins.shape[0], s1 = other_bins.shape[1], s2 = other_bins.shape[2]
    cdef Py_ssize_t bins = weights_table.shape[0]
    cdef const unsigned char* other = &other_bins[0, 0, 0]
    cdef const float* u = &field[0, 0]
    cdef const double* table = &weights_table[0, 0]
    cdef Py_ssize_t line, i2, v
    for line in prange(n0 * n1, nogil=True, num_threads=threads, schedule="static"):
        for i2 in range(n2):
            v = line * n2 + i2
            voxel_gradient(&m, line // n1, line % n1, i2, v, s0, s1, s2, other, u,
                           grid_bins[v], bins, table, &out[v, 0])
    return out


def levels(const float[::1] values, const unsigned char[::1] counted, bint use_counted,
           double low, double scale, int top, unsigned char[::1] out, int threads):
    """Cut an image into intensity levels in one pass (partial_volume.IntensityLevels).

    out[v] = clamp(nearest((values[v] - low) * scale + 1), 1, top), halves to even as
    numpy's rint; 0 below `low` or outside `counted`.
    """
    cdef Py_ssize_t n = values.shape[0], v
    cdef float low32 = <float>low, scale32 = <float>scale
    cdef double x
    for v in prange(n, nogil=True, num_threads=threads, schedule="static"):
        # in float32, as the images are: a level boundary falls where numpy puts it
        x = nearbyint(<double>((values[v] - low32) * scale32 + <float>1.0))
        if (use_counted and not counted[v]) or values[v] < low:
            out[v] = 0
        elif x >= top:
            out[v] = <unsigned char>top
        elif x <= 1.0:
            out[v] = 1
        else:
            out[v] = <unsigned char>(<int>x)
    return out


cdef inline unsigned char nearest_level(const Mapping* m, Py_ssize_t i0, Py_ssize_t i1,
                                        Py_ssize_t i2, Py_ssize_t v, Py_ssize_t s0,
                                        Py_ssize_t s1, Py_ssize_t s2, const unsigned char* bins,
                                        const float* u) noexcept nogil:
    """Level of the voxel nearest voxel v's point (0 outside the image)."""
    cdef double y[3]
    cdef Py_ssize_t k0, k1, k2
    point_of(m, i0, i1, i2, u + 3 * v, y)
    k0 = floor_index(y[0] + 0.5)
    k1 = floor_index(y[1] + 0.5)
    k2 = floor_index(y[2] + 0.5)
    if 0 <= k0 < s0 and 0 <= k1 < s1 and 0 <= k2 < s2:
        return bins[(k0 * s1 + k1) * s2 + k2]
    return 0


def nearest_levels(const unsigned char[:, :, ::1] other_bins, const float[:, ::1] field, shape,
                   const double[::1] grid, const double[::1] linear, unsigned char[::1] out,
                   int threads):
    """The other image's level at the voxel nearest each grid voxel's point (0 outside).

    The symmetric SyN's row levels: each image's own levels, carried half way by nearest
    neighbour, so no intensity is interpolated on either side (docs/maths.md, section 7).
    """
    cdef Mapping m = make_mapping(grid, linear)
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Py_ssize_t s0 = other_bins.shape[0], s1 = other_bins.shape[1], s2 = other_bins.shape[2]
    cdef const unsigned char* other = &other_bins[0, 0, 0]
    cdef const float* u = &field[0, 0]
    cdef Py_ssize_t line, i2, v
    for line in prange(n0 * n1, nogil=True, num_threads=threads, schedule="static"):
        for i2 in range(n2):
            v = line * n2 + i2
            out[v] = nearest_level(&m, line // n1, line % n1, i2, v, s0, s1, s2, other, u)
    return out



cdef inline int level_nearest(const double* y, Py_ssize_t s0, Py_ssize_t s1, Py_ssize_t s2,
                              const unsigned char* levels) noexcept nogil:
    """Level of the voxel nearest point y (0 outside the image)."""
    cdef Py_ssize_t k0 = floor_index(y[0] + 0.5)
    cdef Py_ssize_t k1 = floor_index(y[1] + 0.5)
    cdef Py_ssize_t k2 = floor_index(y[2] + 0.5)
    if 0 <= k0 < s0 and 0 <= k1 < s1 and 0 <= k2 < s2:
        return levels[(k0 * s1 + k1) * s2 + k2]
    return 0


cdef inline unsigned char add_at_point(const double* y, Py_ssize_t s0, Py_ssize_t s1,
                                       Py_ssize_t s2, const unsigned char* other, int row,
                                       Py_ssize_t bins, double* cells) noexcept nogil:
    """Add the 8 corner weights of the cell around y to histogram row `row`, as
    `add_voxel` does; returns the row, or 0 when the 8 corners are of one level (the
    gradient is zero there)."""
    cdef double g0[2]
    cdef double g1[2]
    cdef double g2[2]
    cdef int corner_bins[8]
    cdef double* cells_row = cells + row * bins
    cdef double w00, w01, w10, w11
    cell_of(y, s0, s1, s2, other, corner_bins, g0, g1, g2)
    w00 = g0[0] * g1[0]
    w01 = g0[0] * g1[1]
    w10 = g0[1] * g1[0]
    w11 = g0[1] * g1[1]
    if same_corners(corner_bins):
        # Inside one level (most voxels of a tissue or of the background): one addition of
        # the summed weight, instead of 8 to the same cell, each waiting for the last.
        cells_row[corner_bins[0]] += ((w00 * g2[0] + w00 * g2[1]) + (w01 * g2[0] + w01 * g2[1])
                                      + ((w10 * g2[0] + w10 * g2[1])
                                         + (w11 * g2[0] + w11 * g2[1])))
        return 0
    cells_row[corner_bins[0]] += w00 * g2[0]
    cells_row[corner_bins[1]] += w00 * g2[1]
    cells_row[corner_bins[2]] += w01 * g2[0]
    cells_row[corner_bins[3]] += w01 * g2[1]
    cells_row[corner_bins[4]] += w10 * g2[0]
    cells_row[corner_bins[5]] += w10 * g2[1]
    cells_row[corner_bins[6]] += w11 * g2[0]
    cells_row[corner_bins[7]] += w11 * g2[1]
    return <unsigned char>row


cdef inline void add_voxel(const Mapping* m, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t i2,
                           Py_ssize_t v, Py_ssize_t s0, Py_ssize_t s1, Py_ssize_t s2,
                           const unsigned char* other, const float* u, int row, Py_ssize_t bins,
                           double* cells) noexcept nogil:
    """Add voxel v's 8 corner weights to its histogram row (arrays local: one per thread)."""
    cdef double y[3]
    point_of(m, i0, i1, i2, u + 3 * v, y)
    add_at_point(y, s0, s1, s2, other, row, bins, cells)


cdef inline void halfway_voxel(const Mapping* to_fixed, const Mapping* to_moving,
                               Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t i2, Py_ssize_t v,
                               Py_ssize_t f0, Py_ssize_t f1, Py_ssize_t f2,
                               const unsigned char* fixed, const float* u_fixed,
                               Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t m2,
                               const unsigned char* moving, const float* u_moving,
                               Py_ssize_t bins, double* forward_cells, double* backward_cells,
                               unsigned char* forward_rows, unsigned char* backward_rows,
                               bint backward) noexcept nogil:
    """Voxel v's share of `halfway_histograms` (its points live on this thread's stack)."""
    cdef double y_fixed[3]
    cdef double y_moving[3]
    cdef int row
    point_of(to_fixed, i0, i1, i2, u_fixed + 3 * v, y_fixed)
    row = level_nearest(y_fixed, f0, f1, f2, fixed)
    if row != 0 or backward:
        point_of(to_moving, i0, i1, i2, u_moving + 3 * v, y_moving)
    if row != 0:
        forward_rows[v] = add_at_point(y_moving, m0, m1, m2, moving, row, bins, forward_cells)
    else:
        forward_rows[v] = 0
    if backward:
        row = level_nearest(y_moving, m0, m1, m2, moving)
        if row != 0:
            backward_rows[v] = add_at_point(y_fixed, f0, f1, f2, fixed, row, bins,
                                            backward_cells)
        else:
            backward_rows[v] = 0


def halfway_histograms(const unsigned char[:, :, ::1] fixed_bins,
                       const unsigned char[:, :, ::1] moving_bins,
                       const float[:, ::1] half_fixed, const float[:, ::1] half_moving, shape,
                       const double[::1] fixed_grid, const double[::1] fixed_linear,
                       const double[::1] moving_grid, const double[::1] moving_linear, int bins,
                       unsigned char[::1] forward_rows, unsigned char[::1] backward_rows,
                       bint backward, int threads):
    """The symmetric SyN's two partial-volume histograms in one pass over the grid.

    Grid voxel x has a point in the fixed image's voxels (through `half_fixed` and the
    fixed mapping) and one in the moving image's (through `half_moving` and the moving
    mapping). The forward histogram's row is the fixed level nearest the fixed point (as
    `nearest_levels`), its columns the moving levels around the moving point (as
    `histogram`); the backward one the other way round. The additions are those of
    `nearest_levels` then `histogram`, in the same order and chunks: the same histograms
    bit for bit, in one pass instead of four.

    `forward_rows` and `backward_rows` (n,) receive each voxel's row for `gradient`, or 0
    where its gradient is zero (not counted, or the 8 corners of one level), so that pass
    skips those voxels. Without `backward` only the forward histogram is made (for the
    value) and `backward_rows` is left alone.

    Returns
    -------
    forward, backward : ndarray of float64 (bins, bins); backward None without `backward`
        Weights summed, row and column 0 left empty.
    """
    cdef Mapping to_fixed = make_mapping(fixed_grid, fixed_linear)
    cdef Mapping to_moving = make_mapping(moving_grid, moving_linear)
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Py_ssize_t f0 = fixed_bins.shape[0], f1 = fixed_bins.shape[1], f2 = fixed_bins.shape[2]
    cdef Py_ssize_t m0 = moving_bins.shape[0], m1 = moving_bins.shape[1]
    cdef Py_ssize_t m2 = moving_bins.shape[2]
    cdef Py_ssize_t n = n0 * n1 * n2
    cdef Py_ssize_t cells = <Py_ssize_t>bins * bins
    cdef Py_ssize_t lines = n0 * n1
    cdef Py_ssize_t chunks = chunk_count(lines, n, cells)
    cdef double[:, ::1] forward_partial = np.zeros((chunks, cells))
    cdef double[:, ::1] backward_partial = np.zeros((chunks if backward else 1, cells))
    cdef const unsigned char* fixed = &fixed_bins[0, 0, 0]
    cdef const unsigned char* moving = &moving_bins[0, 0, 0]
    cdef const float* u_fixed = &half_fixed[0, 0]
    cdef const float* u_moving = &half_moving[0, 0]
    cdef Py_ssize_t c, line, i0, i1, i2, start, stop
    if half_fixed.shape[0] != n or half_moving.shape[0] != n or forward_rows.shape[0] != n:
        raise ValueError("the half-maps and forward_rows need one row per grid voxel")
    if backward and backward_rows.shape[0] != n:
        raise ValueError("backward_rows needs one entry per grid voxel")
    for c in prange(chunks, nogil=True, num_threads=threads, schedule="guided"):
        start = c * lines // chunks
        stop = (c + 1) * lines // chunks
        for line in range(start, stop):
            i0 = line // n1
            i1 = line % n1
            for i2 in range(n2):
                halfway_voxel(&to_fixed, &to_moving, i0, i1, i2, line * n2 + i2,
                              f0, f1, f2, fixed, u_fixed, m0, m1, m2, moving, u_moving, bins,
                              &forward_partial[c, 0], &backward_partial[c if backward else 0, 0],
                              &forward_rows[0], &backward_rows[0], backward)
    forward = np.asarray(forward_partial).sum(axis=0).reshape(bins, bins)
    forward[:, 0] = 0  # the weights of corners outside the other image or its mask
    if not backward:
        return forward, None
    backward_counts = np.asarray(backward_partial).sum(axis=0).reshape(bins, bins)
    backward_counts[:, 0] = 0
    return forward, backward_counts
