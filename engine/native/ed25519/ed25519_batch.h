/* Ed25519 verification under the engine's one validation rule (docs/FORMATS.md §7):
 *
 *   1. the signature is 64 bytes and the key 32;  2. S < L;
 *   3. A and R are canonical encodings (y < p; x = 0 only with the sign bit clear);
 *   4. neither A nor R is one of the 8 points of small order;
 *   5. [8](S B - k A - R) is the identity, k = SHA-512(R || A || M) mod L.
 *
 * Three ways to apply it, with the same answers:
 * - esc_ed25519_verify_single: checks 1-4, then libsodium (cofactorless, so its
 *   "valid" implies rule 5); where libsodium says no, our own cofactored check decides.
 * - esc_ed25519_verify_cofactored: checks 1-4 and rule 5, our code only.
 * - esc_ed25519_verify_batch: randomised batch verification.  Items failing 1-4 or
 *   whose A or R does not decode are rejected on their own; the rest are checked with
 *   one equation  [8]((sum z_i S_i) B - sum z_i R_i - sum_A (sum_{i: A_i = A} z_i k_i) A)
 *   = identity  for random 128-bit z_i (terms of repeated keys merged into one).  When
 *   it fails, bisection finds the bad items: every item ends up either in a sub-batch
 *   whose equation holds or checked alone by the cofactored check, so a valid
 *   signature is never rejected, and an invalid one passes only with probability
 *   about 2^-128 whatever else is in its batch.
 */
#ifndef ESC_ED25519_BATCH_H
#define ESC_ED25519_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "../sigbatch.h"

/* Items per batch equation by default: larger ranges are split into sub-batches of
 * about this size (Pippenger's per-item cost has flattened out by then). */
#define ESC_BATCH_MAX_DEFAULT 1024

typedef struct {
    int msm;          /* ESC_MSM_AUTO, ESC_MSM_STRAUS or ESC_MSM_PIPPENGER */
    size_t max_batch; /* items per batch equation; 0 = ESC_BATCH_MAX_DEFAULT */
} esc_batch_opts;

/* What a batch call did, for tests and tuning (may be NULL). */
typedef struct {
    size_t equations; /* batch equations evaluated */
    size_t singles;   /* items checked alone by the fallback */
} esc_batch_stats;

/* Rules 1-4 alone (no point decompression): 1 iff they pass. */
int esc_ed25519_prechecks(const esc_sig_item *it);

int esc_ed25519_verify_single(const esc_sig_item *it);
int esc_ed25519_verify_cofactored(const esc_sig_item *it);

/* ok[i] for items[0..n); opts and stats may be NULL.  Always completes: without
 * memory for a batch it verifies one item at a time. */
void esc_ed25519_verify_batch(const esc_sig_item *items, size_t n, uint8_t *ok,
                              const esc_batch_opts *opts, esc_batch_stats *stats);

#endif
