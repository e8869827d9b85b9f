# Batch Ed25519 verification and signing (engine/native/sigbatch.h).

from libc.stdint cimport uint8_t

cdef extern from "native/sigbatch.h" nogil:
    ctypedef struct esc_sig_item:
        const uint8_t *msg
        size_t msg_len
        const uint8_t *sig
        size_t sig_len
        const uint8_t *pk
        size_t pk_len
    enum:
        ESC_VERIFY_SINGLE
        ESC_VERIFY_BATCH
        ESC_VERIFY_AUTO
    void esc_verify_items(const esc_sig_item *items, size_t n, uint8_t *ok, int threads,
                          int method)
    void esc_sign_items(const uint8_t *const *msgs, const size_t *msg_lens,
                        const uint8_t *const *sks, uint8_t *sigs, size_t n, int threads)
    void esc_seed_keypairs(const uint8_t *seeds, uint8_t *pks, uint8_t *sks, size_t n,
                           int threads)
