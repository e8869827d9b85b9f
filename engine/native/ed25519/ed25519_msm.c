#include "ed25519_msm.h"

#include <stdlib.h>

#define STRAUS_W 5
#define STRAUS_TABLE (1 << (STRAUS_W - 2)) /* P, 3P, ..., 15P */
#define WNAF_MAX 64                        /* digits of one width >= 5 NAF, rounded up */
#define POSITIONS 258                      /* NAF positions 0..256, one spare */
#define BASE_TERM UINT32_MAX
#define STACK_TERMS 2 /* up to this many points, no heap (single checks) */

typedef struct {
    uint32_t term;
    int8_t digit;
} naf_entry;

/* tab[0..7] = P, 3P, ..., 15P. */
static void odd_multiples(ge_cached *tab, const ge_p3 *p)
{
    ge_p1p1 t;
    ge_p3 p2, cur;
    ge_cached p2c;
    ge_p3_dbl(&t, p);
    ge_p1p1_to_p3(&p2, &t);
    ge_p3_to_cached(&p2c, &p2);
    ge_p3_to_cached(&tab[0], p);
    cur = *p;
    for (int k = 1; k < STRAUS_TABLE; k++) {
        ge_add(&t, &cur, &p2c);
        ge_p1p1_to_p3(&cur, &t);
        ge_p3_to_cached(&tab[k], &cur);
    }
}

int ed25519_msm_straus(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m, const sc *b)
{
    ge_cached stab[STACK_TERMS * STRAUS_TABLE];
    uint16_t snpos[STACK_TERMS * WNAF_MAX];
    int8_t sndig[STACK_TERMS * WNAF_MAX];
    int sncount[STACK_TERMS];
    naf_entry sentries[(STACK_TERMS + 1) * WNAF_MAX];
    const int heap = m > STACK_TERMS;
    ge_cached *tab = stab;
    uint16_t *npos = snpos;
    int8_t *ndig = sndig;
    int *ncount = sncount;
    naf_entry *entries = sentries;
    size_t start[POSITIONS + 1] = {0};
    size_t fill[POSITIONS];
    uint16_t bpos[WNAF_MAX];
    int8_t bdig[WNAF_MAX];
    int bcount = 0, top = -1, rc = -1;
    size_t total = 0;
    ge_p3 acc;
    ge_p1p1 t;

    ge_init();
    if (heap) {
        tab = malloc(m * STRAUS_TABLE * sizeof *tab);
        npos = malloc(m * WNAF_MAX * sizeof *npos);
        ndig = malloc(m * WNAF_MAX * sizeof *ndig);
        ncount = malloc(m * sizeof *ncount);
        entries = NULL;
        if (!tab || !npos || !ndig || !ncount)
            goto done;
    }

    /* Recode every scalar, and bucket the nonzero digits by bit position so that the
     * main loop touches only the terms that add something at each position. */
    for (size_t i = 0; i < m; i++) {
        int c = sc_wnaf(npos + i * WNAF_MAX, ndig + i * WNAF_MAX, &s[i], STRAUS_W);
        ncount[i] = c;
        for (int j = 0; j < c; j++)
            start[npos[i * WNAF_MAX + j] + 1]++;
        total += (size_t)c;
        if (c && npos[i * WNAF_MAX + c - 1] > top)
            top = npos[i * WNAF_MAX + c - 1];
    }
    if (b) {
        bcount = sc_wnaf(bpos, bdig, b, ESC_BASE_WNAF_WIDTH);
        for (int j = 0; j < bcount; j++)
            start[bpos[j] + 1]++;
        total += (size_t)bcount;
        if (bcount && bpos[bcount - 1] > top)
            top = bpos[bcount - 1];
    }
    for (int p = 0; p < POSITIONS; p++)
        start[p + 1] += start[p];
    if (heap) {
        entries = malloc((total ? total : 1) * sizeof *entries);
        if (!entries)
            goto done;
    }
    for (int p = 0; p < POSITIONS; p++)
        fill[p] = start[p];
    for (int j = 0; j < bcount; j++)
        entries[fill[bpos[j]]++] = (naf_entry){BASE_TERM, bdig[j]};
    for (size_t i = 0; i < m; i++) {
        for (int j = 0; j < ncount[i]; j++) {
            size_t k = i * WNAF_MAX + j;
            entries[fill[npos[k]]++] = (naf_entry){(uint32_t)i, ndig[k]};
        }
    }
    for (size_t i = 0; i < m; i++) {
        if (ncount[i])
            odd_multiples(tab + i * STRAUS_TABLE, &pts[i]);
    }

    /* From the top position down: double, then add the digits at this position.  A
     * result that is only going to be doubled next skips T (p1p1 -> p2). */
    ge_p3_0(&acc);
    for (int p = top; p >= 0; p--) {
        size_t e0 = start[p], e1 = start[p + 1];
        if (p < top) {
            ge_p2_dbl(&t, (const ge_p2 *)&acc);
            if (e1 > e0 || p == 0)
                ge_p1p1_to_p3(&acc, &t);
            else
                ge_p1p1_to_p2((ge_p2 *)&acc, &t);
        }
        for (size_t e = e0; e < e1; e++) {
            const naf_entry *en = &entries[e];
            if (en->term == BASE_TERM) {
                const ge_niels *q = &ge_base_odd[(en->digit < 0 ? -en->digit : en->digit) >> 1];
                if (en->digit > 0)
                    ge_madd(&t, &acc, q);
                else
                    ge_msub(&t, &acc, q);
            } else {
                const ge_cached *q =
                    &tab[en->term * STRAUS_TABLE + ((en->digit < 0 ? -en->digit : en->digit) >> 1)];
                if (en->digit > 0)
                    ge_add(&t, &acc, q);
                else
                    ge_sub(&t, &acc, q);
            }
            if (e + 1 < e1 || p == 0)
                ge_p1p1_to_p3(&acc, &t);
            else
                ge_p1p1_to_p2((ge_p2 *)&acc, &t);
        }
    }
    *out = acc;
    rc = 0;
done:
    if (heap) {
        free(tab);
        free(npos);
        free(ndig);
        free(ncount);
        free(entries);
    }
    return rc;
}

/* Cost models in microseconds, for nshort scalars below 2^128 (the batch
 * equation's z_i) and nlong below 2^253 (base point included), fitted to timings on
 * x86-64 (docs/BENCHMARKS.md).  Only their ratios matter. */

static double straus_cost(size_t nshort, size_t nlong)
{
    /* Table of 8 per point, one addition per 6 bits (width-5 NAF), 253 doublings
     * (about 0.9 of an addition) and the base point's width-8 NAF. */
    return 0.1 * ((double)nshort * (8 + 128.0 / 6) + (double)(nlong ? nlong - 1 : 0) *
                  (8 + 253.0 / 6) + 253 * 0.9 + 253.0 / 9);
}

static double pippenger_cost(size_t nshort, size_t nlong, int c)
{
    int nwin = 253 / c + 1;
    /* One addition per point per nonzero window, 2^c per window for the bucket sums
     * (2^(c-1) buckets, two additions each), c doublings per window. */
    return 0.088 * ((double)nshort * (128 / c + 1) + (double)nlong * nwin +
                    (double)nwin * ((double)(1 << c) + 0.9 * c));
}

static double pippenger_ifma_cost(size_t nshort, size_t nlong, int c)
{
    int nwin = 253 / c + 1, groups = (nwin + 7) / 8, half = 1 << (c - 1);
    int short_groups = (128 / c + 1 + 7) / 8;
    /* A vector addition with its gathers and scatters: 0.22 us while the buckets fit
     * in L1, more as they spill; two additions per bucket index for the sums; the
     * windows combined by scalar doublings. */
    double add = 0.22 * (1 + (c > 6 ? 0.2 * (c - 6) : 0));
    return add * ((double)nlong * groups + (double)nshort * short_groups) +
           0.36 * groups * half + nwin * (0.07 * c + 0.09);
}

static int best_window(size_t nshort, size_t nlong, int simd, double *cost)
{
    int best = 4;
    double bc = 0;
    for (int c = 4; c <= 16; c++) {
        double v = simd ? pippenger_ifma_cost(nshort, nlong, c)
                        : pippenger_cost(nshort, nlong, c);
        if (c == 4 || v < bc) {
            bc = v;
            best = c;
        }
    }
    if (cost)
        *cost = bc;
    return best;
}

int ed25519_pippenger_window(size_t m) { return best_window(0, m, fe_simd_enabled(), NULL); }

static void count_lengths(const sc *s, size_t m, size_t *nshort, size_t *nlong)
{
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        k += (s[i].v[2] | s[i].v[3]) == 0;
    *nshort = k;
    *nlong = m - k;
}

int ed25519_msm_pick(const sc *s, size_t m, int with_base, int *window)
{
    size_t ns, nl;
    double pc;
    count_lengths(s, m, &ns, &nl);
    nl += with_base ? 1 : 0;
    *window = best_window(ns, nl, fe_simd_enabled(), &pc);
    return pc < straus_cost(ns, nl) ? ESC_MSM_PIPPENGER : ESC_MSM_STRAUS;
}

int ed25519_msm_pippenger(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m, const sc *b,
                          int c)
{
    const size_t terms = m + (b ? 1 : 0);
    const ge_p3 **src = NULL;
    ge_cached *cached = NULL;
    int16_t *digits = NULL;
    ge_p3 *bucket = NULL;
    uint8_t *used = NULL;
    int nwin, half, rc = -1;
    ge_p3 acc;
    ge_p1p1 t;

    ge_init();
    if (c <= 0) {
        size_t ns, nl;
        count_lengths(s, m, &ns, &nl);
        c = best_window(ns, nl + (b ? 1 : 0), 0, NULL);
    }
    if (c < 4)
        c = 4;
    if (c > 16)
        c = 16;
    nwin = 253 / c + 1;
    half = 1 << (c - 1);
    src = malloc((terms ? terms : 1) * sizeof *src);
    cached = malloc((terms ? terms : 1) * sizeof *cached);
    digits = malloc((terms ? terms : 1) * (size_t)nwin * sizeof *digits);
    bucket = malloc(((size_t)half + 1) * sizeof *bucket);
    used = malloc((size_t)half + 1);
    if (!src || !cached || !digits || !bucket || !used)
        goto done;

    /* digits[w * terms + i]: window-major, so each pass reads one contiguous row. */
    {
        int16_t d[64]; /* nwin <= 253 / 4 + 1 */
        for (size_t i = 0; i < terms; i++) {
            const sc *si = i < m ? &s[i] : b;
            src[i] = i < m ? &pts[i] : &ge_base;
            ge_p3_to_cached(&cached[i], src[i]);
            sc_signed_radix(d, si, c, nwin);
            for (int w = 0; w < nwin; w++)
                digits[(size_t)w * terms + i] = d[w];
        }
    }

    ge_p3_0(&acc);
    for (int w = nwin - 1; w >= 0; w--) {
        const int16_t *row = digits + (size_t)w * terms;
        ge_p3 running, sum;
        int have_running = 0, have_sum = 0;

        if (w < nwin - 1) {
            for (int k = 0; k < c; k++) {
                ge_p2_dbl(&t, (const ge_p2 *)&acc);
                if (k + 1 < c)
                    ge_p1p1_to_p2((ge_p2 *)&acc, &t);
                else
                    ge_p1p1_to_p3(&acc, &t);
            }
        }
        for (int k = 1; k <= half; k++)
            used[k] = 0;
        for (size_t i = 0; i < terms; i++) {
            int d = row[i];
            int k;
            if (d == 0)
                continue;
            k = d < 0 ? -d : d;
            if (!used[k]) {
                if (d > 0)
                    bucket[k] = *src[i];
                else
                    ge_p3_neg(&bucket[k], src[i]);
                used[k] = 1;
            } else {
                if (d > 0)
                    ge_add(&t, &bucket[k], &cached[i]);
                else
                    ge_sub(&t, &bucket[k], &cached[i]);
                ge_p1p1_to_p3(&bucket[k], &t);
            }
        }
        /* sum_k k bucket[k] as a running sum of running sums, from the top. */
        for (int k = half; k >= 1; k--) {
            if (used[k]) {
                if (have_running)
                    ge_add_p3(&running, &running, &bucket[k]);
                else
                    running = bucket[k];
                have_running = 1;
            }
            if (have_running) {
                if (have_sum)
                    ge_add_p3(&sum, &sum, &running);
                else
                    sum = running;
                have_sum = 1;
            }
        }
        if (have_sum)
            ge_add_p3(&acc, &acc, &sum);
    }
    *out = acc;
    rc = 0;
done:
    free(src);
    free(cached);
    free(digits);
    free(bucket);
    free(used);
    return rc;
}

int ed25519_msm(ge_p3 *out, const ge_p3 *pts, const sc *s, size_t m, const sc *b, int algo)
{
    int window = 0;
    if (algo == ESC_MSM_AUTO)
        algo = ed25519_msm_pick(s, m, b != NULL, &window);
    if (algo == ESC_MSM_PIPPENGER) {
        if (fe_simd_enabled()) {
            if (window <= 0) {
                size_t ns, nl;
                count_lengths(s, m, &ns, &nl);
                window = best_window(ns, nl + (b ? 1 : 0), 1, NULL);
            }
            return ed25519_msm_pippenger_ifma(out, pts, s, m, b, window);
        }
        return ed25519_msm_pippenger(out, pts, s, m, b, window);
    }
    return ed25519_msm_straus(out, pts, s, m, b);
}
