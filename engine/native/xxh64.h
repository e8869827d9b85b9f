/* XXH64, written from the published specification (xxhash.com, "xxHash fast digest
 * algorithm", XXH64).
 *
 * Revocation files name their hash: an id must hash to the same value forever and on
 * every machine, so this is the reference algorithm with little-endian reads, not a
 * platform- or compiler-dependent shortcut.  The function is inline because the
 * look-up loops hash every query id (10 or 17 bytes).
 */
#ifndef ESC_XXH64_H
#define ESC_XXH64_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ESC_XXH_P1 0x9E3779B185EBCA87ULL
#define ESC_XXH_P2 0xC2B2AE3D27D4EB4FULL
#define ESC_XXH_P3 0x165667B19E3779F9ULL
#define ESC_XXH_P4 0x85EBCA77C2B2AE63ULL
#define ESC_XXH_P5 0x27D4EB2F165667C5ULL

static inline uint64_t esc_xxh_rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t esc_xxh_read64(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
           (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
           (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
#endif
}

static inline uint32_t esc_xxh_read32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t esc_xxh_round(uint64_t acc, uint64_t lane)
{
    acc += lane * ESC_XXH_P2;
    acc = esc_xxh_rotl(acc, 31);
    return acc * ESC_XXH_P1;
}

static inline uint64_t esc_xxh_merge(uint64_t acc, uint64_t v)
{
    acc ^= esc_xxh_round(0, v);
    return acc * ESC_XXH_P1 + ESC_XXH_P4;
}

static inline uint64_t esc_xxh_avalanche(uint64_t h)
{
    h ^= h >> 33;
    h *= ESC_XXH_P2;
    h ^= h >> 29;
    h *= ESC_XXH_P3;
    return h ^ (h >> 32);
}

static inline uint64_t esc_xxh_lane(uint64_t h, uint64_t lane)
{
    h ^= esc_xxh_round(0, lane);
    return esc_xxh_rotl(h, 27) * ESC_XXH_P1 + ESC_XXH_P4;
}

static inline uint64_t esc_xxh_byte(uint64_t h, uint8_t b)
{
    h ^= (uint64_t)b * ESC_XXH_P5;
    return esc_xxh_rotl(h, 11) * ESC_XXH_P1;
}

static inline uint64_t esc_xxh64_inline(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = (const uint8_t *)data;
    const uint8_t *end = p + len;
    uint64_t h;

    if (len >= 32) {
        const uint8_t *limit = end - 32;
        uint64_t v1 = seed + ESC_XXH_P1 + ESC_XXH_P2;
        uint64_t v2 = seed + ESC_XXH_P2;
        uint64_t v3 = seed;
        uint64_t v4 = seed - ESC_XXH_P1;
        do {
            v1 = esc_xxh_round(v1, esc_xxh_read64(p));
            v2 = esc_xxh_round(v2, esc_xxh_read64(p + 8));
            v3 = esc_xxh_round(v3, esc_xxh_read64(p + 16));
            v4 = esc_xxh_round(v4, esc_xxh_read64(p + 24));
            p += 32;
        } while (p <= limit);
        h = esc_xxh_rotl(v1, 1) + esc_xxh_rotl(v2, 7) + esc_xxh_rotl(v3, 12) +
            esc_xxh_rotl(v4, 18);
        h = esc_xxh_merge(h, v1);
        h = esc_xxh_merge(h, v2);
        h = esc_xxh_merge(h, v3);
        h = esc_xxh_merge(h, v4);
    } else {
        h = seed + ESC_XXH_P5;
    }
    h += (uint64_t)len;
    while (p + 8 <= end) {
        h = esc_xxh_lane(h, esc_xxh_read64(p));
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)esc_xxh_read32(p) * ESC_XXH_P1;
        h = esc_xxh_rotl(h, 23) * ESC_XXH_P2 + ESC_XXH_P3;
        p += 4;
    }
    while (p < end)
        h = esc_xxh_byte(h, *p++);
    return esc_xxh_avalanche(h);
}

/* XXH64 of the 10-byte key (kind || 9 id bytes) and of the 17-byte key (kind || 16 id
 * bytes), equal to esc_xxh64_inline over the assembled key.  The 8-byte lanes are
 * shifted together from the id in registers: assembling the key on the stack and
 * reading it back as words stalls on store forwarding, which cost more than the
 * hash itself. */
static inline uint64_t esc_xxh64_key10(uint8_t kind, const uint8_t *id, uint64_t seed)
{
    uint64_t w = esc_xxh_read64(id);
    uint64_t h = seed + ESC_XXH_P5 + 10;
    h = esc_xxh_lane(h, (uint64_t)kind | w << 8);
    h = esc_xxh_byte(h, id[7]);
    h = esc_xxh_byte(h, id[8]);
    return esc_xxh_avalanche(h);
}

static inline uint64_t esc_xxh64_key17(uint8_t kind, const uint8_t *id, uint64_t seed)
{
    uint64_t w0 = esc_xxh_read64(id), w1 = esc_xxh_read64(id + 8);
    uint64_t h = seed + ESC_XXH_P5 + 17;
    h = esc_xxh_lane(h, (uint64_t)kind | w0 << 8);
    h = esc_xxh_lane(h, w0 >> 56 | w1 << 8);
    h = esc_xxh_byte(h, id[15]);
    return esc_xxh_avalanche(h);
}

/* The same function, out of line (tests, Python). */
uint64_t esc_xxh64(const void *data, size_t len, uint64_t seed);

#endif
