/* The look-up loop with an AVX2 Bloom block probe: the eight salted bit positions
 * of a block in one vector multiply, shift and test, instead of eight scalar
 * multiplies (the look-up loop is bound by multiplies when the filter is cached). */
#include "bloom.h"
#include "revocation_lookup.h"

#if ESC_HAVE_AVX2_LOOP

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC target("avx2")
#endif

#include <immintrin.h>

static inline int block_has_avx2(const uint32_t *block, uint64_t hash)
{
    const __m256i salt = _mm256_setr_epi32(
        (int)esc_bloom_salt[0], (int)esc_bloom_salt[1], (int)esc_bloom_salt[2],
        (int)esc_bloom_salt[3], (int)esc_bloom_salt[4], (int)esc_bloom_salt[5],
        (int)esc_bloom_salt[6], (int)esc_bloom_salt[7]);
    __m256i key = _mm256_set1_epi32((int)(uint32_t)hash);
    __m256i bit = _mm256_srli_epi32(_mm256_mullo_epi32(key, salt), 27);
    __m256i mask = _mm256_sllv_epi32(_mm256_set1_epi32(1), bit);
    /* testc: 1 when every mask bit is set in the block. */
    return _mm256_testc_si256(_mm256_loadu_si256((const __m256i *)block), mask);
}

#define ESC_LOOP_RANGE esc_lookup_range_avx2
#define ESC_LOOP_BLOCK_HAS block_has_avx2
#include "revocation_loop.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif

#endif
