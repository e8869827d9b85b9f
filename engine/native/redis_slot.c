#include "redis_slot.h"

#include <string.h>

static uint16_t table[256];
static int table_ready;

static void make_table(void)
{
    for (unsigned b = 0; b < 256; b++) {
        uint16_t crc = (uint16_t)(b << 8);
        for (int k = 0; k < 8; k++)
            crc = (uint16_t)((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
        table[b] = crc;
    }
    table_ready = 1;
}

static uint16_t crc16(uint16_t crc, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        crc = (uint16_t)((crc << 8) ^ table[((crc >> 8) ^ p[i]) & 0xff]);
    return crc;
}

/* The key is prefix then body, never copied: the tag search runs over both parts. */
static uint16_t slot_of(const uint8_t *prefix, size_t plen, const uint8_t *body, size_t blen)
{
    size_t len = plen + blen, open = len, close = len;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = i < plen ? prefix[i] : body[i - plen];
        if (open == len) {
            if (c == '{')
                open = i;
        } else if (c == '}') {
            close = i;
            break;
        }
    }
    size_t from = 0, to = len; /* the bytes hashed: [from, to) */
    if (close < len && close > open + 1) {
        from = open + 1;
        to = close;
    }
    uint16_t crc = 0;
    if (from < plen)
        crc = crc16(crc, prefix + from, (to < plen ? to : plen) - from);
    if (to > plen) {
        size_t b0 = from > plen ? from - plen : 0;
        crc = crc16(crc, body + b0, to - plen - b0);
    }
    return (uint16_t)(crc & 16383);
}

void esc_redis_slots(const uint8_t *prefix, size_t prefix_len, const uint8_t *keys,
                     size_t key_len, size_t n, uint16_t *out)
{
    if (!table_ready)
        make_table(); /* idempotent: a race writes the same values */
    for (size_t i = 0; i < n; i++)
        out[i] = slot_of(prefix, prefix_len, keys + i * key_len, key_len);
}
