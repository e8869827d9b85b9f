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

#include "ed25519_ifma.h"

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

static int cpu_has_ifma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512ifma");
}

int fe_simd_enabled(void)
{
    int v = __atomic_load_n(&simd_state, __ATOMIC_RELAXED);
    if (v < 0) {
        v = cpu_has_ifma(); /* every thread that races here finds the same answer */
        __atomic_store_n(&simd_state, v, __ATOMIC_RELAXED);
    }
    return v;
}

int fe_simd_set_enabled(int on)
{
    int was = fe_simd_enabled();
    __atomic_store_n(&simd_state, on && cpu_has_ifma(), __ATOMIC_RELAXED);
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
