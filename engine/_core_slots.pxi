# Redis Cluster key slots for the shared replay store (engine/native/redis_slot.h):
# the slots of a batch's keys in one call, where a Python CRC16 would cost more than
# the round trip it routes.

from libc.stdint cimport uint16_t

from engine.includes.redis_slot cimport esc_redis_slots


def redis_slots(bytes prefix, keys):
    """The Redis Cluster slot (uint16) of ``prefix + row`` for each row of ``keys`` (a
    2-D uint8 array), hash tags included."""
    cdef cnp.ndarray k = np.ascontiguousarray(keys, dtype=np.uint8)
    if k.ndim != 2:
        raise ValueError("keys must be a 2-D uint8 array")
    cdef size_t n = <size_t>k.shape[0], width = <size_t>k.shape[1]
    cdef cnp.ndarray out = np.empty(n, dtype=np.uint16)
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(prefix)
    cdef size_t plen = <size_t>PyBytes_GET_SIZE(prefix)
    with nogil:
        esc_redis_slots(p, plen, <const uint8_t *>cnp.PyArray_DATA(k), width, n,
                        <uint16_t *>cnp.PyArray_DATA(out))
    return out
