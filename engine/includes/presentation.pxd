# The trust list laid out for C and the presentation checks (engine/native/presentation.h).

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

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
