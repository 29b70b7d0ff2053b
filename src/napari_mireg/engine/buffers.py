"""Reuse of large numpy buffers from one iteration to the next.

Inside `reused_buffers`, numpy arrays of this thread get their memory from an allocator
(`mireg_buffers.h`) that keeps freed blocks of 4 MiB and more and gives them to the next
array of the same size, instead of returning them to the system and asking for fresh,
zeroed pages. At 1 mm a registration iteration makes and drops about a dozen arrays of
60-80 MB; without reuse the kernel's page faults took about a sixth of the CPU time.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from napari_mireg.engine._kernels import _buffers

# The most freed memory held for reuse while a registration runs: about a dozen 1 mm
# fields, the temporaries of one iteration. Released when the last scope ends.
KEEP_BYTES = 1 << 30

_lock = threading.Lock()
_open_scopes = 0


@contextmanager
def reused_buffers(limit: int = KEEP_BYTES) -> Iterator[None]:
    """Reuse freed large numpy buffers within this block (nested and threaded scopes add up).

    Parameters
    ----------
    limit : int
        Bytes of freed blocks that may be held at once.
    """
    global _open_scopes
    with _lock:
        _open_scopes += 1
        previous = _buffers.install(limit)
    try:
        yield
    finally:
        with _lock:
            _open_scopes -= 1
            _buffers.restore(previous, limit if _open_scopes else 0)


def release_kept_buffers() -> None:
    """Give the freed blocks held for reuse back to the system (the scopes stay open).

    A block is reused by an array of exactly its size only, so when the sizes change (the
    next, finer level of a registration) the blocks of the old sizes would only add to the
    process's memory.
    """
    _buffers.release()


def open_scopes() -> int:
    """How many `reused_buffers` scopes are open now, in any thread (0 when no registration
    runs: a scope left open keeps up to `KEEP_BYTES` for the rest of the process).
    """
    with _lock:
        return _open_scopes


def kept_bytes() -> int:
    """Bytes of freed blocks held for reuse now (0 outside every scope)."""
    return _buffers.kept_bytes()
