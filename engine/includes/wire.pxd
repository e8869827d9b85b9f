# The request parser and response encoders of the hot path (engine/native/wire.h).

from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "native/wire.h" nogil:
    ctypedef struct esc_request:
        uint64_t id
        uint8_t is_batch
        uint32_t n_items
        uint32_t merchant_off, merchant_len
        uint32_t terminal_off, terminal_len
    int esc_parse_verify_request(const uint8_t *payload, size_t len, uint32_t max_items,
                                 esc_request *req, uint32_t *item_off, uint32_t *item_len)
    ctypedef struct esc_claims:
        const uint8_t *card_number
        const uint8_t *region
        const uint8_t *channel
        size_t channel_len
        const uint8_t *issuer
        size_t issuer_len
        const uint8_t *serial
        uint8_t purpose
        uint64_t presented_at_ms
        uint64_t valid_until
    ctypedef struct esc_result:
        uint8_t verdict
        const char *reason
        size_t reason_len
        const esc_claims *claims
        uint8_t repeat
    size_t esc_response_bound(const esc_result *results, size_t n, int is_batch)
    size_t esc_encode_verify_response(uint8_t *out, size_t cap, uint64_t id,
                                      const esc_result *r)
    size_t esc_encode_batch_response(uint8_t *out, size_t cap, uint64_t id,
                                     const esc_result *results, size_t n)
