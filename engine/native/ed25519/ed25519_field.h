/* Arithmetic in GF(p), p = 2^255 - 19, for Ed25519 verification.
 *
 * An element is five unsigned 64-bit limbs in radix 2^51 (value = sum v[i] 2^(51 i)),
 * not necessarily fully reduced.  Products are formed in unsigned __int128 and folded
 * back with 2^255 = 19 (mod p).  Everything here handles public data only, so it is
 * free to be variable time.
 *
 * Limb bounds, which the point formulas rely on:
 * - fe_mul / fe_sq / fe_sub / fe_neg return "reduced" limbs: < 2^51 + 2^13.
 * - fe_add does not reduce: the sum of two reduced elements is < 2^52 + 2^14.
 * - fe_mul / fe_sq accept limbs < 2^54 (so sums of up to four reduced elements);
 *   then every column stays below 2^115 and every carry fits in 64 bits.
 * - fe_sub accepts a subtrahend with limbs < 2^55 - 304.
 * The hot operations are inline here because the point code lives in other files.
 */
#ifndef ESC_ED25519_FIELD_H
#define ESC_ED25519_FIELD_H

#include <stdint.h>

typedef struct {
    uint64_t v[5];
} fe;

typedef unsigned __int128 u128;

#define FE_MASK51 ((uint64_t)0x7ffffffffffff)

/* Constants (ed25519_field.c). */
extern const fe fe_d;      /* d = -121665/121666 */
extern const fe fe_d2;     /* 2d */
extern const fe fe_sqrtm1; /* sqrt(-1) = 2^((p-1)/4) */

static inline void fe_0(fe *r)
{
    r->v[0] = r->v[1] = r->v[2] = r->v[3] = r->v[4] = 0;
}

static inline void fe_1(fe *r)
{
    r->v[0] = 1;
    r->v[1] = r->v[2] = r->v[3] = r->v[4] = 0;
}

static inline void fe_add(fe *r, const fe *a, const fe *b)
{
    for (int i = 0; i < 5; i++)
        r->v[i] = a->v[i] + b->v[i];
}

/* One carry pass: limbs back under 2^51 + 2^13 (the top carry wraps round times 19). */
static inline void fe_carry(fe *r, uint64_t r0, uint64_t r1, uint64_t r2, uint64_t r3,
                            uint64_t r4)
{
    r1 += r0 >> 51;
    r0 &= FE_MASK51;
    r2 += r1 >> 51;
    r1 &= FE_MASK51;
    r3 += r2 >> 51;
    r2 &= FE_MASK51;
    r4 += r3 >> 51;
    r3 &= FE_MASK51;
    r0 += (r4 >> 51) * 19;
    r4 &= FE_MASK51;
    r1 += r0 >> 51;
    r0 &= FE_MASK51;
    r->v[0] = r0;
    r->v[1] = r1;
    r->v[2] = r2;
    r->v[3] = r3;
    r->v[4] = r4;
}

/* a - b, as a + 16p - b so that no limb goes negative. */
static inline void fe_sub(fe *r, const fe *a, const fe *b)
{
    fe_carry(r, a->v[0] + 0x7ffffffffffed0ULL - b->v[0], a->v[1] + 0x7ffffffffffff0ULL - b->v[1],
             a->v[2] + 0x7ffffffffffff0ULL - b->v[2], a->v[3] + 0x7ffffffffffff0ULL - b->v[3],
             a->v[4] + 0x7ffffffffffff0ULL - b->v[4]);
}

static inline void fe_neg(fe *r, const fe *a)
{
    fe z;
    fe_0(&z);
    fe_sub(r, &z, a);
}

/* Folds five 128-bit column sums (each < 2^115) into a reduced element. */
static inline void fe_fold(fe *r, u128 c0, u128 c1, u128 c2, u128 c3, u128 c4)
{
    uint64_t r0, r1, r2, r3, r4;
    c1 += (uint64_t)(c0 >> 51);
    r0 = (uint64_t)c0 & FE_MASK51;
    c2 += (uint64_t)(c1 >> 51);
    r1 = (uint64_t)c1 & FE_MASK51;
    c3 += (uint64_t)(c2 >> 51);
    r2 = (uint64_t)c2 & FE_MASK51;
    c4 += (uint64_t)(c3 >> 51);
    r3 = (uint64_t)c3 & FE_MASK51;
    r0 += (uint64_t)(c4 >> 51) * 19;
    r4 = (uint64_t)c4 & FE_MASK51;
    r1 += r0 >> 51;
    r0 &= FE_MASK51;
    r->v[0] = r0;
    r->v[1] = r1;
    r->v[2] = r2;
    r->v[3] = r3;
    r->v[4] = r4;
}

static inline void fe_mul(fe *r, const fe *a, const fe *b)
{
    const uint64_t a0 = a->v[0], a1 = a->v[1], a2 = a->v[2], a3 = a->v[3], a4 = a->v[4];
    const uint64_t b0 = b->v[0], b1 = b->v[1], b2 = b->v[2], b3 = b->v[3], b4 = b->v[4];
    /* Limbs of b above the diagonal wrap round 2^255 = 19. */
    const uint64_t b1_19 = b1 * 19, b2_19 = b2 * 19, b3_19 = b3 * 19, b4_19 = b4 * 19;
    u128 c0 = (u128)a0 * b0 + (u128)a1 * b4_19 + (u128)a2 * b3_19 + (u128)a3 * b2_19 +
              (u128)a4 * b1_19;
    u128 c1 = (u128)a0 * b1 + (u128)a1 * b0 + (u128)a2 * b4_19 + (u128)a3 * b3_19 +
              (u128)a4 * b2_19;
    u128 c2 = (u128)a0 * b2 + (u128)a1 * b1 + (u128)a2 * b0 + (u128)a3 * b4_19 +
              (u128)a4 * b3_19;
    u128 c3 = (u128)a0 * b3 + (u128)a1 * b2 + (u128)a2 * b1 + (u128)a3 * b0 +
              (u128)a4 * b4_19;
    u128 c4 = (u128)a0 * b4 + (u128)a1 * b3 + (u128)a2 * b2 + (u128)a3 * b1 + (u128)a4 * b0;
    fe_fold(r, c0, c1, c2, c3, c4);
}

static inline void fe_sq(fe *r, const fe *a)
{
    const uint64_t a0 = a->v[0], a1 = a->v[1], a2 = a->v[2], a3 = a->v[3], a4 = a->v[4];
    const uint64_t d0 = 2 * a0, d1 = 2 * a1, d3 = 2 * a3;
    const uint64_t a3_19 = 19 * a3, a4_19 = 19 * a4;
    u128 c0 = (u128)a0 * a0 + (u128)d1 * a4_19 + (u128)(2 * a2) * a3_19;
    u128 c1 = (u128)d0 * a1 + (u128)(2 * a2) * a4_19 + (u128)a3 * a3_19;
    u128 c2 = (u128)d0 * a2 + (u128)a1 * a1 + (u128)d3 * a4_19;
    u128 c3 = (u128)d0 * a3 + (u128)d1 * a2 + (u128)a4 * a4_19;
    u128 c4 = (u128)d0 * a4 + (u128)d1 * a3 + (u128)a2 * a2;
    fe_fold(r, c0, c1, c2, c3, c4);
}

/* 2 a^2, for point doubling. */
static inline void fe_sq2(fe *r, const fe *a)
{
    fe t;
    fe_sq(&t, a);
    fe_add(r, &t, &t);
}

/* r = a^(2^n), n >= 1. */
static inline void fe_sqn(fe *r, const fe *a, int n)
{
    fe_sq(r, a);
    while (--n > 0)
        fe_sq(r, r);
}

static inline void fe_mul_small(fe *r, const fe *a, uint32_t k)
{
    fe_fold(r, (u128)a->v[0] * k, (u128)a->v[1] * k, (u128)a->v[2] * k, (u128)a->v[3] * k,
            (u128)a->v[4] * k);
}

/* The 32-byte little-endian encoding of a's unique representative in [0, p). */
void fe_tobytes(uint8_t out[32], const fe *a);

/* Bits 0..254 of s (bit 255 ignored); the value may be >= p (callers check that). */
void fe_frombytes(fe *r, const uint8_t s[32]);

int fe_iszero(const fe *a);
int fe_isodd(const fe *a); /* the low bit of the canonical representative */
int fe_equal(const fe *a, const fe *b);

void fe_invert(fe *r, const fe *z);          /* z^(p-2) */
void fe_pow22523(fe *r, const fe *z);        /* z^((p-5)/8) */

/* r[j] = z[j]^((p-5)/8) for j = 0, 1.  The two chains are interleaved: one squaring
 * waits on the previous one's result, and two independent chains keep the multiplier
 * busy (about 1.5x the throughput of two single calls on x86-64). */
void fe_pow22523_x2(fe r[2], const fe z[2]);

/* r[j] = z[j]^((p-5)/8) for j = 0..7, in the eight lanes of AVX-512 IFMA
 * (ed25519_field_ifma.c).  Inputs need limbs below 2^52 (any reduced element).
 * Only for use when fe_simd_enabled(); without AVX-512 support compiled in it is a
 * plain loop. */
void fe_pow22523_x8(fe r[8], const fe z[8]);

/* 1 when the CPU has AVX-512 IFMA (probed once) and it has not been switched off. */
int fe_simd_enabled(void);

/* Switches the IFMA path on (where the CPU has it) or off; returns the previous
 * state.  For tests and benchmarks, not for use while other threads verify. */
int fe_simd_set_enabled(int on);

#endif
