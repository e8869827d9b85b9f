#include "revocation_lookup.h"

#include <string.h>

#include "fault_guard.h"
#include "parallel.h"

#define ESC_LOOP_RANGE esc_lookup_range_portable
#define ESC_LOOP_BLOCK_HAS esc_bloom_block_has
#include "revocation_loop.h"

/* Below this many ids per thread, starting a thread costs more than it saves. */
#define MIN_CHUNK 16384

size_t esc_kind_id_len(int kind)
{
    return kind == ESC_KIND_CARD ? ESC_CARD_ID_LEN
           : kind == ESC_KIND_CREDENTIAL ? ESC_CREDENTIAL_ID_LEN
                                         : 0;
}

esc_fp esc_fingerprint(uint64_t seed, int kind, const uint8_t *id, size_t len)
{
    esc_fp fp;
    (void)len;
    fp.h1 = esc_key_hash(seed, kind, id);
    fp.h2 = esc_key_hash(seed ^ ESC_FP_SEED2_XOR, kind, id);
    return fp;
}

void esc_fingerprint_rows(uint64_t seed, const uint8_t *kinds, const uint8_t *rows, size_t n,
                          esc_fp *out)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = esc_fingerprint(seed, kinds[i], rows + 16 * i, esc_kind_id_len(kinds[i]));
}

#if ESC_HAVE_AVX2_LOOP
void esc_lookup_range_avx2(void *arg, size_t begin, size_t end);

static int avx2_usable(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return cached;
}
#endif

static int simd_allowed = 1;

int esc_revset_simd(int allow)
{
    if (allow >= 0)
        simd_allowed = allow != 0;
#if ESC_HAVE_AVX2_LOOP
    return simd_allowed && avx2_usable();
#else
    return 0;
#endif
}

typedef struct {
    esc_range_fn loop;
    esc_lookup_ctx *c;
    int faulted;
} guarded_lookup;

/* Each thread's range under its own guard: a fault ends that range, and the call. */
static void guarded_range(void *arg, size_t begin, size_t end)
{
    guarded_lookup *g = (guarded_lookup *)arg;
    if (esc_guarded_call(g->loop, g->c, begin, end) != 0)
        __atomic_store_n(&g->faulted, 1, __ATOMIC_RELAXED);
}

int esc_revset_contains(const esc_revset *r, int kind, const esc_ids *ids, size_t n,
                        uint8_t *out, int mode, int threads)
{
    esc_lookup_ctx c = {r, kind, ids, out, mode};
    guarded_lookup g = {esc_lookup_range_portable, &c, 0};
    if (esc_kind_id_len(kind) == 0) {
        memset(out, 0, n);
        return 0;
    }
#if ESC_HAVE_AVX2_LOOP
    if (simd_allowed && avx2_usable())
        g.loop = esc_lookup_range_avx2;
#endif
    esc_fault_guard_install(); /* once per process; RevocationTable checked it succeeded */
    esc_parallel_for(n, threads, MIN_CHUNK, guarded_range, &g);
    return __atomic_load_n(&g.faulted, __ATOMIC_RELAXED) ? -1 : 0;
}
