# The request/response codec of the hot path (engine/native/wire.c).  RequestBatch
# (_core_requests.pxi) calls the C functions directly; the entry points here are for
# the differential tests and the benchmarks.

from engine.includes.wire cimport (
    esc_claims,
    esc_encode_batch_response,
    esc_encode_verify_response,
    esc_parse_verify_request,
    esc_request,
    esc_response_bound,
    esc_result,
)


def _wire_parse_verify_request(bytes payload not None, uint32_t max_items):
    """None when the fast path declines; else (id, is_batch, [presentation bytes],
    merchant_id or None, terminal_id or None)."""
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(payload)
    cdef esc_request req
    cdef uint32_t i
    # +1: malloc(0) may return NULL.
    cdef uint32_t *off = <uint32_t *>malloc((<size_t>max_items + 1) * sizeof(uint32_t))
    cdef uint32_t *ln = <uint32_t *>malloc((<size_t>max_items + 1) * sizeof(uint32_t))
    if off == NULL or ln == NULL:
        free(off)
        free(ln)
        raise MemoryError()
    try:
        if not esc_parse_verify_request(p, PyBytes_GET_SIZE(payload), max_items, &req, off, ln):
            return None
        items = [
            PyBytes_FromStringAndSize(<const char *>p + off[i], ln[i])
            for i in range(req.n_items)
        ]
    finally:
        free(off)
        free(ln)
    # Context values are ASCII: the parser takes only [A-Za-z0-9._:-]{1,64}.
    merchant = _ascii(p, req.merchant_off, req.merchant_len) if req.merchant_len else None
    terminal = _ascii(p, req.terminal_off, req.terminal_len) if req.terminal_len else None
    return req.id, bool(req.is_batch), items, merchant, terminal


def _wire_parse_all(list payloads, uint32_t max_items):
    """How many of the payloads the fast path takes (the parser alone, for benchmarks)."""
    cdef esc_request req
    cdef size_t taken = 0
    cdef uint32_t *off = <uint32_t *>malloc((<size_t>max_items + 1) * sizeof(uint32_t))
    cdef uint32_t *ln = <uint32_t *>malloc((<size_t>max_items + 1) * sizeof(uint32_t))
    if off == NULL or ln == NULL:
        free(off)
        free(ln)
        raise MemoryError()
    for payload in payloads:
        taken += esc_parse_verify_request(
            <const uint8_t *>PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
            max_items, &req, off, ln
        )
    free(off)
    free(ln)
    return taken


cdef bytes _wire_ascii(value, Py_ssize_t size):
    cdef bytes b = value.encode("ascii")
    if size >= 0 and PyBytes_GET_SIZE(b) != size:
        raise ValueError(f"{value!r} must be {size} characters")
    return b


cdef int _wire_fill(item, esc_result *r, esc_claims *c, list keep) except -1:
    """One (verdict, reason, claims) or (verdict, reason, claims, repeat) tuple into r
    (and c); keep holds the bytes alive.

    claims: (card_number, region, channel, issuer, serial, purpose 1-4,
    presented_at_ms, valid_until), or None."""
    cdef bytes b
    verdict, reason, claims = item[:3]
    r.verdict = verdict
    r.reason = NULL
    r.reason_len = 0
    r.claims = NULL
    r.repeat = 1 if len(item) > 3 and item[3] else 0
    if reason is not None:
        b = reason.encode("utf-8")
        keep.append(b)
        r.reason = PyBytes_AS_STRING(b)
        r.reason_len = PyBytes_GET_SIZE(b)
    if claims is None:
        return 0
    card, region, channel, issuer, serial, purpose, at_ms, until = claims
    if type(serial) is not bytes or len(serial) != 16:
        raise ValueError("serial must be 16 bytes")
    fields = (_wire_ascii(card, 9), _wire_ascii(region, 6), _wire_ascii(channel, -1),
              _wire_ascii(issuer, -1), serial)
    keep.append(fields)
    c.card_number = <const uint8_t *>PyBytes_AS_STRING(fields[0])
    c.region = <const uint8_t *>PyBytes_AS_STRING(fields[1])
    c.channel = <const uint8_t *>PyBytes_AS_STRING(fields[2])
    c.channel_len = PyBytes_GET_SIZE(fields[2])
    c.issuer = <const uint8_t *>PyBytes_AS_STRING(fields[3])
    c.issuer_len = PyBytes_GET_SIZE(fields[3])
    c.serial = <const uint8_t *>PyBytes_AS_STRING(fields[4])
    c.purpose = purpose
    c.presented_at_ms = at_ms
    c.valid_until = until
    r.claims = c
    return 0


cdef object _wire_encode(uint64_t rid, list results, bint is_batch, object cap, bint bound):
    cdef size_t n = len(results), i, size, limit, written
    cdef esc_result *rs = <esc_result *>malloc((n + 1) * sizeof(esc_result))
    cdef esc_claims *cs = <esc_claims *>malloc((n + 1) * sizeof(esc_claims))
    cdef uint8_t *out = NULL
    cdef list keep = []
    if rs == NULL or cs == NULL:
        free(rs)
        free(cs)
        raise MemoryError()
    try:
        for i in range(n):
            _wire_fill(results[i], &rs[i], &cs[i], keep)
        size = esc_response_bound(rs, n, is_batch)
        if bound:
            return size
        if size == <size_t>-1:
            return None
        limit = size if cap is None else cap
        out = <uint8_t *>malloc(limit + 1)
        if out == NULL:
            raise MemoryError()
        if is_batch:
            written = esc_encode_batch_response(out, limit, rid, rs, n)
        else:
            written = esc_encode_verify_response(out, limit, rid, rs)
        return PyBytes_FromStringAndSize(<const char *>out, written) if written else None
    finally:
        free(rs)
        free(cs)
        free(out)


def _wire_encode_verify_response(uint64_t rid, verdict, reason, claims, repeat=False,
                                 cap=None):
    """The verify response frame (bytes), or None when the encoder returns 0 (cap: the
    room given to it; default: esc_response_bound)."""
    return _wire_encode(rid, [(verdict, reason, claims, repeat)], False, cap, False)


def _wire_encode_batch_response(uint64_t rid, list results, cap=None):
    """The verify_batch response frame of (verdict, reason, claims[, repeat]) tuples, or
    None."""
    return _wire_encode(rid, results, True, cap, False)


def _wire_response_bound(list results, bint is_batch):
    """esc_response_bound of (verdict, reason, claims) tuples."""
    return _wire_encode(0, results, is_batch, None, True)


def _wire_encode_verify_responses(list ids, verdict, reason, claims):
    """One verify response per id, all with the same result, back to back in one bytes
    (how the server writes a batch's responses; for benchmarks)."""
    cdef esc_result r
    cdef esc_claims c
    cdef list keep = []
    cdef size_t n = len(ids), size, pos = 0, written
    _wire_fill((verdict, reason, claims), &r, &c, keep)
    size = esc_response_bound(&r, 1, False)
    if size == <size_t>-1:
        raise ValueError("unencodable result")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size * n)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    cdef uint64_t rid
    for rid in ids:
        written = esc_encode_verify_response(o + pos, size * n - pos, rid, &r)
        if not written:
            raise ValueError("unencodable result")
        pos += written
    return out[:pos]
