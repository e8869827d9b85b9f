# Batched revocation look-ups over one set of revocation data
# (engine/native/revocation_lookup.h).

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from engine.includes.exact_set cimport esc_fp, esc_fpset

cdef extern from "native/revocation_lookup.h" nogil:
    ctypedef struct esc_revset:
        uint64_t seed
        const uint32_t *bloom
        uint64_t nblocks
        esc_fpset snapshot
        const uint32_t *add_bloom
        uint64_t add_nblocks
        esc_fpset add
        esc_fpset remove
    ctypedef struct esc_ids:
        const uint8_t *base
        size_t stride
        size_t len
        const uint8_t *const *ptrs
        const size_t *lens
    int ESC_LOOKUP_FULL
    int ESC_LOOKUP_BLOOM_ONLY
    size_t esc_kind_id_len(int kind)
    int esc_revset_simd(int allow)
    void esc_fingerprint_rows(uint64_t seed, const uint8_t *kinds, const uint8_t *rows,
                              size_t n, esc_fp *out)
    int esc_revset_contains(const esc_revset *r, int kind, const esc_ids *ids, size_t n,
                            uint8_t *out, int mode, int threads)
