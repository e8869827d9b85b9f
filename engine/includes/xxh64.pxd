# XXH64, the hash of the revocation data and the replay table (engine/native/xxh64.h).

from libc.stdint cimport uint64_t

cdef extern from "native/xxh64.h" nogil:
    uint64_t esc_xxh64(const void *data, size_t len, uint64_t seed)
