/* A numpy data allocator that keeps freed large blocks and hands them out again.
 *
 * A registration iteration at 1 mm makes about a dozen arrays of tens of megabytes and
 * drops them by the next iteration. glibc serves blocks that large with a fresh mmap each
 * time, so every one costs page faults and the kernel zeroing its pages (about a sixth of
 * the CPU time of a 1 mm run). Here a freed block of at least MIREG_SMALLEST bytes is
 * kept, while keeping is switched on, and the next request of exactly its size reuses it
 * (cleared, for calloc). Smaller blocks and realloc go straight to the C library.
 */
#ifndef MIREG_BUFFERS_H
#define MIREG_BUFFERS_H
#include <Python.h>
#include <pythread.h>
#include <stdlib.h>
#include <string.h>
#include "numpy/ndarraytypes.h"

#define MIREG_SLOTS 64
#define MIREG_SMALLEST ((size_t)1 << 22)

static void *mireg_blocks[MIREG_SLOTS];
static size_t mireg_block_sizes[MIREG_SLOTS];
static int mireg_kept = 0;
static size_t mireg_kept_bytes = 0;
static size_t mireg_limit = 0; /* bytes that may be kept; 0: keep nothing */
static PyThread_type_lock mireg_lock = NULL;

/* Take a kept block of exactly `size` bytes, or NULL. */
static void *mireg_take(size_t size)
{
    void *found = NULL;
    PyThread_acquire_lock(mireg_lock, WAIT_LOCK);
    for (int i = mireg_kept - 1; i >= 0; --i) {
        if (mireg_block_sizes[i] == size) {
            found = mireg_blocks[i];
            mireg_kept_bytes -= size;
            --mireg_kept;
            mireg_blocks[i] = mireg_blocks[mireg_kept];
            mireg_block_sizes[i] = mireg_block_sizes[mireg_kept];
            break;
        }
    }
    PyThread_release_lock(mireg_lock);
    return found;
}

static void *mireg_malloc(void *ctx, size_t size)
{
    void *block = NULL;
    (void)ctx;
    if (size >= MIREG_SMALLEST && mireg_lock != NULL) {
        block = mireg_take(size);
    }
    return block != NULL ? block : malloc(size);
}

/* A zeroed block: a kept one cleared, else calloc. A block from calloc is kept when it is
 * freed like any other; were it not taken again here, every large np.zeros would add one
 * block to the kept ones for good (two per iteration of the partial-volume histogram). */
static void *mireg_calloc(void *ctx, size_t count, size_t item_size)
{
    void *block = NULL;
    size_t size = count * item_size;
    (void)ctx;
    if (item_size != 0 && size / item_size == count && size >= MIREG_SMALLEST
        && mireg_lock != NULL) {
        block = mireg_take(size);
    }
    if (block == NULL) {
        return calloc(count, item_size);
    }
    memset(block, 0, size);
    return block;
}

static void *mireg_realloc(void *ctx, void *block, size_t size)
{
    (void)ctx;
    return realloc(block, size);
}

static void mireg_free(void *ctx, void *block, size_t size)
{
    int keep = 0;
    (void)ctx;
    if (block != NULL && size >= MIREG_SMALLEST && mireg_lock != NULL) {
        PyThread_acquire_lock(mireg_lock, WAIT_LOCK);
        if (mireg_kept < MIREG_SLOTS && mireg_kept_bytes + size <= mireg_limit) {
            mireg_blocks[mireg_kept] = block;
            mireg_block_sizes[mireg_kept] = size;
            ++mireg_kept;
            mireg_kept_bytes += size;
            keep = 1;
        }
        PyThread_release_lock(mireg_lock);
    }
    if (!keep) {
        free(block);
    }
}

/* Release kept blocks until at most `keep` bytes are kept; the lock is held. */
static void mireg_trim(size_t keep)
{
    while (mireg_kept > 0 && mireg_kept_bytes > keep) {
        --mireg_kept;
        mireg_kept_bytes -= mireg_block_sizes[mireg_kept];
        free(mireg_blocks[mireg_kept]);
    }
}

/* Set how many bytes may be kept; blocks over the new limit are released. Returns 0, or
 * -1 when the lock could not be made. */
static int mireg_set_limit(size_t limit)
{
    if (mireg_lock == NULL) {
        mireg_lock = PyThread_allocate_lock();
        if (mireg_lock == NULL) {
            return -1;
        }
    }
    PyThread_acquire_lock(mireg_lock, WAIT_LOCK);
    mireg_limit = limit;
    mireg_trim(limit);
    PyThread_release_lock(mireg_lock);
    return 0;
}

/* Release every kept block; the limit stays. */
static void mireg_release(void)
{
    if (mireg_lock == NULL) {
        return;
    }
    PyThread_acquire_lock(mireg_lock, WAIT_LOCK);
    mireg_trim(0);
    PyThread_release_lock(mireg_lock);
}

static size_t mireg_kept_total(void) { return mireg_kept_bytes; }

static PyDataMem_Handler mireg_handler = {
    "napari_mireg_reused_buffers",
    1,
    {NULL, mireg_malloc, mireg_calloc, mireg_realloc, mireg_free},
};
#endif
