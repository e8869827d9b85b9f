/* Scalars modulo the group order L = 2^252 + 27742317777372353535851937790883648493.
 *
 * A scalar is four little-endian 64-bit limbs.  Sums of many products are
 * accumulated without reduction in 512-bit "wide" integers and reduced once
 * (Barrett reduction), which is all the batch equation needs.
 */
#ifndef ESC_ED25519_SCALAR_H
#define ESC_ED25519_SCALAR_H

#include <stdint.h>
#include <string.h>

typedef struct {
    uint64_t v[4];
} sc;

typedef struct {
    uint64_t v[8];
} sc_wide;

static inline void sc_frombytes(sc *r, const uint8_t s[32]) { memcpy(r->v, s, 32); }
static inline void sc_tobytes(uint8_t s[32], const sc *a) { memcpy(s, a->v, 32); }

/* 1 iff the 32-byte little-endian integer s is < L. */
int sc_is_canonical(const uint8_t s[32]);

/* r = x mod L for any 512-bit x. */
void sc_reduce_wide(sc *r, const sc_wide *x);

/* r = (64-byte little-endian integer h) mod L, e.g. a SHA-512 digest. */
void sc_reduce64(sc *r, const uint8_t h[64]);

/* acc += z * k for a 128-bit z (two limbs) and a scalar k < 2^256.  The accumulator
 * holds 2^130 such terms before it could overflow, far more than any batch. */
static inline void scw_muladd(sc_wide *acc, const uint64_t z[2], const sc *k)
{
    typedef unsigned __int128 u128;
    uint64_t p[6];
    u128 t;
    uint64_t c = 0;
    for (int j = 0; j < 4; j++) {
        t = (u128)z[0] * k->v[j] + c;
        p[j] = (uint64_t)t;
        c = (uint64_t)(t >> 64);
    }
    p[4] = c;
    c = 0;
    for (int j = 0; j < 4; j++) {
        t = (u128)z[1] * k->v[j] + p[j + 1] + c;
        p[j + 1] = (uint64_t)t;
        c = (uint64_t)(t >> 64);
    }
    p[5] = c;
    c = 0;
    for (int j = 0; j < 6; j++) {
        t = (u128)acc->v[j] + p[j] + c;
        acc->v[j] = (uint64_t)t;
        c = (uint64_t)(t >> 64);
    }
    for (int j = 6; j < 8 && c; j++) {
        t = (u128)acc->v[j] + c;
        acc->v[j] = (uint64_t)t;
        c = (uint64_t)(t >> 64);
    }
}

/* Width-w non-adjacent form of s < 2^256, 2 <= w <= 8: s = sum dig[i] 2^pos[i] with odd
 * |dig[i]| < 2^(w-1), positions ascending and at least w apart.  Returns the count
 * (at most 257 / w + 1). */
int sc_wnaf(uint16_t *pos, int8_t *dig, const sc *s, int w);

/* Signed radix-2^c digits of s < 2^253, 4 <= c <= 16: s = sum_{i < nwin} dig[i] 2^(c i)
 * with -2^(c-1) < dig[i] <= 2^(c-1).  nwin = 253 / c + 1 windows suffice for any s;
 * fewer may be asked for when s is known to be short. */
void sc_signed_radix(int16_t *dig, const sc *s, int c, int nwin);

#endif
