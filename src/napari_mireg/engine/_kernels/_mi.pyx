# Kernels of the Parzen-window mutual information (ITK Mattes convention).
#
# The maths is in docs/maths.md, sections 1-4. Every loop runs without the GIL,
# split over a number of chunks that depends only on the problem (never on the thread count),
# so the result is the same, bit for bit, with one thread or many.

cimport cython
from cython.parallel cimport prange, threadid
from libc.string cimport memset

import numpy as np

from napari_mireg.engine._kernels.shared cimport (AxisStep, Matrix3, Vector3, axis_step, matrix3,
                                    mireg_have_openmp, mireg_max_threads, physical_gradient,
                                    store_components)

cdef enum:
    # Histogram padding of the Mattes convention: two empty bins at each end.
    PADDING = 2


def openmp_enabled():
    """Return True when the kernels were compiled with OpenMP."""
    return bool(mireg_have_openmp())


def max_threads():
    """Return the number of threads a parallel loop uses by default."""
    return mireg_max_threads()


def parallel_threads(int threads):
    """Return the number of threads that took part in a parallel region asked for `threads`.

    Iteration i of a static schedule in chunks of one goes to thread i, so every thread of
    the team marks its own slot; without OpenMP the calling thread runs the region alone.
    """
    cdef int[::1] seen = np.zeros(max(threads, 1), dtype=np.intc)
    cdef Py_ssize_t i
    for i in prange(threads, nogil=True, num_threads=threads, schedule="static", chunksize=1):
        seen[threadid()] = 1
    return int(np.count_nonzero(seen))


cdef struct BinMap:
    # value -> continuous bin position: (value - low) * scale + PADDING
    double fixed_low
    double fixed_scale
    double moving_low
    double moving_scale
    int bins


# Bin positions are never negative (ranges come from the samples themselves), so a cast
# truncates like floor; clamping covers rounding at the ends.

cdef inline int fixed_bin(double value, const BinMap* m) noexcept nogil:
    """Box-kernel bin of a fixed intensity, clamped to the unpadded bins."""
    cdef int index = <int>((value - m.fixed_low) * m.fixed_scale + PADDING)
    if index < PADDING:
        return PADDING
    if index > m.bins - PADDING - 1:
        return m.bins - PADDING - 1
    return index


cdef inline int moving_bin(double value, const BinMap* m, double* fraction) noexcept nogil:
    """Bin k0 = floor(t) of the continuous position t, clamped; fraction = t - k0."""
    cdef double position = (value - m.moving_low) * m.moving_scale + PADDING
    cdef int index = <int>position
    if index < PADDING:
        index = PADDING
    elif index > m.bins - PADDING - 1:
        index = m.bins - PADDING - 1
    fraction[0] = position - index
    return index


cdef inline double update_coefficient(double fixed_value, double moving_value,
                                      const BinMap* m, const double* table) noexcept nogil:
    """sum_k d b3(k - t)/dt * W(i, k), a quadratic in f = t - k0 tabulated per (i, k0)."""
    cdef double f
    cdef int k0 = moving_bin(moving_value, m, &f)
    # Py_ssize_t arithmetic: bins * bins * 3 must not wrap a C int for any accepted bins.
    cdef const double* q = table + 3 * (<Py_ssize_t>fixed_bin(fixed_value, m) * m.bins + k0)
    return q[0] + f * (q[1] + f * q[2])


cdef inline void add_outer(double* sums, double scale, double x0, double x1,
                           double x2) noexcept nogil:
    """sums[0:4] += scale * [x0, x1, x2, 1]: one row of an affine-gradient outer product."""
    sums[0] += scale * x0
    sums[1] += scale * x1
    sums[2] += scale * x2
    sums[3] += scale


cdef BinMap make_bin_map(int bins, double fixed_min, double fixed_max,
                         double moving_min, double moving_max):
    cdef BinMap m
    m.bins = bins
    m.fixed_low = fixed_min
    m.fixed_scale = (bins - 2 * PADDING) / (fixed_max - fixed_min)
    m.moving_low = moving_min
    m.moving_scale = (bins - 2 * PADDING) / (moving_max - moving_min)
    return m


def chunk_count(Py_ssize_t items, Py_ssize_t voxels, Py_ssize_t accumulator_size):
    """Number of chunks a reduction is split into: a function of the problem alone.

    `items` is what a chunk is made of (voxels or rows). Each chunk has its own accumulator
    of `accumulator_size` doubles; chunks are at most 256, hold at least ~16k voxels, and
    their accumulators take at most 4 MiB together.
    """
    cdef Py_ssize_t by_memory = max(1, (4 << 20) // (8 * accumulator_size))
    return int(max(1, min(items, 256, by_memory, voxels // 16384)))


def intensity_range(const cython.floating[::1] image, const unsigned char[::1] mask,
                    bint use_mask, int threads):
    """Scan a flat image once: min and max over counted voxels, and their number.

    Returns
    -------
    low, high : float
        Extremes over the voxels inside the mask (all voxels without one).
    counted : int
        Number of voxels inside the mask.
    nonfinite : int
        Number of NaN or infinite voxels anywhere in the image.
    """
    cdef Py_ssize_t n = image.shape[0]
    cdef Py_ssize_t chunks = chunk_count(n, n, 1)
    cdef double[:, ::1] extremes = np.empty((chunks, 2))
    cdef Py_ssize_t[:, ::1] counts = np.zeros((chunks, 2), dtype=np.intp)
    cdef Py_ssize_t c, v, start, stop
    cdef double value, low, high
    for c in prange(chunks, nogil=True, num_threads=threads, schedule="guided"):
        start = c * n // chunks
        stop = (c + 1) * n // chunks
        low = 1e308
        high = -1e308
        for v in range(start, stop):
            value = image[v]
            if value - value != 0.0:
                counts[c, 1] += 1
            elif not use_mask or mask[v]:
                counts[c, 0] += 1
                if value < low:
                    low = value
                if value > high:
                    high = value
        extremes[c, 0] = low
        extremes[c, 1] = high
    return (float(np.min(extremes[:, 0])), float(np.max(extremes[:, 1])),
            int(np.sum(counts[:, 0])), int(np.sum(counts[:, 1])))


def histogram_moments(const cython.floating[::1] fixed, const cython.floating[::1] moving,
                      const unsigned char[::1] mask, bint use_mask, int bins,
                      double fixed_min, double fixed_max, double moving_min, double moving_max,
                      int threads):
    """Pass 1: per (fixed bin i, moving bin k0) the sums of 1, f, f^2, f^3, f = t - k0.

    The cubic B-spline weights of the 4 bins around t are cubics in f, so these moments
    give the Parzen joint histogram exactly (see metric.py), with one contiguous update
    per voxel instead of four scattered ones.

    Returns
    -------
    ndarray of float64, shape (bins, bins, 4)
    """
    cdef BinMap m = make_bin_map(bins, fixed_min, fixed_max, moving_min, moving_max)
    cdef Py_ssize_t n = fixed.shape[0]
    cdef Py_ssize_t cells = 4 * <Py_ssize_t>bins * bins  # a C int would wrap for large bins
    cdef Py_ssize_t chunks = chunk_count(n, n, cells)
    cdef double[:, ::1] partial = np.zeros((chunks, cells))
    cdef Py_ssize_t c, v, start, stop
    cdef double f, f2, f3, run_fixed, run_moving, s0, s1, s2, s3
    cdef int k0
    cdef double* cell
    for c in prange(chunks, nogil=True, num_threads=threads, schedule="guided"):
        start = c * n // chunks
        stop = (c + 1) * n // chunks
        # Consecutive counted voxels with the same two values (background, most of all) fall
        # in one cell with one f: the bin lookup is skipped and the cell's sums stay in
        # registers for the run. The additions are the same, in the same order: the sums
        # are those of one update per voxel, bit for bit.
        cell = NULL
        s0 = s1 = s2 = s3 = 0.0
        f = f2 = f3 = run_fixed = run_moving = 0.0
        for v in range(start, stop):
            if use_mask and not mask[v]:
                continue
            if cell == NULL or fixed[v] != run_fixed or moving[v] != run_moving:
                if cell != NULL:
                    cell[0] = s0
                    cell[1] = s1
                    cell[2] = s2
                    cell[3] = s3
                run_fixed = fixed[v]
                run_moving = moving[v]
                k0 = moving_bin(run_moving, &m, &f)
                f2 = f * f
                f3 = f2 * f
                cell = &partial[c, 4 * (<Py_ssize_t>fixed_bin(run_fixed, &m) * bins + k0)]
                s0 = cell[0]
                s1 = cell[1]
                s2 = cell[2]
                s3 = cell[3]
            s0 = s0 + 1.0
            s1 = s1 + f
            s2 = s2 + f2
            s3 = s3 + f3
        if cell != NULL:
            cell[0] = s0
            cell[1] = s1
            cell[2] = s2
            cell[3] = s3
    return np.asarray(partial).sum(axis=0).reshape(bins, bins, 4)


cdef inline Py_ssize_t constant_end(const cython.floating* image, Py_ssize_t first,
                                    Py_ssize_t n2, AxisStep step0, AxisStep step1,
                                    Py_ssize_t direction) noexcept nogil:
    """How many voxels from `first` along a row (forwards or backwards) hold the value of
    `first` in the row and in its two neighbouring rows along each other axis."""
    cdef double value = image[first]
    cdef Py_ssize_t j, v
    for j in range(n2):
        v = first + direction * j
        if (image[v] != value or image[v + step0.plus] != value
                or image[v - step0.minus] != value or image[v + step1.plus] != value
                or image[v - step1.minus] != value):
            return j
    return n2


def dense_gradient(const cython.floating[::1] fixed, const cython.floating[::1] moving,
                   const unsigned char[::1] mask, bint use_mask, shape,
                   const double[:, :, ::1] table,
                   double fixed_min, double fixed_max, double moving_min, double moving_max,
                   const double[::1] index_to_physical, float[:, ::1] out, int first_axis,
                   int threads):
    """Pass 2: dMI/du(x) = -sum_k b3'(k - t) W(i, k) * grad M(x), written into `out`.

    `table[i, k0]` holds the coefficients of that sum as a quadratic in f = t - k0.

    The moving gradient is taken here by central differences mapped by the row-major
    3x3 `index_to_physical` matrix. Components `first_axis`.. of the 3D gradient are
    stored, so a 2D image seen as (1, n1, n2) gets its two components.
    """
    cdef BinMap m = make_bin_map(table.shape[0], fixed_min, fixed_max, moving_min, moving_max)
    cdef Py_ssize_t n0 = shape[0], n1 = shape[1], n2 = shape[2]
    cdef Py_ssize_t components = 3 - first_axis
    cdef Matrix3 k = matrix3(index_to_physical)
    cdef const cython.floating* fixed_data = &fixed[0]
    cdef const cython.floating* moving_data = &moving[0]
    cdef const double* table_data = &table[0, 0, 0]
    cdef float* out_data = &out[0, 0]
    cdef Py_ssize_t row, i2, v, a, begin, end
    cdef double coefficient
    cdef Vector3 g
    cdef float* target
    cdef AxisStep step0, step1, step2
    for row in prange(n0 * n1, nogil=True, num_threads=threads, schedule="guided"):
        step0 = axis_step(row // n1, n0, n1 * n2)
        step1 = axis_step(row % n1, n1, n2)
        # The row's ends where it and its four neighbouring rows hold one value (background)
        # have a zero gradient: zeroed in one sweep, without a per-voxel test.
        begin = constant_end(moving_data, row * n2, n2, step0, step1, 1)
        end = n2 - constant_end(moving_data, row * n2 + n2 - 1, n2, step0, step1, -1)
        if begin > 0:
            begin = begin - 1  # the last constant voxel may see a change along the row
        if end < n2:
            end = end + 1
        if begin >= end:
            begin = end = n2
        memset(out_data + row * n2 * components, 0, begin * components * sizeof(float))
        memset(out_data + (row * n2 + end) * components, 0,
               (n2 - end) * components * sizeof(float))
        for i2 in range(begin, end):
            v = row * n2 + i2
            target = out_data + v * components
            step2 = axis_step(i2, n2, 1)
            # Voxels outside the mask or with a zero moving gradient (background) get a zero
            # update: the bin lookup and the products are skipped, not only multiplied by 0.
            if ((use_mask and not mask[v])
                    or (moving_data[v + step0.plus] == moving_data[v - step0.minus]
                        and moving_data[v + step1.plus] == moving_data[v - step1.minus]
                        and moving_data[v + step2.plus] == moving_data[v - step2.minus])):
                for a in range(components):
                    target[a] = 0.0
                continue
            coefficient = update_coefficient(fixed_data[v], moving_data[v], &m, table_data)
            g = physical_gradient(moving_data, v, step0, step1, step2, &k)
            store_components(target, components, coefficient, g)
    return out


def dense_gradient_given(const cython.floating[::1] fixed, const cython.floating[::1] moving,
                         const unsigned char[::1] mask, bint use_mask,
                         const double[:, :, ::1] table,
                         double fixed_min, double fixed_max, double moving_min, double moving_max,
                         const cython.floating[:, ::1] moving_gradient, float[:, ::1] out,
                         int threads):
    """Pass 2 with a precomputed moving gradient of shape (n, components)."""
    cdef BinMap m = make_bin_map(table.shape[0], fixed_min, fixed_max, moving_min, moving_max)
    cdef Py_ssize_t n = fixed.shape[0], components = out.shape[1]
    cdef const double* table_data = &table[0, 0, 0]
    cdef Py_ssize_t v, a
    cdef double coefficient
    for v in prange(n, nogil=True, num_threads=threads, schedule="guided"):
        if use_mask and not mask[v]:
            coefficient = 0.0
        else:
            coefficient = update_coefficient(fixed[v], moving[v], &m, table_data)
        for a in range(components):
            out[v, a] = <float>(coefficient * moving_gradient[v, a])


def affine_gradient(const cython.floating[::1] fixed, const cython.floating[::1] moving,
                    const unsigned char[::1] mask, bint use_mask, shape,
                    const double[:, :, ::1] table,
                    double fixed_min, double fixed_max, double moving_min, double moving_max,
                    const float[:, ::1] moving_gradient, const double[:, ::1] grid_to_world,
                    int threads):
    """dMI/dA for y = A [x; 1]: sum_x dMI/du(x) [x; 1]^T, with x the world point of a voxel.

    `moving_gradient` (voxels, ndim) is grad M at the transformed points, in world units.
    The per-voxel update is never stored: it is contracted with the point on the fly.

    Returns
    -------
    ndarray of float64, shape (3, 4)
        Row a, column b: derivative with respect to the affine matrix entry A[a, b]
        (column 3 is the translation), in the 3D embedding of the grid.
    """
    cdef BinMap m = make_bin_map(table.shape[0], fixed_min, fixed_max, moving_min, moving_max)
    cdef Py_ssize_t n1 = shape[1], n2 = shape[2]
    cdef Py_ssize_t rows = shape[0] * n1
    cdef Py_ssize_t components = moving_gradient.shape[1]
    cdef Py_ssize_t chunks = chunk_count(rows, rows * n2, 12)
    cdef double[:, ::1] partial = np.zeros((chunks, 12))
    cdef const cython.floating* fixed_data = &fixed[0]
    cdef const cython.floating* moving_data = &moving[0]
    cdef const double* table_data = &table[0, 0, 0]
    cdef const float* gradient_data = &moving_gradient[0, 0]
    cdef const float* g
    cdef Py_ssize_t c, row, i0, i1, i2, v
    cdef double coefficient, x0, x1, x2, g0
    cdef double* sums
    for c in prange(chunks, nogil=True, num_threads=threads, schedule="guided"):
        sums = &partial[c, 0]
        for row in range(c * rows // chunks, (c + 1) * rows // chunks):
            i0 = row // n1
            i1 = row % n1
            for i2 in range(n2):
                v = row * n2 + i2
                if use_mask and not mask[v]:
                    continue
                g = gradient_data + v * components
                # A zero moving gradient (background) adds nothing: skip its bin lookup.
                if g[0] == 0.0 and g[components - 2] == 0.0 and g[components - 1] == 0.0:
                    continue
                coefficient = update_coefficient(fixed_data[v], moving_data[v], &m, table_data)
                if coefficient == 0.0:
                    continue
                x0 = (grid_to_world[0, 0] * i0 + grid_to_world[0, 1] * i1
                      + grid_to_world[0, 2] * i2 + grid_to_world[0, 3])
                x1 = (grid_to_world[1, 0] * i0 + grid_to_world[1, 1] * i1
                      + grid_to_world[1, 2] * i2 + grid_to_world[1, 3])
                x2 = (grid_to_world[2, 0] * i0 + grid_to_world[2, 1] * i1
                      + grid_to_world[2, 2] * i2 + grid_to_world[2, 3])
                g0 = 0.0
                if components == 3:
                    g0 = g[0]
                add_outer(sums, coefficient * g0, x0, x1, x2)
                add_outer(sums + 4, coefficient * g[components - 2], x0, x1, x2)
                add_outer(sums + 8, coefficient * g[components - 1], x0, x1, x2)
    return np.asarray(partial).sum(axis=0).reshape(3, 4)
