#include "ed25519_point.h"

#include <pthread.h>
#include <string.h>

ge_p3 ge_base;
ge_niels ge_base_odd[ESC_BASE_TABLE];

/* The standard encoding of B: y = 4/5, x even. */
static const uint8_t base_encoding[32] = {
    0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
    0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
    0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66};

/* y coordinates (bit 255 clear) of the 8 points of order dividing 8:
 * 0 (order 4, x = +-sqrt(-1)), 1 (the identity), p - 1 (order 2), and y8, p - y8
 * (order 8, each with two values of x).  Derived in tests/ed25519_ref.py. */
static const uint8_t small_order_y[5][32] = {
    {0},
    {1},
    {0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    {0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4,
     0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6,
     0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05},
    {0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b,
     0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39,
     0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a},
};

int ge_is_canonical(const uint8_t s[32])
{
    /* y >= p = 2^255 - 19 iff bits 8..254 are all ones and the low byte is >= 0xed. */
    if ((s[31] & 0x7f) != 0x7f)
        return 1;
    for (int i = 30; i > 0; i--)
        if (s[i] != 0xff)
            return 1;
    return s[0] < 0xed;
}

int ge_is_small_order(const uint8_t s[32])
{
    for (int k = 0; k < 5; k++) {
        if (memcmp(s, small_order_y[k], 31) == 0 && (s[31] & 0x7f) == small_order_y[k][31])
            return 1;
    }
    return 0;
}

/* Decoding in two halves around the one exponentiation, so that two decodings can
 * share it (fe_pow22523_x2). */
typedef struct {
    fe y, u, v, v3;
} dec_state;

/* Returns the base u v^7 of the exponentiation in *base. */
static void decode_begin(dec_state *d, fe *base, const uint8_t s[32])
{
    fe one, y2;
    fe_1(&one);
    fe_frombytes(&d->y, s);
    fe_sq(&y2, &d->y);
    fe_sub(&d->u, &y2, &one); /* u = y^2 - 1 */
    fe_mul(&d->v, &y2, &fe_d);
    fe_add(&d->v, &d->v, &one); /* v = d y^2 + 1 */
    /* x^2 = u/v; one exponentiation gives both the inverse and the square root:
     * x = u v^3 (u v^7)^((p-5)/8) is a root when one exists, up to a factor sqrt(-1). */
    fe_sq(&d->v3, &d->v);
    fe_mul(&d->v3, &d->v3, &d->v);
    fe_sq(base, &d->v3);
    fe_mul(base, base, &d->v);
    fe_mul(base, base, &d->u);
}

static int decode_end(ge_p3 *r, const dec_state *d, const fe *pw, int sign)
{
    fe x, vxx, t;
    uint8_t xb[32];
    fe_mul(&x, pw, &d->v3);
    fe_mul(&x, &x, &d->u);
    fe_sq(&vxx, &x);
    fe_mul(&vxx, &vxx, &d->v);
    fe_sub(&t, &vxx, &d->u);
    if (!fe_iszero(&t)) {
        fe_add(&t, &vxx, &d->u);
        if (!fe_iszero(&t))
            return -1; /* u/v is not a square: not on the curve */
        fe_mul(&x, &x, &fe_sqrtm1);
    }
    fe_tobytes(xb, &x);
    if ((xb[0] & 1) != sign) {
        int xzero = 1;
        for (int i = 0; i < 32; i++)
            xzero &= xb[i] == 0;
        if (xzero)
            return -1; /* x = 0 with the sign bit set */
        fe_neg(&x, &x);
    }
    r->X = x;
    r->Y = d->y;
    fe_1(&r->Z);
    fe_mul(&r->T, &x, &d->y);
    return 0;
}

int ge_decompress(ge_p3 *r, const uint8_t s[32])
{
    dec_state d;
    fe base, pw;
    if (!ge_is_canonical(s))
        return -1;
    decode_begin(&d, &base, s);
    fe_pow22523(&pw, &base);
    return decode_end(r, &d, &pw, s[31] >> 7);
}

void ge_decompress_many(ge_p3 *const *out, const uint8_t *const *enc, int *ok, size_t n)
{
    /* Up to eight decodings share one exponentiation: eight lanes with IFMA, else
     * two interleaved chains. */
    const int width = fe_simd_enabled() ? 8 : 2;
    size_t idx[8];
    int have = 0;
    dec_state d[8];
    fe base[8], pw[8];
    for (size_t i = 0; i <= n; i++) {
        if (i < n) {
            if (!ge_is_canonical(enc[i])) {
                ok[i] = 0;
                continue;
            }
            idx[have] = i;
            decode_begin(&d[have], &base[have], enc[i]);
            if (++have < width)
                continue;
        }
        if (have == 0)
            break;
        if (width == 8 && have > 2) {
            for (int j = have; j < 8; j++)
                base[j] = base[0]; /* idle lanes */
            fe_pow22523_x8(pw, base);
        } else {
            for (int j = 0; j + 1 < have; j += 2)
                fe_pow22523_x2(pw + j, base + j);
            if (have & 1)
                fe_pow22523(&pw[have - 1], &base[have - 1]);
        }
        for (int j = 0; j < have; j++)
            ok[idx[j]] = decode_end(out[idx[j]], &d[j], &pw[j], enc[idx[j]][31] >> 7) == 0;
        have = 0;
    }
}

void ge_p2_compress(uint8_t s[32], const ge_p2 *p)
{
    fe zi, x, y;
    fe_invert(&zi, &p->Z);
    fe_mul(&x, &p->X, &zi);
    fe_mul(&y, &p->Y, &zi);
    fe_tobytes(s, &y);
    s[31] |= (uint8_t)(fe_isodd(&x) << 7);
}

void ge_compress(uint8_t s[32], const ge_p3 *p) { ge_p2_compress(s, (const ge_p2 *)p); }

int ge_p2_times8_is_identity(const ge_p2 *p)
{
    ge_p1p1 t;
    ge_p2 q = *p;
    for (int i = 0; i < 3; i++) {
        ge_p2_dbl(&t, &q);
        ge_p1p1_to_p2(&q, &t);
    }
    /* The identity is (0 : Z : Z). */
    return fe_iszero(&q.X) && fe_equal(&q.Y, &q.Z);
}

int ge_p3_is_small_order(const ge_p3 *p) { return ge_p2_times8_is_identity((const ge_p2 *)p); }

static void to_niels(ge_niels *r, const ge_p3 *p)
{
    fe zi, x, y;
    fe_invert(&zi, &p->Z);
    fe_mul(&x, &p->X, &zi);
    fe_mul(&y, &p->Y, &zi);
    fe_add(&r->ypx, &y, &x);
    fe_sub(&r->ymx, &y, &x);
    fe_mul(&r->xy2d, &x, &y);
    fe_mul(&r->xy2d, &r->xy2d, &fe_d2);
}

static void init_tables(void)
{
    ge_p3 p, b2;
    ge_p1p1 t;
    ge_cached b2c;
    if (ge_decompress(&ge_base, base_encoding) != 0)
        __builtin_trap(); /* cannot happen: a constant */
    ge_p3_dbl(&t, &ge_base);
    ge_p1p1_to_p3(&b2, &t);
    ge_p3_to_cached(&b2c, &b2);
    p = ge_base;
    for (int i = 0; i < ESC_BASE_TABLE; i++) {
        to_niels(&ge_base_odd[i], &p);
        ge_add(&t, &p, &b2c);
        ge_p1p1_to_p3(&p, &t);
    }
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

void ge_init(void) { pthread_once(&init_once, init_tables); }
