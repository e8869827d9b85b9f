# What every include of _core.pyx may use: the common cimports and imports, and the
# small helpers they share.  _core.pyx includes this first; each other include
# cimports its own native declarations (engine/includes/*.pxd), so no include leans on
# another's names.

cimport numpy as cnp
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

from engine.includes.parallel cimport esc_cpu_count

import os

import numpy as np

from engine.errors import EsscError  # a leaf module: the core's errors share the base

cnp.import_array()

# Below this many items a stage keeps the GIL (_core.pyx).
cdef Py_ssize_t _NOGIL_ITEMS = 2048


cdef void *_grow(void *p, size_t size) except NULL:
    """realloc, raising MemoryError instead of returning NULL (p stays valid then)."""
    cdef void *q = realloc(p, size)
    if q == NULL:
        raise MemoryError()
    return q


cdef inline str _ascii(const uint8_t *d, uint32_t off, Py_ssize_t n):
    """n bytes at d + off that a native parser has checked to be ASCII, as str."""
    return PyUnicode_DecodeASCII(<const char *>d + off, n, NULL)


cdef inline bytes _bytes(const uint8_t *d, uint32_t off, Py_ssize_t n):
    return PyBytes_FromStringAndSize(<const char *>d + off, n)


cdef int _threads_arg(object threads) except -1:
    """The ``threads`` argument of the batch calls: None means one per online CPU."""
    if threads is None:
        return esc_cpu_count()
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return threads
