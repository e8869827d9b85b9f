#include "revocation_lookup.h"

#include <string.h>

#include "bloom.h"
#include "parallel.h"
#include "xxh64.h"

/* Ids hashed ahead of the one being probed: enough Bloom misses in flight to cover
 * a memory latency (a power of two, so the ring index is a mask). */
#define AHEAD 32
/* Bloom hits confirmed together, so that their exact-tier misses overlap. */
#define HIT_BATCH 32
/* Below this many ids per thread, starting a thread costs more than it saves. */
#define MIN_CHUNK 16384

size_t esc_kind_id_len(int kind)
{
    return kind == ESC_KIND_CARD ? ESC_CARD_ID_LEN
           : kind == ESC_KIND_CREDENTIAL ? ESC_CREDENTIAL_ID_LEN
                                         : 0;
}

/* XXH64 of kind byte || id. */
static inline uint64_t key_hash(uint64_t seed, int kind, const uint8_t *id)
{
    return kind == ESC_KIND_CARD ? esc_xxh64_key10((uint8_t)kind, id, seed)
                                 : esc_xxh64_key17((uint8_t)kind, id, seed);
}

esc_fp esc_fingerprint(uint64_t seed, int kind, const uint8_t *id, size_t len)
{
    esc_fp fp;
    (void)len;
    fp.h1 = key_hash(seed, kind, id);
    fp.h2 = key_hash(seed ^ ESC_FP_SEED2_XOR, kind, id);
    return fp;
}

void esc_fingerprint_rows(uint64_t seed, const uint8_t *kinds, const uint8_t *rows, size_t n,
                          esc_fp *out)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = esc_fingerprint(seed, kinds[i], rows + 16 * i, esc_kind_id_len(kinds[i]));
}

static inline const uint8_t *id_at(const esc_ids *ids, size_t i, size_t want)
{
    if (ids->base)
        return ids->len == want ? ids->base + i * ids->stride : NULL;
    return ids->lens[i] == want ? ids->ptrs[i] : NULL;
}

typedef struct {
    const esc_revset *r;
    int kind;
    const esc_ids *ids;
    uint8_t *out;
    int mode;
} lookup_ctx;

typedef struct {
    size_t pos[HIT_BATCH];
    esc_fp fp[HIT_BATCH];
    int n;
} hit_batch;

static inline int in_add_set(const esc_revset *r, esc_fp fp)
{
    return esc_bloom_block_has(esc_bloom_block_ptr(r->add_bloom, r->add_nblocks, fp.h1), fp.h1) &&
           esc_fpset_contains(&r->add, fp);
}

/* Confirms a batch of snapshot Bloom hits in three passes (index, then bucket, then
 * compare) so the misses of different hits overlap instead of queueing. */
static void confirm_hits(const lookup_ctx *c, hit_batch *hb)
{
    const esc_revset *r = c->r;
    const esc_fpset *s = &r->snapshot;
    int k;
    for (k = 0; k < hb->n; k++) {
        const uint8_t *id = id_at(c->ids, hb->pos[k], esc_kind_id_len(c->kind));
        hb->fp[k].h2 = key_hash(r->seed ^ ESC_FP_SEED2_XOR, c->kind, id);
        __builtin_prefetch(esc_fpset_index_ptr(s, hb->fp[k].h1), 0, 0);
    }
    for (k = 0; k < hb->n; k++) {
        const uint64_t *ix = esc_fpset_index_ptr(s, hb->fp[k].h1);
        __builtin_prefetch(&s->fps[ix[0]], 0, 0);
        if (ix[1] > ix[0] + 4)
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

static void lookup_range(void *arg, size_t begin, size_t end)
{
    const lookup_ctx *c = (const lookup_ctx *)arg;
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
            ring[i % AHEAD] = key_hash(r->seed, c->kind, id);
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
                ring[slot] = key_hash(r->seed, c->kind, id);
                __builtin_prefetch(esc_bloom_block_ptr(r->bloom, r->nblocks, ring[slot]), 0, 0);
            }
        }
        c->out[i] = 0;
        if (!ok)
            continue;
        if (esc_bloom_block_has(esc_bloom_block_ptr(r->bloom, r->nblocks, h), h)) {
            if (bloom_only) {
                c->out[i] = 1;
                continue;
            }
            hb.pos[hb.n] = i;
            hb.fp[hb.n].h1 = h;
            if (++hb.n == HIT_BATCH)
                confirm_hits(c, &hb);
        } else if (have_add &&
                   esc_bloom_block_has(esc_bloom_block_ptr(r->add_bloom, r->add_nblocks, h), h)) {
            esc_fp fp;
            fp.h1 = h;
            fp.h2 = key_hash(r->seed ^ ESC_FP_SEED2_XOR, c->kind, id_at(c->ids, i, want));
            c->out[i] = (uint8_t)esc_fpset_contains(&r->add, fp);
        }
    }
    if (hb.n)
        confirm_hits(c, &hb);
}

void esc_revset_contains(const esc_revset *r, int kind, const esc_ids *ids, size_t n,
                         uint8_t *out, int mode, int threads)
{
    lookup_ctx c = {r, kind, ids, out, mode};
    if (esc_kind_id_len(kind) == 0) {
        memset(out, 0, n);
        return;
    }
    esc_parallel_for(n, threads, MIN_CHUNK, lookup_range, &c);
}
