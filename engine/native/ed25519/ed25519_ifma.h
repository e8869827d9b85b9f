/* AVX-512 IFMA field arithmetic, eight elements at a time (private to the
 * ed25519_*_ifma.c files, which compile it with target attributes and call it only
 * when fe_simd_enabled()).  The representation is explained in
 * ed25519_field_ifma.c: radix 2^51, every limb below 2^52 at all times, so that
 * every value can go straight into the 52-bit multipliers. */
#ifndef ESC_ED25519_IFMA_H
#define ESC_ED25519_IFMA_H

#include "ed25519_field.h"

#include <immintrin.h>

#define IFMA __attribute__((target("avx512f,avx512ifma")))

typedef struct {
    __m512i l[5];
} fe8;

IFMA static inline __m512i mul19(__m512i z)
{
    return _mm512_add_epi64(_mm512_add_epi64(z, _mm512_slli_epi64(z, 1)),
                            _mm512_slli_epi64(z, 4));
}

/* Columns z[0..9] (each < 2^57) to a reduced element. */
IFMA static inline void fe8_fold(fe8 *r, const __m512i z[10])
{
    const __m512i mask = _mm512_set1_epi64((long long)FE_MASK51);
    __m512i c[5], t[5];
#pragma GCC unroll 5
    for (int k = 0; k < 5; k++) {
        c[k] = _mm512_add_epi64(z[k], mul19(z[k + 5]));
        t[k] = _mm512_srli_epi64(c[k], 51);
        c[k] = _mm512_and_si512(c[k], mask);
    }
    r->l[0] = _mm512_add_epi64(c[0], mul19(t[4]));
#pragma GCC unroll 4
    for (int k = 1; k < 5; k++)
        r->l[k] = _mm512_add_epi64(c[k], t[k - 1]);
}

IFMA static inline void fe8_mul(fe8 *r, const fe8 *a, const fe8 *b)
{
    __m512i lo[10], hi[10], z[10];
    const __m512i zero = _mm512_setzero_si512();
#pragma GCC unroll 10
    for (int k = 0; k < 10; k++)
        lo[k] = hi[k] = zero;
#pragma GCC unroll 5
    for (int i = 0; i < 5; i++) {
#pragma GCC unroll 5
        for (int j = 0; j < 5; j++) {
            lo[i + j] = _mm512_madd52lo_epu64(lo[i + j], a->l[i], b->l[j]);
            hi[i + j] = _mm512_madd52hi_epu64(hi[i + j], a->l[i], b->l[j]);
        }
    }
    z[0] = lo[0];
#pragma GCC unroll 9
    for (int k = 1; k < 10; k++)
        z[k] = _mm512_add_epi64(lo[k], _mm512_slli_epi64(hi[k - 1], 1));
    fe8_fold(r, z);
}

IFMA static inline void fe8_sq(fe8 *r, const fe8 *a)
{
    /* Diagonal products once, the others once and then doubled. */
    __m512i dlo[10], dhi[10], clo[10], chi[10], z[10];
    const __m512i zero = _mm512_setzero_si512();
#pragma GCC unroll 10
    for (int k = 0; k < 10; k++)
        dlo[k] = dhi[k] = clo[k] = chi[k] = zero;
#pragma GCC unroll 5
    for (int i = 0; i < 5; i++) {
        dlo[2 * i] = _mm512_madd52lo_epu64(zero, a->l[i], a->l[i]);
        dhi[2 * i] = _mm512_madd52hi_epu64(zero, a->l[i], a->l[i]);
#pragma GCC unroll 4
        for (int j = i + 1; j < 5; j++) {
            clo[i + j] = _mm512_madd52lo_epu64(clo[i + j], a->l[i], a->l[j]);
            chi[i + j] = _mm512_madd52hi_epu64(chi[i + j], a->l[i], a->l[j]);
        }
    }
    /* z_k = dlo_k + 2 clo_k + 2 (dhi_{k-1} + 2 chi_{k-1}) */
    z[0] = dlo[0];
#pragma GCC unroll 9
    for (int k = 1; k < 10; k++) {
        __m512i h = _mm512_add_epi64(dhi[k - 1], _mm512_slli_epi64(chi[k - 1], 1));
        __m512i l = _mm512_add_epi64(dlo[k], _mm512_slli_epi64(clo[k], 1));
        z[k] = _mm512_add_epi64(l, _mm512_slli_epi64(h, 1));
    }
    fe8_fold(r, z);
}

/* One carry pass on sums of values below 2^53 per limb: back under 2^52. */
IFMA static inline void fe8_carry(fe8 *r)
{
    const __m512i mask = _mm512_set1_epi64((long long)FE_MASK51);
    __m512i t[5];
#pragma GCC unroll 5
    for (int k = 0; k < 5; k++) {
        t[k] = _mm512_srli_epi64(r->l[k], 51);
        r->l[k] = _mm512_and_si512(r->l[k], mask);
    }
    r->l[0] = _mm512_add_epi64(r->l[0], mul19(t[4]));
#pragma GCC unroll 4
    for (int k = 1; k < 5; k++)
        r->l[k] = _mm512_add_epi64(r->l[k], t[k - 1]);
}

IFMA static inline void fe8_add(fe8 *r, const fe8 *a, const fe8 *b)
{
#pragma GCC unroll 5
    for (int k = 0; k < 5; k++)
        r->l[k] = _mm512_add_epi64(a->l[k], b->l[k]);
    fe8_carry(r);
}

/* 2p in radix 2^51, to subtract without going negative (subtrahends are < 2^52). */
IFMA static inline __m512i two_p_limb(int k)
{
    return _mm512_set1_epi64(k == 0 ? 0xfffffffffffdaLL : 0xffffffffffffeLL);
}

IFMA static inline void fe8_sub(fe8 *r, const fe8 *a, const fe8 *b)
{
#pragma GCC unroll 5
    for (int k = 0; k < 5; k++)
        r->l[k] = _mm512_sub_epi64(_mm512_add_epi64(a->l[k], two_p_limb(k)), b->l[k]);
    fe8_carry(r);
}

IFMA static inline void fe8_set1(fe8 *r, const fe *a)
{
    for (int k = 0; k < 5; k++)
        r->l[k] = _mm512_set1_epi64((long long)a->v[k]);
}

#endif
