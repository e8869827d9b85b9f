# The native core's classes: their C attributes and C methods (the Python methods are
# in the includes of _core.pyx).  Declared here, they are known to every include of
# _core.pyx whatever the include order.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from engine.includes.presentation cimport esc_channel, esc_issuer, esc_parsed, esc_trust
from engine.includes.replay_table cimport esc_replay_table
from engine.includes.revocation_lookup cimport esc_revset


cdef class _Column:
    cdef object owner  # the sequence or array the pointers point into
    cdef list exports  # memoryviews pinning bytearray items
    cdef const uint8_t **ptrs
    cdef size_t *lens
    cdef Py_ssize_t n

    cdef int _alloc(self) except -1


cdef class TrustTable:
    cdef esc_issuer *issuers
    cdef esc_channel *channels
    cdef esc_trust trust


cdef class ReplayTable:
    cdef esc_replay_table *table
    cdef readonly size_t capacity
    cdef readonly bint shared

    cdef int _check(self, const uint8_t *const *keys, const uint64_t *expires, size_t n,
                    uint64_t now_ms, uint8_t *states) noexcept nogil


cdef class VerifyBatch:
    cdef list keep  # the objects that own the presentation bytes
    cdef const uint8_t **ptrs
    cdef size_t *lens
    cdef esc_parsed *parsed  # written by check
    cdef uint8_t *verdict
    cdef uint8_t *repeat  # 1: OK again for the relying party that got it (safe retry)
    cdef Py_ssize_t n, cap
    cdef bint checked

    cdef int _reserve(self, Py_ssize_t more) except -1
    cdef int _require_checked(self) except -1
    cdef Py_ssize_t _undecided(self) noexcept nogil
    cdef Py_ssize_t _replay_keys(self, uint8_t *keys, uint64_t *expires, Py_ssize_t *owner,
                                 uint64_t horizon_ms) noexcept nogil
    cdef void _replay_verdict(self, Py_ssize_t i, uint8_t state) noexcept nogil
    cdef void _replay(self, ReplayTable table, uint8_t *keys, const uint8_t **kp,
                      uint64_t *exp, Py_ssize_t *owner, uint8_t *states, uint64_t now_ms,
                      uint64_t horizon_ms) noexcept nogil


cdef struct _Request:
    uint64_t id
    uint32_t slot  # the connection it came on
    uint32_t first, count  # its presentations: items [first, first + count)
    uint8_t is_batch
    double arrival


cdef class RequestBatch(VerifyBatch):
    cdef _Request *reqs
    cdef Py_ssize_t nreq, reqcap
    cdef readonly list contexts  # per request: its context map, or None
    cdef readonly double first_arrival

    cdef int _add_request(self, uint64_t rid, uint32_t slot, uint8_t is_batch, uint32_t first,
                          uint32_t count, double now, object context) except -1


cdef class FrameDecoder:
    cdef uint8_t *buf  # the partial frame carried over between calls
    cdef size_t used, cap
    cdef readonly size_t max_frame

    cdef int _keep(self, const uint8_t *p, size_t n) except -1


cdef class RevocationTable:
    cdef esc_revset rs
    cdef readonly object arrays
    cdef readonly bint faulted  # a look-up hit an unreadable page: never read again
