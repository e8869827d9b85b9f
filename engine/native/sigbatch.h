/* Batches of Ed25519 signatures: verification and signing.
 *
 * Items are described by pointers into buffers owned by the caller (Python bytes
 * objects or numpy arrays kept alive by the Cython layer), so nothing is copied.
 * A length other than 64 (signature) or 32 (public key) makes that item invalid;
 * it never affects the other items.  Every method applies the same validation rule
 * (docs/FORMATS.md section 7, ed25519/ed25519_batch.h) and gives the same verdicts.
 */
#ifndef ESC_SIGBATCH_H
#define ESC_SIGBATCH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const uint8_t *msg;
    size_t msg_len;
    const uint8_t *sig;
    size_t sig_len;
    const uint8_t *pk;
    size_t pk_len;
} esc_sig_item;

enum {
    ESC_VERIFY_SINGLE = 0, /* one libsodium verification per item (+ cofactored fallback) */
    ESC_VERIFY_BATCH = 1,  /* randomised batch verification, one batch per thread range */
    ESC_VERIFY_AUTO = 2,   /* batch where a thread's range is large enough to gain */
};

/* A thread's range of at least this many items is verified as a batch by
 * ESC_VERIFY_AUTO; a lone item goes to libsodium.  Measured (docs/BENCHMARKS.md):
 * a batch of two costs about 0.65 of two libsodium verifications, and even a batch
 * of one (the core's own cofactored check) is slightly cheaper than libsodium, so
 * the crossover is at one item; libsodium keeps the lone item as the reference. */
#define ESC_AUTO_BATCH_MIN 2

/* ok[i] = 1 if item i verifies, else 0.  Runs on up to `threads` threads. */
void esc_verify_items(const esc_sig_item *items, size_t n, uint8_t *ok, int threads,
                      int method);

/* sigs[64*i..] = Ed25519 signature of msgs[i] under the 64-byte libsodium secret
 * key sks[i] (seed || public key). */
void esc_sign_items(const uint8_t *const *msgs, const size_t *msg_lens,
                    const uint8_t *const *sks, uint8_t *sigs, size_t n, int threads);

/* pks[32*i..], sks[64*i..] = key pair derived from seeds[32*i..]. */
void esc_seed_keypairs(const uint8_t *seeds, uint8_t *pks, uint8_t *sks, size_t n,
                       int threads);

#endif
