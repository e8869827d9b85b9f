/* Split-block Bloom filter with the Apache Parquet layout.
 *
 * The filter is an array of 256-bit blocks, each eight 32-bit little-endian words.
 * A key's 64-bit hash picks one block from its upper 32 bits (multiply-shift, so any
 * block count up to 2^32 works, not only powers of two) and, in each of the eight
 * words, one bit from its lower 32 bits times a fixed odd salt.  A look-up therefore
 * touches a single 32-byte block: one cache line, and one cache miss on a filter far
 * larger than the caches.
 *
 * Sizes are 64-bit throughout: filters of more than 2^32 bits (512 MiB) are fine.
 */
#ifndef ESC_BLOOM_H
#define ESC_BLOOM_H

#include <stddef.h>
#include <stdint.h>

#define ESC_BLOOM_WORDS 8
#define ESC_BLOOM_BLOCK_BYTES 32

static const uint32_t esc_bloom_salt[ESC_BLOOM_WORDS] = {
    0x47b6137bu, 0x44974d91u, 0x8824ad5bu, 0xa2b7289du,
    0x705495c7u, 0x2df1424bu, 0x9efc4947u, 0x5c6bfb31u,
};

static inline uint64_t esc_bloom_block(uint64_t hash, uint64_t nblocks)
{
    return ((hash >> 32) * nblocks) >> 32;
}

/* One salted bit in each of the block's eight words.  Words are read natively:
 * files are little-endian, and big-endian hosts are refused when a file is opened. */
static inline int esc_bloom_block_has(const uint32_t *block, uint64_t hash)
{
    uint32_t key = (uint32_t)hash;
    uint32_t missing = 0;
    int i;
    for (i = 0; i < ESC_BLOOM_WORDS; i++)
        missing |= ~block[i] & (1u << ((key * esc_bloom_salt[i]) >> 27));
    return missing == 0;
}

static inline void esc_bloom_block_set(uint32_t *block, uint64_t hash)
{
    uint32_t key = (uint32_t)hash;
    int i;
    for (i = 0; i < ESC_BLOOM_WORDS; i++)
        block[i] |= 1u << ((key * esc_bloom_salt[i]) >> 27);
}

static inline const uint32_t *esc_bloom_block_ptr(const uint32_t *words, uint64_t nblocks,
                                                  uint64_t hash)
{
    return words + esc_bloom_block(hash, nblocks) * ESC_BLOOM_WORDS;
}

/* Sets the bits of n hashes (filter build); prefetches ahead so it runs at memory
 * bandwidth rather than one miss at a time. */
void esc_bloom_insert(uint32_t *words, uint64_t nblocks, const uint64_t *hashes, size_t n,
                      size_t hash_stride);

/* ok[i] = the filter may contain hashes[i * hash_stride]. */
void esc_bloom_probe_hashes(const uint32_t *words, uint64_t nblocks, const uint64_t *hashes,
                            size_t n, size_t hash_stride, uint8_t *ok);

#endif
