#include "ed25519_scalar.h"

typedef unsigned __int128 u128;

/* L, and mu = floor(2^512 / L) for Barrett reduction (Python-derived constants). */
static const uint64_t L5[5] = {0x5812631a5cf5d3edULL, 0x14def9dea2f79cd6ULL, 0, 0x1000000000000000ULL,
                               0};
static const uint64_t MU[5] = {0xed9ce5a30a2c131bULL, 0x2106215d086329a7ULL, 0xffffffffffffffebULL,
                               0xffffffffffffffffULL, 0xfULL};

int sc_is_canonical(const uint8_t s[32])
{
    uint64_t v[4];
    memcpy(v, s, 32);
    for (int i = 3; i >= 0; i--) {
        if (v[i] != L5[i])
            return v[i] < L5[i];
    }
    return 0; /* s == L */
}

/* r >= L, for five-limb r. */
static int geq_L(const uint64_t r[5])
{
    for (int i = 4; i >= 0; i--) {
        if (r[i] != L5[i])
            return r[i] > L5[i];
    }
    return 1;
}

void sc_reduce_wide(sc *r, const sc_wide *x)
{
    /* Barrett with base b = 2^64, k = 4 (HAC 14.42): q = floor(floor(x / b^3) mu / b^5)
     * is at most 2 below floor(x / L), so x - q L < 3L. */
    uint64_t q2[10] = {0}, rr[5] = {0}, res[5];
    const uint64_t *q1 = x->v + 3;
    const uint64_t *q3 = q2 + 5;
    u128 t;
    uint64_t c;
    for (int i = 0; i < 5; i++) {
        c = 0;
        for (int j = 0; j < 5; j++) {
            t = (u128)q1[i] * MU[j] + q2[i + j] + c;
            q2[i + j] = (uint64_t)t;
            c = (uint64_t)(t >> 64);
        }
        q2[i + 5] = c;
    }
    /* rr = q3 L mod b^5 */
    for (int i = 0; i < 5; i++) {
        c = 0;
        for (int j = 0; i + j < 5; j++) {
            t = (u128)q3[i] * L5[j] + rr[i + j] + c;
            rr[i + j] = (uint64_t)t;
            c = (uint64_t)(t >> 64);
        }
    }
    /* res = (x mod b^5) - rr mod b^5 */
    c = 0;
    for (int i = 0; i < 5; i++) {
        t = (u128)x->v[i] - rr[i] - c;
        res[i] = (uint64_t)t;
        c = (uint64_t)(t >> 64) & 1;
    }
    while (geq_L(res)) {
        c = 0;
        for (int i = 0; i < 5; i++) {
            t = (u128)res[i] - L5[i] - c;
            res[i] = (uint64_t)t;
            c = (uint64_t)(t >> 64) & 1;
        }
    }
    memcpy(r->v, res, 32);
}

void sc_reduce64(sc *r, const uint8_t h[64])
{
    sc_wide w;
    memcpy(w.v, h, 64);
    sc_reduce_wide(r, &w);
}

/* Bits [p, p + n) of the limbs x (n <= 16; x has a zero limb beyond its end). */
static inline unsigned bits_at(const uint64_t *x, int p, int n)
{
    int i = p >> 6, o = p & 63;
    uint64_t v = x[i] >> o;
    if (o + n > 64)
        v |= x[i + 1] << (64 - o);
    return (unsigned)(v & ((1u << n) - 1));
}

int sc_wnaf(uint16_t *pos, int8_t *dig, const sc *s, int w)
{
    uint64_t x[6] = {s->v[0], s->v[1], s->v[2], s->v[3], 0, 0};
    const int half = 1 << (w - 1), full = 1 << w;
    int count = 0, carry = 0, p = 0;
    /* Scan upward; a carry stands for the 2^w subtracted from a negative digit. */
    while (p < 257) {
        int win = (int)bits_at(x, p, w) + carry;
        if ((win & 1) == 0) {
            p++;
            continue;
        }
        if (win < half) {
            carry = 0;
        } else {
            win -= full;
            carry = 1;
        }
        pos[count] = (uint16_t)p;
        dig[count] = (int8_t)win;
        count++;
        p += w;
    }
    return count;
}

void sc_signed_radix(int16_t *dig, const sc *s, int c, int nwin)
{
    uint64_t x[6] = {s->v[0], s->v[1], s->v[2], s->v[3], 0, 0};
    const int half = 1 << (c - 1), full = 1 << c;
    int carry = 0;
    for (int i = 0; i < nwin; i++) {
        int d = (int)bits_at(x, i * c, c) + carry;
        if (d > half) {
            d -= full;
            carry = 1;
        } else {
            carry = 0;
        }
        dig[i] = (int16_t)d;
    }
}
