#include "presentation.h"

#include <stdlib.h>
#include <string.h>

#include "sigbatch.h"

/* ---- strict, canonical msgpack reading (docs/FORMATS.md section 1) ------------------ */

typedef struct {
    const uint8_t *base, *p, *end;
} reader;

static inline uint32_t be16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t be64(const uint8_t *p)
{
    return ((uint64_t)be32(p) << 32) | be32(p + 4);
}

/* A fixed-length array header: our arrays have at most 11 elements, so only the
 * fixarray form is canonical. */
static int rd_array(reader *r, unsigned n)
{
    if (r->p >= r->end || *r->p != (uint8_t)(0x90 | n))
        return 0;
    r->p++;
    return 1;
}

/* A length-prefixed value (bin or str) whose header is one of three bytes followed by an
 * 8-, 16- or 32-bit big-endian length; the length must need that width (the shortest
 * header), and an 8-bit length at least `min8` (str uses fixstr below 32). */
static int rd_sized(reader *r, const uint8_t hdr[3], uint32_t min8, uint32_t *off,
                    uint32_t *len)
{
    const uint8_t *p = r->p;
    size_t avail = (size_t)(r->end - p);
    uint32_t n;
    if (avail >= 2 && p[0] == hdr[0]) {
        n = p[1];
        if (n < min8)
            return 0;
        p += 2;
    } else if (avail >= 3 && p[0] == hdr[1]) {
        n = be16(p + 1);
        if (n < 0x100)
            return 0;
        p += 3;
    } else if (avail >= 5 && p[0] == hdr[2]) {
        n = be32(p + 1);
        if (n < 0x10000)
            return 0;
        p += 5;
    } else {
        return 0;
    }
    if ((size_t)(r->end - p) < n)
        return 0;
    *off = (uint32_t)(p - r->base);
    *len = n;
    r->p = p + n;
    return 1;
}

static const uint8_t BIN_HEADERS[3] = {0xc4, 0xc5, 0xc6};
static const uint8_t STR_HEADERS[3] = {0xd9, 0xda, 0xdb};

/* A byte string (bin) of any length in its shortest header; returns its offset. */
static int rd_bin(reader *r, uint32_t *off, uint32_t *len)
{
    return rd_sized(r, BIN_HEADERS, 0, off, len);
}

static int rd_bin_fixed(reader *r, uint32_t want, uint32_t *off)
{
    uint32_t len;
    return rd_bin(r, off, &len) && len == want;
}

/* A text string (str) in its shortest header: fixstr below 32 bytes. */
static int rd_str(reader *r, uint32_t *off, uint32_t *len)
{
    if (r->p < r->end && (*r->p & 0xe0) == 0xa0) {
        uint32_t n = *r->p & 0x1f;
        if ((size_t)(r->end - r->p - 1) < n)
            return 0;
        *off = (uint32_t)(r->p + 1 - r->base);
        *len = n;
        r->p += 1 + n;
        return 1;
    }
    return rd_sized(r, STR_HEADERS, 32, off, len);
}

/* An unsigned integer in its shortest encoding. */
static int rd_uint(reader *r, uint64_t *v)
{
    const uint8_t *p = r->p;
    size_t avail = (size_t)(r->end - p);
    if (avail < 1)
        return 0;
    if (p[0] < 0x80) {
        *v = p[0];
        r->p = p + 1;
    } else if (p[0] == 0xcc && avail >= 2 && p[1] >= 0x80) {
        *v = p[1];
        r->p = p + 2;
    } else if (p[0] == 0xcd && avail >= 3 && be16(p + 1) >= 0x100) {
        *v = be16(p + 1);
        r->p = p + 3;
    } else if (p[0] == 0xce && avail >= 5 && be32(p + 1) >= 0x10000) {
        *v = be32(p + 1);
        r->p = p + 5;
    } else if (p[0] == 0xcf && avail >= 9 && be64(p + 1) >= 0x100000000ULL) {
        *v = be64(p + 1);
        r->p = p + 9;
    } else {
        return 0;
    }
    return 1;
}

static int rd_tag(reader *r, const char *tag)
{
    uint32_t off, len;
    size_t want = strlen(tag);
    return rd_str(r, &off, &len) && len == want && memcmp(r->base + off, tag, want) == 0;
}

/* ---- field rules ------------------------------------------------------------------ */

static int is_id_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

static int rd_identifier(reader *r, uint32_t *off, uint8_t *out_len)
{
    uint32_t len, i;
    if (!rd_str(r, off, &len) || len < 1 || len > ESC_ID_MAX)
        return 0;
    for (i = 0; i < len; i++)
        if (!is_id_char(r->base[*off + i]))
            return 0;
    *out_len = (uint8_t)len;
    return 1;
}

static int rd_card_number(reader *r, uint32_t *off)
{
    uint32_t len, i;
    const uint8_t *s;
    if (!rd_str(r, off, &len) || len != 9)
        return 0;
    s = r->base + *off;
    if (s[0] < 'A' || s[0] > 'Z')
        return 0;
    for (i = 1; i < 9; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static int rd_region(reader *r, uint32_t *off)
{
    uint32_t len, i;
    const uint8_t *s;
    if (!rd_str(r, off, &len) || len != 6)
        return 0;
    s = r->base + *off;
    if (s[0] < '1' || s[0] > '9')
        return 0;
    for (i = 1; i < 6; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* ---- parsing ------------------------------------------------------------------------ */

static int parse_credential(const uint8_t *base, uint32_t off, uint32_t len, esc_parsed *o)
{
    reader r = {base, base + off, base + off + len};
    reader b;
    uint32_t sig_len;
    if (!rd_array(&r, 2) || !rd_bin(&r, &o->cred_body, &o->cred_body_len) ||
        !rd_bin(&r, &o->cred_sig, &sig_len) || sig_len != 64 || r.p != r.end)
        return 0;
    b.base = base;
    b.p = base + o->cred_body;
    b.end = b.p + o->cred_body_len;
    if (!rd_array(&b, 11) || !rd_tag(&b, "essc/credential"))
        return 0;
    {
        uint64_t version;
        if (!rd_uint(&b, &version) || version != 1)
            return 0;
    }
    if (!rd_identifier(&b, &o->key_id, &o->key_id_len) || !rd_card_number(&b, &o->card))
        return 0;
    {
        uint32_t digest;
        if (!rd_bin_fixed(&b, 32, &digest))
            return 0;
    }
    if (!rd_region(&b, &o->region) || !rd_identifier(&b, &o->channel, &o->channel_len) ||
        !rd_bin_fixed(&b, 16, &o->serial) || !rd_uint(&b, &o->not_before) ||
        !rd_uint(&b, &o->not_after) || !rd_bin_fixed(&b, 32, &o->holder_key) || b.p != b.end)
        return 0;
    return o->not_after >= o->not_before;
}

int esc_parse_presentation(const uint8_t *data, size_t len, esc_parsed *o)
{
    reader r = {data, data, data + len};
    reader b;
    uint32_t sig_len, cred, cred_len;
    uint64_t version, purpose;

    memset(o, 0, sizeof *o);
    o->issuer = -1;
    o->channel_index = -1;
    /* Anything this size or larger is rejected by the reference decoder's limit; no
     * well-formed presentation comes near it. */
    if (len >= 64 * 1024)
        return 0;
    if (!rd_array(&r, 2) || !rd_bin(&r, &o->pres_body, &o->pres_body_len) ||
        !rd_bin(&r, &o->pres_sig, &sig_len) || sig_len != 64 || r.p != r.end)
        return 0;
    b.base = data;
    b.p = data + o->pres_body;
    b.end = b.p + o->pres_body_len;
    if (!rd_array(&b, 6) || !rd_tag(&b, "essc/presentation") || !rd_uint(&b, &version) ||
        version != 1 || !rd_bin(&b, &cred, &cred_len) || !rd_uint(&b, &o->timestamp_ms) ||
        !rd_bin_fixed(&b, 16, &o->nonce) || !rd_uint(&b, &purpose) || b.p != b.end)
        return 0;
    if (purpose < 1 || purpose > 4)
        return 0;
    o->purpose = (uint8_t)purpose;
    return parse_credential(data, cred, cred_len, o);
}

/* ---- checks ------------------------------------------------------------------------- */

static int32_t find_issuer(const esc_trust *t, const uint8_t *id, uint8_t len)
{
    size_t i;
    for (i = 0; i < t->n_issuers; i++)
        if (t->issuers[i].id_len == len && memcmp(t->issuers[i].id, id, len) == 0)
            return (int32_t)i;
    return -1;
}

static int32_t find_channel(const esc_trust *t, const uint8_t *id, uint8_t len)
{
    size_t i;
    for (i = 0; i < t->n_channels; i++)
        if (t->channels[i].id_len == len && memcmp(t->channels[i].id, id, len) == 0)
            return (int32_t)i;
    return -1;
}

void esc_check_presentations(const uint8_t *const *data, const size_t *len, size_t n,
                             const esc_trust *trust, int64_t now_ms, int64_t freshness_ms,
                             int64_t skew_ms, int threads, int sig_method, esc_parsed *out)
{
    esc_sig_item *items;
    uint8_t *ok;
    size_t *owner;
    size_t i, k, m = 0;
    uint64_t now_s = now_ms > 0 ? (uint64_t)(now_ms / 1000) : 0;
    int64_t oldest = now_ms - freshness_ms - skew_ms;
    uint64_t newest = (uint64_t)(now_ms + skew_ms);

    items = malloc((2 * n + 1) * sizeof *items);
    ok = malloc(2 * n + 1);
    owner = malloc((n + 1) * sizeof *owner);
    if (items == NULL || ok == NULL || owner == NULL) {
        /* Out of memory: answer nothing as OK (the caller turns this into BUSY). */
        for (i = 0; i < n; i++)
            out[i].verdict = 0xff;
        free(items);
        free(ok);
        free(owner);
        return;
    }

    /* 1. Structure and issuer look-up; collect both signatures of the rest. */
    for (i = 0; i < n; i++) {
        esc_parsed *o = &out[i];
        const uint8_t *d = data[i];
        if (!esc_parse_presentation(d, len[i], o)) {
            o->verdict = ESC_MALFORMED;
            continue;
        }
        o->issuer = find_issuer(trust, d + o->key_id, o->key_id_len);
        if (o->issuer < 0) {
            o->verdict = ESC_UNKNOWN_ISSUER;
            continue;
        }
        owner[m] = i;
        items[2 * m].msg = d + o->cred_body;
        items[2 * m].msg_len = o->cred_body_len;
        items[2 * m].sig = d + o->cred_sig;
        items[2 * m].sig_len = 64;
        items[2 * m].pk = trust->issuers[o->issuer].public_key;
        items[2 * m].pk_len = 32;
        items[2 * m + 1].msg = d + o->pres_body;
        items[2 * m + 1].msg_len = o->pres_body_len;
        items[2 * m + 1].sig = d + o->pres_sig;
        items[2 * m + 1].sig_len = 64;
        items[2 * m + 1].pk = d + o->holder_key;
        items[2 * m + 1].pk_len = 32;
        m++;
    }

    /* 2. Every signature of the batch in one call. */
    if (m > 0)
        esc_verify_items(items, 2 * m, ok, threads, sig_method);

    /* 3. The remaining checks, in precedence order. */
    for (k = 0; k < m; k++) {
        esc_parsed *o = &out[owner[k]];
        const uint8_t *d = data[owner[k]];
        const esc_issuer *iss = &trust->issuers[o->issuer];
        if (!ok[2 * k]) {
            o->verdict = ESC_BAD_ISSUER_SIGNATURE;
        } else if (!ok[2 * k + 1]) {
            o->verdict = ESC_BAD_HOLDER_SIGNATURE;
        } else if (iss->status != 0) {
            o->verdict = ESC_ISSUER_INVALID;
            o->detail = ESC_DETAIL_ISSUER_STATUS;
        } else if (now_s < iss->not_before || now_s > iss->not_after) {
            o->verdict = ESC_ISSUER_INVALID;
            o->detail = ESC_DETAIL_ISSUER_WINDOW;
        } else if (memcmp(d + o->region, iss->province, 2) != 0) {
            o->verdict = ESC_ISSUER_INVALID;
            o->detail = ESC_DETAIL_ISSUER_REGION;
        } else if ((o->channel_index = find_channel(trust, d + o->channel, o->channel_len)) < 0) {
            o->verdict = ESC_UNKNOWN_CHANNEL;
        } else if (trust->channels[o->channel_index].status != 0) {
            o->verdict = ESC_CHANNEL_REVOKED;
            o->detail = ESC_DETAIL_CHANNEL_STATUS;
        } else if (now_s < o->not_before) {
            o->verdict = ESC_NOT_YET_VALID;
        } else if (now_s > o->not_after) {
            o->verdict = ESC_EXPIRED;
        } else if ((oldest > 0 && o->timestamp_ms < (uint64_t)oldest) ||
                   o->timestamp_ms > newest) {
            o->verdict = ESC_STALE;
        } else {
            o->verdict = ESC_OK;
        }
    }
    free(items);
    free(ok);
    free(owner);
}
