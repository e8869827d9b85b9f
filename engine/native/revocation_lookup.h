/* Batched revocation look-ups: snapshot (Bloom filter + exact tier) with deltas.
 *
 * An id is revoked when it is in the delta add set, or in the snapshot and not in
 * the delta remove set (the two delta sets are disjoint: the caller composes
 * successive deltas into one pair).  Per id: one hash, one Bloom block (prefetched
 * a few ids ahead, so the misses overlap); only on a Bloom hit a second hash and the
 * exact tier, whose misses are again overlapped across a batch of hits.  The add
 * set has its own small in-memory Bloom filter so that, with deltas loaded, a miss
 * still costs one cached block probe.
 */
#ifndef ESC_REVOCATION_LOOKUP_H
#define ESC_REVOCATION_LOOKUP_H

#include <stddef.h>
#include <stdint.h>

#include "exact_set.h"
#include "xxh64.h"

/* Id kinds: the first byte of the hashed key (kind byte || id bytes). */
#define ESC_KIND_CARD 1
#define ESC_KIND_CREDENTIAL 2
#define ESC_CARD_ID_LEN 9
#define ESC_CREDENTIAL_ID_LEN 16
#define ESC_MAX_ID_LEN 16

/* h2 uses the file's seed xor this constant (the first 64 bits of the fractional
 * part of sqrt(2), as in SHA-512's initial value). */
#define ESC_FP_SEED2_XOR 0x6A09E667F3BCC908ULL

typedef struct {
    uint64_t seed;
    const uint32_t *bloom; /* snapshot filter: nblocks blocks of 8 words */
    uint64_t nblocks;
    esc_fpset snapshot;
    const uint32_t *add_bloom; /* over the add set's h1; unused when add.n == 0 */
    uint64_t add_nblocks;
    esc_fpset add;
    esc_fpset remove;
} esc_revset;

/* The ids of one call: either n fixed-size ids at base + i * stride (each `len`
 * bytes), or n (pointer, length) pairs. */
typedef struct {
    const uint8_t *base;
    size_t stride, len;
    const uint8_t *const *ptrs;
    const size_t *lens;
} esc_ids;

size_t esc_kind_id_len(int kind);

/* XXH64 of the key kind byte || id (len esc_kind_id_len(kind)): the h1 of hash id 1,
 * and its h2 with seed ^ ESC_FP_SEED2_XOR. */
static inline uint64_t esc_key_hash(uint64_t seed, int kind, const uint8_t *id)
{
    return kind == ESC_KIND_CARD ? esc_xxh64_key10((uint8_t)kind, id, seed)
                                 : esc_xxh64_key17((uint8_t)kind, id, seed);
}

/* The fingerprint of one id (len must be esc_kind_id_len(kind)). */
esc_fp esc_fingerprint(uint64_t seed, int kind, const uint8_t *id, size_t len);

/* Fingerprints of n ids given as kind bytes and 16-byte rows (a card number uses
 * the first 9 bytes of its row). */
void esc_fingerprint_rows(uint64_t seed, const uint8_t *kinds, const uint8_t *rows, size_t n,
                          esc_fp *out);

#define ESC_LOOKUP_FULL 0
#define ESC_LOOKUP_BLOOM_ONLY 1 /* the snapshot's Bloom filter alone (tests, benchmarks) */

/* The AVX2 loop exists on x86-64 with GCC or clang; it is used when the CPU has AVX2. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ESC_HAVE_AVX2_LOOP 1
#else
#define ESC_HAVE_AVX2_LOOP 0
#endif

/* Whether look-ups use the AVX2 loop; allow = 0 / 1 forbids / permits it (tests
 * compare both paths), -1 only asks. */
int esc_revset_simd(int allow);

/* Shared by the two compilations of the look-up loop (revocation_loop.h). */
typedef struct {
    const esc_revset *r;
    int kind;
    const esc_ids *ids;
    uint8_t *out;
    int mode;
} esc_lookup_ctx;

/* out[i] = 1 if ids[i] of `kind` is revoked; an id of the wrong length never is.
 * Returns 0, or -1 when a page of the mapped data could not be read (SIGBUS: the file
 * under the mapping was truncated or its storage failed; engine/native/fault_guard.h):
 * out is then incomplete and the data must not be used again. */
int esc_revset_contains(const esc_revset *r, int kind, const esc_ids *ids, size_t n,
                        uint8_t *out, int mode, int threads);

#endif
