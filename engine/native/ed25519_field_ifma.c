/* Eight field exponentiations at once with AVX-512 IFMA (52-bit multiply-add).
 *
 * Point decoding spends nearly all its time in one exponentiation per point, a
 * chain of 250 squarings that cannot be shortened; batch verification decodes two
 * points per signature.  Here eight independent chains run in the eight 64-bit
 * lanes of a zmm register.
 *
 * Elements keep the scalar code's radix 2^51, with every limb below 2^52 so that
 * the 52-bit multipliers see all of it.  The product a_i b_j (< 2^104) comes back as
 * lo = bits 0..51 and hi = bits 52..103; at weight 2^(51(i+j)) that is
 * lo + 2 hi 2^51, so hi goes to the next column doubled.  Columns (< 2^56) fold
 * with 2^255 = 19 (< 2^61) and one carry pass in all lanes at once brings every limb
 * back under 2^51 + 2^15 < 2^52.
 *
 * Compiled for AVX-512 with function attributes and used only when the CPU reports
 * the features at run time (fe_simd_enabled); elsewhere this file provides stubs.
 */
#include "ed25519_field.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ESC_NO_SIMD)

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

IFMA static void fe8_sqn(fe8 *r, const fe8 *a, int n)
{
    fe8_sq(r, a);
    while (--n > 0)
        fe8_sq(r, r);
}

/* The addition chain of fe_pow22523 (ed25519_field.c), eight lanes wide. */
IFMA void fe_pow22523_x8(fe r[8], const fe z[8])
{
    uint64_t buf[5][8] __attribute__((aligned(64)));
    fe8 x, z2, z9, z11, t, a5, a10, a20, a50, a100;
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 5; i++)
            buf[i][j] = z[j].v[i];
    for (int i = 0; i < 5; i++)
        x.l[i] = _mm512_load_si512((const void *)buf[i]);

    fe8_sq(&z2, &x);
    fe8_sqn(&t, &z2, 2);
    fe8_mul(&z9, &t, &x);
    fe8_mul(&z11, &z9, &z2);
    fe8_sq(&t, &z11);
    fe8_mul(&a5, &t, &z9);
    fe8_sqn(&t, &a5, 5);
    fe8_mul(&a10, &t, &a5);
    fe8_sqn(&t, &a10, 10);
    fe8_mul(&a20, &t, &a10);
    fe8_sqn(&t, &a20, 20);
    fe8_mul(&t, &t, &a20);
    fe8_sqn(&t, &t, 10);
    fe8_mul(&a50, &t, &a10);
    fe8_sqn(&t, &a50, 50);
    fe8_mul(&a100, &t, &a50);
    fe8_sqn(&t, &a100, 100);
    fe8_mul(&t, &t, &a100);
    fe8_sqn(&t, &t, 50);
    fe8_mul(&t, &t, &a50);
    fe8_sqn(&t, &t, 2);
    fe8_mul(&t, &t, &x);

    for (int i = 0; i < 5; i++)
        _mm512_store_si512((void *)buf[i], t.l[i]);
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 5; i++)
            r[j].v[i] = buf[i][j];
}

static int simd_state = -1; /* -1: not yet probed */

int fe_simd_enabled(void)
{
    if (simd_state < 0) {
        __builtin_cpu_init();
        /* (Races here are benign: every thread computes the same answer.) */
        simd_state = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512ifma");
    }
    return simd_state;
}

int fe_simd_set_enabled(int on)
{
    int was = fe_simd_enabled();
    __builtin_cpu_init();
    simd_state = on && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512ifma");
    return was;
}

#else

int fe_simd_enabled(void) { return 0; }
int fe_simd_set_enabled(int on) { (void)on; return 0; }

void fe_pow22523_x8(fe r[8], const fe z[8])
{
    for (int j = 0; j < 8; j++)
        fe_pow22523(&r[j], &z[j]);
}

#endif
