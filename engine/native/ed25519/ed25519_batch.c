#include "ed25519_batch.h"

#include <stdlib.h>
#include <string.h>

#include "ed25519_msm.h"
#include "ed25519_point.h"
#include "ed25519_scalar.h"
#include "../sodium_api.h"

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
    size_t budget; /* items that bisection MSMs may still cover */
    esc_batch_stats *stats;
} bctx;

static int item_check(bctx *c, const bitem *it)
{
    if (c->stats)
        c->stats->singles++;
    return cofactored_equation(&c->keys[it->key].negA, &it->negR, &it->k, &it->s);
}

/* q = sum over ids[0..cnt) of z_i (S_i B - R_i - k_i A_i), before the factor 8 (the
 * batch equation holds iff [8]q is the identity).  Returns 0, or -1 without memory.
 *
 * q is additive over disjoint groups of items up to a torsion component (the
 * per-key and base-point scalars are reduced mod L, which changes only the
 * multiples of torsion points), so [8]q of a group is the sum of its parts'. */
static int group_sum(bctx *c, const uint32_t *ids, size_t cnt, ge_p3 *q)
{
    sc_wide bacc;
    sc b;
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
    return ed25519_msm(q, c->pts, c->scs, nt, &b, c->msm);
}

static void set_all(bctx *c, const uint32_t *ids, size_t cnt, uint8_t v)
{
    for (size_t j = 0; j < cnt; j++)
        c->ok[c->bi[ids[j]].item] = v;
}

static void check_each(bctx *c, const uint32_t *ids, size_t cnt)
{
    for (size_t j = 0; j < cnt; j++) {
        const bitem *it = &c->bi[ids[j]];
        c->ok[it->item] = (uint8_t)item_check(c, it);
    }
}

/* Verdicts for the group ids[0..cnt), whose sum q fails ([8]q is not the identity).
 *
 * Bisection with one MSM per step: the left half's sum is computed, the right
 * half's is q minus it.  A group of one whose [8]q is not the identity is invalid
 * exactly (z_i is invertible mod L), so no item needs a check of its own.
 *
 * Finding one bad item costs MSMs over about as many items as the batch holds, and
 * many bad items cost that many times over.  So the bisection MSMs get a budget of
 * twice the batch (enough for a few bad items), after which the remaining groups are
 * checked item by item: a batch full of bad signatures costs about three batch
 * equations plus one single check per item (measured per item: about 1.0 libsodium
 * verification with the IFMA code, 1.3 without), however an attacker arranges them. */
static void resolve(bctx *c, const uint32_t *ids, size_t cnt, const ge_p3 *q)
{
    size_t h = cnt / 2;
    ge_p3 half[2];
    if (cnt == 1) {
        c->ok[c->bi[ids[0]].item] = 0;
        return;
    }
    if (h > c->budget || group_sum(c, ids, h, &half[0]) != 0) {
        check_each(c, ids, cnt);
        return;
    }
    c->budget -= h;
    {
        ge_cached lc;
        ge_p1p1 t;
        ge_p3_to_cached(&lc, &half[0]);
        ge_sub(&t, q, &lc);
        ge_p1p1_to_p3(&half[1], &t);
    }
    for (int side = 0; side < 2; side++) {
        const uint32_t *sids = side ? ids + h : ids;
        size_t scnt = side ? cnt - h : h;
        if (ge_p3_is_small_order(&half[side]))
            set_all(c, sids, scnt, 1);
        else
            resolve(c, sids, scnt, &half[side]);
    }
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
    size_t cap, nb = 0, nkeys = 0, ndec = 0, kept = 0;
    uint32_t *slots, *ids;
    ge_p3 **dec_out;
    const uint8_t **dec_enc;
    int *dec_ok;
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
    dec_out = calloc(2 * n, sizeof *dec_out);
    dec_enc = calloc(2 * n, sizeof *dec_enc);
    dec_ok = malloc(2 * n * sizeof *dec_ok);
    if (!c.bi || !c.keys || !c.pts || !c.scs || !c.touched || !ids || !slots || !dec_out ||
        !dec_enc || !dec_ok) {
        for (size_t i = 0; i < n; i++)
            ok[i] = (uint8_t)esc_ed25519_verify_cofactored(&items[i]);
        goto done;
    }

    /* Rules 1-4 on the encodings, and one record per distinct key (open addressing on
     * the encoding), so that a key repeated across the batch is decoded once and
     * appears once in the equation. */
    for (size_t i = 0; i < n; i++) {
        const esc_sig_item *it = &items[i];
        uint32_t s;
        ok[i] = 0;
        if (!esc_ed25519_prechecks(it))
            continue;
        for (s = key_slot(it->pk, bits);; s = (s + 1) & (uint32_t)(cap - 1)) {
            if (slots[s] == 0) {
                c.keys[nkeys].enc = it->pk;
                c.keys[nkeys].stamp = 0;
                slots[s] = (uint32_t)++nkeys;
                break;
            }
            if (memcmp(c.keys[slots[s] - 1].enc, it->pk, 32) == 0)
                break;
        }
        c.bi[nb].key = slots[s] - 1;
        c.bi[nb].item = (uint32_t)i;
        nb++;
    }
    /* Decode every distinct key and every R; ge_decompress_many shares each
     * exponentiation between several points. */
    for (size_t k = 0; k < nkeys; k++) {
        dec_out[ndec] = &c.keys[k].negA;
        dec_enc[ndec++] = c.keys[k].enc;
    }
    for (size_t j = 0; j < nb; j++) {
        dec_out[ndec] = &c.bi[j].negR;
        dec_enc[ndec++] = items[c.bi[j].item].sig;
    }
    ge_decompress_many(dec_out, dec_enc, dec_ok, ndec);
    for (size_t k = 0; k < nkeys; k++) {
        c.keys[k].valid = dec_ok[k];
        if (dec_ok[k])
            ge_p3_neg(&c.keys[k].negA, &c.keys[k].negA);
    }
    /* Items whose A or R does not decode are invalid; the rest get k, S and -R. */
    for (size_t j = 0; j < nb; j++) {
        bitem *b = &c.bi[kept];
        const esc_sig_item *it = &items[c.bi[j].item];
        if (!c.keys[c.bi[j].key].valid || !dec_ok[nkeys + j])
            continue;
        if (kept != j)
            *b = c.bi[j];
        ge_p3_neg(&b->negR, &b->negR);
        challenge(&b->k, it);
        sc_frombytes(&b->s, it->sig + 32);
        ids[kept] = (uint32_t)kept;
        kept++;
    }
    nb = kept;
    if (nb) {
        /* The coefficients: 128 random bits each, from one call for the batch.  A zero
         * would drop its item from the equation, so it becomes 1 (z < L keeps every
         * z invertible, which a batch of one relies on). */
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
        c.budget = 2 * nb; /* see resolve() */
        {
            ge_p3 q;
            if (group_sum(&c, ids, nb, &q) != 0)
                check_each(&c, ids, nb); /* no memory for the MSM */
            else if (ge_p3_is_small_order(&q))
                set_all(&c, ids, nb, 1);
            else
                resolve(&c, ids, nb, &q);
        }
    }
done:
    free(c.bi);
    free(c.keys);
    free(c.pts);
    free(c.scs);
    free(c.touched);
    free(ids);
    free(slots);
    free(dec_out);
    free(dec_enc);
    free(dec_ok);
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
