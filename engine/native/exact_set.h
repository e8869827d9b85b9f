/* The exact tier: a sorted array of 128-bit fingerprints with a bucket index.
 *
 * Fingerprints are uniformly distributed, so bucketing by their top `bits` bits
 * splits the array into runs of a few entries each; index[b] is the position of the
 * first fingerprint of bucket b (index has 2^bits + 1 entries, the last one = n).
 * A look-up reads two adjacent index entries and then one or two cache lines of
 * fingerprints: about two cache misses, and it is only made after a Bloom hit.
 */
#ifndef ESC_EXACT_SET_H
#define ESC_EXACT_SET_H

#include <stddef.h>
#include <stdint.h>

/* h1 drives the Bloom filter and the bucket; (h1, h2) is the full fingerprint, in
 * that order (two little-endian u64 in files), sorted as a 128-bit number. */
typedef struct {
    uint64_t h1, h2;
} esc_fp;

typedef struct {
    const esc_fp *fps;
    uint64_t n;
    const uint64_t *index; /* 2^bits + 1 entries */
    unsigned bits;         /* 0..32 */
} esc_fpset;

static inline int esc_fp_less(esc_fp a, esc_fp b)
{
    return a.h1 < b.h1 || (a.h1 == b.h1 && a.h2 < b.h2);
}

static inline uint64_t esc_fp_bucket(uint64_t h1, unsigned bits)
{
    return bits ? h1 >> (64 - bits) : 0;
}

static inline const uint64_t *esc_fpset_index_ptr(const esc_fpset *s, uint64_t h1)
{
    return s->index + esc_fp_bucket(h1, s->bits);
}

/* Is fp in the set?  Scans its bucket; runs average a few entries. */
static inline int esc_fpset_contains(const esc_fpset *s, esc_fp fp)
{
    const uint64_t *ix = esc_fpset_index_ptr(s, fp.h1);
    uint64_t lo = ix[0], hi = ix[1];
    while (lo < hi) {
        const esc_fp *e = &s->fps[lo];
        if (e->h1 > fp.h1)
            return 0;
        if (e->h1 == fp.h1 && e->h2 >= fp.h2)
            return e->h2 == fp.h2;
        lo++;
    }
    return 0;
}

/* Bucket bits for n fingerprints: runs of 4 to 8 entries on average, so the index
 * costs at most 2 bytes per entry (a sixteenth of the fingerprints). */
unsigned esc_fpset_bits_for(uint64_t n);

/* Sorts fps in place and removes duplicates; returns the number left. */
uint64_t esc_fp_sort_unique(esc_fp *fps, uint64_t n);

/* Merges two sorted duplicate-free arrays into out (room for na + nb); returns the
 * count written (entries in both are written once). */
uint64_t esc_fp_merge(const esc_fp *a, uint64_t na, const esc_fp *b, uint64_t nb, esc_fp *out);

/* Fills index (2^bits + 1 entries) for sorted fps. */
void esc_fpset_build_index(const esc_fp *fps, uint64_t n, unsigned bits, uint64_t *index);

/* Checks that index starts at 0, never decreases and ends at n: then every look-up
 * stays inside the array, whatever else a file holds.  Returns 0 when it does, else
 * 1 + the first bad bucket. */
uint64_t esc_fpset_check_index(const uint64_t *index, unsigned bits, uint64_t n);

/* Checks that fps are strictly increasing and index is the one build_index gives;
 * returns 0 when consistent, else 1 + the first bad position (a file's payload). */
uint64_t esc_fpset_validate(const esc_fp *fps, uint64_t n, unsigned bits,
                            const uint64_t *index);

#endif
