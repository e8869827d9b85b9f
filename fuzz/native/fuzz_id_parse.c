/* libFuzzer harness: esc_parse_ids (engine/native/id_parse.c), revocation input text,
 * under ASan/UBSan.
 *
 * Input: byte 0 picks max_bad (0..15), the rest is the text.  Buffers are sized exactly
 * as _core.parse_ids sizes them (cap = len / 14 + 1), so an entry written past the
 * sizing rule is a heap overflow.  Checked: the line count is the number of newlines
 * (plus one for an unterminated last line); entries and bad lines never exceed it; bad
 * lines are reported in order with known reasons; every entry is a valid card number or
 * serial; and parsing the text in two pieces cut after a newline gives the same
 * entries and counts as parsing it whole.  The line-format reference itself is
 * fuzz/py/parse_ids_diff.py.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "id_parse.h"
#include "revocation_lookup.h"

#include "fuzz_check.h"

typedef struct {
    size_t n;
    uint8_t *kinds, *rows;
    esc_bad_line *bad;
    uint64_t nbad, nlines;
} parsed;

static void parse(const uint8_t *text, size_t len, size_t max_bad, parsed *out)
{
    size_t cap = len / 14 + 1;
    uint8_t *buf = malloc(len ? len : 1);
    out->kinds = malloc(cap);
    out->rows = malloc(16 * cap);
    out->bad = malloc((max_bad ? max_bad : 1) * sizeof *out->bad);
    if (!buf || !out->kinds || !out->rows || !out->bad)
        abort();
    memcpy(buf, text, len);
    out->n = 0;
    out->nbad = out->nlines = 0;
    if (len) /* _core.parse_ids never calls it on empty text */
        out->n = esc_parse_ids(buf, len, out->kinds, out->rows, cap, out->bad, max_bad,
                               &out->nbad, &out->nlines);
    CHECK(out->n <= cap);
    free(buf);
}

static void release(parsed *p)
{
    free(p->kinds);
    free(p->rows);
    free(p->bad);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t max_bad = data[0] & 15;
    const uint8_t *text = data + 1;
    size_t len = size - 1;
    parsed whole;
    parse(text, len, max_bad, &whole);

    uint64_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    if (len && text[len - 1] != '\n')
        lines++;
    CHECK(whole.nlines == lines);
    CHECK(whole.n + whole.nbad <= whole.nlines);
    for (size_t i = 0; i < whole.nbad && i < max_bad; i++) {
        CHECK(whole.bad[i].line < whole.nlines);
        CHECK(whole.bad[i].reason >= ESC_PARSE_UNKNOWN_KIND && whole.bad[i].reason <= ESC_PARSE_EXTRA);
        if (i)
            CHECK(whole.bad[i].line > whole.bad[i - 1].line);
    }
    for (size_t i = 0; i < whole.n; i++) {
        const uint8_t *row = whole.rows + 16 * i;
        CHECK(whole.kinds[i] == ESC_KIND_CARD || whole.kinds[i] == ESC_KIND_CREDENTIAL);
        if (whole.kinds[i] == ESC_KIND_CARD) {
            CHECK(row[0] >= 'A' && row[0] <= 'Z');
            for (int j = 1; j < 9; j++)
                CHECK(row[j] >= '0' && row[j] <= '9');
            for (int j = 9; j < 16; j++)
                CHECK(row[j] == 0);
        }
    }

    /* Cut after the first newline past the middle: two chunks, as engine.revocation.input
     * reads a large file. */
    const uint8_t *nl = memchr(text + len / 2, '\n', len - len / 2);
    if (nl) {
        size_t cut = (size_t)(nl - text) + 1;
        parsed a, b;
        parse(text, cut, 0, &a);
        parse(text + cut, len - cut, 0, &b);
        CHECK(a.n + b.n == whole.n);
        CHECK(a.nlines + b.nlines == whole.nlines);
        CHECK(a.nbad + b.nbad == whole.nbad);
        CHECK(a.n == 0 || memcmp(a.kinds, whole.kinds, a.n) == 0);
        CHECK(b.n == 0 || memcmp(b.kinds, whole.kinds + a.n, b.n) == 0);
        CHECK(a.n == 0 || memcmp(a.rows, whole.rows, 16 * a.n) == 0);
        CHECK(b.n == 0 || memcmp(b.rows, whole.rows + 16 * a.n, 16 * b.n) == 0);
        release(&a);
        release(&b);
    }
    release(&whole);
    return 0;
}
