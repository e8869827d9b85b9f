# The exact tier of the revocation data: sorted fingerprints and their bucket index
# (engine/native/exact_set.h).

from libc.stdint cimport uint64_t

cdef extern from "native/exact_set.h" nogil:
    ctypedef struct esc_fp:
        uint64_t h1
        uint64_t h2
    ctypedef struct esc_fpset:
        const esc_fp *fps
        uint64_t n
        const uint64_t *index
        unsigned bits
    unsigned esc_fpset_bits_for(uint64_t n)
    uint64_t esc_fp_sort_unique(esc_fp *fps, uint64_t n)
    uint64_t esc_fp_merge(const esc_fp *a, uint64_t na, const esc_fp *b, uint64_t nb,
                          esc_fp *out)
    void esc_fpset_build_index(const esc_fp *fps, uint64_t n, unsigned bits, uint64_t *index)
    uint64_t esc_fpset_check_index(const uint64_t *index, unsigned bits, uint64_t n)
    uint64_t esc_fpset_validate(const esc_fp *fps, uint64_t n, unsigned bits,
                                const uint64_t *index)
