# The parser of revocation input text (engine/native/id_parse.h).

from libc.stdint cimport uint8_t, uint64_t

cdef extern from "native/id_parse.h" nogil:
    ctypedef struct esc_bad_line:
        uint64_t line
        int reason
    size_t esc_parse_ids(const uint8_t *buf, size_t len, uint8_t *kinds, uint8_t *rows,
                         size_t cap, esc_bad_line *bad, size_t max_bad, uint64_t *nbad,
                         uint64_t *nlines)
