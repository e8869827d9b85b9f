/* The batched look-up loop, written once and compiled twice: revocation_lookup.c
 * includes it with the portable Bloom block probe, revocation_lookup_avx2.c with the
 * AVX2 one, and esc_revset_contains picks one at run time.  Internal to those two
 * files: before including, define ESC_LOOP_RANGE (the entry point's name) and
 * ESC_LOOP_BLOCK_HAS(block, hash).
 */
#include <stddef.h>
#include <stdint.h>

#include "bloom.h"
#include "exact_set.h"
#include "revocation_lookup.h"

/* Ids hashed ahead of the one being probed: enough Bloom misses in flight to cover
 * a memory latency (a power of two, so the ring index is a mask). */
#define AHEAD 32
/* Bloom hits confirmed together, so that their exact-tier misses overlap. */
#define HIT_BATCH 32

static inline const uint8_t *id_at(const esc_ids *ids, size_t i, size_t want)
{
    if (ids->base)
        return ids->len == want ? ids->base + i * ids->stride : NULL;
    return ids->lens[i] == want ? ids->ptrs[i] : NULL;
}

typedef struct {
    size_t pos[HIT_BATCH];
    esc_fp fp[HIT_BATCH];
    int n;
} hit_batch;

static inline int in_add_set(const esc_revset *r, esc_fp fp)
{
    return ESC_LOOP_BLOCK_HAS(esc_bloom_block_ptr(r->add_bloom, r->add_nblocks, fp.h1), fp.h1) &&
           esc_fpset_contains(&r->add, fp);
}

/* Confirms a batch of snapshot Bloom hits in three passes (index, then bucket, then
 * compare) so the misses of different hits overlap instead of queueing. */
static void confirm_hits(const esc_lookup_ctx *c, hit_batch *hb)
{
    const esc_revset *r = c->r;
    const esc_fpset *s = &r->snapshot;
    int k;
    for (k = 0; k < hb->n; k++) {
        const uint8_t *id = id_at(c->ids, hb->pos[k], esc_kind_id_len(c->kind));
        hb->fp[k].h2 = esc_key_hash(r->seed ^ ESC_FP_SEED2_XOR, c->kind, id);
        __builtin_prefetch(esc_fpset_index_ptr(s, hb->fp[k].h1), 0, 0);
    }
    for (k = 0; k < hb->n; k++) {
        const uint64_t *ix = esc_fpset_index_ptr(s, hb->fp[k].h1);
        if (ix[1] > ix[0])
            __builtin_prefetch(&s->fps[ix[0]], 0, 0);
        if (ix[1] > ix[0] + 4) /* a bucket over more than one cache line */
            __builtin_prefetch(&s->fps[ix[0] + 4], 0, 0);
    }
    for (k = 0; k < hb->n; k++) {
        esc_fp fp = hb->fp[k];
        int revoked = esc_fpset_contains(s, fp);
        if (revoked && r->remove.n)
            revoked = !esc_fpset_contains(&r->remove, fp);
        if (!revoked && r->add.n)
            revoked = in_add_set(r, fp);
        c->out[hb->pos[k]] = (uint8_t)revoked;
    }
    hb->n = 0;
}

void ESC_LOOP_RANGE(void *arg, size_t begin, size_t end)
{
    const esc_lookup_ctx *c = (const esc_lookup_ctx *)arg;
    const esc_revset *r = c->r;
    const size_t want = esc_kind_id_len(c->kind);
    const int bloom_only = c->mode == ESC_LOOKUP_BLOOM_ONLY;
    const int have_add = r->add.n != 0 && !bloom_only;
    uint64_t ring[AHEAD];
    uint8_t valid[AHEAD];
    hit_batch hb;
    size_t i;

    hb.n = 0;
    /* Software pipeline: hash id i + AHEAD and prefetch its block, then probe id i,
     * whose block was requested AHEAD iterations ago. */
    for (i = begin; i < end && i < begin + AHEAD; i++) {
        const uint8_t *id = id_at(c->ids, i, want);
        valid[i % AHEAD] = id != NULL;
        if (id) {
            ring[i % AHEAD] = esc_key_hash(r->seed, c->kind, id);
            __builtin_prefetch(esc_bloom_block_ptr(r->bloom, r->nblocks, ring[i % AHEAD]), 0,
                               0);
        }
    }
    for (i = begin; i < end; i++) {
        const size_t slot = i % AHEAD;
        const uint64_t h = ring[slot];
        const int ok = valid[slot];
        const size_t next = i + AHEAD;
        if (next < end) {
            const uint8_t *id = id_at(c->ids, next, want);
            valid[slot] = id != NULL;
            if (id) {
                ring[slot] = esc_key_hash(r->seed, c->kind, id);
                __builtin_prefetch(esc_bloom_block_ptr(r->bloom, r->nblocks, ring[slot]), 0, 0);
            }
        }
        c->out[i] = 0;
        if (!ok)
            continue;
        if (ESC_LOOP_BLOCK_HAS(esc_bloom_block_ptr(r->bloom, r->nblocks, h), h)) {
            if (bloom_only) {
                c->out[i] = 1;
                continue;
            }
            hb.pos[hb.n] = i;
            hb.fp[hb.n].h1 = h;
            if (++hb.n == HIT_BATCH)
                confirm_hits(c, &hb);
        } else if (have_add &&
                   ESC_LOOP_BLOCK_HAS(esc_bloom_block_ptr(r->add_bloom, r->add_nblocks, h), h)) {
            esc_fp fp;
            fp.h1 = h;
            fp.h2 = esc_key_hash(r->seed ^ ESC_FP_SEED2_XOR, c->kind, id_at(c->ids, i, want));
            c->out[i] = (uint8_t)esc_fpset_contains(&r->add, fp);
        }
    }
    if (hb.n)
        confirm_hits(c, &hb);
}
