#include "exact_set.h"

#include <stdlib.h>

unsigned esc_fpset_bits_for(uint64_t n)
{
    unsigned bits = 0;
    /* Largest bits with 2^bits <= n / 4. */
    while (bits < 32 && ((uint64_t)4 << (bits + 1)) <= n)
        bits++;
    return bits;
}

static void insertion_sort(esc_fp *a, uint64_t n)
{
    uint64_t i, j;
    for (i = 1; i < n; i++) {
        esc_fp x = a[i];
        for (j = i; j > 0 && esc_fp_less(x, a[j - 1]); j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

/* MSD radix sort, 8 bits a pass, in place (American flag sort): fingerprints are
 * uniform, so after a pass or three the buckets are small and insertion sort
 * finishes them.  No second copy of an array that may hold hundreds of MiB. */
static void radix_sort(esc_fp *a, uint64_t n, int shift)
{
    uint64_t count[256] = {0}, start[256], next[256];
    uint64_t i;
    int b;

    if (n <= 32 || shift < 0) {
        insertion_sort(a, n);
        return;
    }
    for (i = 0; i < n; i++)
        count[(a[i].h1 >> shift) & 0xFF]++;
    start[0] = 0;
    for (b = 1; b < 256; b++)
        start[b] = start[b - 1] + count[b - 1];
    for (b = 0; b < 256; b++)
        next[b] = start[b];
    for (b = 0; b < 256; b++) {
        uint64_t end = start[b] + count[b];
        while (next[b] < end) {
            esc_fp x = a[next[b]];
            int d = (int)((x.h1 >> shift) & 0xFF);
            /* Cycle x to its bucket until one that belongs here comes back. */
            while (d != b) {
                esc_fp y = a[next[d]];
                a[next[d]++] = x;
                x = y;
                d = (int)((x.h1 >> shift) & 0xFF);
            }
            a[next[b]++] = x;
        }
    }
    for (b = 0; b < 256; b++)
        if (count[b] > 1)
            radix_sort(a + start[b], count[b], shift - 8);
}

uint64_t esc_fp_sort_unique(esc_fp *fps, uint64_t n)
{
    uint64_t i, out;
    radix_sort(fps, n, 56);
    if (n == 0)
        return 0;
    out = 1;
    for (i = 1; i < n; i++)
        if (fps[i].h1 != fps[out - 1].h1 || fps[i].h2 != fps[out - 1].h2)
            fps[out++] = fps[i];
    return out;
}

uint64_t esc_fp_merge(const esc_fp *a, uint64_t na, const esc_fp *b, uint64_t nb, esc_fp *out)
{
    uint64_t i = 0, j = 0, k = 0;
    while (i < na && j < nb) {
        if (esc_fp_less(a[i], b[j]))
            out[k++] = a[i++];
        else if (esc_fp_less(b[j], a[i]))
            out[k++] = b[j++];
        else {
            out[k++] = a[i++];
            j++;
        }
    }
    while (i < na)
        out[k++] = a[i++];
    while (j < nb)
        out[k++] = b[j++];
    return k;
}

void esc_fpset_build_index(const esc_fp *fps, uint64_t n, unsigned bits, uint64_t *index)
{
    uint64_t nbuckets = (uint64_t)1 << bits, b = 0, i;
    for (i = 0; i < n; i++) {
        uint64_t bi = esc_fp_bucket(fps[i].h1, bits);
        while (b <= bi)
            index[b++] = i;
    }
    while (b <= nbuckets)
        index[b++] = n;
}

uint64_t esc_fpset_validate(const esc_fp *fps, uint64_t n, unsigned bits,
                            const uint64_t *index)
{
    uint64_t nbuckets = (uint64_t)1 << bits, b = 0, i;
    for (i = 0; i < n; i++) {
        uint64_t bi = esc_fp_bucket(fps[i].h1, bits);
        if (i > 0 && !esc_fp_less(fps[i - 1], fps[i]))
            return 1 + i;
        while (b <= bi) {
            if (index[b] != i)
                return 1 + i;
            b++;
        }
    }
    while (b <= nbuckets) {
        if (index[b] != n)
            return 1 + n;
        b++;
    }
    return 0;
}

uint64_t esc_fpset_check_index(const uint64_t *index, unsigned bits, uint64_t n)
{
    uint64_t nbuckets = (uint64_t)1 << bits, b;
    if (index[0] != 0)
        return 1;
    for (b = 1; b <= nbuckets; b++)
        if (index[b] < index[b - 1])
            return 1 + b;
    return index[nbuckets] == n ? 0 : 1 + nbuckets;
}
