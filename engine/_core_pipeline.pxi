# The first stage of the verification hot path: the trust list laid out for C, and the
# strict presentation parser (engine/native/presentation.c); VerifyBatch runs them.

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from "native/presentation.h" nogil:
    ctypedef struct esc_issuer:
        uint8_t id_len
        char id[32]
        uint8_t public_key[32]
        char province[2]
        uint8_t status
        uint64_t not_before
        uint64_t not_after
    ctypedef struct esc_channel:
        uint8_t id_len
        char id[32]
        uint8_t status
    ctypedef struct esc_trust:
        const esc_issuer *issuers
        size_t n_issuers
        const esc_channel *channels
        size_t n_channels
    ctypedef struct esc_parsed:
        uint32_t pres_body, pres_body_len, pres_sig
        uint32_t cred_body, cred_body_len, cred_sig
        uint32_t key_id, card, region, channel, serial, nonce, holder_key
        uint8_t key_id_len, channel_len, purpose
        uint64_t timestamp_ms, not_before, not_after
        int32_t issuer
        int32_t channel_index
        uint8_t verdict
        uint8_t detail
    int esc_parse_presentation(const uint8_t *data, size_t len, esc_parsed *out)
    void esc_check_presentations(const uint8_t *const *data, const size_t *len, size_t n,
                                 const esc_trust *trust, int64_t now_ms,
                                 int64_t freshness_ms, int64_t skew_ms, int threads,
                                 int sig_method, esc_parsed *out)


cdef class TrustTable:
    """A trust list laid out for the C checks (built once per trust list).

    ``issuers``: (key_id, region, public_key, not_before, not_after, status) tuples;
    ``channels``: (channel_id, status) tuples, as in engine.formats.trustlist.
    """
    cdef esc_issuer *issuers
    cdef esc_channel *channels
    cdef esc_trust trust

    def __cinit__(self, issuers, channels):
        cdef Py_ssize_t i
        cdef bytes key_id, region, public_key, channel_id
        issuers = list(issuers)
        channels = list(channels)
        self.issuers = <esc_issuer *>malloc((len(issuers) + 1) * sizeof(esc_issuer))
        self.channels = <esc_channel *>malloc((len(channels) + 1) * sizeof(esc_channel))
        if self.issuers == NULL or self.channels == NULL:
            raise MemoryError()
        for i, (kid, reg, pk, not_before, not_after, status) in enumerate(issuers):
            key_id, region, public_key = kid.encode("ascii"), reg.encode("ascii"), pk
            if not 1 <= len(key_id) <= 32 or len(public_key) != 32 or len(region) < 2:
                raise ValueError(f"issuer {kid!r}: bad id, key or region")
            self.issuers[i].id_len = <uint8_t>len(key_id)
            memcpy(self.issuers[i].id, <const char *>key_id, len(key_id))
            memcpy(self.issuers[i].public_key, <const char *>public_key, 32)
            memcpy(self.issuers[i].province, <const char *>region, 2)
            self.issuers[i].status = <uint8_t>status
            self.issuers[i].not_before = not_before
            self.issuers[i].not_after = not_after
        for i, (cid, status) in enumerate(channels):
            channel_id = cid.encode("ascii")
            if not 1 <= len(channel_id) <= 32:
                raise ValueError(f"channel {cid!r}: bad id")
            self.channels[i].id_len = <uint8_t>len(channel_id)
            memcpy(self.channels[i].id, <const char *>channel_id, len(channel_id))
            self.channels[i].status = <uint8_t>status
        self.trust.issuers = self.issuers
        self.trust.n_issuers = len(issuers)
        self.trust.channels = self.channels
        self.trust.n_channels = len(channels)

    def __dealloc__(self):
        free(self.issuers)
        free(self.channels)


cdef inline str _ascii(const uint8_t *d, uint32_t off, Py_ssize_t n):
    return PyUnicode_DecodeASCII(<const char *>d + off, n, NULL)


cdef inline bytes _bytes(const uint8_t *d, uint32_t off, Py_ssize_t n):
    return PyBytes_FromStringAndSize(<const char *>d + off, n)


def parses(data):
    """True iff ``data`` is a well-formed presentation (the C parser alone; for tests)."""
    cdef esc_parsed out
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
    return esc_parse_presentation(p, <size_t>PyBytes_GET_SIZE(data), &out) == 1
