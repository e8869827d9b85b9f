/* Parsing revocation input text: one `card <card-number>` or
 * `credential <serial-hex>` per line, `#` comments, blank lines.
 *
 * Lives in C because snapshot builds read tens of millions of lines.  Malformed
 * lines are reported (line number and reason), never dropped silently; what to do
 * about them is the caller's decision.
 */
#ifndef ESC_ID_PARSE_H
#define ESC_ID_PARSE_H

#include <stddef.h>
#include <stdint.h>

enum {
    ESC_PARSE_UNKNOWN_KIND = 1, /* first word is not card / credential */
    ESC_PARSE_NO_ID,            /* kind without an id */
    ESC_PARSE_BAD_CARD,         /* not a capital letter and 8 digits */
    ESC_PARSE_BAD_SERIAL,       /* not 32 hex digits */
    ESC_PARSE_EXTRA,            /* more text after the id */
};

typedef struct {
    uint64_t line; /* 0-based within the buffer */
    int reason;
} esc_bad_line;

/* Parses the lines of buf[0, len) (a final line needs no newline).  Entries go to
 * kinds[k] and rows[16k..16k+16) (card numbers use the first 9 bytes, the rest is
 * zero); at most cap of them, so cap must be at least len / 14 + 1 (the shortest
 * entry line is 14 bytes).  The first max_bad malformed lines go to bad.  Returns
 * the number of entries; *nlines and *nbad get the counts of lines and of
 * malformed lines. */
size_t esc_parse_ids(const uint8_t *buf, size_t len, uint8_t *kinds, uint8_t *rows, size_t cap,
                     esc_bad_line *bad, size_t max_bad, uint64_t *nbad, uint64_t *nlines);

#endif
