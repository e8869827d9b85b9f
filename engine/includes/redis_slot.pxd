# Redis Cluster key slots (engine/native/redis_slot.h).

from libc.stdint cimport uint8_t, uint16_t

cdef extern from "native/redis_slot.h" nogil:
    void esc_redis_slots(const uint8_t *prefix, size_t prefix_len, const uint8_t *keys,
                         size_t key_len, size_t n, uint16_t *out)
