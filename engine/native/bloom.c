#include "bloom.h"

/* Far enough ahead to cover a memory latency, near enough to stay in L1. */
#define PREFETCH_DISTANCE 16

void esc_bloom_insert(uint32_t *words, uint64_t nblocks, const uint64_t *hashes, size_t n,
                      size_t hash_stride)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (i + PREFETCH_DISTANCE < n)
            __builtin_prefetch(
                esc_bloom_block_ptr(words, nblocks, hashes[(i + PREFETCH_DISTANCE) * hash_stride]),
                1, 0);
        uint64_t h = hashes[i * hash_stride];
        esc_bloom_block_set(words + esc_bloom_block(h, nblocks) * ESC_BLOOM_WORDS, h);
    }
}

void esc_bloom_probe_hashes(const uint32_t *words, uint64_t nblocks, const uint64_t *hashes,
                            size_t n, size_t hash_stride, uint8_t *ok)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (i + PREFETCH_DISTANCE < n)
            __builtin_prefetch(
                esc_bloom_block_ptr(words, nblocks, hashes[(i + PREFETCH_DISTANCE) * hash_stride]),
                0, 0);
        uint64_t h = hashes[i * hash_stride];
        ok[i] = (uint8_t)esc_bloom_block_has(esc_bloom_block_ptr(words, nblocks, h), h);
    }
}
