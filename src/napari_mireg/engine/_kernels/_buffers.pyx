"""numpy's data allocator with reuse of large blocks (mireg_buffers.h), switched on by scope."""

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_New

cnp.import_array()

cdef extern from "mireg_buffers.h":
    ctypedef struct PyDataMem_Handler:
        pass
    PyDataMem_Handler mireg_handler
    int mireg_set_limit(size_t limit)
    void mireg_release()
    size_t mireg_kept_total()

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)


def install(size_t limit):
    """Make this context's new arrays use the reusing allocator; keep up to `limit` bytes.

    Returns the handler that was in place, for `restore`.
    """
    if mireg_set_limit(limit) != 0:
        raise MemoryError("could not create the buffer lock")
    return PyDataMem_SetHandler(PyCapsule_New(&mireg_handler, "mem_handler", NULL))


def restore(previous, size_t limit):
    """Put `previous` back as this context's allocator and keep at most `limit` bytes."""
    PyDataMem_SetHandler(previous)
    mireg_set_limit(limit)


def release():
    """Release every kept block (the limit stays)."""
    mireg_release()


def kept_bytes():
    """Bytes of freed blocks held for reuse now."""
    return mireg_kept_total()
