/* Redis Cluster key slots: CRC16 (XMODEM: polynomial 0x1021, initial value 0) of the
 * key, or of its hash tag (the bytes between the first '{' and the first '}' after it,
 * when there is at least one), modulo 16384, as Redis's keyHashSlot computes them.
 * The replay store's client groups a batch's keys by the master owning their slots. */
#ifndef ESC_REDIS_SLOT_H
#define ESC_REDIS_SLOT_H

#include <stddef.h>
#include <stdint.h>

/* out[i] = slot of (prefix, then keys + i * key_len) for i < n. */
void esc_redis_slots(const uint8_t *prefix, size_t prefix_len, const uint8_t *keys,
                     size_t key_len, size_t n, uint16_t *out);

#endif
