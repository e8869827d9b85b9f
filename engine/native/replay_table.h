/* The one-time-nonce table: (credential serial, presentation nonce) pairs already
 * accepted, each kept until the presentation it came from could no longer be fresh.
 *
 * Open addressing with linear probing over 40-byte slots, hashed with XXH64 under a
 * random per-process seed (holders choose their nonces, so the table must not be
 * floodable by chosen collisions).  An expired entry still occupies its slot, keeping
 * probe chains intact, and is reused by the next insertion that passes over it.  The
 * live-entry limit is hard: when reached, a new pair is refused (NO_ROOM) rather than
 * an old one forgotten.  One mutex per table: a batch is checked and recorded as one
 * atomic step, in order.
 *
 * Nothing is done stop-the-world: every check does at most a bounded amount of
 * upkeep, O(n) plus a constant for n keys, before it handles its keys.
 *
 * - Growth and the dropping of expired entries is a migration.  When the keys of a
 *   call could take the table past 70% load, a new zeroed table is allocated, sized
 *   from `live_bound`, and the old one becomes read-only: each later call first moves
 *   MIGRATE_BASE + MIGRATE_PER_KEY * n old slots into the new table, skipping expired
 *   entries.  Look-ups probe the new table, then the old (whose probe chains stay
 *   intact since it is never written); new entries go into the new table, so the
 *   newest record of a key is always found first.  The old table is freed when the
 *   cursor reaches its end, a few pages per check.
 *   Why the migration ends before the new table could need to grow: with C the old
 *   capacity, the calls that leave it unfinished moved fewer than C slots together,
 *   so they carried fewer than C / MIGRATE_PER_KEY keys; the new table receives at
 *   most `live_bound` moved entries plus those keys plus the n of the call that began
 *   it, and is sized to hold all that at no more than half load, under 70%.
 * - `live_bound` bounds from above the entries not expired at `now_hi`, the latest
 *   time seen (every insertion adds one); NO_ROOM is answered when it reaches
 *   max_live.  It is tightened to an exact-or-higher count by a counting sweep, which
 *   scans COUNT_BASE + COUNT_PER_KEY * n slots per call (a sequential read): one starts
 *   when the table passes 65% load, so the migration at 70% is sized from a fresh
 *   count, not from the occupied slots (which include the expired ones and would grow
 *   the table forever under a steady load), and one starts at most once a second when
 *   a call could reach the live limit.  The end of a migration also tightens it to the
 *   new table's occupied slots.
 *
 * Time is expected to move forward; entries expired at the latest time seen may be
 * dropped by a migration even if a later call passes an earlier now_ms.
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
    esc_replay_slot *slots; /* where look-ups start and new entries go */
    size_t mask;            /* capacity - 1 (capacity is a power of two) */
    size_t occupied;        /* non-empty slots, live or expired */
    esc_replay_slot *old;   /* being migrated from, read-only; NULL when not migrating */
    size_t old_mask;
    size_t old_next;        /* the next old slot to move */
    uint8_t *retired;       /* a migrated-from table being unmapped; NULL when none */
    size_t retired_bytes;
    size_t retired_done;    /* bytes of it already unmapped */
    int counting;           /* a counting sweep is under way */
    size_t count_next;      /* the next slot it reads */
    size_t count_live;      /* entries it found live, plus insertions behind it */
    size_t count_start_occupied;
    size_t live_bound;      /* live entries can be no more than this */
    size_t max_live;
    uint64_t now_hi;        /* the latest now_ms seen */
    uint64_t next_sweep_ms; /* near the live limit: no counting sweep before this time */
    uint64_t seed;
    size_t last_moved;      /* old slots the last check migrated (for tests) */
    size_t last_counted;    /* slots the last check's counting sweep read (for tests) */
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

/* Entries not expired at now_ms (a scan of every slot: for tests and diagnostics). */
size_t esc_replay_live(esc_replay_table *t, uint64_t now_ms);

/* seen[i] = 1 where keys[i] has a live record at now_ms, else 0; records nothing and
 * does no upkeep (a look-up for a first-level filter in front of a shared store). */
void esc_replay_seen(esc_replay_table *t, const uint8_t *const *keys, size_t n,
                     uint64_t now_ms, uint8_t *seen);

/* The most old slots one check of n keys migrates, and the most slots it counts. */
void esc_replay_budgets(size_t n, size_t *move, size_t *count);

/* For tests: out = {last_moved, last_counted, live_bound, capacity, migrating,
 * counting}. */
void esc_replay_debug(esc_replay_table *t, size_t out[6]);

#endif
