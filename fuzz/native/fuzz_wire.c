/* libFuzzer harness: esc_parse_verify_request (engine/native/wire.c), under ASan/UBSan.
 *
 * Input: byte 0 picks max_items (0..255), the rest is a request payload.  Besides the
 * sanitizers, it checks the parser's contract (wire.h) on every accepted payload:
 * every item and context span lies inside the payload, there are 1..max_items items
 * (exactly 1 for verify), and context values are 1-64 of [A-Za-z0-9._:-].  The
 * differential check against engine.wire.protocol.parse_request is fuzz/py/wire_diff.py.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

#include "fuzz_check.h"

static int context_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == ':' || c == '-';
}

static void check_span(size_t len, uint32_t off, uint32_t n)
{
    CHECK(off <= len && n <= len - off);
}

static void check_context(const uint8_t *p, size_t len, uint32_t off, uint32_t n)
{
    if (n == 0)
        return;
    check_span(len, off, n);
    CHECK(n <= 64);
    for (uint32_t i = 0; i < n; i++)
        CHECK(context_char(p[off + i]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t max_items = data[0];
    size_t len = size - 1;
    /* An exact-size heap copy, so ASan sees any read past the payload's end. */
    uint8_t *p = malloc(len ? len : 1);
    uint32_t *off = malloc((max_items + 1) * sizeof *off);
    uint32_t *ln = malloc((max_items + 1) * sizeof *ln);
    if (!p || !off || !ln)
        abort();
    memcpy(p, data + 1, len);
    esc_request req;
    memset(&req, 0xa5, sizeof req);
    if (esc_parse_verify_request(p, len, max_items, &req, off, ln)) {
        CHECK(req.is_batch == 0 || req.is_batch == 1);
        CHECK(req.n_items >= 1 && req.n_items <= max_items);
        if (!req.is_batch)
            CHECK(req.n_items == 1);
        for (uint32_t i = 0; i < req.n_items; i++)
            check_span(len, off[i], ln[i]);
        check_context(p, len, req.merchant_off, req.merchant_len);
        check_context(p, len, req.terminal_off, req.terminal_len);
        /* Deterministic: a second parse reads the same. */
        esc_request again;
        CHECK(esc_parse_verify_request(p, len, max_items, &again, off, ln) == 1);
        CHECK(memcmp(&again, &req, sizeof req) == 0);
    }
    free(p);
    free(off);
    free(ln);
    return 0;
}
