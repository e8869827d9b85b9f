/* Pippenger's bucket method with AVX-512 IFMA: eight windows at a time.
 *
 * The windows of Pippenger's method are independent until the very end: window w
 * adds each point P_i into its bucket number |digit_w(s_i)|.  Here each of the eight
 * 64-bit lanes of the field arithmetic (ed25519_ifma.h) is one window, so each point
 * is added to eight buckets, one per window, by one vectorised point addition: the
 * addend is the same point in every lane (a broadcast, negated in the lanes whose
 * digit is negative), and only the buckets, each lane's in its own column, have to
 * be gathered and scattered.  The bucket sums then run with all lanes in step on
 * contiguous data.  Only the final combination of the windows (c doublings per
 * window) is scalar.
 */
#include "ed25519_msm.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ESC_NO_SIMD)

#include <stdlib.h>
#include <string.h>

#include "ed25519_ifma.h"

typedef struct {
    fe8 X, Y, Z, T;
} ge8_p3;

typedef struct {
    fe8 YplusX, YminusX, Z2, T2d;
} ge8_cached;

/* r = p + q (the formulas of ge_add, eight lanes). */
IFMA static inline void ge8_add(ge8_p3 *r, const ge8_p3 *p, const ge8_cached *q)
{
    fe8 a, b, c, d, ypx, ymx, e, f, g, h;
    fe8_add(&ypx, &p->Y, &p->X);
    fe8_sub(&ymx, &p->Y, &p->X);
    fe8_mul(&a, &ymx, &q->YminusX);
    fe8_mul(&b, &ypx, &q->YplusX);
    fe8_mul(&c, &p->T, &q->T2d);
    fe8_mul(&d, &p->Z, &q->Z2);
    fe8_sub(&e, &b, &a);
    fe8_add(&h, &b, &a);
    fe8_add(&g, &d, &c);
    fe8_sub(&f, &d, &c);
    fe8_mul(&r->X, &e, &f);
    fe8_mul(&r->Y, &g, &h);
    fe8_mul(&r->Z, &f, &g);
    fe8_mul(&r->T, &e, &h);
}

IFMA static inline void ge8_to_cached(ge8_cached *r, const ge8_p3 *p, const fe8 *d2)
{
    fe8_add(&r->YplusX, &p->Y, &p->X);
    fe8_sub(&r->YminusX, &p->Y, &p->X);
    fe8_add(&r->Z2, &p->Z, &p->Z);
    fe8_mul(&r->T2d, &p->T, d2);
}

IFMA static inline void ge8_identity(ge8_p3 *r)
{
    const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi64(1);
    for (int k = 0; k < 5; k++) {
        r->X.l[k] = r->T.l[k] = zero;
        r->Y.l[k] = r->Z.l[k] = k == 0 ? one : zero;
    }
}

/* Buckets of one group of eight windows: bk[((k * 20) + limb) * 8 + lane], limb
 * 0..19 running over X, Y, Z, T, so that one lane's bucket k is a column and all
 * lanes' bucket k are twenty contiguous vectors. */
#define BUCKET_STRIDE 160 /* uint64 per bucket index */

IFMA static inline fe8 *ge8_field(ge8_p3 *p, int i) { return i == 0 ? &p->X : i == 1 ? &p->Y : i == 2 ? &p->Z : &p->T; }

IFMA int ed25519_msm_pippenger_ifma(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m,
                                    const sc *b, int c)
{
    const size_t terms = m + (b ? 1 : 0);
    const int nwin = 253 / c + 1, half = 1 << (c - 1), groups = (nwin + 7) / 8;
    uint64_t *cached = NULL, *bk = NULL;
    int16_t *dig = NULL;
    ge_p3 *wsum = NULL;
    int rc = -1;
    fe8 d2;

    if (posix_memalign((void **)&cached, 64, (terms ? terms : 1) * 20 * sizeof(uint64_t)) ||
        posix_memalign((void **)&bk, 64, (size_t)half * BUCKET_STRIDE * sizeof(uint64_t))) {
        goto done;
    }
    dig = malloc((terms ? terms : 1) * (size_t)groups * 8 * sizeof *dig);
    wsum = malloc((size_t)groups * 8 * sizeof *wsum);
    if (!dig || !wsum)
        goto done;
    fe8_set1(&d2, &fe_d2);

    /* Per term: its cached form with every limb below 2^52, and its digits laid out
     * as dig[(group * terms + i) * 8 + lane] (zero beyond the last window). */
    memset(dig, 0, terms * (size_t)groups * 8 * sizeof *dig);
    for (size_t i = 0; i < terms; i++) {
        const ge_p3 *p = i < m ? &pts[i] : &ge_base;
        fe f[4];
        int16_t d[64];
        fe_add(&f[0], &p->Y, &p->X);
        fe_carry(&f[0], f[0].v[0], f[0].v[1], f[0].v[2], f[0].v[3], f[0].v[4]);
        fe_sub(&f[1], &p->Y, &p->X);
        fe_add(&f[2], &p->Z, &p->Z);
        fe_carry(&f[2], f[2].v[0], f[2].v[1], f[2].v[2], f[2].v[3], f[2].v[4]);
        fe_mul(&f[3], &p->T, &fe_d2);
        for (int k = 0; k < 4; k++)
            memcpy(cached + i * 20 + k * 5, f[k].v, 5 * sizeof(uint64_t));
        sc_signed_radix(d, i < m ? &s[i] : b, c, nwin);
        for (int w = 0; w < nwin; w++)
            dig[((size_t)(w / 8) * terms + i) * 8 + (w % 8)] = d[w];
    }

    for (int g = 0; g < groups; g++) {
        const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
        const __m512i one = _mm512_set1_epi64(1);
        ge8_p3 acc, run, sum;
        ge8_cached q;

        /* Every bucket starts as the identity (the formulas are complete). */
        ge8_identity(&acc);
        for (int k = 0; k < half; k++)
            for (int f = 0; f < 4; f++)
                for (int l = 0; l < 5; l++)
                    _mm512_store_si512((void *)(bk + (size_t)k * BUCKET_STRIDE + (f * 5 + l) * 8),
                                       ge8_field(&acc, f)->l[l]);

        for (size_t i = 0; i < terms; i++) {
            const int16_t *di = dig + ((size_t)g * terms + i) * 8;
            __m128i d16 = _mm_loadu_si128((const __m128i *)di);
            __m512i d, idx;
            __mmask8 live, neg;
            const uint64_t *ci = cached + i * 20;
            if (_mm_testz_si128(d16, d16))
                continue; /* no digit in these windows (short scalars, high windows) */
            d = _mm512_cvtepi16_epi64(d16);
            live = _mm512_test_epi64_mask(d, d);
            neg = _mm512_cmplt_epi64_mask(d, _mm512_setzero_si512());
            /* idx = (|d| - 1) * 160 + lane, 160 = 128 + 32 */
            idx = _mm512_sub_epi64(_mm512_abs_epi64(d), one);
            idx = _mm512_add_epi64(
                _mm512_add_epi64(_mm512_slli_epi64(idx, 7), _mm512_slli_epi64(idx, 5)), lane);
            /* Gather each live lane's bucket. */
            for (int f = 0; f < 4; f++)
                for (int l = 0; l < 5; l++)
                    ge8_field(&acc, f)->l[l] = _mm512_mask_i64gather_epi64(
                        _mm512_setzero_si512(), live, idx, bk + (f * 5 + l) * 8, 8);
            /* The point, negated where the digit is: swap Y+X and Y-X, negate 2dT. */
            for (int l = 0; l < 5; l++) {
                __m512i ypx = _mm512_set1_epi64((long long)ci[l]);
                __m512i ymx = _mm512_set1_epi64((long long)ci[5 + l]);
                __m512i t2d = _mm512_set1_epi64((long long)ci[15 + l]);
                q.YplusX.l[l] = _mm512_mask_blend_epi64(neg, ypx, ymx);
                q.YminusX.l[l] = _mm512_mask_blend_epi64(neg, ymx, ypx);
                q.Z2.l[l] = _mm512_set1_epi64((long long)ci[10 + l]);
                q.T2d.l[l] = _mm512_mask_sub_epi64(t2d, neg, two_p_limb(l), t2d);
            }
            ge8_add(&acc, &acc, &q);
            for (int f = 0; f < 4; f++)
                for (int l = 0; l < 5; l++)
                    _mm512_mask_i64scatter_epi64(bk + (f * 5 + l) * 8, live, idx,
                                                 ge8_field(&acc, f)->l[l], 8);
        }

        /* sum_k k bucket[k] in every lane: running sums of running sums, from the top. */
        ge8_identity(&run);
        ge8_identity(&sum);
        for (int k = half - 1; k >= 0; k--) {
            ge8_p3 bkt;
            for (int f = 0; f < 4; f++)
                for (int l = 0; l < 5; l++)
                    ge8_field(&bkt, f)->l[l] = _mm512_load_si512(
                        (const void *)(bk + (size_t)k * BUCKET_STRIDE + (f * 5 + l) * 8));
            ge8_to_cached(&q, &bkt, &d2);
            ge8_add(&run, &run, &q);
            ge8_to_cached(&q, &run, &d2);
            ge8_add(&sum, &sum, &q);
        }
        {
            uint64_t lanes[20][8] __attribute__((aligned(64)));
            for (int f = 0; f < 4; f++)
                for (int l = 0; l < 5; l++)
                    _mm512_store_si512((void *)lanes[f * 5 + l], ge8_field(&sum, f)->l[l]);
            for (int j = 0; j < 8; j++) {
                fe *dst[4] = {&wsum[g * 8 + j].X, &wsum[g * 8 + j].Y, &wsum[g * 8 + j].Z,
                              &wsum[g * 8 + j].T};
                for (int f = 0; f < 4; f++)
                    for (int l = 0; l < 5; l++)
                        dst[f]->v[l] = lanes[f * 5 + l][j];
            }
        }
    }

    /* Horner over the windows: acc = 2^c acc + window sum, from the top. */
    {
        ge_p3 acc = wsum[nwin - 1];
        ge_p1p1 t;
        for (int w = nwin - 2; w >= 0; w--) {
            for (int k = 0; k < c; k++) {
                ge_p2_dbl(&t, (const ge_p2 *)&acc);
                if (k + 1 < c)
                    ge_p1p1_to_p2((ge_p2 *)&acc, &t);
                else
                    ge_p1p1_to_p3(&acc, &t);
            }
            ge_add_p3(&acc, &acc, &wsum[w]);
        }
        *out = acc;
    }
    rc = 0;
done:
    free(cached);
    free(bk);
    free(dig);
    free(wsum);
    return rc;
}

#else

int ed25519_msm_pippenger_ifma(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m,
                               const sc *b, int c)
{
    return ed25519_msm_pippenger(out, pts, s, m, b, c);
}

#endif
