/* The request/response codec of the hot path (docs/PROTOCOL.md, engine/wire/protocol.py).
 *
 * Parses verify and verify_batch request payloads and encodes their responses without
 * any Python objects.  The parser is a strict subset of engine.wire.protocol.parse_request:
 * what it accepts, parse_request accepts with the same reading; whatever it declines
 * (return 0) goes to the Python path, so declining is always safe.  The encoders write
 * exactly the bytes engine.wire.protocol.verify_response / batch_response write (msgpack-python
 * canonical packing).  tests/test_wire.py checks both differentially.
 */
#ifndef ESC_WIRE_H
#define ESC_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* A verify or verify_batch request taken by the fast path. */
typedef struct {
    uint64_t id;
    uint8_t is_batch;                    /* 0: verify, 1: verify_batch */
    uint32_t n_items;                    /* presentations: 1 for verify */
    uint32_t merchant_off, merchant_len; /* context.merchant_id in the payload; len 0: absent */
    uint32_t terminal_off, terminal_len; /* context.terminal_id; len 0: absent */
} esc_request;

/* Returns 1 when `payload` is a verify or verify_batch request that
 * engine.wire.protocol.parse_request(payload, max_items) accepts, with the same meaning:
 * fills *req and, for i < req->n_items, item_off[i]/item_len[i] (offset and length of
 * presentation i's bytes inside payload).  item_off/item_len have room for max_items.
 * Returns 0 for everything else: other request types, requests parse_request rejects,
 * and anything the fast path chooses not to handle (duplicate keys, ext values, nesting
 * deeper than ESC_WIRE_MAX_DEPTH in ignored keys, payloads of 4 GiB or more).  0 is
 * always safe: the caller then uses the Python parser.  A context that is nil or an
 * empty map reads as no context (the server treats both as absent). */
int esc_parse_verify_request(const uint8_t *payload, size_t len, uint32_t max_items,
                             esc_request *req, uint32_t *item_off, uint32_t *item_len);

/* Containers nested deeper than this inside ignored values make the parser decline. */
#define ESC_WIRE_MAX_DEPTH 8

/* The claims of an OK verdict (engine/verifier.py _claims; key order as there). */
typedef struct {
    const uint8_t *card_number;                 /* 9 ASCII bytes */
    const uint8_t *region;                      /* 6 ASCII bytes */
    const uint8_t *channel; size_t channel_len; /* ASCII, 1-32 */
    const uint8_t *issuer; size_t issuer_len;   /* ASCII, 1-32 */
    const uint8_t *serial;                      /* 16 bytes */
    uint8_t purpose; /* 1 identity, 2 medical_settlement, 3 payment, 4 benefit_collection */
    uint64_t presented_at_ms;
    uint64_t valid_until;
} esc_claims;

typedef struct {
    uint8_t verdict;
    /* UTF-8.  reason == NULL or reason_len == 0: no "reason" key, as result_map leaves
     * out an empty reason. */
    const char *reason; size_t reason_len;
    const esc_claims *claims; /* NULL: no "claims" key */
    uint8_t repeat;           /* 1: "repeat": true after the claims (a safe retry); 0: no key */
} esc_result;

/* Upper bound of the bytes esc_encode_* write for these results (reasons included):
 * is_batch: one batch response of the n results; otherwise n verify responses, one
 * per result (frames written back to back).  Exact but for the id, counted at its
 * widest (9 bytes); SIZE_MAX when a result cannot be encoded (see below). */
size_t esc_response_bound(const esc_result *results, size_t n, int is_batch);

/* Writes one complete frame (4-byte big-endian length + msgpack map) to out and returns
 * its size; 0 if cap is too small or the values cannot be encoded (a purpose outside
 * 1..4, a string of 4 GiB or more, a payload over the frame header's 32 bits).  Byte for
 * byte what engine.wire.protocol.verify_response / batch_response produce for the same values
 * (shortest int/str/bin/map/array headers; str keys; dict insertion order). */
size_t esc_encode_verify_response(uint8_t *out, size_t cap, uint64_t id, const esc_result *r);
size_t esc_encode_batch_response(uint8_t *out, size_t cap, uint64_t id,
                                 const esc_result *results, size_t n);

#endif
