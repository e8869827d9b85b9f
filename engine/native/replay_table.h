/* The one-time-nonce table: (credential serial, presentation nonce) pairs already
 * accepted, each kept until the presentation it came from could no longer be fresh.
 *
 * Open addressing with linear probing over 40-byte slots, hashed with XXH64 under a
 * random per-process seed (holders choose their nonces, so the table must not be
 * floodable by chosen collisions).  An expired entry still occupies its slot, keeping
 * probe chains intact, and is reused by the next insertion that passes over it; the
 * table is rebuilt without expired entries when it fills up.  The live-entry limit is
 * hard: when reached, a new pair is refused (NO_ROOM) rather than an old one forgotten.
 * One mutex per table: a batch is checked and recorded as one atomic step, in order.
 */
#ifndef ESC_REPLAY_TABLE_H
#define ESC_REPLAY_TABLE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum { ESC_REPLAY_FRESH = 0, ESC_REPLAY_SEEN = 1, ESC_REPLAY_NO_ROOM = 2 };

typedef struct {
    uint8_t key[32];
    uint64_t expires_ms; /* 0: empty slot */
} esc_replay_slot;

typedef struct {
    esc_replay_slot *slots;
    size_t mask;        /* capacity - 1 (capacity is a power of two) */
    size_t occupied;    /* non-empty slots, live or expired */
    size_t live_at_rebuild_bound; /* live entries can be no more than this */
    size_t max_live;
    uint64_t next_sweep_ms; /* at the live limit: no sweep before this time */
    uint64_t seed;
    pthread_mutex_t lock;
} esc_replay_table;

/* 0 on success, -1 if out of memory. */
int esc_replay_init(esc_replay_table *t, size_t max_live, uint64_t seed);
void esc_replay_free(esc_replay_table *t);

/* For i in order: states[i] = FRESH (now recorded until expires_ms[i]), SEEN (recorded
 * and not expired at now_ms, by an earlier call or earlier in this one) or NO_ROOM.
 * keys[i] points to 32 bytes.  Returns -1 if memory ran out (states then NO_ROOM). */
int esc_replay_check(esc_replay_table *t, const uint8_t *const *keys, const uint64_t *expires_ms,
                     size_t n, uint64_t now_ms, uint8_t *states);

/* Entries not expired at now_ms. */
size_t esc_replay_live(esc_replay_table *t, uint64_t now_ms);

#endif
