#include "replay_table.h"

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

/* Tables are mapped directly, zeroed by the system page by page as they are first
 * touched, so that a retired one can be unmapped a piece at a time: freeing hundreds
 * of megabytes at once would itself stall a check for milliseconds.  Every capacity
 * (a power of two, at least INITIAL_CAPACITY) is a whole number of pages. */
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

/* Unmaps up to `limit` bytes of the retired table (all of it for SIZE_MAX). */
static void release(esc_replay_table *t, size_t limit)
{
    size_t left, step, page;
    if (t->retired == NULL)
        return;
    page = (size_t)sysconf(_SC_PAGESIZE); /* pieces must start on a page */
    left = t->retired_bytes - t->retired_done;
    step = limit / page * page;
    if (step == 0)
        step = page;
    if (step > left)
        step = left;
    munmap(t->retired + t->retired_done, step);
    t->retired_done += step;
    if (t->retired_done == t->retired_bytes)
        t->retired = NULL;
}

int esc_replay_init(esc_replay_table *t, size_t max_live, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->slots = map_slots(INITIAL_CAPACITY);
    if (t->slots == NULL)
        return -1;
    t->mask = INITIAL_CAPACITY - 1;
    t->max_live = max_live;
    t->seed = seed;
    pthread_mutex_init(&t->lock, NULL);
    return 0;
}

void esc_replay_free(esc_replay_table *t)
{
    if (t->slots != NULL) {
        unmap_slots(t->slots, t->mask + 1);
        if (t->old != NULL)
            unmap_slots(t->old, t->old_mask + 1);
        release(t, SIZE_MAX);
        t->slots = t->old = NULL;
        pthread_mutex_destroy(&t->lock);
    }
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
static void place(esc_replay_table *t, const esc_replay_slot *from)
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
    *reuse = *from;
}

/* Moves up to `limit` old slots; frees the old table at its end. */
static size_t migrate(esc_replay_table *t, size_t limit)
{
    size_t start = t->old_next, end = t->old_mask + 1, i;
    size_t stop = end - start > limit ? start + limit : end;
    for (i = start; i < stop; i++)
        if (t->old[i].expires_ms != 0 && t->old[i].expires_ms >= t->now_hi)
            place(t, &t->old[i]); /* skips empty and expired slots */
    t->old_next = stop;
    if (stop == end) {
        /* Given back over the next checks (release), before the next migration could
         * begin: that takes the new table from at most half to 70% load, so calls with
         * at least (its capacity / 5) >= (old capacity / 40) keys in all, each key
         * releasing RELEASE_PER_KEY = 4096 bytes of the old table's 40 per slot. */
        release(t, SIZE_MAX); /* not reached: the previous one is gone */
        t->retired = (uint8_t *)t->old;
        t->retired_bytes = end * sizeof *t->old;
        t->retired_done = 0;
        t->old = NULL;
        /* Every live entry now has a slot of its own in the new table. */
        if (t->occupied < t->live_bound)
            t->live_bound = t->occupied;
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
    want = t->live_bound + old_cap / MIGRATE_PER_KEY;
    want = n > SIZE_MAX / 4 - want ? SIZE_MAX / 4 : want + n;
    while (cap / 2 < want) {
        if (cap > SIZE_MAX / 2 / sizeof *slots)
            return -1;
        cap <<= 1;
    }
    slots = map_slots(cap);
    if (slots == NULL)
        return -1;
    t->old = t->slots;
    t->old_mask = t->mask;
    t->old_next = 0;
    t->slots = slots;
    t->mask = cap - 1;
    t->occupied = 0;
    t->counting = 0;
    t->count_start_occupied = 0;
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
    t->counting = 1;
    t->count_next = 0;
    t->count_live = 0;
    t->count_start_occupied = t->occupied;
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
    memcpy(reuse->key, key, 32);
    /* 0 marks an empty slot: an entry that expires at time 0 is stored as 1. */
    reuse->expires_ms = expires_ms ? expires_ms : 1;
    t->live_bound++;
    if (t->counting && (size_t)(reuse - t->slots) < t->count_next)
        t->count_live++; /* behind the sweep: it would not be read */
    return ESC_REPLAY_FRESH;
}

int esc_replay_check(esc_replay_table *t, const uint8_t *const *keys, const uint64_t *expires_ms,
                     size_t n, uint64_t now_ms, uint8_t *states)
{
    size_t i;
    int rc = 0;
    pthread_mutex_lock(&t->lock);
    if (now_ms > t->now_hi)
        t->now_hi = now_ms;
    t->last_moved = t->last_counted = 0;
    if (upkeep(t, n, now_ms) != 0) {
        memset(states, ESC_REPLAY_NO_ROOM, n);
        rc = -1;
    } else {
        for (i = 0; i < n; i++)
            states[i] = check_one(t, keys[i], expires_ms[i], now_ms);
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
    pthread_mutex_lock(&t->lock);
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
    pthread_mutex_lock(&t->lock);
    for (i = 0; i < n; i++)
        seen[i] = (uint8_t)seen_one(t, keys[i], now_ms);
    pthread_mutex_unlock(&t->lock);
}

void esc_replay_debug(esc_replay_table *t, size_t out[6])
{
    pthread_mutex_lock(&t->lock);
    out[0] = t->last_moved;
    out[1] = t->last_counted;
    out[2] = t->live_bound;
    out[3] = t->mask + 1;
    out[4] = t->old != NULL;
    out[5] = (size_t)t->counting;
    pthread_mutex_unlock(&t->lock);
}
