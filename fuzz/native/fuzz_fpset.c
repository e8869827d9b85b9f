/* libFuzzer harness: the exact tier's validators esc_fpset_check_index and
 * esc_fpset_validate (engine/native/exact_set.c), which stand between a revocation
 * file's bytes and every look-up, under ASan/UBSan.
 *
 * Input: byte 0: bucket bits (low 3 bits, 0..7) and index encoding (bit 3: raw u64
 * entries, else signed one-byte steps from the previous entry, so valid-looking
 * indexes are easy to reach); byte 1: the entry count n; then the 2^bits + 1 index
 * entries; then up to n fingerprints of 16 bytes (n shrinks to what is there).
 * Both validators are compared with a direct reading of their contracts (exact_set.h,
 * docs/FORMATS.md 8.3); whenever check_index passes, every look-up
 * (esc_fpset_contains) must stay inside the arrays (exact-size heap copies) and, when
 * validate passes too, agree with a linear search.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exact_set.h"

#include "fuzz_check.h"

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int linear_contains(const esc_fp *fps, uint64_t n, esc_fp fp)
{
    for (uint64_t i = 0; i < n; i++)
        if (fps[i].h1 == fp.h1 && fps[i].h2 == fp.h2)
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned bits = data[0] & 7;
    int raw = data[0] & 8;
    uint64_t n = data[1];
    size_t pos = 2, nb = (size_t)1 << bits;
    uint64_t *index = malloc((nb + 1) * sizeof *index);
    uint64_t *built = malloc((nb + 1) * sizeof *built);
    if (!index || !built)
        abort();
    uint64_t prev = 0;
    for (size_t b = 0; b <= nb; b++) {
        if (raw) {
            index[b] = pos + 8 <= size ? le64(data + pos) : 0;
            pos += 8;
        } else {
            index[b] = prev + (uint64_t)(int64_t)(int8_t)(pos < size ? data[pos] : 0);
            pos++;
        }
        prev = index[b];
    }
    if (pos > size)
        pos = size;
    if (n > (size - pos) / 16)
        n = (size - pos) / 16;
    esc_fp *fps = malloc((n ? n : 1) * sizeof *fps);
    if (!fps)
        abort();
    for (uint64_t i = 0; i < n; i++) {
        fps[i].h1 = le64(data + pos + 16 * i);
        fps[i].h2 = le64(data + pos + 16 * i + 8);
    }

    /* check_index: index[0] == 0, never decreasing, index[2^bits] == n. */
    int index_ok = index[0] == 0 && index[nb] == n;
    for (size_t b = 1; b <= nb; b++)
        index_ok &= index[b] >= index[b - 1];
    uint64_t ci = esc_fpset_check_index(index, bits, n);
    CHECK((ci == 0) == index_ok);
    CHECK(ci <= nb + 1);

    /* validate: strictly increasing, and index is exactly build_index's. */
    int sorted = 1;
    for (uint64_t i = 1; i < n; i++)
        sorted &= esc_fp_less(fps[i - 1], fps[i]);
    int same = 0;
    if (sorted) {
        esc_fpset_build_index(fps, n, bits, built);
        same = memcmp(built, index, (nb + 1) * sizeof *index) == 0;
    }
    uint64_t v = esc_fpset_validate(fps, n, bits, index);
    CHECK((v == 0) == (sorted && same));
    CHECK(v <= n + 1);
    if (v == 0)
        CHECK(ci == 0); /* a consistent index always passes the cheaper check */

    if (ci == 0) {
        esc_fpset s = {fps, n, index, bits};
        for (uint64_t i = 0; i < n; i++) {
            int hit = esc_fpset_contains(&s, fps[i]);
            if (v == 0)
                CHECK(hit);
            esc_fp probe = {fps[i].h1, fps[i].h2 + 1};
            hit = esc_fpset_contains(&s, probe);
            if (v == 0)
                CHECK(hit == linear_contains(fps, n, probe));
        }
        esc_fp edges[3] = {{0, 0}, {UINT64_MAX, UINT64_MAX}, {n * 0x9e3779b97f4a7c15ull, n}};
        for (int k = 0; k < 3; k++) {
            int hit = esc_fpset_contains(&s, edges[k]);
            if (v == 0)
                CHECK(hit == linear_contains(fps, n, edges[k]));
        }
    }
    free(index);
    free(built);
    free(fps);
    return 0;
}
