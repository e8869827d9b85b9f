#include "ed25519_field.h"

#include <string.h>

/* Radix-2^51 limbs of the curve constants (derived with Python integers; the tests
 * check them against the definitions). */
const fe fe_d = {{0x34dca135978a3ULL, 0x1a8283b156ebdULL, 0x5e7a26001c029ULL,
                  0x739c663a03cbbULL, 0x52036cee2b6ffULL}};
const fe fe_d2 = {{0x69b9426b2f159ULL, 0x35050762add7aULL, 0x3cf44c0038052ULL,
                   0x6738cc7407977ULL, 0x2406d9dc56dffULL}};
const fe fe_sqrtm1 = {{0x61b274a0ea0b0ULL, 0xd5a5fc8f189dULL, 0x7ef5e9cbd0c60ULL,
                       0x78595a6804c9eULL, 0x2b8324804fc1dULL}};

static uint64_t load64(const uint8_t *s)
{
    uint64_t x;
    memcpy(&x, s, 8); /* x86-64 and aarch64 are little-endian */
    return x;
}

static void store64(uint8_t *s, uint64_t x) { memcpy(s, &x, 8); }

void fe_frombytes(fe *r, const uint8_t s[32])
{
    uint64_t w0 = load64(s), w1 = load64(s + 8), w2 = load64(s + 16), w3 = load64(s + 24);
    r->v[0] = w0 & FE_MASK51;
    r->v[1] = ((w0 >> 51) | (w1 << 13)) & FE_MASK51;
    r->v[2] = ((w1 >> 38) | (w2 << 26)) & FE_MASK51;
    r->v[3] = ((w2 >> 25) | (w3 << 39)) & FE_MASK51;
    r->v[4] = (w3 >> 12) & FE_MASK51;
}

void fe_tobytes(uint8_t out[32], const fe *a)
{
    fe t;
    uint64_t q;
    /* Reduce to limbs < 2^51 + 2^13, i.e. a value below 2p. */
    fe_carry(&t, a->v[0], a->v[1], a->v[2], a->v[3], a->v[4]);
    /* q = 1 iff t >= p: add 19 and see whether it carries out of bit 255. */
    q = (t.v[0] + 19) >> 51;
    q = (t.v[1] + q) >> 51;
    q = (t.v[2] + q) >> 51;
    q = (t.v[3] + q) >> 51;
    q = (t.v[4] + q) >> 51;
    /* t - q p = t + 19 q - q 2^255: add 19q, carry, drop bit 255. */
    t.v[0] += 19 * q;
    t.v[1] += t.v[0] >> 51;
    t.v[0] &= FE_MASK51;
    t.v[2] += t.v[1] >> 51;
    t.v[1] &= FE_MASK51;
    t.v[3] += t.v[2] >> 51;
    t.v[2] &= FE_MASK51;
    t.v[4] += t.v[3] >> 51;
    t.v[3] &= FE_MASK51;
    t.v[4] &= FE_MASK51;
    store64(out, t.v[0] | (t.v[1] << 51));
    store64(out + 8, (t.v[1] >> 13) | (t.v[2] << 38));
    store64(out + 16, (t.v[2] >> 26) | (t.v[3] << 25));
    store64(out + 24, (t.v[3] >> 39) | (t.v[4] << 12));
}

int fe_iszero(const fe *a)
{
    uint8_t s[32];
    uint8_t acc = 0;
    fe_tobytes(s, a);
    for (int i = 0; i < 32; i++)
        acc |= s[i];
    return acc == 0;
}

int fe_isodd(const fe *a)
{
    uint8_t s[32];
    fe_tobytes(s, a);
    return s[0] & 1;
}

int fe_equal(const fe *a, const fe *b)
{
    fe d;
    fe_sub(&d, a, b);
    return fe_iszero(&d);
}

/* z^(2^250 - 1) and z^11, the common prefix of both exponentiations below (the usual
 * addition chain: runs of squarings doubling the length of a block of ones). */
static void pow_2_250_1(fe *r250, fe *z11, const fe *z)
{
    fe z2, z9, t, a5, a10, a20, a50, a100;
    fe_sq(&z2, z);             /* z^2 */
    fe_sqn(&t, &z2, 2);        /* z^8 */
    fe_mul(&z9, &t, z);        /* z^9 */
    fe_mul(z11, &z9, &z2);     /* z^11 */
    fe_sq(&t, z11);            /* z^22 */
    fe_mul(&a5, &t, &z9);      /* z^(2^5 - 1) */
    fe_sqn(&t, &a5, 5);
    fe_mul(&a10, &t, &a5);     /* z^(2^10 - 1) */
    fe_sqn(&t, &a10, 10);
    fe_mul(&a20, &t, &a10);    /* z^(2^20 - 1) */
    fe_sqn(&t, &a20, 20);
    fe_mul(&t, &t, &a20);      /* z^(2^40 - 1) */
    fe_sqn(&t, &t, 10);
    fe_mul(&a50, &t, &a10);    /* z^(2^50 - 1) */
    fe_sqn(&t, &a50, 50);
    fe_mul(&a100, &t, &a50);   /* z^(2^100 - 1) */
    fe_sqn(&t, &a100, 100);
    fe_mul(&t, &t, &a100);     /* z^(2^200 - 1) */
    fe_sqn(&t, &t, 50);
    fe_mul(r250, &t, &a50);    /* z^(2^250 - 1) */
}

void fe_invert(fe *r, const fe *z)
{
    fe t, z11;
    pow_2_250_1(&t, &z11, z);
    fe_sqn(&t, &t, 5);         /* z^(2^255 - 32) */
    fe_mul(r, &t, &z11);       /* z^(2^255 - 21) = z^(p - 2) */
}

void fe_pow22523(fe *r, const fe *z)
{
    fe t, z11;
    pow_2_250_1(&t, &z11, z);
    fe_sqn(&t, &t, 2);         /* z^(2^252 - 4) */
    fe_mul(r, &t, z);          /* z^(2^252 - 3) = z^((p - 5)/8) */
}

/* The chain of pow_2_250_1 and fe_pow22523 on two inputs at once (the compiler
 * unrolls the two-step loops into interleaved code). */
#define X2(op)                          \
    for (int j_ = 0; j_ < 2; j_++) \
    op

static inline void sqn_x2(fe r[2], const fe a[2], int n)
{
    fe_sq(&r[0], &a[0]);
    fe_sq(&r[1], &a[1]);
    while (--n > 0) {
        fe_sq(&r[0], &r[0]);
        fe_sq(&r[1], &r[1]);
    }
}

void fe_pow22523_x2(fe r[2], const fe z[2])
{
    fe z2[2], z9[2], z11[2], t[2], a5[2], a10[2], a20[2], a50[2], a100[2];
    X2(fe_sq(&z2[j_], &z[j_]));
    sqn_x2(t, z2, 2);
    X2(fe_mul(&z9[j_], &t[j_], &z[j_]));
    X2(fe_mul(&z11[j_], &z9[j_], &z2[j_]));
    X2(fe_sq(&t[j_], &z11[j_]));
    X2(fe_mul(&a5[j_], &t[j_], &z9[j_]));
    sqn_x2(t, a5, 5);
    X2(fe_mul(&a10[j_], &t[j_], &a5[j_]));
    sqn_x2(t, a10, 10);
    X2(fe_mul(&a20[j_], &t[j_], &a10[j_]));
    sqn_x2(t, a20, 20);
    X2(fe_mul(&t[j_], &t[j_], &a20[j_]));
    sqn_x2(t, t, 10);
    X2(fe_mul(&a50[j_], &t[j_], &a10[j_]));
    sqn_x2(t, a50, 50);
    X2(fe_mul(&a100[j_], &t[j_], &a50[j_]));
    sqn_x2(t, a100, 100);
    X2(fe_mul(&t[j_], &t[j_], &a100[j_]));
    sqn_x2(t, t, 50);
    X2(fe_mul(&t[j_], &t[j_], &a50[j_]));
    sqn_x2(t, t, 2);
    X2(fe_mul(&r[j_], &t[j_], &z[j_]));
}
