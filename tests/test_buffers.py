"""buffers.reused_buffers: freed large blocks come back to arrays of the same size."""

import threading

import numpy as np

from napari_mireg.engine.buffers import (
    KEEP_BYTES,
    kept_bytes,
    release_kept_buffers,
    reused_buffers,
)

LARGE = 2_000_000  # float32 elements: 8 MB, above the 4 MiB the allocator keeps


def _address(array):
    return array.__array_interface__["data"][0]


def test_a_freed_block_is_reused_inside_the_scope_and_released_after():
    with reused_buffers():
        first = np.full(LARGE, 3.0, dtype=np.float32)
        address = _address(first)
        del first
        assert kept_bytes() == LARGE * 4
        second = np.empty(LARGE, dtype=np.float32)
        assert _address(second) == address  # the same block, not fresh pages
        assert kept_bytes() == 0
        second[:] = 1.5
        other = np.ones(LARGE // 2, dtype=np.float64)  # a different size: a new block
        assert _address(other) != address
        assert second.sum() == LARGE * 1.5
        del second, other
        assert kept_bytes() == LARGE * 4 + LARGE // 2 * 8
    assert kept_bytes() == 0


def test_small_arrays_and_arrays_outside_a_scope_are_not_kept():
    with reused_buffers():
        small = np.ones(1000)
        del small
        assert kept_bytes() == 0
        survivor = np.ones(LARGE, dtype=np.float32)
    del survivor  # made inside, freed after the scope: given back
    assert kept_bytes() == 0
    outside = np.ones(LARGE, dtype=np.float32)
    del outside
    assert kept_bytes() == 0


def test_the_limit_bounds_what_is_kept_and_nested_scopes_keep_it_until_the_last():
    with reused_buffers(limit=3 * LARGE * 4):
        with reused_buffers(limit=3 * LARGE * 4):
            arrays = [np.ones(LARGE, dtype=np.float32) for _ in range(5)]
            del arrays
            assert kept_bytes() == 3 * LARGE * 4
        assert kept_bytes() == 3 * LARGE * 4  # the outer scope still runs
    assert kept_bytes() == 0
    assert KEEP_BYTES >= 3 * LARGE * 4


def test_another_thread_frees_into_the_scope_safely():
    with reused_buffers():
        arrays = [np.full(LARGE, i, dtype=np.float32) for i in range(4)]
        sums = []

        def consume():
            while arrays:
                sums.append(float(arrays.pop().sum()))

        worker = threading.Thread(target=consume)
        worker.start()
        worker.join()
        assert sorted(sums) == [i * LARGE for i in range(4)]
        fresh = np.zeros(LARGE, dtype=np.float32)  # calloc: always zeroed
        assert not fresh.any()
    assert kept_bytes() == 0


def test_zeroed_arrays_reuse_kept_blocks_cleared_and_do_not_pile_up():
    with reused_buffers():
        for round_ in range(3):
            zeros = np.zeros(LARGE, dtype=np.float32)
            assert not zeros.any()  # a reused block is cleared
            zeros[:] = round_ + 1.0
            del zeros
            assert kept_bytes() == LARGE * 4  # one block, taken and kept again
        taken = np.zeros(LARGE, dtype=np.float32)
        assert kept_bytes() == 0
        del taken


def test_release_gives_kept_blocks_back_and_the_scope_keeps_reusing():
    with reused_buffers():
        first = np.ones(LARGE, dtype=np.float32)
        del first
        assert kept_bytes() == LARGE * 4
        release_kept_buffers()
        assert kept_bytes() == 0
        second = np.ones(LARGE, dtype=np.float32)
        del second
        assert kept_bytes() == LARGE * 4
    assert kept_bytes() == 0
