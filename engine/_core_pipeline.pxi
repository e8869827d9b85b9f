# The first stage of the verification hot path: the trust list laid out for C, and the
# strict presentation parser (engine/native/presentation.c); VerifyBatch runs them.

from engine.includes.presentation cimport (
    esc_channel,
    esc_issuer,
    esc_parse_presentation,
    esc_parsed,
)


cdef class TrustTable:
    """A trust list laid out for the C checks (built once per trust list).

    ``issuers``: (key_id, region, public_key, not_before, not_after, status) tuples;
    ``channels``: (channel_id, status) tuples, as in engine.formats.trustlist.
    """

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


def parses(bytes data not None):
    """True iff ``data`` is a well-formed presentation (the C parser alone; for tests)."""
    cdef esc_parsed out
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
    return esc_parse_presentation(p, <size_t>PyBytes_GET_SIZE(data), &out) == 1
