# The shared replay store's work per batch (engine/redis_replay/store.py), in C where a
# Python loop per key would cost more than the round trip: Redis Cluster key slots
# (engine/native/redis_slot.h), the pipeline of commands, and reading its answers.

from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
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


cdef inline size_t _digits(uint64_t v) noexcept nogil:
    cdef size_t n = 1
    while v >= 10:
        v //= 10
        n += 1
    return n


cdef inline char *_put_uint(char *o, uint64_t v) noexcept nogil:
    cdef size_t n = _digits(v), i
    for i in range(n):
        o[n - 1 - i] = <char>(48 + v % 10)
        v //= 10
    return o + n


cdef inline char *_put_bulk(char *o, const char *d, size_t n) noexcept nogil:
    o[0] = b'$'
    o = _put_uint(o + 1, n)
    o[0] = b'\r'
    o[1] = b'\n'
    memcpy(o + 2, d, n)
    o[2 + n] = b'\r'
    o[3 + n] = b'\n'
    return o + 4 + n


cdef inline size_t _bulk_size(size_t n) noexcept nogil:
    return 1 + _digits(n) + 2 + n + 2


def redis_set_nx_pipeline(bytes marker_key, bytes prefix, keys, expires, tags,
                          bytes untagged):
    """The pipeline of one batch to one master: ``GET marker_key``, then per row
    ``SET prefix+row value NX PXAT expiry GET``, where value is ``tags[i]`` (bytes), or
    ``untagged`` where tags is None or tags[i] is None.  RESP arrays of bulk strings,
    byte for byte what engine.redis_replay.resp.pack writes."""
    cdef cnp.ndarray k = np.ascontiguousarray(keys, dtype=np.uint8)
    cdef cnp.ndarray e = np.ascontiguousarray(expires, dtype=np.uint64)
    if k.ndim != 2 or e.ndim != 1 or k.shape[0] != e.shape[0]:
        raise ValueError("keys (m, k) and expires (m,) must agree")
    cdef Py_ssize_t m = k.shape[0], i
    if tags is not None and len(tags) != m:
        raise ValueError("one tag per key")
    cdef size_t width = <size_t>k.shape[1], plen = <size_t>PyBytes_GET_SIZE(prefix)
    cdef const uint64_t *ep = <const uint64_t *>cnp.PyArray_DATA(e)
    cdef const char *kp = <const char *>cnp.PyArray_DATA(k)
    cdef list values = [untagged] * m if tags is None else [
        untagged if t is None else t for t in tags]
    cdef object v
    cdef size_t size = 4 + _bulk_size(3) + _bulk_size(<size_t>PyBytes_GET_SIZE(marker_key))
    for i in range(m):
        v = <object>PyList_GET_ITEM(values, i)
        if not PyBytes_Check(v):
            raise TypeError(f"tags[{i}]: expected bytes or None")
        size += (4 + _bulk_size(3) + _bulk_size(plen + width) + _bulk_size(PyBytes_GET_SIZE(v))
                 + _bulk_size(2) + _bulk_size(4) + _bulk_size(_digits(ep[i])) + _bulk_size(3))
    cdef bytes out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
    cdef char *o = PyBytes_AS_STRING(out)
    cdef char *start = o
    cdef char num[24]
    cdef char *end
    memcpy(o, b"*2\r\n", 4)
    o = _put_bulk(o + 4, b"GET", 3)
    o = _put_bulk(o, PyBytes_AS_STRING(marker_key), <size_t>PyBytes_GET_SIZE(marker_key))
    for i in range(m):
        v = <object>PyList_GET_ITEM(values, i)
        memcpy(o, b"*7\r\n", 4)
        o = _put_bulk(o + 4, b"SET", 3)
        o[0] = b'$'
        o = _put_uint(o + 1, plen + width)
        o[0] = b'\r'
        o[1] = b'\n'
        memcpy(o + 2, PyBytes_AS_STRING(prefix), plen)
        memcpy(o + 2 + plen, kp + i * width, width)
        o[2 + plen + width] = b'\r'
        o[3 + plen + width] = b'\n'
        o += 4 + plen + width
        o = _put_bulk(o, PyBytes_AS_STRING(v), <size_t>PyBytes_GET_SIZE(v))
        o = _put_bulk(o, b"NX", 2)
        o = _put_bulk(o, b"PXAT", 4)
        end = _put_uint(num, ep[i])
        o = _put_bulk(o, num, <size_t>(end - num))
        o = _put_bulk(o, b"GET", 3)
    if <size_t>(o - start) != size:
        raise AssertionError("redis_set_nx_pipeline: size mismatch")
    return out


def redis_set_nx_answers(list replies, tags):
    """The states (uint8: 0 fresh, 1 replayed, 3 unavailable, 4 repeat) of the SET NX GET
    replies of redis_set_nx_pipeline, and the indices of the error replies: nil is
    fresh; a value is a repeat when it is this request's tag (tags[i], not None), else
    replayed; anything else (an error reply) unavailable."""
    cdef Py_ssize_t n = PyList_GET_SIZE(replies), i
    if tags is not None and len(tags) != n:
        raise ValueError("one tag per reply")
    cdef cnp.ndarray out = np.empty(n, dtype=np.uint8)
    cdef uint8_t *op = <uint8_t *>cnp.PyArray_DATA(out)
    cdef list errors = []
    cdef object r, t
    for i in range(n):
        r = <object>PyList_GET_ITEM(replies, i)
        if r is None:
            op[i] = 0
        elif PyBytes_Check(r):
            t = None if tags is None else tags[i]
            op[i] = 4 if t is not None and r == t else 1
        else:
            op[i] = 3
            errors.append(i)
    return out, errors
