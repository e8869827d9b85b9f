# The split-block Bloom filter of the revocation data (engine/native/bloom.h).

from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "native/bloom.h" nogil:
    void esc_bloom_insert(uint32_t *words, uint64_t nblocks, const uint64_t *hashes, size_t n,
                          size_t hash_stride)
    void esc_bloom_probe_hashes(const uint32_t *words, uint64_t nblocks,
                                const uint64_t *hashes, size_t n, size_t hash_stride,
                                uint8_t *ok)
