/* The request/response codec of the hot path; see wire.h.
 *
 * Parsing is two passes over the top-level map: the first walks every key and value
 * exactly as msgpack.unpackb(raw=False, strict_map_key=True) would (so anything it
 * cannot decode is declined) and notes where the known keys' values start; the second
 * reads those values.  Invariant of the reader: pos <= len, and every read checks the
 * bytes left first.
 */
#include "wire.h"

#include <string.h>

/* --- reading msgpack ------------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t len;
    size_t pos;
} rd;

enum { T_NIL, T_BOOL, T_UINT, T_NEG, T_FLOAT, T_STR, T_BIN, T_ARR, T_MAP };

typedef struct {
    int t;
    uint64_t v;   /* T_UINT: the value; T_STR/T_BIN: byte length; T_ARR/T_MAP: count */
    size_t off;   /* T_STR/T_BIN: where the bytes start */
} hdr;

static inline uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Takes n bytes (n <= 8) of big-endian integer; 0 when they are not there. */
static inline int take(rd *r, int n, uint64_t *v) {
    if (r->len - r->pos < (size_t)n)
        return 0;
    *v = be(r->p + r->pos, n);
    r->pos += n;
    return 1;
}

/* str/bin: the length came in the header, the bytes must be there too. */
static inline int take_raw(rd *r, uint64_t n, hdr *h) {
    if (n > r->len - r->pos)
        return 0;
    h->v = n;
    h->off = r->pos;
    r->pos += (size_t)n;
    return 1;
}

/* Containers: every element takes at least one byte, so a count beyond the bytes
 * left cannot be complete (and the loops over it stay bounded by len). */
static inline int take_count(rd *r, uint64_t n, hdr *h) {
    if (n > r->len - r->pos)
        return 0;
    h->v = n;
    return 1;
}

/* One value's header (and, for scalars, str and bin, its bytes).  0 on truncation,
 * on the never-used byte 0xc1 and on ext types (declined: the timestamp ext has its
 * own validity rules, and no request needs ext). */
static int read_hdr(rd *r, hdr *h) {
    uint64_t n;
    if (r->pos >= r->len)
        return 0;
    uint8_t b = r->p[r->pos++];
    if (b <= 0x7f) {
        h->t = T_UINT;
        h->v = b;
        return 1;
    }
    if (b >= 0xe0) {
        h->t = T_NEG;
        return 1;
    }
    if (b <= 0x8f) {
        h->t = T_MAP;
        return take_count(r, b & 0x0f, h);
    }
    if (b <= 0x9f) {
        h->t = T_ARR;
        return take_count(r, b & 0x0f, h);
    }
    if (b <= 0xbf) {
        h->t = T_STR;
        return take_raw(r, b & 0x1f, h);
    }
    switch (b) {
    case 0xc0:
        h->t = T_NIL;
        return 1;
    case 0xc2:
    case 0xc3:
        h->t = T_BOOL;
        return 1;
    case 0xc4: case 0xc5: case 0xc6:
        h->t = T_BIN;
        return take(r, 1 << (b - 0xc4), &n) && take_raw(r, n, h);
    case 0xca: case 0xcb:
        h->t = T_FLOAT;
        return take(r, b == 0xca ? 4 : 8, &n);
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        h->t = T_UINT;
        return take(r, 1 << (b - 0xcc), &h->v);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        /* Signed forms decode to Python ints too: a non-negative one is a valid id. */
        int w = 1 << (b - 0xd0);
        if (!take(r, w, &n))
            return 0;
        if (n >> (8 * w - 1) & 1) {
            h->t = T_NEG;
        } else {
            h->t = T_UINT;
            h->v = n;
        }
        return 1;
    }
    case 0xd9: case 0xda: case 0xdb:
        h->t = T_STR;
        return take(r, 1 << (b - 0xd9), &n) && take_raw(r, n, h);
    case 0xdc: case 0xdd:
        h->t = T_ARR;
        return take(r, b == 0xdc ? 2 : 4, &n) && take_count(r, n, h);
    case 0xde: case 0xdf:
        h->t = T_MAP;
        return take(r, b == 0xde ? 2 : 4, &n) && take_count(r, n, h);
    default: /* 0xc1, ext 0xc7-0xc9 and 0xd4-0xd8 */
        return 0;
    }
}

/* Strict UTF-8 as Python's decoder checks it: no overlong forms, no surrogates,
 * nothing above U+10FFFF.  ASCII, the common case, goes 8 bytes at a time. */
static int utf8_valid(const uint8_t *s, size_t n) {
    if (n <= 16) { /* keys and short values: one pass, no branches per byte */
        uint8_t any = 0;
        for (size_t j = 0; j < n; j++)
            any |= s[j];
        if (!(any & 0x80))
            return 1;
    }
    size_t i = 0;
    while (i < n) {
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i == n)
            break;
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

/* Skips one complete value, checking everything unpackb checks. */
static int skip(rd *r, int depth) {
    hdr h;
    if (!read_hdr(r, &h))
        return 0;
    switch (h.t) {
    case T_STR:
        return utf8_valid(r->p + h.off, (size_t)h.v);
    case T_ARR:
        if (h.v && depth >= ESC_WIRE_MAX_DEPTH)
            return 0;
        for (uint64_t i = 0; i < h.v; i++)
            if (!skip(r, depth + 1))
                return 0;
        return 1;
    case T_MAP:
        if (h.v && depth >= ESC_WIRE_MAX_DEPTH)
            return 0;
        for (uint64_t i = 0; i < h.v; i++) {
            hdr k;
            if (!read_hdr(r, &k))
                return 0;
            /* strict_map_key: str or bytes keys only. */
            if (k.t == T_STR) {
                if (!utf8_valid(r->p + k.off, (size_t)k.v))
                    return 0;
            } else if (k.t != T_BIN) {
                return 0;
            }
            if (!skip(r, depth + 1))
                return 0;
        }
        return 1;
    default:
        return 1;
    }
}

static inline __attribute__((always_inline)) int str_is(const rd *r, const hdr *h,
                                                        const char *s, size_t n) {
    return h->t == T_STR && h->v == n && memcmp(r->p + h->off, s, n) == 0;
}
#define STR_IS(r, h, lit) str_is((r), (h), lit, sizeof(lit) - 1)

/* context values: parse_request's [A-Za-z0-9._:-]{1,64}\Z, as bitmaps of the
 * characters 0-63 ("-", ".", digits, ":") and 64-127 (letters, "_"). */
static int context_value_ok(const uint8_t *s, size_t n) {
    static const uint64_t LOW = 1ull << '-' | 1ull << '.' | 0x3ffull << '0' | 1ull << ':';
    static const uint64_t HIGH = 0x3ffffffull << ('A' - 64) | 1ull << ('_' - 64) |
                                 0x3ffffffull << ('a' - 64);
    if (n < 1 || n > 64)
        return 0;
    uint64_t ok = 1;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        ok &= (uint64_t)(c < 128) & ((c & 64 ? HIGH : LOW) >> (c & 63));
    }
    return (int)ok;
}

/* --- parsing requests ----------------------------------------------------------------- */

enum { K_ID, K_TYPE, K_PRESENTATION, K_PRESENTATIONS, K_CONTEXT, K_COUNT };

static int known_key(const rd *r, const hdr *k) {
    switch (k->v) { /* by length first: most keys are then one compare away */
    case 2:
        return STR_IS(r, k, "id") ? K_ID : -1;
    case 4:
        return STR_IS(r, k, "type") ? K_TYPE : -1;
    case 7:
        return STR_IS(r, k, "context") ? K_CONTEXT : -1;
    case 12:
        return STR_IS(r, k, "presentation") ? K_PRESENTATION : -1;
    case 13:
        return STR_IS(r, k, "presentations") ? K_PRESENTATIONS : -1;
    default:
        return -1;
    }
}

/* The context value at r->pos: nil, or a map of merchant_id / terminal_id str. */
static int parse_context(rd *r, esc_request *req) {
    hdr h;
    if (!read_hdr(r, &h))
        return 0;
    if (h.t == T_NIL)
        return 1;
    if (h.t != T_MAP)
        return 0;
    for (uint64_t i = 0; i < h.v; i++) {
        hdr k, v;
        if (!read_hdr(r, &k) || !read_hdr(r, &v))
            return 0;
        if (v.t != T_STR || !context_value_ok(r->p + v.off, (size_t)v.v))
            return 0;
        uint32_t *off, *len;
        if (STR_IS(r, &k, "merchant_id")) {
            off = &req->merchant_off;
            len = &req->merchant_len;
        } else if (STR_IS(r, &k, "terminal_id")) {
            off = &req->terminal_off;
            len = &req->terminal_len;
        } else {
            return 0;
        }
        if (*len) /* a duplicate key: the dict keeps the later value; decline */
            return 0;
        *off = (uint32_t)v.off;
        *len = (uint32_t)v.v;
    }
    return 1;
}

int esc_parse_verify_request(const uint8_t *payload, size_t len, uint32_t max_items,
                             esc_request *req, uint32_t *item_off, uint32_t *item_len) {
    if (!payload || !req || !item_off || !item_len || len > UINT32_MAX)
        return 0;
    rd r = {payload, len, 0};
    hdr h;
    if (!read_hdr(&r, &h) || h.t != T_MAP)
        return 0;

    /* Pass 1: the whole value must decode; note where the known keys' values start. */
    size_t at[K_COUNT];
    int seen[K_COUNT] = {0};
    for (uint64_t i = 0; i < h.v; i++) {
        hdr k;
        if (!read_hdr(&r, &k))
            return 0;
        int slot = -1;
        if (k.t == T_STR) {
            if (!utf8_valid(payload + k.off, (size_t)k.v))
                return 0;
            slot = known_key(&r, &k);
        } else if (k.t != T_BIN) { /* bytes keys are allowed, and never match a str */
            return 0;
        }
        if (slot >= 0) {
            if (seen[slot])
                return 0;
            seen[slot] = 1;
            at[slot] = r.pos;
        }
        if (!skip(&r, 1))
            return 0;
    }
    if (r.pos != len) /* exactly one value */
        return 0;

    /* Pass 2: the known values, checked as parse_request checks them. */
    esc_request q;
    memset(&q, 0, sizeof q);
    if (!seen[K_ID] || !seen[K_TYPE])
        return 0;
    r.pos = at[K_ID];
    if (!read_hdr(&r, &h) || h.t != T_UINT)
        return 0;
    q.id = h.v;
    r.pos = at[K_TYPE];
    if (!read_hdr(&r, &h))
        return 0;
    if (STR_IS(&r, &h, "verify"))
        q.is_batch = 0;
    else if (STR_IS(&r, &h, "verify_batch"))
        q.is_batch = 1;
    else
        return 0;
    if (seen[K_CONTEXT]) {
        r.pos = at[K_CONTEXT];
        if (!parse_context(&r, &q))
            return 0;
    }
    if (!q.is_batch) {
        if (!seen[K_PRESENTATION] || max_items < 1)
            return 0;
        r.pos = at[K_PRESENTATION];
        if (!read_hdr(&r, &h) || h.t != T_BIN)
            return 0;
        q.n_items = 1;
        item_off[0] = (uint32_t)h.off;
        item_len[0] = (uint32_t)h.v;
    } else {
        if (!seen[K_PRESENTATIONS])
            return 0;
        r.pos = at[K_PRESENTATIONS];
        if (!read_hdr(&r, &h) || h.t != T_ARR || h.v < 1 || h.v > max_items)
            return 0;
        q.n_items = (uint32_t)h.v;
        for (uint32_t i = 0; i < q.n_items; i++) {
            hdr item;
            if (!read_hdr(&r, &item) || item.t != T_BIN)
                return 0;
            item_off[i] = (uint32_t)item.off;
            item_len[i] = (uint32_t)item.v;
        }
    }
    *req = q;
    return 1;
}

/* --- encoding responses --------------------------------------------------------------- */

/* Sizes saturate at SIZE_MAX, which no cap reaches: unencodable values end up there. */
static inline size_t sat_add(size_t a, size_t b) {
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static inline size_t uint_size(uint64_t v) {
    return v < 0x80 ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffu ? 5 : 9;
}

/* str8 exists since msgpack-python packs with use_bin_type=True. */
static inline size_t str_size(size_t n) {
    size_t h = n < 32 ? 1 : n <= 0xff ? 2 : n <= 0xffff ? 3 : n <= 0xffffffffu ? 5 : SIZE_MAX;
    return sat_add(h, n);
}

static inline size_t count_hdr_size(size_t n) { /* array and map */
    return n < 16 ? 1 : n <= 0xffff ? 3 : n <= 0xffffffffu ? 5 : SIZE_MAX;
}

static const char *const PURPOSES[5] = {
    NULL, "identity", "medical_settlement", "payment", "benefit_collection",
};

#define KEY_SIZE(lit) (sizeof(lit)) /* fixstr header + the text */

static size_t claims_size(const esc_claims *c) {
    size_t purpose = c->purpose >= 1 && c->purpose <= 4 ? strlen(PURPOSES[c->purpose]) : 0;
    if (!purpose)
        return SIZE_MAX;
    size_t n = 1 + KEY_SIZE("card_number") + 1 + 9 + KEY_SIZE("region") + 1 + 6 +
               KEY_SIZE("channel") + KEY_SIZE("issuer") + KEY_SIZE("serial") + 2 + 16 +
               KEY_SIZE("purpose") + 1 + purpose + KEY_SIZE("presented_at_ms") +
               uint_size(c->presented_at_ms) + KEY_SIZE("valid_until") +
               uint_size(c->valid_until);
    n = sat_add(n, str_size(c->channel_len));
    return sat_add(n, str_size(c->issuer_len));
}

/* The fields of a result map (verdict, reason, claims) without the map header. */
static size_t result_fields_size(const esc_result *r) {
    size_t n = KEY_SIZE("verdict") + uint_size(r->verdict);
    if (r->reason && r->reason_len)
        n = sat_add(n, sat_add(KEY_SIZE("reason"), str_size(r->reason_len)));
    if (r->claims)
        n = sat_add(n, sat_add(KEY_SIZE("claims"), claims_size(r->claims)));
    if (r->repeat)
        n = sat_add(n, KEY_SIZE("repeat") + 1);
    return n;
}

static inline size_t result_entries(const esc_result *r) {
    return 1 + (r->reason && r->reason_len) + (r->claims != NULL) + (r->repeat != 0);
}

static size_t verify_payload_size(uint64_t id, const esc_result *r) {
    return sat_add(1 + KEY_SIZE("id") + uint_size(id), result_fields_size(r));
}

static size_t batch_payload_size(uint64_t id, const esc_result *results, size_t n) {
    size_t s = sat_add(1 + KEY_SIZE("id") + uint_size(id) + KEY_SIZE("results"),
                       count_hdr_size(n));
    for (size_t i = 0; i < n && s != SIZE_MAX; i++)
        s = sat_add(s, sat_add(1, result_fields_size(&results[i])));
    return s;
}

/* The frame around a payload: its header holds 32 bits. */
static inline size_t frame_size(size_t payload) {
    return payload > 0xffffffffu ? SIZE_MAX : payload + 4;
}

size_t esc_response_bound(const esc_result *results, size_t n, int is_batch) {
    if (is_batch)
        return frame_size(batch_payload_size(UINT64_MAX, results, n));
    size_t s = 0;
    for (size_t i = 0; i < n; i++)
        s = sat_add(s, frame_size(verify_payload_size(UINT64_MAX, &results[i])));
    return s;
}

static inline uint8_t *put_be(uint8_t *o, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--) {
        o[i] = (uint8_t)v;
        v >>= 8;
    }
    return o + n;
}

static uint8_t *put_uint(uint8_t *o, uint64_t v) {
    if (v < 0x80) {
        *o++ = (uint8_t)v;
    } else if (v <= 0xff) {
        *o++ = 0xcc;
        *o++ = (uint8_t)v;
    } else if (v <= 0xffff) {
        *o++ = 0xcd;
        o = put_be(o, v, 2);
    } else if (v <= 0xffffffffu) {
        *o++ = 0xce;
        o = put_be(o, v, 4);
    } else {
        *o++ = 0xcf;
        o = put_be(o, v, 8);
    }
    return o;
}

/* n fits 32 bits: the size functions have ruled out anything longer. */
static uint8_t *put_str(uint8_t *o, const void *s, size_t n) {
    if (n < 32) {
        *o++ = (uint8_t)(0xa0 | n);
    } else if (n <= 0xff) {
        *o++ = 0xd9;
        *o++ = (uint8_t)n;
    } else if (n <= 0xffff) {
        *o++ = 0xda;
        o = put_be(o, n, 2);
    } else {
        *o++ = 0xdb;
        o = put_be(o, n, 4);
    }
    if (n)
        memcpy(o, s, n);
    return o + n;
}

static uint8_t *put_count(uint8_t *o, size_t n, uint8_t fix, uint8_t c16) {
    if (n < 16) {
        *o++ = (uint8_t)(fix | n);
    } else if (n <= 0xffff) {
        *o++ = c16;
        o = put_be(o, n, 2);
    } else {
        *o++ = c16 + 1;
        o = put_be(o, n, 4);
    }
    return o;
}

#define PUT_KEY(o, lit) put_str((o), lit, sizeof(lit) - 1)

static uint8_t *put_claims(uint8_t *o, const esc_claims *c) {
    const char *purpose = PURPOSES[c->purpose];
    *o++ = 0x88;
    o = PUT_KEY(o, "card_number");
    o = put_str(o, c->card_number, 9);
    o = PUT_KEY(o, "region");
    o = put_str(o, c->region, 6);
    o = PUT_KEY(o, "channel");
    o = put_str(o, c->channel, c->channel_len);
    o = PUT_KEY(o, "issuer");
    o = put_str(o, c->issuer, c->issuer_len);
    o = PUT_KEY(o, "serial");
    *o++ = 0xc4;
    *o++ = 16;
    memcpy(o, c->serial, 16);
    o += 16;
    o = PUT_KEY(o, "purpose");
    o = put_str(o, purpose, strlen(purpose));
    o = PUT_KEY(o, "presented_at_ms");
    o = put_uint(o, c->presented_at_ms);
    o = PUT_KEY(o, "valid_until");
    return put_uint(o, c->valid_until);
}

static uint8_t *put_result_fields(uint8_t *o, const esc_result *r) {
    o = PUT_KEY(o, "verdict");
    o = put_uint(o, r->verdict);
    if (r->reason && r->reason_len) {
        o = PUT_KEY(o, "reason");
        o = put_str(o, r->reason, r->reason_len);
    }
    if (r->claims) {
        o = PUT_KEY(o, "claims");
        o = put_claims(o, r->claims);
    }
    if (r->repeat) {
        o = PUT_KEY(o, "repeat");
        *o++ = 0xc3; /* true */
    }
    return o;
}

size_t esc_encode_verify_response(uint8_t *out, size_t cap, uint64_t id, const esc_result *r) {
    if (!out || !r)
        return 0;
    size_t size = frame_size(verify_payload_size(id, r));
    if (size == SIZE_MAX || size > cap)
        return 0;
    uint8_t *o = put_be(out, size - 4, 4);
    *o++ = (uint8_t)(0x80 | (1 + result_entries(r)));
    o = PUT_KEY(o, "id");
    o = put_uint(o, id);
    o = put_result_fields(o, r);
    return (size_t)(o - out);
}

size_t esc_encode_batch_response(uint8_t *out, size_t cap, uint64_t id,
                                 const esc_result *results, size_t n) {
    if (!out || (!results && n))
        return 0;
    size_t size = frame_size(batch_payload_size(id, results, n));
    if (size == SIZE_MAX || size > cap)
        return 0;
    uint8_t *o = put_be(out, size - 4, 4);
    *o++ = 0x82;
    o = PUT_KEY(o, "id");
    o = put_uint(o, id);
    o = PUT_KEY(o, "results");
    o = put_count(o, n, 0x90, 0xdc);
    for (size_t i = 0; i < n; i++) {
        *o++ = (uint8_t)(0x80 | result_entries(&results[i]));
        o = put_result_fields(o, &results[i]);
    }
    return (size_t)(o - out);
}
