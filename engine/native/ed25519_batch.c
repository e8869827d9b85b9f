#include "ed25519_batch.h"

#include <stdlib.h>
#include <string.h>

#include "ed25519_msm.h"
#include "ed25519_point.h"
#include "ed25519_scalar.h"
#include "sodium_api.h"

/* A failing sub-batch of at most this many items is resolved item by item. */
#define FALLBACK_SINGLE_MAX 2

int esc_ed25519_prechecks(const esc_sig_item *it)
{
    if (it->sig_len != 64 || it->pk_len != 32)
        return 0;
    if (!sc_is_canonical(it->sig + 32))
        return 0;
    if (!ge_is_canonical(it->sig) || !ge_is_canonical(it->pk))
        return 0;
    if (ge_is_small_order(it->sig) || ge_is_small_order(it->pk))
        return 0;
    return 1;
}

/* k = SHA-512(R || A || M) mod L. */
static void challenge(sc *k, const esc_sig_item *it)
{
    esc_sha512_state st;
    uint8_t h[64];
    esc_sodium.crypto_hash_sha512_init(&st);
    esc_sodium.crypto_hash_sha512_update(&st, it->sig, 32);
    esc_sodium.crypto_hash_sha512_update(&st, it->pk, 32);
    esc_sodium.crypto_hash_sha512_update(&st, it->msg, (unsigned long long)it->msg_len);
    esc_sodium.crypto_hash_sha512_final(&st, h);
    sc_reduce64(k, h);
}

/* Rule 5 for decoded, negated A and R: [8](s B + k (-A) + (-R)) == identity. */
static int cofactored_equation(const ge_p3 *negA, const ge_p3 *negR, const sc *k, const sc *s)
{
    ge_p3 p;
    ed25519_msm_straus(&p, negA, k, 1, s); /* one point: no allocation, cannot fail */
    ge_add_p3(&p, &p, negR);
    return ge_p3_is_small_order(&p);
}

int esc_ed25519_verify_cofactored(const esc_sig_item *it)
{
    ge_p3 a, r;
    sc k, s;
    if (!esc_ed25519_prechecks(it))
        return 0;
    ge_init();
    if (ge_decompress(&a, it->pk) != 0 || ge_decompress(&r, it->sig) != 0)
        return 0;
    ge_p3_neg(&a, &a);
    ge_p3_neg(&r, &r);
    challenge(&k, it);
    sc_frombytes(&s, it->sig + 32);
    return cofactored_equation(&a, &r, &k, &s);
}

int esc_ed25519_verify_single(const esc_sig_item *it)
{
    if (!esc_ed25519_prechecks(it))
        return 0;
    /* libsodium's equation is cofactorless: its yes is final, its no is not, since it
     * also refuses signatures with a torsion component that rule 5 accepts. */
    if (esc_sodium.crypto_sign_verify_detached(it->sig, it->msg, (unsigned long long)it->msg_len,
                                               it->pk) == 0)
        return 1;
    return esc_ed25519_verify_cofactored(it);
}

/* ---- batches ---------------------------------------------------------------- */

typedef struct {
    ge_p3 negR;
    sc s, k;
    uint64_t z[2];
    uint32_t key;  /* index into keys */
    uint32_t item; /* index into the caller's items */
} bitem;

typedef struct {
    ge_p3 negA;
    sc_wide acc;    /* sum of z_i k_i over the current sub-batch */
    uint32_t stamp; /* which sub-batch acc belongs to */
    int valid;
    const uint8_t *enc;
} bkey;

typedef struct {
    const esc_sig_item *items;
    uint8_t *ok;
    bitem *bi;
    bkey *keys;
    ge_p3 *pts;
    sc *scs;
    uint32_t *touched;
    uint32_t stamp;
    int msm;
    esc_batch_stats *stats;
} bctx;

static int item_check(bctx *c, const bitem *it)
{
    if (c->stats)
        c->stats->singles++;
    return cofactored_equation(&c->keys[it->key].negA, &it->negR, &it->k, &it->s);
}

/* The batch equation over the items ids[0..cnt): 1 holds, 0 fails, -1 no memory. */
static int batch_equation(bctx *c, const uint32_t *ids, size_t cnt)
{
    sc_wide bacc;
    sc b;
    ge_p3 p;
    size_t nt = 0, nk = 0;
    memset(&bacc, 0, sizeof bacc);
    c->stamp++;
    for (size_t j = 0; j < cnt; j++) {
        const bitem *it = &c->bi[ids[j]];
        bkey *key = &c->keys[it->key];
        scw_muladd(&bacc, it->z, &it->s);
        if (key->stamp != c->stamp) {
            key->stamp = c->stamp;
            memset(&key->acc, 0, sizeof key->acc);
            c->touched[nk++] = it->key;
        }
        scw_muladd(&key->acc, it->z, &it->k);
        c->pts[nt] = it->negR;
        c->scs[nt] = (sc){{it->z[0], it->z[1], 0, 0}};
        nt++;
    }
    /* One term per distinct key, with the summed coefficient. */
    for (size_t j = 0; j < nk; j++) {
        bkey *key = &c->keys[c->touched[j]];
        c->pts[nt] = key->negA;
        sc_reduce_wide(&c->scs[nt], &key->acc);
        nt++;
    }
    sc_reduce_wide(&b, &bacc);
    if (c->stats)
        c->stats->equations++;
    if (ed25519_msm(&p, c->pts, c->scs, nt, &b, c->msm) != 0)
        return -1;
    return ge_p3_is_small_order(&p);
}

/* Verdicts for ids[0..cnt); returns 1 iff all of them are valid.  known_bad: the
 * caller already knows this group's equation fails (it failed for the parent and
 * held for the sibling, and the coefficients are shared). */
static int resolve(bctx *c, const uint32_t *ids, size_t cnt, int known_bad)
{
    if (cnt > FALLBACK_SINGLE_MAX) {
        size_t h = cnt / 2;
        int left;
        /* (Out of memory counts as failing: the halves get smaller until they fit.) */
        if (!known_bad && batch_equation(c, ids, cnt) == 1) {
            for (size_t j = 0; j < cnt; j++)
                c->ok[c->bi[ids[j]].item] = 1;
            return 1;
        }
        left = resolve(c, ids, h, 0);
        resolve(c, ids + h, cnt - h, left);
        return 0;
    }
    int all = 1;
    for (size_t j = 0; j < cnt; j++) {
        const bitem *it = &c->bi[ids[j]];
        int v = item_check(c, it);
        c->ok[it->item] = (uint8_t)v;
        all &= v;
    }
    return all;
}

static uint32_t key_slot(const uint8_t *enc, unsigned bits)
{
    uint64_t v;
    memcpy(&v, enc, 8);
    return (uint32_t)((v * 0x9e3779b97f4a7c15ULL) >> (64 - bits));
}

/* One batch over items[0..n), n >= 1. */
static void verify_chunk(const esc_sig_item *items, size_t n, uint8_t *ok, int msm,
                         esc_batch_stats *stats)
{
    unsigned bits = 1;
    size_t cap, nb = 0, nkeys = 0;
    uint32_t *slots, *ids;
    bctx c;
    memset(&c, 0, sizeof c);
    while (((size_t)1 << bits) < 2 * n)
        bits++;
    cap = (size_t)1 << bits;
    c.items = items;
    c.ok = ok;
    c.msm = msm;
    c.stats = stats;
    c.bi = malloc(n * sizeof *c.bi);
    c.keys = malloc(n * sizeof *c.keys);
    c.pts = malloc(2 * n * sizeof *c.pts);
    c.scs = malloc(2 * n * sizeof *c.scs);
    c.touched = malloc(n * sizeof *c.touched);
    ids = malloc(n * sizeof *ids);
    slots = calloc(cap, sizeof *slots);
    if (!c.bi || !c.keys || !c.pts || !c.scs || !c.touched || !ids || !slots) {
        for (size_t i = 0; i < n; i++)
            ok[i] = (uint8_t)esc_ed25519_verify_cofactored(&items[i]);
        goto done;
    }

    for (size_t i = 0; i < n; i++) {
        const esc_sig_item *it = &items[i];
        bitem *b = &c.bi[nb];
        uint32_t s, kid;
        ok[i] = 0;
        if (!esc_ed25519_prechecks(it))
            continue;
        /* Each distinct key is decoded once (open addressing on its encoding). */
        for (s = key_slot(it->pk, bits);; s = (s + 1) & (uint32_t)(cap - 1)) {
            if (slots[s] == 0) {
                bkey *k = &c.keys[nkeys];
                k->enc = it->pk;
                k->stamp = 0;
                k->valid = ge_decompress(&k->negA, it->pk) == 0;
                if (k->valid)
                    ge_p3_neg(&k->negA, &k->negA);
                slots[s] = (uint32_t)++nkeys;
                break;
            }
            if (memcmp(c.keys[slots[s] - 1].enc, it->pk, 32) == 0)
                break;
        }
        kid = slots[s] - 1;
        if (!c.keys[kid].valid)
            continue;
        if (ge_decompress(&b->negR, it->sig) != 0)
            continue;
        ge_p3_neg(&b->negR, &b->negR);
        challenge(&b->k, it);
        sc_frombytes(&b->s, it->sig + 32);
        b->key = kid;
        b->item = (uint32_t)i;
        ids[nb] = (uint32_t)nb;
        nb++;
    }
    if (nb) {
        /* The coefficients: 128 random bits each, from one call for the batch.  A zero
         * would drop its item from the equation, so it becomes 1 (z < L keeps every
         * other z invertible, which a batch of one relies on). */
        uint64_t *z = malloc(2 * nb * sizeof *z);
        if (!z) {
            for (size_t j = 0; j < nb; j++)
                ok[c.bi[j].item] = (uint8_t)item_check(&c, &c.bi[j]);
            goto done;
        }
        esc_sodium.randombytes_buf(z, 2 * nb * sizeof *z);
        for (size_t j = 0; j < nb; j++) {
            c.bi[j].z[0] = z[2 * j];
            c.bi[j].z[1] = z[2 * j + 1];
            if ((c.bi[j].z[0] | c.bi[j].z[1]) == 0)
                c.bi[j].z[0] = 1;
        }
        free(z);
        resolve(&c, ids, nb, 0);
    }
done:
    free(c.bi);
    free(c.keys);
    free(c.pts);
    free(c.scs);
    free(c.touched);
    free(ids);
    free(slots);
}

void esc_ed25519_verify_batch(const esc_sig_item *items, size_t n, uint8_t *ok,
                              const esc_batch_opts *opts, esc_batch_stats *stats)
{
    size_t max = opts && opts->max_batch ? opts->max_batch : ESC_BATCH_MAX_DEFAULT;
    int msm = opts ? opts->msm : ESC_MSM_AUTO;
    size_t parts, pos = 0;
    if (n == 0)
        return;
    ge_init();
    /* Equal sub-batches of at most `max` items. */
    parts = (n + max - 1) / max;
    for (size_t p = 0; p < parts; p++) {
        size_t len = n / parts + (p < n % parts ? 1 : 0);
        verify_chunk(items + pos, len, ok + pos, msm, stats);
        pos += len;
    }
}
