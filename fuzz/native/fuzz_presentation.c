/* libFuzzer harness: esc_parse_presentation and esc_check_presentations
 * (engine/native/presentation.c), under ASan/UBSan.
 *
 * Input: a presentation.  Signatures are answered by a stub of esc_verify_items
 * (sigbatch.h) that accepts every signature whose first byte is even, so the checks
 * after the signatures are reached without libsodium.  Checked on every input: parsed
 * field offsets lie inside the input, field lengths and ranges are those of
 * docs/FORMATS.md sections 3-4, the batch entry point gives the same parse verdict as
 * the single one, and a verdict is never OK for an unparsable input.  The
 * differential check against engine/formats/credentials.py is fuzz/py/presentation_diff.py.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "presentation.h"
#include "sigbatch.h"

#include "fuzz_check.h"

void esc_verify_items(const esc_sig_item *items, size_t n, uint8_t *ok, int threads, int method)
{
    (void)threads;
    (void)method;
    for (size_t i = 0; i < n; i++) {
        CHECK(items[i].sig_len == 64 && items[i].pk_len == 32);
        /* Touch every byte the real verifier would read (ASan checks the spans). */
        volatile uint8_t sink = 0;
        for (size_t j = 0; j < items[i].msg_len; j++)
            sink ^= items[i].msg[j];
        for (size_t j = 0; j < 32; j++)
            sink ^= items[i].pk[j];
        for (size_t j = 0; j < 64; j++)
            sink ^= items[i].sig[j];
        (void)sink;
        ok[i] = (items[i].sig[0] & 1) == 0;
    }
}

static void span(size_t len, uint32_t off, uint64_t n)
{
    CHECK(off <= len && n <= len - off);
}

static int id_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

static void check_parsed(const uint8_t *d, size_t len, const esc_parsed *o)
{
    span(len, o->pres_body, o->pres_body_len);
    span(len, o->pres_sig, 64);
    span(len, o->cred_body, o->cred_body_len);
    span(len, o->cred_sig, 64);
    CHECK(o->key_id_len >= 1 && o->key_id_len <= ESC_ID_MAX);
    CHECK(o->channel_len >= 1 && o->channel_len <= ESC_ID_MAX);
    span(len, o->key_id, o->key_id_len);
    span(len, o->channel, o->channel_len);
    for (unsigned i = 0; i < o->key_id_len; i++)
        CHECK(id_char(d[o->key_id + i]));
    for (unsigned i = 0; i < o->channel_len; i++)
        CHECK(id_char(d[o->channel + i]));
    span(len, o->card, 9);
    CHECK(d[o->card] >= 'A' && d[o->card] <= 'Z');
    for (unsigned i = 1; i < 9; i++)
        CHECK(d[o->card + i] >= '0' && d[o->card + i] <= '9');
    span(len, o->region, 6);
    CHECK(d[o->region] >= '1' && d[o->region] <= '9');
    span(len, o->serial, 16);
    span(len, o->nonce, 16);
    span(len, o->holder_key, 32);
    CHECK(o->purpose >= 1 && o->purpose <= 4);
    CHECK(o->not_after >= o->not_before);
    /* The credential body lies inside the presentation body, which lies before the
     * presentation signature. */
    CHECK(o->cred_body >= o->pres_body &&
          (uint64_t)o->cred_body + o->cred_body_len <= (uint64_t)o->pres_body + o->pres_body_len);
    CHECK((uint64_t)o->pres_body + o->pres_body_len <= o->pres_sig);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size ? size : 1);
    if (!p)
        abort();
    memcpy(p, data, size);
    esc_parsed one, batch;
    int parsed = esc_parse_presentation(p, size, &one);
    CHECK(parsed == 0 || parsed == 1);
    if (parsed)
        check_parsed(p, size, &one);

    /* The batch path, with a trust table naming the parsed issuer and channel. */
    esc_issuer iss;
    esc_channel ch;
    memset(&iss, 0, sizeof iss);
    memset(&ch, 0, sizeof ch);
    esc_trust trust = {&iss, 1, &ch, 1};
    if (parsed) {
        iss.id_len = one.key_id_len;
        memcpy(iss.id, p + one.key_id, one.key_id_len);
        memcpy(iss.province, p + one.region, 2);
        iss.not_after = UINT64_MAX;
        ch.id_len = one.channel_len;
        memcpy(ch.id, p + one.channel, one.channel_len);
    }
    const uint8_t *ptrs[1] = {p};
    size_t lens[1] = {size};
    int64_t now_ms = parsed ? (int64_t)(one.timestamp_ms & INT32_MAX) : 0;
    esc_check_presentations(ptrs, lens, 1, &trust, now_ms, 30000, 5000, 1, 0, &batch);
    if (!parsed) {
        CHECK(batch.verdict == ESC_MALFORMED);
    } else {
        CHECK(batch.verdict != ESC_MALFORMED && batch.verdict <= ESC_STALE);
        CHECK(batch.issuer == 0);
        CHECK(memcmp(&batch.pres_body, &one.pres_body,
                     offsetof(esc_parsed, issuer) - offsetof(esc_parsed, pres_body)) == 0);
    }
    free(p);
    return 0;
}
