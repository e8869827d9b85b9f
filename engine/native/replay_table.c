#include "replay_table.h"

#include <stdlib.h>
#include <string.h>

#include "xxh64.h"

#define INITIAL_CAPACITY 1024
/* Rebuild (grow or sweep) when this share of the slots is occupied. */
#define MAX_LOAD_NUM 7
#define MAX_LOAD_DEN 10

int esc_replay_init(esc_replay_table *t, size_t max_live, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->slots = calloc(INITIAL_CAPACITY, sizeof *t->slots);
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
        free(t->slots);
        t->slots = NULL;
        pthread_mutex_destroy(&t->lock);
    }
}

static size_t count_live(const esc_replay_table *t, uint64_t now_ms)
{
    size_t i, live = 0;
    for (i = 0; i <= t->mask; i++)
        live += t->slots[i].expires_ms >= now_ms;
    return live;
}

/* Moves the live entries into a table sized for them; drops the expired ones. */
static int rebuild(esc_replay_table *t, uint64_t now_ms, size_t need)
{
    size_t live = count_live(t, now_ms), cap = INITIAL_CAPACITY, i;
    esc_replay_slot *slots;
    /* Room for the live entries and `need` more at under half load after rebuilding. */
    while (cap < 2 * (live + need))
        cap <<= 1;
    slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return -1;
    for (i = 0; i <= t->mask; i++) {
        const esc_replay_slot *s = &t->slots[i];
        size_t j;
        if (s->expires_ms < now_ms) /* empty (0) or expired */
            continue;
        j = (size_t)esc_xxh64_inline(s->key, 32, t->seed) & (cap - 1);
        while (slots[j].expires_ms != 0)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
    t->occupied = live;
    t->live_at_rebuild_bound = live;
    return 0;
}

static uint8_t check_one(esc_replay_table *t, const uint8_t *key, uint64_t expires_ms,
                         uint64_t now_ms)
{
    size_t j = (size_t)esc_xxh64_inline(key, 32, t->seed) & t->mask;
    esc_replay_slot *reuse = NULL;
    for (;; j = (j + 1) & t->mask) {
        esc_replay_slot *s = &t->slots[j];
        if (s->expires_ms == 0)
            break;
        if (memcmp(s->key, key, 32) == 0) {
            if (s->expires_ms >= now_ms)
                return ESC_REPLAY_SEEN;
            reuse = s; /* this very pair, expired: record it again in place */
            break;
        }
        if (reuse == NULL && s->expires_ms < now_ms)
            reuse = s;
    }
    if (t->live_at_rebuild_bound >= t->max_live)
        return ESC_REPLAY_NO_ROOM;
    if (reuse == NULL) {
        reuse = &t->slots[j];
        t->occupied++;
    }
    memcpy(reuse->key, key, 32);
    /* 0 marks an empty slot: an entry that expires at time 0 is stored as 1. */
    reuse->expires_ms = expires_ms ? expires_ms : 1;
    t->live_at_rebuild_bound++;
    return ESC_REPLAY_FRESH;
}

int esc_replay_check(esc_replay_table *t, const uint8_t *const *keys, const uint64_t *expires_ms,
                     size_t n, uint64_t now_ms, uint8_t *states)
{
    size_t i;
    int rc = 0;
    pthread_mutex_lock(&t->lock);
    for (i = 0; i < n; i++) {
        /* Keep the load bounded.  When the live limit looks reached (the bound counts
         * every insertion since the last rebuild), sweep out the expired entries so the
         * limit counts live ones only, at most once a second: a table full of live
         * entries answers NO_ROOM without rescanning itself for every item. */
        int full = (t->occupied + 1) * MAX_LOAD_DEN > (t->mask + 1) * MAX_LOAD_NUM;
        int at_limit = t->live_at_rebuild_bound >= t->max_live && now_ms >= t->next_sweep_ms;
        if (full || at_limit) {
            if (at_limit)
                t->next_sweep_ms = now_ms + 1000;
            if (rebuild(t, now_ms, n - i > 1024 ? 1024 : n - i) != 0) {
                for (; i < n; i++)
                    states[i] = ESC_REPLAY_NO_ROOM;
                rc = -1;
                break;
            }
        }
        states[i] = check_one(t, keys[i], expires_ms[i], now_ms);
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

size_t esc_replay_live(esc_replay_table *t, uint64_t now_ms)
{
    size_t live;
    pthread_mutex_lock(&t->lock);
    live = count_live(t, now_ms);
    pthread_mutex_unlock(&t->lock);
    return live;
}
