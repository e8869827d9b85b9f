#include "xxh64.h"

uint64_t esc_xxh64(const void *data, size_t len, uint64_t seed)
{
    return esc_xxh64_inline(data, len, seed);
}
