#include "replay_table.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "xxh64.h"

#define INITIAL_CAPACITY 1024
/* Migrate when a call could take the table past this load... */
#define MAX_LOAD_NUM 7
#define MAX_LOAD_DEN 10
/* ...after a counting sweep begun at this one has sized the new table. */
#define COUNT_LOAD_NUM 13
#define COUNT_LOAD_DEN 20
/* Upkeep per check of n keys: old slots moved (each a hash and a random write) and
 * slots counted (a sequential read).  A migration leaves C / MIGRATE_PER_KEY more
 * keys in the new table than it could otherwise hold, see the sizing below. */
#define MIGRATE_BASE 64
#define MIGRATE_PER_KEY 16
#define COUNT_BASE 4096
#define COUNT_PER_KEY 256
/* A retired table's memory given back to the system per check of n keys (bytes). */
#define RELEASE_BASE (64 << 10)
#define RELEASE_PER_KEY (4 << 10)
/* Near the live limit: at most one counting sweep begun per this many ms. */
#define SWEEP_INTERVAL_MS 1000

/* Stores a process could die between are kept in this order (shared mode): the
 * compiler may not move memory accesses across it (the CPU commits a dead process's
 * retired stores anyway, and the next lock holder acquires them with the lock). */
#define ORDERED() __atomic_signal_fence(__ATOMIC_SEQ_CST)

/* Test hook (esc_replay_test_die): process-local, so forked children set their own. */
static int die_point;
static size_t die_countdown;

static void maybe_die(int point)
{
    if (__builtin_expect(die_point == point, 0) && die_countdown-- == 0) {
        kill(getpid(), SIGKILL); /* holding the lock */
        for (;;)
            pause();
    }
}

void esc_replay_test_die(int point, size_t after)
{
    die_point = point;
    die_countdown = after;
}

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* Private tables are mapped directly, zeroed by the system page by page as they are
 * first touched, so that a retired one can be unmapped a piece at a time: freeing
 * hundreds of megabytes at once would itself stall a check for milliseconds.  Every
 * capacity (a power of two, at least INITIAL_CAPACITY) is a whole number of pages. */
static esc_replay_slot *map_slots(size_t cap)
{
    void *p = mmap(NULL, cap * sizeof(esc_replay_slot), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void unmap_slots(esc_replay_slot *slots, size_t cap)
{
    if (slots != NULL)
        munmap(slots, cap * sizeof *slots);
}

/* The allocator the table goes through.  Private: a new mapping.  Shared: the half of
 * the region not holding the current table, which is all zero: it is unused or was
 * given back in full (give_back) when its table retired; a retirement still under
 * way is finished here (see release for why that is rare). */
static void release(esc_replay_table *t, size_t limit);

static esc_replay_slot *alloc_slots(esc_replay_table *t, size_t cap)
{
    uint8_t *half;
    if (!t->shared)
        return map_slots(cap);
    if (cap > t->half_bytes / sizeof(esc_replay_slot))
        return NULL; /* cannot happen: halves hold esc_replay_max_slots(max_live) */
    release(t, SIZE_MAX); /* the retired table, if any, is in that half */
    half = (uint8_t *)t->slots == t->half[0] ? t->half[1] : t->half[0];
    return (esc_replay_slot *)half;
}

/* Gives pages back: private, unmapped; shared, removed from the shared memory
 * object (MADV_REMOVE: they read as zeros again, in every process), or zeroed where
 * the system cannot remove them. */
static void give_back(const esc_replay_table *t, uint8_t *p, size_t bytes)
{
    if (!t->shared)
        munmap(p, bytes);
    else if (madvise(p, bytes, MADV_REMOVE) != 0)
        memset(p, 0, bytes);
}

/* Gives back up to `limit` bytes of the retired table (all of it for SIZE_MAX). */
static void release(esc_replay_table *t, size_t limit)
{
    size_t left, step, page;
    if (t->retired == NULL)
        return;
    page = page_size(); /* pieces must start on a page */
    left = t->retired_bytes - t->retired_done;
    step = limit / page * page;
    if (step == 0)
        step = page;
    if (step > left)
        step = left;
    give_back(t, t->retired + t->retired_done, step);
    /* Counted once given back: a death in between gives the piece back twice. */
    ORDERED();
    maybe_die(ESC_REPLAY_DIE_RELEASE);
    t->retired_done += step;
    if (t->retired_done == t->retired_bytes)
        t->retired = NULL;
}

/* Applies the transition recorded in t->redo; again, identically, if a process died
 * while applying it (fields are only assigned values of the record). */
static void apply_redo(esc_replay_table *t)
{
    const esc_replay_redo *r = &t->redo;
    if (r->kind == ESC_REDO_START) {
        t->old = r->old;
        t->old_mask = r->old_mask;
        t->old_next = 0;
        maybe_die(ESC_REPLAY_DIE_START_HALF);
        t->slots = r->slots;
        t->mask = r->mask;
        t->occupied = 0;
        t->counting = 0;
        t->count_start_occupied = 0;
    } else if (r->kind == ESC_REDO_END) {
        t->retired = r->retired;
        t->retired_bytes = r->retired_bytes;
        t->retired_done = 0;
        maybe_die(ESC_REPLAY_DIE_END_HALF);
        t->old = NULL;
        t->live_bound = r->live_bound;
    }
    ORDERED();
    t->redo.kind = 0;
}

/* A change of several fields, made all or nothing for a process that dies midway:
 * the record (filled in by the caller) is complete before its kind says it is there. */
static void transition(esc_replay_table *t, int kind, int die_recorded)
{
    ORDERED();
    t->redo.kind = kind;
    ORDERED();
    maybe_die(die_recorded);
    apply_redo(t);
}

/* The lock.  Shared: robust; a holder that died (EOWNERDEAD) left a state that is
 * safe to go on from (replay_table.h) once a transition it left half applied is
 * completed. */
static int lock(esc_replay_table *t)
{
    int rc = pthread_mutex_lock(&t->lock);
    if (__builtin_expect(rc == 0, 1))
        return 0;
    if (rc != EOWNERDEAD)
        return -1; /* ENOTRECOVERABLE: cannot happen, consistent is always called */
    apply_redo(t);
    t->owner_deaths++;
    pthread_mutex_consistent(&t->lock);
    return 0;
}

size_t esc_replay_max_slots(size_t max_live)
{
    /* start_migration's want is live_bound + old capacity / MIGRATE_PER_KEY + the keys
     * this call can record, where live_bound plus those keys is at most max_live: for
     * an old capacity of at most P it is at most max_live + P / 16, at most P / 2 for
     * the P below, so (from INITIAL_CAPACITY up) no table is ever larger than P. */
    size_t cap = INITIAL_CAPACITY;
    while (cap / 2 - cap / MIGRATE_PER_KEY < max_live) {
        if (cap > SIZE_MAX / 4 / sizeof(esc_replay_slot))
            return 0;
        cap <<= 1;
    }
    return cap;
}

static esc_replay_table *new_shared(size_t max_live)
{
    size_t page = page_size(), slots = esc_replay_max_slots(max_live), head, half;
    uint8_t *region;
    if (slots == 0)
        return NULL;
    head = (sizeof(esc_replay_table) + page - 1) / page * page;
    half = (slots * sizeof(esc_replay_slot) + page - 1) / page * page;
    if (half > (SIZE_MAX - head) / 2)
        return NULL;
    /* Virtual only: pages exist once written, and go when given back. */
    region = mmap(NULL, head + 2 * half, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED)
        return NULL;
    esc_replay_table *t = (esc_replay_table *)region; /* zeroed */
    t->shared = 1;
    t->region_bytes = head + 2 * half;
    t->half[0] = region + head;
    t->half[1] = region + head + half;
    t->half_bytes = half;
    t->slots = (esc_replay_slot *)t->half[0];
    return t;
}

esc_replay_table *esc_replay_new(size_t max_live, uint64_t seed, int shared)
{
    esc_replay_table *t;
    pthread_mutexattr_t attr;
    if (shared) {
        t = new_shared(max_live);
        if (t == NULL)
            return NULL;
    } else {
        t = calloc(1, sizeof *t);
        if (t == NULL)
            return NULL;
        t->slots = map_slots(INITIAL_CAPACITY);
        if (t->slots == NULL) {
            free(t);
            return NULL;
        }
    }
    t->mask = INITIAL_CAPACITY - 1;
    t->max_live = max_live;
    t->seed = seed; /* in the region when shared: one seed for every process */
    pthread_mutexattr_init(&attr);
    if (shared) {
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    }
    pthread_mutex_init(&t->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    return t;
}

void esc_replay_delete(esc_replay_table *t)
{
    if (t == NULL)
        return;
    if (t->shared) {
        /* This process's mapping only: the others may still use the table (and its
         * lock, which is therefore never destroyed). */
        munmap(t, t->region_bytes);
        return;
    }
    unmap_slots(t->slots, t->mask + 1);
    if (t->old != NULL)
        unmap_slots(t->old, t->old_mask + 1);
    release(t, SIZE_MAX);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static size_t budget(size_t base, size_t per_key, size_t n)
{
    return n > (SIZE_MAX - base) / per_key ? SIZE_MAX : base + per_key * n;
}

void esc_replay_budgets(size_t n, size_t *move, size_t *count)
{
    *move = budget(MIGRATE_BASE, MIGRATE_PER_KEY, n);
    *count = budget(COUNT_BASE, COUNT_PER_KEY, n);
}

static uint64_t hash(const esc_replay_table *t, const uint8_t *key)
{
    return esc_xxh64_inline(key, 32, t->seed);
}

/* Puts an entry moved from the old table into the new one, unless the key is already
 * there (a newer record).  Only entries live at now_hi are moved, and a key reaches
 * the new table only when its old record had expired, so this is a safeguard. */
static inline __attribute__((always_inline)) void place(esc_replay_table *t,
                                                        const esc_replay_slot *from)
{
    size_t j = (size_t)hash(t, from->key) & t->mask;
    esc_replay_slot *reuse = NULL;
    for (;; j = (j + 1) & t->mask) {
        esc_replay_slot *s = &t->slots[j];
        if (s->expires_ms == 0)
            break;
        if (memcmp(s->key, from->key, 32) == 0)
            return;
        if (reuse == NULL && s->expires_ms < t->now_hi)
            reuse = s;
    }
    if (reuse == NULL) {
        reuse = &t->slots[j];
        t->occupied++;
    }
    /* A death between the two leaves an empty slot, or a dead record's key: the old
     * slot is not passed yet (old_next), so the entry is moved again. */
    ORDERED();
    memcpy(reuse->key, from->key, 32);
    ORDERED();
    reuse->expires_ms = from->expires_ms;
}

static inline __attribute__((always_inline)) void move_range(esc_replay_table *t, size_t start,
                                                             size_t stop, int hook)
{
    size_t i;
    for (i = start; i < stop; i++)
        if (t->old[i].expires_ms != 0 && t->old[i].expires_ms >= t->now_hi) {
            place(t, &t->old[i]); /* skips empty and expired slots */
            if (hook)
                maybe_die(ESC_REPLAY_DIE_MIGRATE);
        }
}

/* Moves up to `limit` old slots; frees the old table at its end. */
static size_t migrate(esc_replay_table *t, size_t limit)
{
    size_t start = t->old_next, end = t->old_mask + 1;
    size_t stop = end - start > limit ? start + limit : end;
    /* The test hook in a copy of the loop of its own, so that the loop that runs has
     * none. */
    if (__builtin_expect(die_point == ESC_REPLAY_DIE_MIGRATE, 0))
        move_range(t, start, stop, 1);
    else
        move_range(t, start, stop, 0);
    ORDERED();
    t->old_next = stop;
    if (stop == end) {
        /* Given back over the next checks (release), before the next migration could
         * begin: that takes the new table from at most half to 70% load, so calls with
         * at least (its capacity / 5) >= (old capacity / 40) keys in all, each key
         * releasing RELEASE_PER_KEY = 4096 bytes of the old table's 40 per slot. */
        release(t, SIZE_MAX); /* not reached: the previous one is gone */
        t->redo.retired = (uint8_t *)t->old;
        t->redo.retired_bytes = end * sizeof *t->old;
        /* Every live entry now has a slot of its own in the new table. */
        t->redo.live_bound = t->occupied < t->live_bound ? t->occupied : t->live_bound;
        transition(t, ESC_REDO_END, ESC_REPLAY_DIE_END_RECORDED);
    }
    return stop - start;
}

/* Reads up to `limit` slots of the counting sweep.  Entries inserted behind its cursor
 * are added as they come (check_one), those ahead of it are read when it gets there,
 * so at the end count_live bounds the entries live at now_hi from above. */
static size_t count_step(esc_replay_table *t, size_t limit)
{
    size_t start = t->count_next, end = t->mask + 1, i, live = 0;
    size_t stop = end - start > limit ? start + limit : end;
    for (i = start; i < stop; i++)
        live += t->slots[i].expires_ms >= t->now_hi;
    t->count_live += live;
    t->count_next = stop;
    if (stop == end) {
        t->counting = 0;
        if (t->count_live < t->live_bound)
            t->live_bound = t->count_live;
    }
    return stop - start;
}

static int start_migration(esc_replay_table *t, size_t n)
{
    /* The new table holds at most the live entries moved (live_bound), the keys of
     * this call and those of the calls while the migration runs (fewer than
     * old capacity / MIGRATE_PER_KEY, see replay_table.h): at most half its slots. */
    size_t old_cap = t->mask + 1, cap = INITIAL_CAPACITY, want;
    esc_replay_slot *slots;
    /* This call records at most max_live - live_bound keys, whatever its n: so the
     * size is bounded by max_live alone (esc_replay_max_slots). */
    size_t room = t->max_live - t->live_bound; /* live_bound <= max_live */
    want = t->live_bound + (n < room ? n : room); /* <= max_live */
    want = want > SIZE_MAX / 4 - old_cap / MIGRATE_PER_KEY ? SIZE_MAX / 4
                                                           : want + old_cap / MIGRATE_PER_KEY;
    while (cap / 2 < want) {
        if (cap > SIZE_MAX / 2 / sizeof *slots)
            return -1;
        cap <<= 1;
    }
    slots = alloc_slots(t, cap);
    if (slots == NULL)
        return -1;
    t->redo.old = t->slots;
    t->redo.old_mask = t->mask;
    t->redo.slots = slots;
    t->redo.mask = cap - 1;
    transition(t, ESC_REDO_START, ESC_REPLAY_DIE_START_RECORDED);
    return 0;
}

/* Whether x entries would fill more than num/den of the table. */
static int over(const esc_replay_table *t, size_t x, size_t num, size_t den)
{
    size_t cap = t->mask + 1;
    return x > cap / den * num + cap % den * num / den;
}

static void start_count(esc_replay_table *t)
{
    t->count_next = 0;
    t->count_live = 0;
    t->count_start_occupied = t->occupied;
    ORDERED(); /* a sweep is never seen with an earlier one's cursor and count */
    t->counting = 1;
}

/* Migration and counting for this call, before its keys: within the budgets. */
static int upkeep(esc_replay_table *t, size_t n, uint64_t now_ms)
{
    size_t room = n < t->max_live ? n : t->max_live;
    release(t, budget(RELEASE_BASE, RELEASE_PER_KEY, n));
    if (t->old != NULL) {
        t->last_moved = migrate(t, budget(MIGRATE_BASE, MIGRATE_PER_KEY, n));
        /* Cannot happen (see replay_table.h); if it did, finishing beats overfilling. */
        if (t->old != NULL && over(t, t->occupied + n, MAX_LOAD_NUM, MAX_LOAD_DEN))
            t->last_moved += migrate(t, SIZE_MAX);
        if (t->old != NULL)
            return 0;
    }
    if (!t->counting) {
        /* This call could reach the live limit: count, so that expired entries stop
         * counting against it, but at most once a second, so that a table full of
         * live entries answers NO_ROOM without rescanning itself for every call. */
        if (t->live_bound >= t->max_live - room && now_ms >= t->next_sweep_ms) {
            t->next_sweep_ms = now_ms + SWEEP_INTERVAL_MS;
            start_count(t);
        } else if (over(t, t->occupied + n, COUNT_LOAD_NUM, COUNT_LOAD_DEN)
                   && !over(t, t->count_start_occupied, COUNT_LOAD_NUM, COUNT_LOAD_DEN)) {
            start_count(t); /* once per table, to size the next one */
        }
    }
    if (t->counting)
        t->last_counted = count_step(t, budget(COUNT_BASE, COUNT_PER_KEY, n));
    /* A sweep still counting here (one begun near the live limit when the table was
     * nearly full) is given up: live_bound stays valid, only looser. */
    if (over(t, t->occupied + n, MAX_LOAD_NUM, MAX_LOAD_DEN) && start_migration(t, n) != 0)
        return -1;
    return 0;
}

static uint8_t check_one(esc_replay_table *t, const uint8_t *key, uint64_t expires_ms,
                         uint64_t now_ms)
{
    uint64_t h = hash(t, key);
    size_t j = (size_t)h & t->mask;
    esc_replay_slot *reuse = NULL;
    int found = 0;
    for (;; j = (j + 1) & t->mask) {
        esc_replay_slot *s = &t->slots[j];
        if (s->expires_ms == 0)
            break;
        if (memcmp(s->key, key, 32) == 0) {
            if (s->expires_ms >= now_ms)
                return ESC_REPLAY_SEEN;
            reuse = s; /* this very pair, expired: record it again in place */
            found = 1;
            break;
        }
        if (reuse == NULL && s->expires_ms < now_ms)
            reuse = s;
    }
    /* Not in the new table: its record, if any, is in the old one (never the other way
     * round, so a record found in the new table is the newest). */
    if (!found && t->old != NULL) {
        size_t k = (size_t)h & t->old_mask;
        for (;; k = (k + 1) & t->old_mask) {
            const esc_replay_slot *s = &t->old[k];
            if (s->expires_ms == 0)
                break;
            if (memcmp(s->key, key, 32) == 0) {
                if (s->expires_ms >= now_ms)
                    return ESC_REPLAY_SEEN;
                break;
            }
        }
    }
    if (t->live_bound >= t->max_live)
        return ESC_REPLAY_NO_ROOM;
    if (reuse == NULL) {
        reuse = &t->slots[j];
        t->occupied++;
    }
    t->live_bound++;
    if (t->counting && (size_t)(reuse - t->slots) < t->count_next)
        t->count_live++; /* behind the sweep: it would not be read */
    /* Counted before written, the key before its expiry: a process that dies in
     * between leaves the counts high (safe: they are upper bounds) and the slot empty
     * or holding this key with the expired time of the record it replaces. */
    ORDERED();
    memcpy(reuse->key, key, 32);
    ORDERED();
    /* 0 marks an empty slot: an entry that expires at time 0 is stored as 1. */
    reuse->expires_ms = expires_ms ? expires_ms : 1;
    return ESC_REPLAY_FRESH;
}

int esc_replay_check(esc_replay_table *t, const uint8_t *const *keys, const uint64_t *expires_ms,
                     size_t n, uint64_t now_ms, uint8_t *states)
{
    size_t i;
    int rc = 0;
    if (lock(t) != 0) {
        memset(states, ESC_REPLAY_NO_ROOM, n);
        return -1;
    }
    if (now_ms > t->now_hi)
        t->now_hi = now_ms;
    t->last_moved = t->last_counted = 0;
    if (upkeep(t, n, now_ms) != 0) {
        memset(states, ESC_REPLAY_NO_ROOM, n);
        rc = -1;
    } else {
        size_t m = n; /* keys checked before the test hook's death, if any */
        int die = 0;
        if (__builtin_expect(die_point == ESC_REPLAY_DIE_KEYS, 0)) {
            if (die_countdown < n) {
                m = die_countdown + 1;
                die = 1;
            } else {
                die_countdown -= n;
            }
        }
        for (i = 0; i < m; i++)
            states[i] = check_one(t, keys[i], expires_ms[i], now_ms);
        if (die) {
            die_countdown = 0;
            maybe_die(ESC_REPLAY_DIE_KEYS);
        }
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

/* Whether the new table holds a record of key (live or not). */
static int in_new(const esc_replay_table *t, const uint8_t *key)
{
    size_t j = (size_t)hash(t, key) & t->mask;
    for (;; j = (j + 1) & t->mask) {
        const esc_replay_slot *s = &t->slots[j];
        if (s->expires_ms == 0)
            return 0;
        if (memcmp(s->key, key, 32) == 0)
            return 1;
    }
}

size_t esc_replay_live(esc_replay_table *t, uint64_t now_ms)
{
    size_t i, live = 0;
    if (lock(t) != 0)
        return 0;
    for (i = 0; i <= t->mask; i++)
        live += t->slots[i].expires_ms != 0 && t->slots[i].expires_ms >= now_ms;
    /* Old records count unless shadowed by a newer one, as check_one sees them. */
    if (t->old != NULL)
        for (i = 0; i <= t->old_mask; i++)
            if (t->old[i].expires_ms != 0 && t->old[i].expires_ms >= now_ms
                && !in_new(t, t->old[i].key))
                live++;
    pthread_mutex_unlock(&t->lock);
    return live;
}

/* Whether key has a live record (in the new table first: the newest record wins). */
static int seen_one(const esc_replay_table *t, const uint8_t *key, uint64_t now_ms)
{
    uint64_t h = hash(t, key);
    size_t j = (size_t)h & t->mask;
    for (;; j = (j + 1) & t->mask) {
        const esc_replay_slot *s = &t->slots[j];
        if (s->expires_ms == 0)
            break;
        if (memcmp(s->key, key, 32) == 0)
            return s->expires_ms >= now_ms;
    }
    if (t->old != NULL) {
        size_t k = (size_t)h & t->old_mask;
        for (;; k = (k + 1) & t->old_mask) {
            const esc_replay_slot *s = &t->old[k];
            if (s->expires_ms == 0)
                break;
            if (memcmp(s->key, key, 32) == 0)
                return s->expires_ms >= now_ms;
        }
    }
    return 0;
}

void esc_replay_seen(esc_replay_table *t, const uint8_t *const *keys, size_t n,
                     uint64_t now_ms, uint8_t *seen)
{
    size_t i;
    if (lock(t) != 0) {
        memset(seen, 0, n); /* cannot happen (lock): then nothing is known seen */
        return;
    }
    for (i = 0; i < n; i++)
        seen[i] = (uint8_t)seen_one(t, keys[i], now_ms);
    pthread_mutex_unlock(&t->lock);
}

void esc_replay_debug(esc_replay_table *t, size_t out[7])
{
    if (lock(t) != 0) {
        memset(out, 0, 7 * sizeof *out);
        return;
    }
    out[0] = t->last_moved;
    out[1] = t->last_counted;
    out[2] = t->live_bound;
    out[3] = t->mask + 1;
    out[4] = t->old != NULL;
    out[5] = (size_t)t->counting;
    out[6] = t->owner_deaths;
    pthread_mutex_unlock(&t->lock);
}
