#include "id_parse.h"

#include <string.h>

#include "revocation_lookup.h"

static int is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int hex_value(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Next whitespace-separated token of [*p, end); a token starting with '#' is a
 * comment and ends the line.  Returns its length (0: none). */
static size_t next_token(const uint8_t **p, const uint8_t *end, const uint8_t **tok)
{
    const uint8_t *s = *p;
    while (s < end && is_space(*s))
        s++;
    if (s == end || *s == '#') {
        *p = end;
        return 0;
    }
    *tok = s;
    while (s < end && !is_space(*s))
        s++;
    *p = s;
    return (size_t)(s - *tok);
}

/* 0, or an ESC_PARSE_* reason. */
static int parse_line(const uint8_t *s, const uint8_t *end, int *kind, uint8_t *row)
{
    const uint8_t *word, *id;
    size_t wl = next_token(&s, end, &word), il, i;
    if (wl == 0) {
        *kind = 0; /* blank or comment */
        return 0;
    }
    if (wl == 4 && memcmp(word, "card", 4) == 0)
        *kind = ESC_KIND_CARD;
    else if (wl == 10 && memcmp(word, "credential", 10) == 0)
        *kind = ESC_KIND_CREDENTIAL;
    else
        return ESC_PARSE_UNKNOWN_KIND;
    il = next_token(&s, end, &id);
    if (il == 0)
        return ESC_PARSE_NO_ID;
    memset(row, 0, 16);
    if (*kind == ESC_KIND_CARD) {
        if (il != ESC_CARD_ID_LEN || id[0] < 'A' || id[0] > 'Z')
            return ESC_PARSE_BAD_CARD;
        for (i = 1; i < il; i++)
            if (id[i] < '0' || id[i] > '9')
                return ESC_PARSE_BAD_CARD;
        memcpy(row, id, il);
    } else {
        if (il != 2 * ESC_CREDENTIAL_ID_LEN)
            return ESC_PARSE_BAD_SERIAL;
        for (i = 0; i < ESC_CREDENTIAL_ID_LEN; i++) {
            int hi = hex_value(id[2 * i]), lo = hex_value(id[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return ESC_PARSE_BAD_SERIAL;
            row[i] = (uint8_t)(hi << 4 | lo);
        }
    }
    if (next_token(&s, end, &word) != 0)
        return ESC_PARSE_EXTRA;
    return 0;
}

size_t esc_parse_ids(const uint8_t *buf, size_t len, uint8_t *kinds, uint8_t *rows, size_t cap,
                     esc_bad_line *bad, size_t max_bad, uint64_t *nbad, uint64_t *nlines)
{
    const uint8_t *p = buf, *end = buf + len;
    size_t n = 0;
    uint64_t line = 0;
    *nbad = 0;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *stop = nl ? nl : end;
        uint8_t row[16];
        int kind, reason = parse_line(p, stop, &kind, row);
        if (reason) {
            if (*nbad < max_bad) {
                bad[*nbad].line = line;
                bad[*nbad].reason = reason;
            }
            (*nbad)++;
        } else if (kind) {
            if (n == cap) /* the caller broke the sizing rule: stop, never overrun */
                break;
            memcpy(rows + 16 * n, row, 16);
            kinds[n++] = (uint8_t)kind;
        }
        line++;
        p = nl ? nl + 1 : end;
    }
    *nlines = line;
    return n;
}
