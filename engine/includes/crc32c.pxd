# CRC32C, the checksum of the revocation files (engine/native/crc32c.h).

from libc.stdint cimport uint32_t

cdef extern from "native/crc32c.h" nogil:
    uint32_t esc_crc32c(uint32_t crc, const void *data, size_t len)
    uint32_t esc_crc32c_sw(uint32_t crc, const void *data, size_t len)
    int esc_crc32c_hw_available()
