/* The one-time-nonce table: (credential serial, presentation nonce) pairs already
 * accepted, each kept until the presentation it came from could no longer be fresh.
 *
 * Open addressing with linear probing over 40-byte slots, hashed with XXH64 under a
 * random per-table seed (holders choose their nonces, so the table must not be
 * floodable by chosen collisions).  An expired entry still occupies its slot, keeping
 * probe chains intact, and is reused by the next insertion that passes over it.  The
 * live-entry limit is hard: when reached, a new pair is refused (NO_ROOM) rather than
 * an old one forgotten.  One mutex per table (shared mode: one for all processes): a
 * batch is checked and recorded as one atomic step, in order.
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
 *   newest record of a key is always found first.  The old table is given back when
 *   the cursor reaches its end, a few pages per check.
 *   Why the migration ends before the new table could need to grow: with C the old
 *   capacity, the calls that leave it unfinished moved fewer than C slots together,
 *   so they carried fewer than C / MIGRATE_PER_KEY keys; the new table receives at
 *   most `live_bound` moved entries plus those keys plus the keys the call that began
 *   it can record (no more than its n, nor than max_live - live_bound), and is sized
 *   to hold all that at no more than half load, under 70%.
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
 *
 * Shared mode (esc_replay_new(..., shared=1)): one table for the worker processes a
 * supervisor forks, so that a host accepts a presentation once whichever worker gets
 * it.  Everything (this struct, its lock, both slot arrays of a migration) lives in one
 * MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE region reserved at creation, which must
 * come before the fork: every child maps it at the same address, so the pointers in it
 * hold.  The region is a page for the struct and two halves of esc_replay_max_slots
 * (max_live) slots each, the largest table the sizing rule can ask for (a call records
 * at most max_live - live_bound keys, whatever its n): the current table is in one
 * half, a migration allocates the other, which is all zero (it was never used or was
 * given back in full when its table retired).  Slot arrays go through an allocator:
 * private, mmap/munmap as always; shared, the free half, and giving back is
 * madvise(MADV_REMOVE) of a few pages per check (zeroed with memset where the system
 * cannot remove them).  Only written pages take memory; the reservation is virtual:
 * two halves of 40 P bytes, P the least power of two (>= 1024) with 7 P / 16 >= max_live
 * (2.3 to 4.6 slots per key: about 2.7 GB for ten million).
 *
 * The shared lock is PTHREAD_PROCESS_SHARED and PTHREAD_MUTEX_ROBUST.  A worker killed
 * while holding it makes the next locker get EOWNERDEAD; that one completes any
 * transition the dead one left half applied, marks the mutex consistent and goes on.
 * What a death mid-check can leave, and why it is safe: the dead call's keys up to the
 * death may be recorded (their answers were never sent: at worst a later REPLAYED for a
 * presentation never accepted); no key recorded by a call that returned is ever lost,
 * since every write a call makes is one of:
 * - a slot it records a key in: counts first (occupied, live_bound, the sweep's count:
 *   left high, which is safe, as they are upper bounds), then the key, then the
 *   expiry, in that order (ORDERED in replay_table.c); the slot was empty or held an
 *   expired record, so a slot torn between them is empty or holds this key expired;
 * - a slot a migration moves an entry into: the same order, and the old slot's cursor
 *   (old_next) advances only after, so the entry is moved again (place skips a key
 *   already there);
 * - the fields that begin or end a migration: written to a record (redo) first, then
 *   applied; a death with the record marked present is completed by the next locker;
 * - a piece of a retired table given back: counted given back after it is, so a
 *   death makes it given back twice (harmless); a counting sweep's progress: written
 *   after its step, so a death repeats the step.
 * A death also stops everything after it; nothing else in the table waits on a
 * process.  ESC_REPLAY_DIE_* points and esc_replay_test_die let tests kill a process
 * at each of these places.
 */
#ifndef ESC_REPLAY_TABLE_H
#define ESC_REPLAY_TABLE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum { ESC_REPLAY_FRESH = 0, ESC_REPLAY_SEEN = 1, ESC_REPLAY_NO_ROOM = 2 };

/* Where esc_replay_test_die kills the process. */
enum {
    ESC_REPLAY_DIE_KEYS = 1,          /* after a key of a check */
    ESC_REPLAY_DIE_MIGRATE,           /* after an entry moved by a migration */
    ESC_REPLAY_DIE_START_RECORDED,    /* the start of a migration recorded, not applied */
    ESC_REPLAY_DIE_START_HALF,        /* ... half applied */
    ESC_REPLAY_DIE_END_RECORDED,      /* the end of a migration recorded, not applied */
    ESC_REPLAY_DIE_END_HALF,          /* ... half applied */
    ESC_REPLAY_DIE_RELEASE,           /* after a piece given back, before it is counted */
};

enum { ESC_REDO_START = 1, ESC_REDO_END = 2 };

typedef struct {
    uint8_t key[32];
    uint64_t expires_ms; /* 0: empty slot */
} esc_replay_slot;

/* A migration's start or end, recorded before it is applied (see above). */
typedef struct {
    int kind; /* 0: none; ESC_REDO_START or ESC_REDO_END: recorded, maybe not applied */
    esc_replay_slot *slots, *old; /* start: the new table and the one migrated from */
    size_t mask, old_mask;
    uint8_t *retired; /* end: the table migrated from, and the tightened live_bound */
    size_t retired_bytes;
    size_t live_bound;
} esc_replay_redo;

typedef struct {
    esc_replay_slot *slots; /* where look-ups start and new entries go */
    size_t mask;            /* capacity - 1 (capacity is a power of two) */
    size_t occupied;        /* non-empty slots, live or expired */
    esc_replay_slot *old;   /* being migrated from, read-only; NULL when not migrating */
    size_t old_mask;
    size_t old_next;        /* the next old slot to move */
    uint8_t *retired;       /* a migrated-from table being given back; NULL when none */
    size_t retired_bytes;
    size_t retired_done;    /* bytes of it already given back */
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
    esc_replay_redo redo;
    int shared;             /* in a shared region (the fields below) */
    uint8_t *half[2];       /* the two halves slot arrays are allocated in */
    size_t half_bytes;
    size_t region_bytes;
    size_t owner_deaths;    /* lock holders found dead (EOWNERDEAD), for tests */
    pthread_mutex_t lock;
} esc_replay_table;

/* A table of at most max_live live keys; shared: in a region that processes forked
 * afterwards share.  NULL if out of memory (or address space). */
esc_replay_table *esc_replay_new(size_t max_live, uint64_t seed, int shared);
/* Private: frees it.  Shared: unmaps this process's mapping only. */
void esc_replay_delete(esc_replay_table *t);

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

/* The largest slot array a table of max_live keys ever has (0: beyond size_t). */
size_t esc_replay_max_slots(size_t max_live);

/* For tests: out = {last_moved, last_counted, live_bound, capacity, migrating,
 * counting, owner_deaths}. */
void esc_replay_debug(esc_replay_table *t, size_t out[7]);

/* For tests: this process kills itself (SIGKILL, holding the lock) when it passes
 * `point` (ESC_REPLAY_DIE_*) for the (after + 1)th time; point 0 disarms. */
void esc_replay_test_die(int point, size_t after);

#endif
