/* Presentations checked in bulk: strict parsing, trust and time checks, both signatures.
 *
 * This is the engine's hot path.  It implements docs/FORMATS.md sections 1-4 exactly:
 * the same inputs are accepted as by the reference decoder (engine/formats/credentials.py),
 * which the tests check differentially, and verdicts follow the documented
 * precedence.  Revocation and replay checks come after, in the Python layer, on the
 * presentations this stage leaves as candidates (verdict OK).
 */
#ifndef ESC_PRESENTATION_H
#define ESC_PRESENTATION_H

#include <stddef.h>
#include <stdint.h>

#include "verdicts.h" /* the codes this stage gives: ESC_OK .. ESC_STALE */

#define ESC_ID_MAX 32

typedef struct {
    uint8_t id_len;
    char id[ESC_ID_MAX];
    uint8_t public_key[32];
    char province[2]; /* first two digits of the issuer's region */
    uint8_t status;   /* 0 active, 1 suspended, 2 revoked */
    uint64_t not_before, not_after;
} esc_issuer;

typedef struct {
    uint8_t id_len;
    char id[ESC_ID_MAX];
    uint8_t status;
} esc_channel;

typedef struct {
    const esc_issuer *issuers;
    size_t n_issuers;
    const esc_channel *channels;
    size_t n_channels;
} esc_trust;

/* What exactly failed, for the reason text. */
enum {
    ESC_DETAIL_NONE = 0,
    ESC_DETAIL_ISSUER_STATUS,  /* issuer key suspended or revoked */
    ESC_DETAIL_ISSUER_WINDOW,  /* now outside the issuer key's validity */
    ESC_DETAIL_ISSUER_REGION,  /* credential region outside the issuer's province */
    ESC_DETAIL_CHANNEL_STATUS, /* channel suspended or revoked */
};

/* Where the fields of one parsed presentation are (offsets into its bytes). */
typedef struct {
    uint32_t pres_body, pres_body_len, pres_sig;
    uint32_t cred_body, cred_body_len, cred_sig;
    uint32_t key_id, card, region, channel, serial, nonce, holder_key;
    uint8_t key_id_len, channel_len, purpose;
    uint64_t timestamp_ms, not_before, not_after;
    int32_t issuer;  /* index into esc_trust.issuers, -1 if unknown */
    int32_t channel_index;
    uint8_t verdict;
    uint8_t detail;
} esc_parsed;

/* Parses one presentation; returns 1 if well formed (and fills `out`), else 0. */
int esc_parse_presentation(const uint8_t *data, size_t len, esc_parsed *out);

/* Checks a batch up to and including freshness: out[i].verdict is the verdict of the
 * first failing check in precedence order, or ESC_OK.  Signatures are verified with
 * esc_verify_items (sigbatch.h) using `threads` and `sig_method`. */
void esc_check_presentations(const uint8_t *const *data, const size_t *len, size_t n,
                             const esc_trust *trust, int64_t now_ms, int64_t freshness_ms,
                             int64_t skew_ms, int threads, int sig_method, esc_parsed *out);

#endif
