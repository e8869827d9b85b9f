#include "sigbatch.h"

#include "ed25519/ed25519_batch.h"
#include "parallel.h"
#include "sodium_api.h"

/* Below this many items per thread, thread start-up costs more than it saves. */
#define MIN_VERIFY_CHUNK 8
#define MIN_SIGN_CHUNK 8
/* Batch verification splits no finer than this: a smaller batch gains less per item
 * than a second thread gives. */
#define MIN_BATCH_CHUNK 32

typedef struct {
    const esc_sig_item *items;
    uint8_t *ok;
    int method;
} verify_ctx;

static void verify_range(void *arg, size_t begin, size_t end)
{
    verify_ctx *ctx = (verify_ctx *)arg;
    if (ctx->method == ESC_VERIFY_BATCH ||
        (ctx->method == ESC_VERIFY_AUTO && end - begin >= ESC_AUTO_BATCH_MIN)) {
        esc_ed25519_verify_batch(ctx->items + begin, end - begin, ctx->ok + begin, NULL, NULL);
        return;
    }
    for (size_t i = begin; i < end; i++)
        ctx->ok[i] = (uint8_t)esc_ed25519_verify_single(&ctx->items[i]);
}

void esc_verify_items(const esc_sig_item *items, size_t n, uint8_t *ok, int threads,
                      int method)
{
    verify_ctx ctx = {items, ok, method};
    size_t min_chunk = method == ESC_VERIFY_SINGLE ? MIN_VERIFY_CHUNK : MIN_BATCH_CHUNK;
    esc_parallel_for(n, threads, min_chunk, verify_range, &ctx);
}

typedef struct {
    const uint8_t *const *msgs;
    const size_t *msg_lens;
    const uint8_t *const *sks;
    uint8_t *sigs;
} sign_ctx;

static void sign_range(void *arg, size_t begin, size_t end)
{
    sign_ctx *ctx = (sign_ctx *)arg;
    size_t i;
    for (i = begin; i < end; i++)
        esc_sodium.crypto_sign_detached(ctx->sigs + 64 * i, NULL, ctx->msgs[i],
                                        (unsigned long long)ctx->msg_lens[i], ctx->sks[i]);
}

void esc_sign_items(const uint8_t *const *msgs, const size_t *msg_lens,
                    const uint8_t *const *sks, uint8_t *sigs, size_t n, int threads)
{
    sign_ctx ctx = {msgs, msg_lens, sks, sigs};
    esc_parallel_for(n, threads, MIN_SIGN_CHUNK, sign_range, &ctx);
}

typedef struct {
    const uint8_t *seeds;
    uint8_t *pks, *sks;
} keypair_ctx;

static void keypair_range(void *arg, size_t begin, size_t end)
{
    keypair_ctx *ctx = (keypair_ctx *)arg;
    size_t i;
    for (i = begin; i < end; i++)
        esc_sodium.crypto_sign_seed_keypair(ctx->pks + 32 * i, ctx->sks + 64 * i,
                                            ctx->seeds + 32 * i);
}

void esc_seed_keypairs(const uint8_t *seeds, uint8_t *pks, uint8_t *sks, size_t n,
                       int threads)
{
    keypair_ctx ctx = {seeds, pks, sks};
    esc_parallel_for(n, threads, MIN_SIGN_CHUNK, keypair_range, &ctx);
}
